"""Log-softmax and the negative log-likelihood's gradient as Numba loops, over one block of pixels per thread.

The compiled twins of the readable steps in ``minidl.functional.loss``.

Every array arrives as (outer, C, inner): the axes before the class axis flattened into one, those after it into
another, so segmentation's (N, C, H, W) is (N, C, H·W). A thread takes a block of one image's pixels and goes
through the classes a row at a time, so every read and write runs along contiguous memory. The readable
log-softmax makes six passes over the scores and four temporaries of their size (the shifted scores, their
exponentials, …); here the scores are read three times while the block is still in the cache, and the result
written once.
"""
import numba
import numpy as np

from minidl.kernels.cpu import threads_for

_BLOCK = 512  # pixels a thread takes at a time: C rows of them stay in the cache between passes


@numba.njit(cache=True, inline="always")
def _block(job, blocks, inner):
    """The image and the pixel range [start, stop) of a job."""
    start = job % blocks * _BLOCK
    return job // blocks, start, min(inner, start + _BLOCK)


@numba.njit(cache=True, parallel=True)
def _log_softmax(x, y):
    outer, classes, inner = x.shape
    blocks = (inner + _BLOCK - 1) // _BLOCK
    for job in numba.prange(outer * blocks):
        n, start, stop = _block(job, blocks, inner)
        top = x[n, 0, start:stop].copy()
        for c in range(1, classes):  # the max first, so that no exponential overflows
            top = np.maximum(top, x[n, c, start:stop])
        total = np.zeros(stop - start, np.float64)
        for c in range(classes):
            total += np.exp(x[n, c, start:stop] - top)
        shift = top + np.log(total).astype(x.dtype)
        for c in range(classes):
            y[n, c, start:stop] = x[n, c, start:stop] - shift


@numba.njit(cache=True, parallel=True)
def _log_softmax_grad(g, y, dx):
    outer, classes, inner = y.shape
    blocks = (inner + _BLOCK - 1) // _BLOCK
    for job in numba.prange(outer * blocks):
        n, start, stop = _block(job, blocks, inner)
        total = g[n, 0, start:stop].copy()
        for c in range(1, classes):
            total += g[n, c, start:stop]
        for c in range(classes):
            dx[n, c, start:stop] = g[n, c, start:stop] - np.exp(y[n, c, start:stop]) * total


@numba.njit(cache=True, parallel=True)
def _one_hot_scaled(target, coef, out):
    outer, classes, inner = out.shape
    blocks = (inner + _BLOCK - 1) // _BLOCK
    for job in numba.prange(outer * blocks):
        n, start, stop = _block(job, blocks, inner)
        for c in range(classes):
            out[n, c, start:stop] = 0
        for k in range(start, stop):
            out[n, target[n, k], k] = coef[n, k]


def _around(shape, axis):
    """(outer, C, inner) for the class axis ``axis`` of ``shape``."""
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    return outer, shape[axis], int(np.prod(shape[axis + 1:], dtype=np.int64))


def log_softmax(x, axis):
    """x - log Σ exp(x) along ``axis``, shifted by the max."""
    y = np.empty(x.shape, x.dtype)
    flat = _around(x.shape, axis)
    with threads_for(x.size):
        _log_softmax(np.ascontiguousarray(x).reshape(flat), y.reshape(flat))
    return y


def log_softmax_grad(g, y, axis):
    """g - softmax · Σ g along ``axis``: log-softmax's input gradient from its output ``y``."""
    dx = np.empty(y.shape, y.dtype)
    flat = _around(y.shape, axis)
    with threads_for(y.size):
        _log_softmax_grad(np.ascontiguousarray(g).reshape(flat), np.ascontiguousarray(y).reshape(flat),
                          dx.reshape(flat))
    return dx


def one_hot_scaled(target, coef, classes, dtype):
    """(N, C, ...) zeros, with coef[n, ...] at class target[n, ...]: NLL's gradient."""
    out = np.empty((target.shape[0], classes) + target.shape[1:], dtype)
    flat = _around(out.shape, 1)
    with threads_for(out.size):
        _one_hot_scaled(np.ascontiguousarray(target).reshape(flat[0], flat[2]),
                        np.ascontiguousarray(coef, dtype).reshape(flat[0], flat[2]), out.reshape(flat))
    return out
