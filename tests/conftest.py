import os

# Idle OpenMP threads (PyTorch's, and Numba's when it uses OpenMP) spin at full speed by default and
# starve the other library's threads on 2 cores; must be set before either is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

import minidl  # noqa: E402

# PyTorch is the reference here, never what is timed: one thread keeps its OpenMP workers from
# spinning against Numba's and OpenBLAS's on a 2-core machine (a parity test ran 20x slower).
torch.set_num_threads(1)

# The CUDA-simulator tests need their own process with NUMBA_ENABLE_CUDASIM=1 (see tests/cudasim/).
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so a failure can be rerun exactly."""
    minidl.manual_seed(0)
