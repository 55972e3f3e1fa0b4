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
