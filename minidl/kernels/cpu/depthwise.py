"""Depthwise convolution on the CPU: direct loops over the taps, one (image, channel) plane per thread.

The same computation as the readable version in minidl.functional.depthwise,
written as loops. Planes are independent, so ``prange`` spreads them over the
cores; the weight gradient sums over the batch, so each (image, channel) plane
writes its own partial sums and the batch is summed afterwards. Two layouts:

- Stride 1 (ASPP's and the decoder's separable convolutions): the input plane
  is copied once into a zero-padded buffer, and the output is computed "wide",
  at the padded plane's row pitch, with a few unused values at the end of each
  row. In that layout every tap reads the buffer at one fixed offset from the
  output, so a tap is a single multiply-add over the whole plane. On small maps
  that matters: on the main job's 25×25 maps, one short loop per row and tap
  spent more time starting loops than multiplying.
- Other strides: nothing is padded or copied. For each output row and each tap,
  the range of output columns whose tap lands inside the input is worked out
  once, and the innermost loop runs over that range.
"""
import numba
import numpy as np

from minidl.kernels.cpu import dot, threads_for

_PARALLEL = dict(cache=True, parallel=True)


@numba.njit(cache=True, inline="always")
def _valid_outputs(offset, step, size, out_size):
    """The outputs q in [lo, hi) whose tap reads inside the input: 0 <= offset + q·step < size."""
    lo = 0 if offset >= 0 else (step - 1 - offset) // step
    hi = 0 if offset >= size else min(out_size, (size - 1 - offset) // step + 1)
    return lo, max(lo, hi)


# One tap's reads along one output row are two views of equal length: the outputs lo..hi-1
# (contiguous) and the input columns col + q·step they read. A unit step stays a contiguous
# slice, which Numba vectorizes; any other step is a strided view.


@numba.njit(cache=True, inline="always")
def _axpy(a, x, y):
    """y += a·x on equal-length 1-D views."""
    for q in range(y.size):
        y[q] += a * x[q]


@numba.njit(cache=True, inline="always")
def _dot64(x, y):
    """Σ x·y over equal-length 1-D views, summed in float64 (a whole plane: too long for float32)."""
    total = 0.0
    for q in range(x.size):
        total += x[q] * y[q]
    return total


@numba.njit(cache=True, inline="always")
def _read_tap(out_row, in_row, col, lo, hi, step, tap):
    """Forward: out_row[q] += tap · in_row[col + q·step] for q in lo..hi-1."""
    if step == 1:
        _axpy(tap, in_row[col + lo : col + hi], out_row[lo:hi])
    else:
        _axpy(tap, in_row[col + lo * step : col + (hi - 1) * step + 1 : step], out_row[lo:hi])


@numba.njit(cache=True, inline="always")
def _return_tap(out_row, in_row, col, lo, hi, step, tap):
    """Grad input, the transpose of _read_tap: in_row[col + q·step] += tap · out_row[q]."""
    if step == 1:
        _axpy(tap, out_row[lo:hi], in_row[col + lo : col + hi])
    else:
        _axpy(tap, out_row[lo:hi], in_row[col + lo * step : col + (hi - 1) * step + 1 : step])


@numba.njit(cache=True, inline="always")
def _dot_tap(out_row, in_row, col, lo, hi, step):
    """Grad weight, one row's share: Σ_q out_row[q] · in_row[col + q·step]."""
    if step == 1:
        return dot(out_row[lo:hi], in_row[col + lo : col + hi])
    return dot(out_row[lo:hi], in_row[col + lo * step : col + (hi - 1) * step + 1 : step])


@numba.njit(cache=True, inline="always")
def _each_tap(out_plane, in_plane, taps, sh, sw, ph, pw, dh, dw, visit):
    """visit(output row, input row, col, lo, hi, sw, tap weight) for every tap that lands inside the input.

    The loop of forward and grad input: output row by output row, so the rows
    it touches stay in the cache while every tap passes over them.
    """
    height, width = in_plane.shape
    out_height, out_width = out_plane.shape
    kh, kw = taps.shape
    for p in range(out_height):
        for i in range(kh):
            row = p * sh + i * dh - ph
            if row < 0 or row >= height:
                continue
            for j in range(kw):
                col = j * dw - pw
                lo, hi = _valid_outputs(col, sw, width, out_width)
                if lo < hi:
                    visit(out_plane[p], in_plane[row], col, lo, hi, sw, taps[i, j])


@numba.njit(**_PARALLEL)
def _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw):
    images, out_channels = out.shape[:2]
    multiplier = out_channels // x.shape[1]
    for plane in numba.prange(images * out_channels):
        n, o = plane // out_channels, plane % out_channels
        out[n, o] = bias[o]
        _each_tap(out[n, o], x[n, o // multiplier], weight[o, 0], sh, sw, ph, pw, dh, dw, _read_tap)


@numba.njit(**_PARALLEL)
def _grad_input(grad, weight, gx, sh, sw, ph, pw, dh, dw):
    images, channels = gx.shape[:2]
    multiplier = grad.shape[1] // channels
    for plane in numba.prange(images * channels):
        n, c = plane // channels, plane % channels
        gx[n, c] = 0
        # every output channel reading channel c sends its gradient back along the taps it used
        for o in range(c * multiplier, (c + 1) * multiplier):
            _each_tap(grad[n, o], gx[n, c], weight[o, 0], sh, sw, ph, pw, dh, dw, _return_tap)


@numba.njit(**_PARALLEL, fastmath={"reassoc"})  # reassociation lets the row sums vectorize; NaNs still propagate
def _grad_weight(x, grad, partial, sh, sw, ph, pw, dh, dw):
    images, channels, height, width = x.shape
    _, out_channels, kh, kw = partial.shape
    multiplier = out_channels // channels
    out_height, out_width = grad.shape[2], grad.shape[3]
    for plane in numba.prange(images * out_channels):
        n, o = plane // out_channels, plane % out_channels
        src, g = x[n, o // multiplier], grad[n, o]
        # tap by tap, so each tap's sum stays in a register over the whole plane
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


# ---------------------------------------------------------------- stride 1: whole planes, at the padded pitch
# Output pixel (p, q) sits at p·pitch + q of a "wide" plane whose rows are as long as the padded input's
# (pitch = W + 2·pw), and tap (i, j) reads the padded input at that index + i·dh·pitch + j·dw. A wide plane
# holds (H_out - 1)·pitch + W_out values; the pitch - W_out values after each row are not outputs.


@numba.njit(cache=True, inline="always")
def _pad(plane, ph, pw):
    """The plane in the middle of a zeroed (H + 2·ph) × (W + 2·pw) buffer, flattened."""
    height, width = plane.shape
    pitch = width + 2 * pw
    padded = np.zeros((height + 2 * ph) * pitch, plane.dtype)
    for r in range(height):
        padded[(r + ph) * pitch + pw : (r + ph) * pitch + pw + width] = plane[r]
    return padded


@numba.njit(cache=True, inline="always")
def _widen(plane, pitch, wide):
    """An (H_out, W_out) plane into the wide layout, zeros between rows (so they add nothing)."""
    out_height, out_width = plane.shape
    wide[:] = 0
    for p in range(out_height):
        wide[p * pitch : p * pitch + out_width] = plane[p]


@numba.njit(**_PARALLEL)
def _forward_unit_stride(x, weight, bias, out, ph, pw, pitch, span, taps):
    images, channels = x.shape[:2]
    out_channels, out_height, out_width = out.shape[1:]
    multiplier = out_channels // channels
    for plane in numba.prange(images * channels):
        n, c = plane // channels, plane % channels
        padded, wide = _pad(x[n, c], ph, pw), np.empty(span, x.dtype)
        for o in range(c * multiplier, (c + 1) * multiplier):
            wide[:] = bias[o]
            for t in range(len(taps)):
                i, j, start = taps[t, 0], taps[t, 1], taps[t, 2]
                _axpy(weight[o, 0, i, j], padded[start : start + span], wide)
            for p in range(out_height):
                out[n, o, p] = wide[p * pitch : p * pitch + out_width]


@numba.njit(**_PARALLEL)
def _grad_input_unit_stride(grad, weight, gx, ph, pw, pitch, span, taps):
    images, channels, height, width = gx.shape
    multiplier = grad.shape[1] // channels
    for plane in numba.prange(images * channels):
        n, c = plane // channels, plane % channels
        padded, wide = np.zeros((height + 2 * ph) * pitch, gx.dtype), np.empty(span, gx.dtype)
        for o in range(c * multiplier, (c + 1) * multiplier):
            _widen(grad[n, o], pitch, wide)
            for t in range(len(taps)):  # each tap returns the gradient to where it read
                i, j, start = taps[t, 0], taps[t, 1], taps[t, 2]
                _axpy(weight[o, 0, i, j], wide, padded[start : start + span])
        for r in range(height):
            gx[n, c, r] = padded[(r + ph) * pitch + pw : (r + ph) * pitch + pw + width]


@numba.njit(**_PARALLEL, fastmath={"reassoc"})
def _grad_weight_unit_stride(x, grad, partial, ph, pw, pitch, span, taps):
    images, channels = x.shape[:2]
    multiplier = partial.shape[1] // channels
    for plane in numba.prange(images * channels):
        n, c = plane // channels, plane % channels
        padded, wide = _pad(x[n, c], ph, pw), np.empty(span, x.dtype)
        for o in range(c * multiplier, (c + 1) * multiplier):
            _widen(grad[n, o], pitch, wide)
            for t in range(len(taps)):
                i, j, start = taps[t, 0], taps[t, 1], taps[t, 2]
                partial[n, o, i, j] = _dot64(wide, padded[start : start + span])


def _unit_stride_layout(in_hw, out_hw, kernel_hw, padding, dilation):
    """(padding, pitch, span, taps) for the stride-1 kernels.

    ``taps`` holds (i, j, offset into the padded plane) of each tap that reads
    some input pixel. The others read only padding (ASPP's rates 12 and 18 on a
    7×7 map leave only the centre tap), add nothing and get no gradient.
    """
    (ph, pw), (dh, dw) = padding, dilation
    pitch = in_hw[1] + 2 * pw
    reaching = []  # per axis, the tap positions whose range of outputs reading inside the input is not empty
    for k, d, p, size, out in zip(kernel_hw, dilation, padding, in_hw, out_hw):
        ranges = [_valid_outputs(t * d - p, 1, size, out) for t in range(k)]
        reaching.append([t for t, (lo, hi) in enumerate(ranges) if lo < hi])
    taps = [(i, j, i * dh * pitch + j * dw) for i in reaching[0] for j in reaching[1]]
    return ph, pw, pitch, (out_hw[0] - 1) * pitch + out_hw[1], np.array(taps, np.int64).reshape(-1, 3)


# ---------------------------------------------------------------- the op's three calls
def _unit(stride):
    return tuple(stride) == (1, 1)


def forward(x, weight, bias, stride, padding, dilation, out_hw):
    x, weight = np.ascontiguousarray(x), np.ascontiguousarray(weight)
    out = np.empty(x.shape[:1] + weight.shape[:1] + out_hw, dtype=x.dtype)
    bias = np.zeros(weight.shape[0], dtype=x.dtype) if bias is None else bias
    with threads_for(out.size):
        if _unit(stride):
            layout = _unit_stride_layout(x.shape[2:], out_hw, weight.shape[2:], padding, dilation)
            _forward_unit_stride(x, weight, bias, out, *layout)
        else:
            _forward(x, weight, bias, out, *stride, *padding, *dilation)
    return out


def grad_input(grad, weight, x_shape, stride, padding, dilation):
    gx = np.empty(x_shape, dtype=grad.dtype)
    grad, weight = np.ascontiguousarray(grad), np.ascontiguousarray(weight)
    with threads_for(gx.size):
        if _unit(stride):
            layout = _unit_stride_layout(x_shape[2:], grad.shape[2:], weight.shape[2:], padding, dilation)
            _grad_input_unit_stride(grad, weight, gx, *layout)
        else:
            _grad_input(grad, weight, gx, *stride, *padding, *dilation)
    return gx


def grad_weight(x, grad, weight_shape, stride, padding, dilation):
    # per-image partial sums in float64, added up over the batch at the end (zero for a tap that reads no input)
    partial = np.zeros((x.shape[0], weight_shape[0]) + weight_shape[2:], dtype=np.float64)
    x, grad = np.ascontiguousarray(x), np.ascontiguousarray(grad)
    with threads_for(grad.size):
        if _unit(stride):
            layout = _unit_stride_layout(x.shape[2:], grad.shape[2:], weight_shape[2:], padding, dilation)
            _grad_weight_unit_stride(x, grad, partial, *layout)
        else:
            _grad_weight(x, grad, partial, *stride, *padding, *dilation)
    return partial.sum(axis=0).astype(x.dtype).reshape(weight_shape)
