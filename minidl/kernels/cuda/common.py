"""What every CUDA kernel here needs: flat thread indices split into coordinates, and the launch."""
import math

from numba import cuda

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
        kernel[math.ceil(work.size / THREADS_PER_BLOCK), THREADS_PER_BLOCK](*arguments)
