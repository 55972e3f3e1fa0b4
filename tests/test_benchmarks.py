"""The benchmark scripts: each framework times in its own process, and the tables hold finite times.

Smoke sizes and one thread a framework, so that the tests stay short on a busy 2-core machine; the speeds
themselves are the scripts' output, never asserted here.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minidl
from benchmarks.isolate import THREAD_SETTINGS, SideFailed, run_side
from benchmarks.ops import CASES, time_case

ROOT = Path(__file__).resolve().parents[1]
# as from a fresh shell: without the thread settings that conftest.py and minidl put in this process's environment
ENV = {**{k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}, "PYTHONPATH": str(ROOT)}


def _run(script, *arguments):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *arguments], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _rows(lines):
    """The table's rows as lists of cells, header and separator left out."""
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| ")][1:]


def _loaded(header):
    """The runtimes each side's process loaded, as the header reports them: (minidl's, torch's)."""
    listed = header.split("loaded: ", 1)[1].split(";", 1)[0]
    return tuple(set(side.split(", ")) for side in listed.split(" | "))


def _settings(header):
    """The thread settings in each side's environment, as the header reports them: (minidl's, torch's)."""
    listed = header.split("thread settings: ", 1)[1].split(")", 1)[0]
    return tuple(side.split(" ") for side in listed.split(" | "))


def _numbers(cell):
    return [float(part) for part in cell.split(" / ")]


def test_importing_the_benchmark_modules_loads_no_framework():
    # a parent that imported torch or minidl would not spoil its children, but chapter 10 and the children
    # themselves import these modules, and a child must load only its own framework
    code = ("import sys, benchmarks.ops, benchmarks.step, benchmarks.train_step\n"
            "print(sorted(m for m in ('minidl', 'numba', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_ops_times_each_framework_in_its_own_process():
    header, *table = _run("ops.py", "--only", "stem", "--repeat", "1", "--rounds", "1", "--threads", "1")
    assert "each framework in its own process, 1 rounds alternated" in header
    ours, theirs = _loaded(header)
    assert "torch" not in ours and "minidl.kernels.cpu" in ours
    assert theirs == {"torch"}  # the ops need no twin, so torch's process does not even import minidl
    # minidl was imported before NumPy, so it chose its own rules for OpenBLAS's idle threads; torch set none
    minidl_settings, torch_settings = _settings(header)
    assert any(setting.startswith("OPENBLAS_THREAD_TIMEOUT=") for setting in minidl_settings)
    assert torch_settings == ["none"]
    (name, family, minidl_ms, torch_ms, ratios, target), = _rows(table)
    assert "stem" in name and family == "conv"
    times = _numbers(minidl_ms) + _numbers(torch_ms)
    assert all(math.isfinite(t) and t > 0 for t in times)
    (median_ratio, best_ratio) = _numbers(ratios)
    assert median_ratio == pytest.approx(times[0] / times[2], rel=0.1, abs=0.01)  # of the rounded times
    assert best_ratio == pytest.approx(times[1] / times[3], rel=0.1, abs=0.01)


def test_step_times_each_framework_in_its_own_process():
    header, *table = _run("step.py", "--backbone", "resnet_small", "--batch-size", "2", "--size", "33",
                          "--head-channels", "16", "--classes", "3", "--repeat", "1", "--rounds", "1",
                          "--threads", "1", "--algorithms", "im2col,auto")
    assert "each framework in its own process, 1 rounds alternated" in header
    ours, theirs = _loaded(header)
    assert "torch" not in ours
    # the twin takes its constants from minidl's model definitions, but never loads minidl's kernels
    assert "torch" in theirs and not theirs & {"minidl.kernels.cpu", "numba"}
    assert _settings(header)[1] == ["none"]  # nor did importing those definitions change torch's thread settings
    rows = {row[0]: [float(cell) for cell in row[1:]] for row in _rows(table)}
    assert set(rows) == {"minidl (im2col)", "minidl (auto)", "torch"}
    assert all(math.isfinite(v) and v > 0 for values in rows.values() for v in values)
    assert rows["torch"][2:] == [1.0, 1.0]


def test_a_side_that_loads_the_other_framework_is_refused(tmp_path):
    script = tmp_path / "side.py"
    script.write_text("import sys, types\n"
                      "from benchmarks.isolate import report\n"
                      "sys.modules['torch'] = types.ModuleType('torch')  # as if it had imported torch\n"
                      "report({'times': {}})\n")
    with pytest.raises(SideFailed, match="minidl side of side.py loaded torch"):
        run_side(str(script), "minidl", [], env=ENV)
    assert run_side(str(script), "torch", [], env=ENV)["loaded"] == ["torch"]


def test_time_case_keeps_the_signature_chapter_10_uses():
    name, family, target, shapes, fn = next(case for case in CASES if case[1] == "pool")
    small = [(1, 2, 9, 9)]  # the case's op on a small input
    assert 0 < time_case(minidl, small, fn, 2, "cpu", "float32") < 10
