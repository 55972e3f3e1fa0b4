"""Depthwise convolution on the CPU: direct loops over the taps, one (image, channel) plane per thread.

The same computation as the readable version in minidl.functional.depthwise,
written as loops so nothing is padded or copied: for each output row and each
tap, the range of output columns whose tap lands inside the input is worked
out once, and the innermost loop runs over that range (contiguous in memory
when the stride is 1). Planes are independent, so ``prange`` spreads them over
the cores; the weight gradient sums over the batch, so each (image, channel)
plane writes its own partial sums and the batch is summed afterwards.
"""
import numba
import numpy as np

_PARALLEL = dict(cache=True, parallel=True)


@numba.njit(cache=True, inline="always")
def _valid_outputs(offset, step, size, out_size):
    """The outputs q in [lo, hi) whose tap reads inside the input: 0 <= offset + q·step < size."""
    lo = 0 if offset >= 0 else (step - 1 - offset) // step
    hi = 0 if offset >= size else min(out_size, (size - 1 - offset) // step + 1)
    return lo, max(lo, hi)


# The three loops below meet one tap's reads along a row as two views: the outputs lo..hi-1
# (contiguous) and the input columns col + q·step they read. A unit step is kept as a
# contiguous slice, which Numba vectorizes; any other step becomes a strided view.


@numba.njit(cache=True, inline="always")
def _axpy(a, x, y):
    """y += a·x on equal-length 1-D views."""
    for q in range(y.size):
        y[q] += a * x[q]


@numba.njit(cache=True, inline="always")
def _dot(x, y):
    total = 0.0
    for q in range(x.size):
        total += x[q] * y[q]
    return total


@numba.njit(cache=True, inline="always")
def _read_tap(out_row, in_row, col, lo, hi, step, tap):
    """out_row[q] += tap · in_row[col + q·step] for q in lo..hi-1."""
    if step == 1:
        _axpy(tap, in_row[col + lo : col + hi], out_row[lo:hi])
    else:
        _axpy(tap, in_row[col + lo * step : col + (hi - 1) * step + 1 : step], out_row[lo:hi])


@numba.njit(cache=True, inline="always")
def _return_tap(in_row, out_row, col, lo, hi, step, tap):
    """in_row[col + q·step] += tap · out_row[q] for q in lo..hi-1: the transpose of _read_tap."""
    if step == 1:
        _axpy(tap, out_row[lo:hi], in_row[col + lo : col + hi])
    else:
        _axpy(tap, out_row[lo:hi], in_row[col + lo * step : col + (hi - 1) * step + 1 : step])


@numba.njit(cache=True, inline="always")
def _dot_tap(out_row, in_row, col, lo, hi, step):
    """sum over q in lo..hi-1 of out_row[q] · in_row[col + q·step]."""
    if step == 1:
        return _dot(out_row[lo:hi], in_row[col + lo : col + hi])
    return _dot(out_row[lo:hi], in_row[col + lo * step : col + (hi - 1) * step + 1 : step])


@numba.njit(**_PARALLEL)
def _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw):
    images, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    multiplier = out_channels // channels
    out_height, out_width = out.shape[2], out.shape[3]
    for plane in numba.prange(images * out_channels):
        n, o = plane // out_channels, plane % out_channels
        src, dst = x[n, o // multiplier], out[n, o]
        for p in range(out_height):
            dst[p, :] = bias[o]
            for i in range(kh):
                row = p * sh + i * dh - ph
                if row < 0 or row >= height:
                    continue
                for j in range(kw):
                    col = j * dw - pw
                    lo, hi = _valid_outputs(col, sw, width, out_width)
                    if lo < hi:
                        _read_tap(dst[p], src[row], col, lo, hi, sw, weight[o, 0, i, j])


@numba.njit(**_PARALLEL)
def _grad_input(grad, weight, gx, sh, sw, ph, pw, dh, dw):
    images, channels, height, width = gx.shape
    out_channels, _, kh, kw = weight.shape
    multiplier = out_channels // channels
    out_height, out_width = grad.shape[2], grad.shape[3]
    for plane in numba.prange(images * channels):
        n, c = plane // channels, plane % channels
        dst = gx[n, c]
        dst[:, :] = 0
        # every output channel reading channel c sends its gradient back along the taps it used
        for o in range(c * multiplier, (c + 1) * multiplier):
            src = grad[n, o]
            for p in range(out_height):
                for i in range(kh):
                    row = p * sh + i * dh - ph
                    if row < 0 or row >= height:
                        continue
                    for j in range(kw):
                        col = j * dw - pw
                        lo, hi = _valid_outputs(col, sw, width, out_width)
                        if lo < hi:
                            _return_tap(dst[row], src[p], col, lo, hi, sw, weight[o, 0, i, j])


@numba.njit(**_PARALLEL, fastmath=True)
def _grad_weight(x, grad, partial, sh, sw, ph, pw, dh, dw):
    images, channels, height, width = x.shape
    _, out_channels, kh, kw = partial.shape
    multiplier = out_channels // channels
    out_height, out_width = grad.shape[2], grad.shape[3]
    for plane in numba.prange(images * out_channels):
        n, o = plane // out_channels, plane % out_channels
        src, g = x[n, o // multiplier], grad[n, o]
        for i in range(kh):
            p_lo, p_hi = _valid_outputs(i * dh - ph, sh, height, out_height)
            for j in range(kw):
                col = j * dw - pw
                lo, hi = _valid_outputs(col, sw, width, out_width)
                total = 0.0
                if lo < hi:
                    for p in range(p_lo, p_hi):
                        total += _dot_tap(g[p], src[p * sh + i * dh - ph], col, lo, hi, sw)
                partial[n, o, i, j] = total


def forward(x, weight, bias, stride, padding, dilation, out_hw):
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    out = np.empty(x.shape[:1] + weight.shape[:1] + out_hw, dtype=x.dtype)
    bias = np.zeros(weight.shape[0], dtype=x.dtype) if bias is None else bias
    _forward(x, weight, bias, out, *stride, *padding, *dilation)
    return out


def grad_input(grad, weight, x_shape, stride, padding, dilation):
    gx = np.empty(x_shape, dtype=grad.dtype)
    _grad_input(np.ascontiguousarray(grad), np.ascontiguousarray(weight), gx, *stride, *padding, *dilation)
    return gx


def grad_weight(x, grad, weight_shape, stride, padding, dilation):
    # per-image partial sums in float64, added up over the batch at the end
    partial = np.empty((x.shape[0], weight_shape[0]) + weight_shape[2:], dtype=np.float64)
    _grad_weight(np.ascontiguousarray(x), np.ascontiguousarray(grad), partial, *stride, *padding, *dilation)
    return partial.sum(axis=0).astype(x.dtype).reshape(weight_shape)
