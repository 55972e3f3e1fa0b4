"""Bilinear resizing on the GPU: one thread per output pixel.

The same taps as the readable version in minidl.functional.interpolate (two
input positions and two weights per output row and column, worked out there).
Forward: each thread blends its four input neighbours, along W then along H,
in the same order as the CPU versions. Backward: each thread adds its gradient,
times the four weights, onto the four input pixels it read. Neighbouring output
pixels share input pixels, so the adds are atomic; the other way round (each
input pixel gathering from the outputs that read it) needs no atomics but has
to invert the taps, and with at most about scale² writers per input pixel the
atomics contend little.
"""
from numba import cuda

from minidl.backend import get_array_module
from minidl.kernels.cuda.common import launch


@cuda.jit(device=True)
def _neighbours(i, planes, h0, h1, w0, w1):
    """Plane, row and column of flat output index i, and the input rows a, b and columns c, d it reads."""
    _, out_h, out_w = planes.shape
    oh, ow = i // out_w % out_h, i % out_w
    return i // (out_h * out_w), oh, ow, h0[oh], h1[oh], w0[ow], w1[ow]


@cuda.jit
def _forward(x, out, h0, h1, hw0, hw1, w0, w1, ww0, ww1):
    i = cuda.grid(1)
    if i >= out.size:
        return
    p, oh, ow, a, b, c, d = _neighbours(i, out, h0, h1, w0, w1)
    row_a = ww0[ow] * x[p, a, c] + ww1[ow] * x[p, a, d]
    row_b = ww0[ow] * x[p, b, c] + ww1[ow] * x[p, b, d]
    out[p, oh, ow] = hw0[oh] * row_a + hw1[oh] * row_b


@cuda.jit
def _backward(g, gx, h0, h1, hw0, hw1, w0, w1, ww0, ww1):
    i = cuda.grid(1)
    if i >= g.size:
        return
    p, oh, ow, a, b, c, d = _neighbours(i, g, h0, h1, w0, w1)
    grad_a, grad_b = hw0[oh] * g[p, oh, ow], hw1[oh] * g[p, oh, ow]
    cuda.atomic.add(gx, (p, a, c), ww0[ow] * grad_a)
    cuda.atomic.add(gx, (p, a, d), ww1[ow] * grad_a)
    cuda.atomic.add(gx, (p, b, c), ww0[ow] * grad_b)
    cuda.atomic.add(gx, (p, b, d), ww1[ow] * grad_b)


def _planes(a):
    """(N, C, H, W) as (N·C, H, W), contiguous."""
    return get_array_module(a).ascontiguousarray(a).reshape(-1, a.shape[2], a.shape[3])


def _arguments(h_taps, w_taps):
    """The taps ((index0, weight0), (index1, weight1)) of both axes as the kernels' eight arrays."""
    (h0, hw0), (h1, hw1) = h_taps
    (w0, ww0), (w1, ww1) = w_taps
    return h0, h1, hw0, hw1, w0, w1, ww0, ww1


def bilinear_forward(x, h_taps, w_taps):
    """Resize (N, C, H, W) with the taps of each axis (see minidl.functional.interpolate)."""
    out = get_array_module(x).empty(x.shape[:2] + (h_taps[0][0].size, w_taps[0][0].size), x.dtype)
    planes = _planes(out)
    launch(_forward, planes, _planes(x), planes, *_arguments(h_taps, w_taps))
    return out


def bilinear_backward(g, h_taps, w_taps, in_size):
    """The gradient of ``bilinear_forward`` with respect to its input of spatial size ``in_size``."""
    gx = get_array_module(g).zeros(g.shape[:2] + tuple(in_size), g.dtype)
    planes = _planes(g)
    launch(_backward, planes, planes, _planes(gx), *_arguments(h_taps, w_taps))
    return gx
