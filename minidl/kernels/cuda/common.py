"""What every CUDA kernel here needs: flat thread indices split into coordinates, and the launch."""
import math
import sys

import numpy as np
from numba import config, cuda

THREADS_PER_BLOCK = 256


@cuda.jit(device=True)
def divide(index, size):
    """(index // size, index % size): peel the fastest-varying coordinate off a flat index."""
    return index // size, index % size


@cuda.jit(device=True)
def window_position(pixel, tap, stride, pad, dilation, out):
    """The output position whose tap ``tap`` reads ``pixel`` along one axis, or -1 if there is none."""
    shifted = pixel + pad - tap * dilation
    if shifted < 0 or shifted % stride != 0 or shifted // stride >= out:
        return -1
    return shifted // stride


def launch(kernel, work, *arguments):
    """Run ``kernel`` with one thread per element of ``work`` (nothing to run for an empty array)."""
    if work.size:
        grid(kernel, math.ceil(work.size / THREADS_PER_BLOCK), THREADS_PER_BLOCK, *arguments)


def grid(kernel, blocks, threads, *arguments):
    """Launch ``kernel`` on CuPy's current stream, queued behind the work that made its arguments.

    Numba would otherwise wait on the host, once per array argument, until the
    GPU had finished everything before (its default for arrays it receives through
    ``__cuda_array_interface__``). Kernels on one stream run in order, so that wait
    buys nothing.
    """
    kernel[blocks, threads, _current_stream()](*map(_device_array, arguments))


class _HostMemory:
    """Simulated device memory, which is host memory: NumPy reads it through the same interface."""

    def __init__(self, interface):
        self.__array_interface__ = {key: interface[key] for key in ("shape", "typestr", "data", "strides")}
        self.__array_interface__["version"] = 3


if getattr(config, "ENABLE_CUDASIM", False):
    def _device_array(a):
        return np.asarray(_HostMemory(a.__cuda_array_interface__)) if hasattr(a, "__cuda_array_interface__") else a

    def _current_stream():
        return 0
else:
    def _device_array(a):
        return cuda.as_cuda_array(a, sync=False) if hasattr(a, "__cuda_array_interface__") else a

    _streams = {}

    def _current_stream():
        pointer = sys.modules["cupy"].cuda.get_current_stream().ptr
        if pointer not in _streams:
            _streams[pointer] = cuda.default_stream() if pointer == 0 else cuda.external_stream(pointer)
        return _streams[pointer]
