"""The command line: ``minidl demo`` trains with minidl's own autograd and its loss falls."""
import subprocess
import sys

import pytest

from minidl.cli import demo, main


def test_demo_learns_the_toy_scene(capsys):
    loss, accuracy = demo(size=16, iterations=100)
    out = capsys.readouterr().out
    losses = [float(line.split()[-1]) for line in out.splitlines() if line.strip().startswith("iteration")]
    assert losses[-1] < 0.5 * losses[0], f"loss did not fall: {losses}"
    assert accuracy > 0.85  # a 3-class scene where predicting the majority class gives about 0.6
    assert "ground truth" in out


def test_demo_is_reproducible():
    assert demo(size=8, iterations=20, seed=3) == demo(size=8, iterations=20, seed=3)


def test_command_line_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "minidl.cli", "demo", "--size", "8", "--iterations", "10"],
        capture_output=True, text=True, check=True,
    )
    assert "pixel accuracy" in done.stdout


def test_unknown_command_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fly"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err
