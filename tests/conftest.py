import os

# Idle OpenMP threads (PyTorch's, and Numba's when it uses OpenMP) spin at full speed by default and
# starve the other library's threads on 2 cores; must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

import minidl  # noqa: E402

# Device 'cuda' in the tests: a NumPy-backed stand-in for CuPy (tests/standin_cupy.py) by default, so the
# whole 'cuda' code path runs on any machine; MINIDL_TEST_CUDA=cupy runs the same tests on a real GPU.
CUDA_BACKEND = os.environ.get("MINIDL_TEST_CUDA", "standin")
if CUDA_BACKEND == "standin":
    import standin_cupy  # noqa: E402

    standin_cupy.install()
elif CUDA_BACKEND != "cupy":
    raise RuntimeError(f"MINIDL_TEST_CUDA must be 'standin' or 'cupy', got {CUDA_BACKEND!r}")

DEVICES = ["cpu", "cuda"]

# PyTorch is the reference here, never what is timed: one thread keeps its OpenMP workers from
# spinning against Numba's and OpenBLAS's on a 2-core machine (a parity test ran 20x slower).
torch.set_num_threads(1)

# The CUDA-simulator tests need their own process with NUMBA_ENABLE_CUDASIM=1 (see tests/cudasim/).
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


@pytest.fixture(params=DEVICES)
def device(request):
    """Run the test on each device; ``pytest -k cuda`` selects the 'cuda' half."""
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so a failure can be rerun exactly."""
    minidl.manual_seed(0)


_OUTCOMES = {}  # (device, outcome) -> count, for the summary below


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    device = getattr(item, "callspec", None) and item.callspec.params.get("device")
    if device and (report.when == "call" or report.outcome != "passed"):
        key = (device, report.outcome)
        _OUTCOMES[key] = _OUTCOMES.get(key, 0) + 1


def pytest_terminal_summary(terminalreporter):
    """Say how the tests that run on both devices fared on each, and what 'cuda' was."""
    backend = "the CuPy stand-in, tests/standin_cupy.py" if CUDA_BACKEND == "standin" else "real CuPy"
    for device in DEVICES:
        counts = {o: n for (d, o), n in _OUTCOMES.items() if d == device}
        if counts:
            summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
            where = f" ({backend})" if device == "cuda" else ""
            terminalreporter.write_line(f"tests on device '{device}'{where}: {summary}")
