"""Max pooling as plain loops, compiled with Numba: one (H, W) plane per parallel iteration.

The readable twins are ``_max_pool_search`` and ``_scatter_to_planes`` in
minidl/functional/pool.py, which sweep whole arrays once per kernel tap; these
loops keep one output row in cache while its taps pass over it, and scatter
without ``np.add.at``. They follow the same rules: PyTorch's scan order (the
first maximum wins ties, a NaN always wins), padding skipped, and a window
holding only -inf keeps its first in-bounds pixel.
"""
import numba
import numpy as np

from minidl.kernels.cpu import threads_for


def max_pool2d_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w):
    """The maxima of x (N, C, H, W) and their flat positions in each (H, W) plane."""
    args = kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w
    with threads_for(x.shape[0] * x.shape[1] * out_h * out_w * kernel_h * kernel_w):
        return _max_pool2d_forward(np.ascontiguousarray(x), *args)


def scatter_to_planes(g, index, plane_size):
    """grad[p, index[p, k]] += g[p, k] for (P, K) arrays, into a zero (P, plane_size) array;
    indices past the plane add nothing."""
    with threads_for(g.size):
        return _scatter_to_planes(g, index, plane_size)


@numba.njit(cache=True)
def _first_inside(start, dilation):
    """The first tap of a window starting at ``start`` that is not in the top/left padding."""
    while start < 0:
        start += dilation
    return start


@numba.njit(parallel=True, cache=True)
def _max_pool2d_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w):
    """max_pool2d_forward on a C-contiguous x.

    One output row at a time: for each tap (a, b), a pass along the row over every
    window whose tap lies inside the input. Taps come in the windows' scan order
    (a, then b), so ties and NaNs resolve as in a window-by-window scan.
    """
    n, c, h, w = x.shape
    planes = x.reshape(n * c, h, w)
    values = np.empty((n * c, out_h, out_w), x.dtype)
    index = np.empty((n * c, out_h, out_w), np.int64)
    for p in numba.prange(n * c):
        for i in range(out_h):
            best, found = values[p, i], index[p, i]
            row0 = i * stride_h - pad_h
            best[:] = -np.inf
            for j in range(out_w):
                found[j] = _first_inside(row0, dilation_h) * w + _first_inside(j * stride_w - pad_w, dilation_w)
            for a in range(kernel_h):
                row = row0 + a * dilation_h
                if row < 0 or row >= h:
                    continue
                for b in range(kernel_w):
                    offset = b * dilation_w - pad_w  # column j * stride_w + offset; keep the j inside [0, w)
                    first_j = max(0, (stride_w - 1 - offset) // stride_w)
                    last_j = min(out_w, (w - 1 - offset) // stride_w + 1)
                    for j in range(first_j, last_j):
                        col = j * stride_w + offset
                        v = planes[p, row, col]
                        if v > best[j] or v != v:
                            best[j] = v
                            found[j] = row * w + col
    return values.reshape(n, c, out_h, out_w), index.reshape(n, c, out_h, out_w)


@numba.njit(parallel=True, cache=True)
def _scatter_to_planes(g, index, plane_size):
    grad = np.zeros((g.shape[0], plane_size), g.dtype)
    for p in numba.prange(g.shape[0]):
        for k in range(g.shape[1]):
            i = index[p, k]
            if i < plane_size:
                grad[p, i] += g[p, k]
    return grad
