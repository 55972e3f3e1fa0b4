"""Depthwise convolution on the GPU: one thread per output or input pixel, one block per weight tap.

Forward gives each output pixel a thread that sums its kh×kw taps. The input
gradient is a gather, not a scatter: each input pixel's thread finds the
output pixels whose taps read it (those where the offset divides by the
stride) and sums their gradients, so no two threads write the same place and
no atomics are needed. The weight gradient of one (channel, tap) is a sum
over the batch and the output pixels: one block per (channel, tap) strides
over them and reduces in shared memory.
"""
import numba
from numba import cuda

from minidl.backend import get_array_module
from minidl.kernels.cuda.common import divide, grid, launch, window_position

THREADS = 128  # threads per block of the weight-gradient reduction: a power of two


@cuda.jit
def _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw):
    rest, q = divide(cuda.grid(1), out.shape[3])
    rest, p = divide(rest, out.shape[2])
    n, o = divide(rest, out.shape[1])
    if n >= out.shape[0]:
        return
    height, width = x.shape[2], x.shape[3]
    c = o // (out.shape[1] // x.shape[1])
    total = bias[o]
    for i in range(weight.shape[2]):
        row = p * sh + i * dh - ph
        if 0 <= row < height:
            for j in range(weight.shape[3]):
                col = q * sw + j * dw - pw
                if 0 <= col < width:
                    total += weight[o, 0, i, j] * x[n, c, row, col]
    out[n, o, p, q] = total


@cuda.jit
def _grad_input(grad, weight, gx, sh, sw, ph, pw, dh, dw):
    rest, col = divide(cuda.grid(1), gx.shape[3])
    rest, row = divide(rest, gx.shape[2])
    n, c = divide(rest, gx.shape[1])
    if n >= gx.shape[0]:
        return
    multiplier = grad.shape[1] // gx.shape[1]
    total = 0.0  # at most m·kh·kw terms; summed in float64, rounded once when stored
    for o in range(c * multiplier, (c + 1) * multiplier):
        # the output pixel whose tap (i, j) reads (row, col), if any
        for i in range(weight.shape[2]):
            p = window_position(row, i, sh, ph, dh, grad.shape[2])
            if p >= 0:
                for j in range(weight.shape[3]):
                    q = window_position(col, j, sw, pw, dw, grad.shape[3])
                    if q >= 0:
                        total += weight[o, 0, i, j] * grad[n, o, p, q]
    gx[n, c, row, col] = total


@cuda.jit
def _grad_weight(x, grad, gw, sh, sw, ph, pw, dh, dw):
    # block b sums tap (i, j) of output channel o, with b = (o·kh + i)·kw + j
    rest, j = divide(cuda.blockIdx.x, gw.shape[3])
    o, i = divide(rest, gw.shape[2])
    images, out_channels, out_height, out_width = grad.shape
    c = o // (out_channels // x.shape[1])
    total = 0.0
    for index in range(cuda.threadIdx.x, images * out_height * out_width, THREADS):
        rest, q = divide(index, out_width)
        n, p = divide(rest, out_height)
        row, col = p * sh + i * dh - ph, q * sw + j * dw - pw
        if 0 <= row < x.shape[2] and 0 <= col < x.shape[3]:
            total += grad[n, o, p, q] * x[n, c, row, col]
    partial = cuda.shared.array(THREADS, numba.float64)
    partial[cuda.threadIdx.x] = total
    cuda.syncthreads()
    half = THREADS // 2
    while half > 0:
        if cuda.threadIdx.x < half:
            partial[cuda.threadIdx.x] += partial[cuda.threadIdx.x + half]
        cuda.syncthreads()
        half //= 2
    if cuda.threadIdx.x == 0:
        gw[o, 0, i, j] = partial[0]


def forward(x, weight, bias, stride, padding, dilation, out_hw):
    xp = get_array_module(x)
    x, weight = xp.ascontiguousarray(x), xp.ascontiguousarray(weight)
    out = xp.empty(x.shape[:1] + weight.shape[:1] + out_hw, dtype=x.dtype)
    bias = xp.zeros(weight.shape[0], dtype=x.dtype) if bias is None else bias
    launch(_forward, out, x, weight, bias, out, *stride, *padding, *dilation)
    return out


def grad_input(grad, weight, x_shape, stride, padding, dilation):
    xp = get_array_module(grad)
    gx = xp.empty(x_shape, dtype=grad.dtype)
    grad, weight = xp.ascontiguousarray(grad), xp.ascontiguousarray(weight)
    launch(_grad_input, gx, grad, weight, gx, *stride, *padding, *dilation)
    return gx


def grad_weight(x, grad, weight_shape, stride, padding, dilation):
    xp = get_array_module(x)
    gw = xp.empty(weight_shape, dtype=x.dtype)
    x, grad = xp.ascontiguousarray(x), xp.ascontiguousarray(grad)
    grid(_grad_weight, gw.size, THREADS, x, grad, gw, *stride, *padding, *dilation)
    return gw
