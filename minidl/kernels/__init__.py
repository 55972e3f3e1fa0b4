"""Compiled versions of the hot loops: ``cpu/`` with ``numba.njit``, ``cuda/`` with ``numba.cuda.jit``.

Every kernel has a readable NumPy twin in ``minidl.functional`` that computes
the same thing; the ops call the kernel when one exists for the array's
device, and the twin otherwise or inside ``with minidl.kernels.disabled():``.
Tests run both and compare them. The CUDA kernels take CuPy arrays (Numba
reads them through ``__cuda_array_interface__``) and, under Numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), NumPy arrays on the CPU.
"""
import contextlib
import importlib


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


def for_array(array, topic):
    """The kernel module of ``topic`` for the array's device, or None for the readable array code.

    None inside ``disabled()``, and for a device that has no kernels of that
    topic (``minidl.kernels.cpu.<topic>`` for NumPy, ``minidl.kernels.cuda.<topic>`` for CuPy).
    """
    if not _State.enabled:
        return None
    device = "cpu" if type(array).__module__.startswith("numpy") else "cuda"
    try:
        return importlib.import_module(f"minidl.kernels.{device}.{topic}")
    except ModuleNotFoundError as e:
        if e.name != f"minidl.kernels.{device}.{topic}":
            raise
        return None
