"""Max pooling on the GPU: one thread per output for the search, one per output for the gradient.

The same rules as the readable twins (``_max_pool_search`` and ``_scatter_to_planes`` in
minidl/functional/pool.py) and the CPU loops: PyTorch's scan order (the first maximum wins ties,
a NaN always wins), padding skipped, and a window holding only -inf keeps its first in-bounds
pixel. Overlapping windows can pick the same pixel, so the gradient is added atomically; with at
most kernel_h·kernel_w writers per pixel they contend little.
"""
import math

from numba import cuda

from minidl.backend import get_array_module
from minidl.kernels.cuda.common import divide, launch


@cuda.jit(device=True)
def _first_inside(start, dilation):
    """The first tap of a window starting at ``start`` that is not in the top/left padding."""
    while start < 0:
        start += dilation
    return start


@cuda.jit
def _forward(planes, values, index, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    rest, j = divide(cuda.grid(1), values.shape[2])
    p, i = divide(rest, values.shape[1])
    if p >= values.shape[0]:
        return
    height, width = planes.shape[1], planes.shape[2]
    row0, col0 = i * stride_h - pad_h, j * stride_w - pad_w
    best, found = -math.inf, _first_inside(row0, dilation_h) * width + _first_inside(col0, dilation_w)
    for a in range(kernel_h):
        row = row0 + a * dilation_h
        if 0 <= row < height:
            for b in range(kernel_w):
                col = col0 + b * dilation_w
                if 0 <= col < width:
                    v = planes[p, row, col]
                    if v > best or v != v:
                        best, found = v, row * width + col
    values[p, i, j] = best
    index[p, i, j] = found


@cuda.jit
def _scatter(g, index, grad):
    p, k = divide(cuda.grid(1), g.shape[1])
    if p >= g.shape[0]:
        return
    i = index[p, k]
    if i < grad.shape[1]:  # a window wholly in the padding points past the plane: it passes nothing
        cuda.atomic.add(grad, (p, i), g[p, k])


def max_pool2d_forward(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, out_h, out_w):
    """The maxima of x (N, C, H, W) and their flat positions in each (H, W) plane."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    values = xp.empty((n * c, out_h, out_w), x.dtype)
    index = xp.empty((n * c, out_h, out_w), xp.int64)
    planes = xp.ascontiguousarray(x).reshape(n * c, h, w)
    launch(_forward, values, planes, values, index, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
           dilation_h, dilation_w)
    return values.reshape(n, c, out_h, out_w), index.reshape(n, c, out_h, out_w)


def scatter_to_planes(g, index, plane_size):
    """grad[p, index[p, k]] += g[p, k] for (P, K) arrays, into a zero (P, plane_size) array."""
    xp = get_array_module(g)
    grad = xp.zeros((g.shape[0], plane_size), g.dtype)
    launch(_scatter, g, xp.ascontiguousarray(g), xp.ascontiguousarray(index), grad)
    return grad
