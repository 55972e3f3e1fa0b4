"""Compiled versions of the hot loops: ``cpu/`` with ``numba.njit``, ``cuda/`` with ``numba.cuda.jit``.

Every kernel has a readable NumPy twin in ``minidl.functional`` that computes
the same thing; the ops call the kernel when one exists for the array's
device, and the twin otherwise or inside ``with minidl.kernels.disabled():``.
Tests run both and compare them. The CUDA kernels take CuPy arrays (Numba
reads them through ``__cuda_array_interface__``) and, under Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), NumPy arrays on the CPU.
"""
import contextlib


class _State:
    enabled = True


def enabled():
    """Whether ops may use compiled kernels (True unless inside ``disabled()``)."""
    return _State.enabled


@contextlib.contextmanager
def disabled():
    """Run the readable NumPy versions of the ops instead of the compiled kernels."""
    previous, _State.enabled = _State.enabled, False
    try:
        yield
    finally:
        _State.enabled = previous
