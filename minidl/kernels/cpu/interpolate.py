"""Bilinear resizing on the CPU: separable loops, one (image, channel) plane per thread.

The same computation as the readable version in minidl.functional.interpolate,
and with the same taps (two input positions and two weights per output row and
column, worked out there). Each plane is resized along W first, one input row
at a time, into a scratch block of (input rows × output columns); every output
row is then a blend of two of those rows, an innermost loop that runs over
contiguous memory and vectorises. Backward runs the same two steps in reverse:
output rows hand their gradient to two scratch rows, then each scratch row
hands its columns back to the input columns they came from. Planes are
independent, so ``prange`` spreads them over the cores without any two
threads writing to the same place.

The outputs are allocated by NumPy, not inside the kernels: NumPy asks the
system for huge pages for large arrays, whereas filling a fresh output one small
page at a time (a page fault each) cost more than the resizing itself.
"""
import numba
import numpy as np

from minidl.kernels.cpu import threads_for


@numba.njit(cache=True, parallel=True)
def _forward(x, out, h0, h1, hw0, hw1, w0, w1, ww0, ww1):
    planes, in_h, in_w = x.shape
    out_h, out_w = h0.size, w0.size
    needed = np.zeros(in_h, np.bool_)  # when shrinking, only some input rows are ever read
    needed[h0] = True
    needed[h1] = True
    for p in numba.prange(planes):
        rows = np.empty((in_h, out_w), x.dtype)  # the plane resized along W
        for ih in range(in_h):
            if needed[ih]:
                for ow in range(out_w):
                    rows[ih, ow] = ww0[ow] * x[p, ih, w0[ow]] + ww1[ow] * x[p, ih, w1[ow]]
        for oh in range(out_h):
            a, b, wa, wb = h0[oh], h1[oh], hw0[oh], hw1[oh]
            for ow in range(out_w):
                out[p, oh, ow] = wa * rows[a, ow] + wb * rows[b, ow]


@numba.njit(cache=True, parallel=True)
def _backward(g, gx, h0, h1, hw0, hw1, w0, w1, ww0, ww1):
    planes, out_h, out_w = g.shape
    in_h = gx.shape[1]
    for p in numba.prange(planes):
        rows = np.zeros((in_h, out_w), g.dtype)  # the gradient of the plane resized along W
        for oh in range(out_h):
            a, b, wa, wb = h0[oh], h1[oh], hw0[oh], hw1[oh]
            for ow in range(out_w):
                rows[a, ow] += wa * g[p, oh, ow]
                rows[b, ow] += wb * g[p, oh, ow]
        for ih in range(in_h):
            for ow in range(out_w):
                gx[p, ih, w0[ow]] += ww0[ow] * rows[ih, ow]
                gx[p, ih, w1[ow]] += ww1[ow] * rows[ih, ow]


def _planes(a):
    """(N, C, H, W) as (N·C, H, W), contiguous."""
    return np.ascontiguousarray(a).reshape(-1, a.shape[2], a.shape[3])


def _arguments(h_taps, w_taps):
    """The taps ((index0, weight0), (index1, weight1)) of both axes as the kernels' eight arrays."""
    (h0, hw0), (h1, hw1) = h_taps
    (w0, ww0), (w1, ww1) = w_taps
    return h0, h1, hw0, hw1, w0, w1, ww0, ww1


def bilinear_forward(x, h_taps, w_taps):
    """Resize (N, C, H, W) with the taps of each axis (see minidl.functional.interpolate)."""
    out = np.empty(x.shape[:2] + (h_taps[0][0].size, w_taps[0][0].size), x.dtype)
    with threads_for(out.size):
        _forward(_planes(x), _planes(out), *_arguments(h_taps, w_taps))
    return out


def bilinear_backward(g, h_taps, w_taps, in_size):
    """The gradient of ``bilinear_forward`` with respect to its input of spatial size ``in_size``."""
    gx = np.zeros(g.shape[:2] + tuple(in_size), g.dtype)
    with threads_for(g.size):
        _backward(_planes(g), _planes(gx), *_arguments(h_taps, w_taps))
    return gx
