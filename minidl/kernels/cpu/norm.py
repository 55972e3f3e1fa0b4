"""Batch normalization on the CPU: each pass over the data done once, in a loop, with no temporaries.

The same four steps as the readable version in minidl.functional.norm. There
every NumPy expression is a pass over the whole tensor with a temporary the
size of the input (x - μ, its square, g·x̂, …: about a dozen per training
step); here statistics and sums read a channel's values while they are still
in the cache, and the two elementwise steps write their result directly.
Channels are independent, so ``prange`` spreads them over the cores. Sums are
accumulated in float64 whatever the input's dtype, as PyTorch does on the CPU.

Every array arrives as (N, C, M): the spatial axes flattened into one.
"""
import numba
import numpy as np

from minidl.kernels.cpu import threads_for

# reassociation lets the float64 sums vectorize; NaNs still propagate
_SUMS = dict(cache=True, parallel=True, fastmath={"reassoc"})


@numba.njit(**_SUMS)
def _statistics(x, mean, var):
    images, channels, pixels = x.shape
    for c in numba.prange(channels):
        total = 0.0
        for n in range(images):
            for k in range(pixels):
                total += x[n, c, k]
        mu = total / (images * pixels)
        # a second pass around the mean, not Σx² - (Σx)²/m, which cancels when the mean is large
        spread = 0.0
        for n in range(images):
            for k in range(pixels):
                d = x[n, c, k] - mu
                spread += d * d
        mean[c], var[c] = mu, spread / (images * pixels)


@numba.njit(cache=True, parallel=True)
def _normalize(x, scale, shift, out):
    images, channels, pixels = x.shape
    for plane in numba.prange(images * channels):
        n, c = plane // channels, plane % channels
        for k in range(pixels):
            out[n, c, k] = x[n, c, k] * scale[c] + shift[c]


@numba.njit(**_SUMS)
def _grad_sums(g, x, mean, sum_g, sum_g_centred):
    images, channels, pixels = x.shape
    for c in numba.prange(channels):
        total, product = 0.0, 0.0
        for n in range(images):
            for k in range(pixels):
                total += g[n, c, k]
                product += g[n, c, k] * (x[n, c, k] - mean[c])
        sum_g[c], sum_g_centred[c] = total, product


@numba.njit(cache=True, parallel=True)
def _grad_input(g, x, mean, g_shift, x_slope, scale, dx):
    images, channels, pixels = x.shape
    for plane in numba.prange(images * channels):
        n, c = plane // channels, plane % channels
        for k in range(pixels):
            dx[n, c, k] = (g[n, c, k] - g_shift[c] - (x[n, c, k] - mean[c]) * x_slope[c]) * scale[c]


def _flat(a):
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


def statistics(x):
    """Per channel: the batch mean and the biased variance (divided by the count)."""
    mean, var = np.empty(x.shape[1]), np.empty(x.shape[1])
    with threads_for(x.size):
        _statistics(_flat(x), mean, var)
    return mean.astype(x.dtype), var.astype(x.dtype)


def normalize(x, scale, shift):
    """x·scale + shift, per channel."""
    flat = _flat(x)
    out = np.empty(flat.shape, x.dtype)
    with threads_for(x.size):
        _normalize(flat, scale.astype(x.dtype), shift.astype(x.dtype), out)
    return out.reshape(x.shape)


def grad_sums(g, x, mean):
    """Per channel: Σ g and Σ g·(x - μ)."""
    sum_g, sum_g_centred = np.empty(x.shape[1]), np.empty(x.shape[1])
    with threads_for(x.size):
        _grad_sums(_flat(g), _flat(x), mean.astype(np.float64), sum_g, sum_g_centred)
    return sum_g.astype(x.dtype), sum_g_centred.astype(x.dtype)


def grad_input(g, x, mean, invstd, scale, sum_g, sum_g_centred):
    """(g - mean(g) - x̂·mean(g·x̂))·scale, x̂ = (x - μ)·invstd: the input's gradient in training."""
    count = x.size // x.shape[1]
    g_shift, x_slope = sum_g / count, sum_g_centred * invstd * invstd / count
    flat = _flat(x)
    dx = np.empty(flat.shape, x.dtype)
    with threads_for(x.size):
        _grad_input(_flat(g), flat, mean, g_shift.astype(x.dtype), x_slope.astype(x.dtype), scale.astype(x.dtype), dx)
    return dx.reshape(x.shape)
