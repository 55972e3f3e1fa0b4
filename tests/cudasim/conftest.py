"""Tests of the CUDA kernels on the CPU, through Numba's CUDA simulator.

The simulator must be switched on before Numba is first imported, so these
tests run in their own pytest process: ``NUMBA_ENABLE_CUDASIM=1 pytest tests/cudasim``
(``make test`` does). The main run leaves this folder out (see tests/conftest.py).
"""
import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    raise RuntimeError("tests/cudasim needs NUMBA_ENABLE_CUDASIM=1 set before Numba is imported")


def pytest_collection_modifyitems(items):
    """Here the kernels must run: a fallback to the array code would test nothing, so it fails the test."""
    for item in items:
        item.add_marker(pytest.mark.filterwarnings("error::minidl.kernels.KernelsUnavailableWarning"))
