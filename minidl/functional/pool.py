"""Pooling: max and average over sliding windows, and adaptive pooling to a fixed output size.

A pooling window visits k_h × k_w *taps*. For one tap (kh, kw), the input
pixels it reads for all output positions form one strided slice of the padded
input, so a pool is a loop over taps, each a whole-array operation: the
average adds the slices up, the max keeps a running maximum and where it was
found. Backward walks the same taps the other way (average) or sends each
output's gradient to the pixel its maximum came from (max), adding up where
windows overlap.

Adaptive pooling (DeepLab v3's image-level features pool to 1 × 1) splits an
input of size n into m windows [floor(i·n/m), ceil((i+1)·n/m)), which may
differ in size and overlap. Averaging over such windows is separable, a
matrix on each side: out = A_h · x · A_wᵀ.
"""
from collections import namedtuple
from types import SimpleNamespace

import numpy as np

from minidl import kernels
from minidl.backend import get_array_module, scatter_add
from minidl.functional.convutils import dilated_extent, output_size, pair
from minidl.tensor import Function, Tensor

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]

Window = namedtuple("Window", ["kernel", "stride", "padding", "dilation", "out"])


# ---------------------------------------------------------------- window geometry
def _window(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    """The checked pooling arguments, and the output size they give on ``input`` (N, C, H, W)."""
    kernel = pair("kernel_size", kernel_size, op, minimum=1)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    stride = kernel if no_stride else pair("stride", stride, op, minimum=1)
    padding = pair("padding", padding, op, minimum=0)
    dilation = pair("dilation", dilation, op, minimum=1)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(
            f"{op}: padding {padding} must be at most half the kernel size {kernel} (PyTorch's rule: "
            "a window may not lie mostly in the padding)"
        )
    out = tuple(
        output_size(op, n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(input.shape[-2:], kernel, stride, padding, dilation)
    )
    return Window(kernel, stride, padding, dilation, out)


def _padded(x, window, fill):
    """``x`` padded with ``fill``: ``padding`` on the top and left, and on the bottom and right as far as
    the last window reaches (past the padding with ceil_mode, or short of it)."""
    widths = [(0, 0), (0, 0)]
    for n, k, s, p, d, o in zip(x.shape[-2:], *window):
        reach = (o - 1) * s + dilated_extent(k, d)  # from the first padded pixel
        widths.append((p, max(0, reach - n - p)))
    return get_array_module(x).pad(x, widths, constant_values=fill)


def _taps(window):
    """For each tap (kh, kw): the index of the padded input's strided slice it reads."""
    (kernel_h, kernel_w), (sh, sw), _, (dh, dw), (oh, ow) = window
    for kh in range(kernel_h):
        rows = slice(kh * dh, kh * dh + (oh - 1) * sh + 1, sh)
        for kw in range(kernel_w):
            yield kh, kw, (Ellipsis, rows, slice(kw * dw, kw * dw + (ow - 1) * sw + 1, sw))


def _window_starts(window, axis):
    """Where each window starts along ``axis`` (0 rows, 1 columns), in input coordinates."""
    return np.arange(window.out[axis]) * window.stride[axis] - window.padding[axis]


# ---------------------------------------------------------------- max: search, then route gradients back
def _search_max(taps, first_index, shape, dtype, xp):
    """Running maximum over ``taps`` (values, flat index in the (H, W) plane), with PyTorch's scan rule:
    the first maximum wins ties, a NaN always wins (so NaN propagates). Windows holding only -inf
    keep ``first_index``, PyTorch's first in-bounds pixel."""
    best = xp.full(shape, -np.inf, dtype=dtype)
    found = xp.broadcast_to(xp.asarray(first_index), shape)
    for values, index in taps:
        better = (values > best) | xp.isnan(values)
        best = xp.where(better, values, best)
        found = xp.where(better, xp.asarray(index), found)
    return best, found


def _first_inside(starts, dilation):
    """The first tap at or after the window start that lies inside the input (not in the top/left padding)."""
    return starts + dilation * ((np.maximum(0, -starts) + dilation - 1) // dilation)


def _max_pool_search(x, window):
    """max_pool2d on raw arrays (the readable version): the maxima and their flat positions in the plane."""
    xp = get_array_module(x)
    width = x.shape[-1]
    padded = _padded(x, window, -np.inf)  # padding never wins
    rows, cols = _window_starts(window, 0), _window_starts(window, 1)
    (dh, dw) = window.dilation
    taps = (
        (padded[view], (rows + kh * dh)[:, None] * width + (cols + kw * dw)[None, :])
        for kh, kw, view in _taps(window)
    )
    first = _first_inside(rows, dh)[:, None] * width + _first_inside(cols, dw)[None, :]
    return _search_max(taps, first, x.shape[:2] + window.out, x.dtype, xp)


def _max_pool_values(x, window):
    """The maxima and their positions: by the compiled kernels while enabled, else by the readable tap sweep."""
    # the kernels take the window's pairs flat, in Window's order: kernel, stride, padding, dilation, out
    return kernels.for_array(x, "pool", _READABLE).max_pool2d_forward(x, *sum(window, ()))


class PickFromPlanes(Function):
    """Outputs that are input pixels found by a search (max pooling): ``values`` sit at ``index``, the
    flat position in each (H, W) plane. Backward sends every output's gradient to that pixel, adding up
    where several outputs picked the same one (overlapping windows)."""

    @staticmethod
    def forward(ctx, x, values, index):
        ctx.shape, ctx.index = x.shape, index
        return values

    @staticmethod
    def backward(ctx, g):
        n, c, h, w = ctx.shape
        grad = _scatter_to_planes(g.reshape(n * c, -1), ctx.index.reshape(n * c, -1), h * w)
        return grad.reshape(ctx.shape)


def _scatter_to_planes(g, index, plane_size):
    """The compiled scatter while kernels are enabled, else the readable one."""
    return kernels.for_array(g, "pool", _READABLE).scatter_to_planes(g, index, plane_size)


def _scatter_to_planes_readable(g, index, plane_size):
    """grad[p, index[p, k]] += g[p, k] for (P, K) arrays, into a zero (P, plane_size) array."""
    xp = get_array_module(g)
    # a window wholly inside the padding has PyTorch's out-of-plane index: it passes no gradient
    outside = index >= plane_size
    g, index = xp.where(outside, 0, g), xp.where(outside, 0, index)
    planes = g.shape[0]
    grad = xp.zeros(planes * plane_size, g.dtype)
    scatter_add(grad, (index + xp.arange(planes)[:, None] * plane_size).ravel(), g.ravel())
    return grad.reshape(planes, plane_size)


# the readable versions under the kernel modules' names, so the ops call either alike
_READABLE = SimpleNamespace(
    max_pool2d_forward=lambda x, *pairs: _max_pool_search(x, Window(*zip(pairs[0::2], pairs[1::2]))),
    scatter_to_planes=_scatter_to_planes_readable,
)


# ---------------------------------------------------------------- average over fixed windows
def _divisor(window, size, count_include_pad, divisor_override):
    """What each output window's sum is divided by, as an (OH, OW) array (PyTorch's rules)."""
    if divisor_override is not None:
        return np.array(divisor_override)
    counts = []
    for axis, n in enumerate(size):
        start = _window_starts(window, axis)
        end = np.minimum(start + window.kernel[axis], n + window.padding[axis])  # ceil_mode overhang excluded
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        counts.append(end - start)
    return counts[0][:, None] * counts[1][None, :]


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, window, divisor):
        xp = get_array_module(x)
        padded = _padded(x, window, 0)
        total = sum(padded[view] for _, _, view in _taps(window))
        ctx.shape, ctx.padded_shape, ctx.window = x.shape, padded.shape, window
        ctx.divisor = xp.asarray(divisor, dtype=x.dtype)
        return total / ctx.divisor

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        share = g / ctx.divisor
        grad = xp.zeros(ctx.padded_shape, g.dtype)
        for _, _, view in _taps(ctx.window):
            grad[view] += share  # one tap reads each pixel at most once: no index repeats within a slice
        ph, pw = ctx.window.padding
        h, w = ctx.shape[-2:]
        return grad[..., ph : ph + h, pw : pw + w]


# ---------------------------------------------------------------- adaptive windows
def _adaptive_bounds(n, m):
    """PyTorch's adaptive windows along one axis: window i covers [floor(i·n/m), ceil((i+1)·n/m))."""
    i = np.arange(m)
    return (i * n) // m, -((-(i + 1) * n) // m)


def _averaging_matrix(n, m, xp, dtype):
    """(m, n) matrix whose row i averages window i of an axis of length n."""
    start, end = _adaptive_bounds(n, m)
    columns = np.arange(n)
    inside = (columns[None, :] >= start[:, None]) & (columns[None, :] < end[:, None])
    return xp.asarray(inside / (end - start)[:, None], dtype=dtype)


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, out_size):
        xp = get_array_module(x)
        ctx.rows = _averaging_matrix(x.shape[-2], out_size[0], xp, x.dtype)
        ctx.cols = _averaging_matrix(x.shape[-1], out_size[1], xp, x.dtype)
        return ctx.rows @ x @ ctx.cols.T

    @staticmethod
    def backward(ctx, g):
        return ctx.rows.T @ g @ ctx.cols


def _adaptive_taps(n, m):
    """For each tap of the longest adaptive window along one axis, the position it reads in every window.
    A tap past a window's end re-reads the window's last pixel, which cannot win again (ties keep the first)."""
    start, end = _adaptive_bounds(n, m)
    return [np.minimum(start + a, end - 1) for a in range(int((end - start).max(initial=0)))]


def _adaptive_max_search(x, out_size):
    """adaptive_max_pool2d on raw arrays: windows of varying size, visited as taps of the largest one."""
    xp = get_array_module(x)
    width = x.shape[-1]
    row_taps, col_taps = (_adaptive_taps(n, m) for n, m in zip(x.shape[-2:], out_size))
    taps = (
        (x[..., xp.asarray(rows)[:, None], xp.asarray(cols)[None, :]], rows[:, None] * width + cols)
        for rows in row_taps
        for cols in col_taps
    )
    (row_start, _), (col_start, _) = (_adaptive_bounds(n, m) for n, m in zip(x.shape[-2:], out_size))
    first = row_start[:, None] * width + col_start
    return _search_max(taps, first, x.shape[:2] + tuple(out_size), x.dtype, xp)


# ---------------------------------------------------------------- the public functions
def _batched(op, input):
    """(N, C, H, W) as it is, (C, H, W) as a batch of one; and whether to drop that batch axis again."""
    if input.ndim not in (3, 4) or 0 in input.shape[-2:]:
        raise ValueError(f"{op}: expected a (N, C, H, W) or (C, H, W) input with H, W > 0, got shape {input.shape}")
    return (input, False) if input.ndim == 4 else (input.reshape((1,) + input.shape), True)


def _unbatched(out, unbatched):
    return out.reshape(out.shape[1:]) if unbatched else out


def _max_result(x, values, index, unbatched, return_indices):
    out = _unbatched(PickFromPlanes.apply(x, values=values, index=index), unbatched)
    if not return_indices:
        return out
    return out, _unbatched(Tensor(index.astype(np.int64, copy=False)), unbatched)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Largest value in each (dilated) window; padding counts as -inf. With ``return_indices``, also the
    flat position in the (H, W) plane each maximum came from, as PyTorch returns it."""
    x, unbatched = _batched("max_pool2d", input)
    window = _window("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    values, index = _max_pool_values(x.data, window)
    return _max_result(x, values, index, unbatched, return_indices)


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """Mean of each window. ``count_include_pad`` counts the zero padding in the divisor (never the
    ceil_mode overhang past it); ``divisor_override`` replaces the divisor altogether."""
    if divisor_override == 0:
        raise ValueError("avg_pool2d: divisor_override must not be zero")
    x, unbatched = _batched("avg_pool2d", input)
    window = _window("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    divisor = _divisor(window, x.shape[-2:], count_include_pad, divisor_override)
    return _unbatched(AvgPool2d.apply(x, window=window, divisor=divisor), unbatched)


def _adaptive_size(op, input, output_size):
    """``output_size`` as a pair; None keeps the input's size along that axis."""
    size = (output_size, output_size) if output_size is None or isinstance(output_size, int) else output_size
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(s is None or isinstance(s, int) for s in size)):
        raise ValueError(f"{op}: output_size must be an int, None or a pair of them, got {output_size!r}")
    size = tuple(n if s is None else s for s, n in zip(size, input.shape[-2:]))
    if min(size) < 0:
        raise ValueError(f"{op}: output_size must not be negative, got {output_size!r}")
    return size


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed ``output_size`` whatever the input's size (1 gives global average pooling)."""
    x, unbatched = _batched("adaptive_avg_pool2d", input)
    size = _adaptive_size("adaptive_avg_pool2d", x, output_size)
    return _unbatched(AdaptiveAvgPool2d.apply(x, out_size=size), unbatched)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max pooling to a fixed ``output_size`` whatever the input's size."""
    x, unbatched = _batched("adaptive_max_pool2d", input)
    size = _adaptive_size("adaptive_max_pool2d", x, output_size)
    values, index = _adaptive_max_search(x.data, size)
    return _max_result(x, values, index, unbatched, return_indices)
