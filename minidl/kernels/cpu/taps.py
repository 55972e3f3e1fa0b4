"""The taps algorithm's copies as Numba loops: a rectangle of every image of a (C, N, H, W) array, and its adjoint,
adding values back into one. The compiled twins of the readable slicing in ``minidl.functional.taps``.

NumPy copies a strided rectangle on one thread; here the (channel, image) planes are shared among Numba's threads
while OpenBLAS's spin briefly (``threads_beside_blas``, as for im2col): the copies sit between the products.
"""
import numba
import numpy as np

from minidl.kernels.cpu import threads_beside_blas


@numba.njit(cache=True, parallel=True)
def _copy(source, out, top, left):
    channels, images, height, width = out.shape
    for plane in numba.prange(channels * images):
        c, n = plane // images, plane % images
        for y in range(height):
            out[c, n, y, :] = source[c, n, top + y, left:left + width]


@numba.njit(cache=True, parallel=True)
def _add(target, values, top, left):
    channels, images, height, width = values.shape
    for plane in numba.prange(channels * images):
        c, n = plane // images, plane % images
        for y in range(height):
            target[c, n, top + y, left:left + width] += values[c, n, y, :]


def rectangle(array_c, rows, cols):
    """array_c[:, :, rows, cols] as a new (C, N, h, w) array."""
    out = np.empty(array_c.shape[:2] + (rows.stop - rows.start, cols.stop - cols.start), array_c.dtype)
    with threads_beside_blas(out.size):
        _copy(np.ascontiguousarray(array_c), out, rows.start, cols.start)
    return out


def add_rectangle(target_c, rows, cols, values):
    """target_c[:, :, rows, cols] += values, in place (target_c: a C-contiguous array)."""
    with threads_beside_blas(values.size):
        _add(target_c, np.ascontiguousarray(values, target_c.dtype), rows.start, cols.start)
