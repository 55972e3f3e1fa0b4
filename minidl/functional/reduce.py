"""Reductions: sum, mean, amax/amin, max/min along a dimension, argmax/argmin.

A reduction's backward sends the output gradient back to the elements that
made each output: all of them for sum (and 1/n of it for mean), the largest
for max. Without ``keepdim`` the reduced axes are gone from the gradient, so
backward first puts them back as size-1 axes and then broadcasts.
"""
from collections import namedtuple

import numpy as np

from minidl.backend import get_array_module
from minidl.functional.shape import gather, normalize_dim
from minidl.tensor import Function, Tensor


def reduced_axes(op, ndim, dim):
    """The tuple of axes to reduce: all for None, else each dim checked and made non-negative."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    axes = tuple(normalize_dim(op, d, ndim) for d in dims)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: dim {dim} names the same dimension twice")
    return axes


def _grad_to_input(g, shape, axes, keepdim):
    """Broadcast a reduction's output gradient back to the input's shape."""
    xp = get_array_module(g)
    if not keepdim:
        g = xp.expand_dims(g, axes)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        return x.sum(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        return _grad_to_input(g, ctx.shape, ctx.axes, ctx.keepdim), None, None


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axes, keepdim):
        ctx.shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        ctx.count = int(np.prod([x.shape[a] for a in axes]))
        xp = get_array_module(x)
        # the mean of nothing is NaN, as in PyTorch (NumPy would also warn)
        total = x.sum(axis=axes, keepdims=keepdim)
        return total / ctx.count if ctx.count else xp.full_like(total, xp.nan)

    @staticmethod
    def backward(ctx, g):
        return _grad_to_input(g / (ctx.count or 1), ctx.shape, ctx.axes, ctx.keepdim), None, None


class Amax(Function):
    """The largest value over some axes; ties share the gradient equally (as torch.amax)."""

    @staticmethod
    def forward(ctx, x, axes, keepdim, largest):
        y = x.max(axis=axes, keepdims=True) if largest else x.min(axis=axes, keepdims=True)
        ctx.save_for_backward(x, y)
        ctx.axes, ctx.keepdim = axes, keepdim
        return y if keepdim else y.squeeze(axis=axes)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved
        hit = (x == y).astype(g.dtype)
        share = hit / hit.sum(axis=ctx.axes, keepdims=True)
        return _grad_to_input(g, x.shape, ctx.axes, ctx.keepdim) * share, None, None, None


def sum(input, dim=None, keepdim=False, *, axis=None):  # noqa: A001  (PyTorch's name)
    dim = axis if dim is None else dim
    return Sum.apply(input, reduced_axes("sum", input.ndim, dim), keepdim)


def mean(input, dim=None, keepdim=False, *, axis=None):
    dim = axis if dim is None else dim
    return Mean.apply(input, reduced_axes("mean", input.ndim, dim), keepdim)


def _extremum(op, input, dim, keepdim, largest):
    axes = reduced_axes(op, input.ndim, dim)
    if any(input.shape[a] == 0 for a in axes):
        raise ValueError(f"{op}: cannot reduce a tensor of shape {input.shape} with no elements along dim {dim}")
    return Amax.apply(input, axes, keepdim, largest)


def amax(input, dim=None, keepdim=False):
    return _extremum("amax", input, dim, keepdim, largest=True)


def amin(input, dim=None, keepdim=False):
    return _extremum("amin", input, dim, keepdim, largest=False)


def _arg_extremum(op, input, dim, keepdim, largest):
    if input.numel() == 0:
        raise ValueError(f"{op}: cannot reduce a tensor of shape {input.shape} with no elements")
    xp = get_array_module(input.data)
    find = xp.argmax if largest else xp.argmin
    if dim is None:
        index = find(input.data)
        return Tensor(index.reshape((1,) * input.ndim) if keepdim else xp.asarray(index))
    axis = normalize_dim(op, dim, input.ndim)
    return Tensor(find(input.data, axis=axis, keepdims=keepdim))


def argmax(input, dim=None, keepdim=False):
    return _arg_extremum("argmax", input, dim, keepdim, largest=True)


def argmin(input, dim=None, keepdim=False):
    return _arg_extremum("argmin", input, dim, keepdim, largest=False)


ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _max_or_min(op, input, dim, keepdim, axis, largest):
    dim = axis if dim is None else dim
    if dim is None:  # the whole tensor: ties share the gradient, as in PyTorch
        return _extremum(op, input, None, False, largest)
    if not isinstance(dim, int):
        raise TypeError(f"{op}: dim must be an int (use amax/amin for several dims), got {dim!r}")
    index = _arg_extremum(op, input, dim, True, largest)
    # The values are gathered at the index, so the gradient goes to that one element.
    values = gather(input, dim, index)
    if not keepdim:
        values, index = values.squeeze(dim), index.squeeze(dim)
    return ValuesIndices(values, index)


def max(input, dim=None, keepdim=False, *, axis=None):  # noqa: A001
    """``max(x)`` is the largest value; ``max(x, dim)`` is (values, indices) as in PyTorch."""
    return _max_or_min("max", input, dim, keepdim, axis, largest=True)


def min(input, dim=None, keepdim=False, *, axis=None):  # noqa: A001
    return _max_or_min("min", input, dim, keepdim, axis, largest=False)
