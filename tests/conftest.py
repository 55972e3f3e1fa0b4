import os

import pytest

import minidl

# The CUDA-simulator tests need their own process with NUMBA_ENABLE_CUDASIM=1 (see tests/cudasim/).
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so a failure can be rerun exactly."""
    minidl.manual_seed(0)
