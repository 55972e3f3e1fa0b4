"""Depthwise convolution on the GPU: one thread per output or input pixel, one block per weight tap.

Forward gives each output pixel a thread that sums its kh×kw taps. The input
gradient is a gather, not a scatter: each input pixel's thread finds the
output pixels whose taps read it (those where the offset divides by the
stride) and sums their gradients, so no two threads write the same place and
no atomics are needed. The weight gradient of one (channel, tap) is a sum
over the batch and the output pixels: one block per (channel, tap) strides
over them and reduces in shared memory.
"""
import math

import numba
from numba import cuda

from minidl.backend import get_array_module

THREADS = 128  # threads per block; the shared-memory reduction needs a power of two


def _blocks(count):
    return max(1, math.ceil(count / THREADS))


@cuda.jit
def _forward(x, weight, bias, out, sh, sw, ph, pw, dh, dw):
    index = cuda.grid(1)
    images, out_channels, out_height, out_width = out.shape
    if index >= out.size:
        return
    q, p = index % out_width, index // out_width % out_height
    o, n = index // (out_width * out_height) % out_channels, index // (out_width * out_height * out_channels)
    height, width = x.shape[2], x.shape[3]
    c = o // (out_channels // x.shape[1])
    total = bias[o]
    for i in range(weight.shape[2]):
        row = p * sh + i * dh - ph
        if 0 <= row < height:
            for j in range(weight.shape[3]):
                col = q * sw + j * dw - pw
                if 0 <= col < width:
                    total += weight[o, 0, i, j] * x[n, c, row, col]
    out[n, o, p, q] = total


@cuda.jit(device=True)
def _source(pixel, tap, step, pad, rate, out_size):
    """The output index whose tap ``tap`` reads input ``pixel``, or -1 when none does."""
    offset = pixel + pad - tap * rate
    if offset < 0 or offset % step != 0 or offset // step >= out_size:
        return -1
    return offset // step


@cuda.jit
def _grad_input(grad, weight, gx, sh, sw, ph, pw, dh, dw):
    index = cuda.grid(1)
    images, channels, height, width = gx.shape
    if index >= gx.size:
        return
    col, row = index % width, index // width % height
    c, n = index // (width * height) % channels, index // (width * height * channels)
    out_channels, out_height, out_width = grad.shape[1], grad.shape[2], grad.shape[3]
    multiplier = out_channels // channels
    total = 0.0
    for o in range(c * multiplier, (c + 1) * multiplier):
        for i in range(weight.shape[2]):
            p = _source(row, i, sh, ph, dh, out_height)
            if p >= 0:
                for j in range(weight.shape[3]):
                    q = _source(col, j, sw, pw, dw, out_width)
                    if q >= 0:
                        total += weight[o, 0, i, j] * grad[n, o, p, q]
    gx[n, c, row, col] = total


@cuda.jit
def _grad_weight(x, grad, gw, sh, sw, ph, pw, dh, dw):
    # block b sums tap (i, j) of output channel o, with b = (o·kh + i)·kw + j
    kh, kw = gw.shape[2], gw.shape[3]
    j, i, o = cuda.blockIdx.x % kw, cuda.blockIdx.x // kw % kh, cuda.blockIdx.x // (kw * kh)
    images, out_channels, out_height, out_width = grad.shape
    height, width = x.shape[2], x.shape[3]
    c = o // (out_channels // x.shape[1])
    total = 0.0
    for index in range(cuda.threadIdx.x, images * out_height * out_width, THREADS):
        q, p, n = index % out_width, index // out_width % out_height, index // (out_width * out_height)
        row, col = p * sh + i * dh - ph, q * sw + j * dw - pw
        if 0 <= row < height and 0 <= col < width:
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
    _forward[_blocks(out.size), THREADS](x, weight, bias, out, *stride, *padding, *dilation)
    return out


def grad_input(grad, weight, x_shape, stride, padding, dilation):
    xp = get_array_module(grad)
    gx = xp.empty(x_shape, dtype=grad.dtype)
    grad, weight = xp.ascontiguousarray(grad), xp.ascontiguousarray(weight)
    _grad_input[_blocks(gx.size), THREADS](grad, weight, gx, *stride, *padding, *dilation)
    return gx


def grad_weight(x, grad, weight_shape, stride, padding, dilation):
    xp = get_array_module(x)
    gw = xp.empty(weight_shape, dtype=x.dtype)
    x, grad = xp.ascontiguousarray(x), xp.ascontiguousarray(grad)
    _grad_weight[gw.size, THREADS](x, grad, gw, *stride, *padding, *dilation)
    return gw
