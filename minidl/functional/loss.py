"""Softmax, log-softmax and the classification losses built on them.

``cross_entropy`` is ``nll_loss(log_softmax(input, 1), target)``, as in PyTorch:
two Functions, each with a short closed-form backward. For segmentation the
input is (N, C, H, W) and the target (N, H, W); pixels labelled
``ignore_index`` (255 in Pascal VOC) contribute nothing, to the loss or to the
count it is averaged over.
"""
from types import SimpleNamespace

import numpy as np

from minidl import kernels
from minidl.backend import check_later, get_array_module, on_device_of
from minidl.functional.shape import normalize_dim
from minidl.tensor import Function, Tensor


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=axis, keepdims=True))  # shifting by the max cannot overflow
        y = e / e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return y * (g - (g * y).sum(axis=ctx.axis, keepdims=True)), None


# Log-softmax's two steps and NLL's gradient, in readable array code; minidl.kernels.cpu.loss compiles the same.
def _log_softmax_numpy(x, axis):
    """x - log Σ exp(x) along ``axis``, shifted by the max so that no exponential overflows."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def _log_softmax_grad_numpy(g, y, axis):
    """g - softmax · Σ g along ``axis``, softmax = exp(y) from log-softmax's output ``y``."""
    return g - get_array_module(y).exp(y) * g.sum(axis=axis, keepdims=True)


def _one_hot_scaled_numpy(target, coef, classes, dtype):
    """(N, C, ...) zeros, with coef[n, ...] at class target[n, ...]."""
    xp = get_array_module(target)
    ids = xp.arange(classes).reshape((1, -1) + (1,) * (target.ndim - 1))
    return (ids == target[:, None]) * coef[:, None].astype(dtype, copy=False)


_READABLE = SimpleNamespace(log_softmax=_log_softmax_numpy, log_softmax_grad=_log_softmax_grad_numpy,
                            one_hot_scaled=_one_hot_scaled_numpy)


def _implementation(x):
    """The compiled kernels for x's device and dtype, or the readable NumPy/CuPy code."""
    return kernels.for_float_array(x, "loss", _READABLE)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, axis):
        y = _implementation(x).log_softmax(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return _implementation(y).log_softmax_grad(g, y, ctx.axis), None


class NLLLoss(Function):
    """-logp[n, target[n], ...] weighted per class; ignored positions weigh 0."""

    @staticmethod
    def forward(ctx, logp, target, weight, ignore_index, reduction):
        xp = get_array_module(logp)
        keep = target != ignore_index
        # any valid class id where ignored (its weight is 0 anyway); clipped, because on a GPU a class id
        # out of range is reported only at the next read (see _check_class_target), not before this
        safe_target = xp.where(keep, target, 0).clip(0, logp.shape[1] - 1)
        w = keep.astype(logp.dtype) if weight is None else weight[safe_target] * keep
        picked = xp.take_along_axis(logp, safe_target[:, None], axis=1)[:, 0]
        losses = -picked * w
        ctx.shape, ctx.reduction = logp.shape, reduction
        ctx.safe_target, ctx.w = safe_target, w
        if reduction == "none":
            return losses
        if reduction == "sum":
            return losses.sum()
        # mean over the total weight; all positions ignored gives 0/0 = NaN, as in PyTorch
        ctx.total_weight = w.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            return losses.sum() / ctx.total_weight

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        coef = -ctx.w * g  # g is a scalar for 'sum' and 'mean', per position for 'none'
        if ctx.reduction == "mean":
            # nothing counted: the loss is NaN but, as in PyTorch, no position gets a gradient (every
            # w is 0 then, so any divisor does; chosen on the device, without reading the total back)
            coef = coef / xp.where(ctx.total_weight == 0, 1, ctx.total_weight)
        grad = _implementation(g).one_hot_scaled(ctx.safe_target, coef, ctx.shape[1], g.dtype)
        return grad, None, None, None, None


def softmax(input, dim):
    return Softmax.apply(input, normalize_dim("softmax", dim, input.ndim))


def log_softmax(input, dim):
    return LogSoftmax.apply(input, normalize_dim("log_softmax", dim, input.ndim))


_REDUCTIONS = ("none", "mean", "sum")


def _check_class_target(op, input, target, weight, ignore_index):
    """Integer targets of the right shape, each a class id in [0, C) or ``ignore_index``."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class ids, got dtype {target.dtype}")
    expected = (input.shape[0],) + input.shape[2:]
    if tuple(target.shape) != expected:
        raise ValueError(
            f"{op}: input of shape {input.shape} needs a target of shape {expected}, got {tuple(target.shape)}"
        )
    classes = input.shape[1]
    xp = get_array_module(target)

    def out_of_range():
        with on_device_of(target):
            found = sorted(set(int(v) for v in xp.unique(target[bad])[:5].tolist()))
        return ValueError(
            f"{op}: target holds class ids outside [0, {classes}) that are not ignore_index={ignore_index}: "
            f"found {found}"
        )

    with on_device_of(target):
        bad = ((target < 0) | (target >= classes)) & (target != ignore_index)
        if xp is np:
            if bad.any():
                raise out_of_range()
        else:  # on a GPU, raised at the next read back to the host (as PyTorch's CUDA kernels do)
            check_later(bad.any(), out_of_range)
    if weight is not None and tuple(weight.shape) != (classes,):
        raise ValueError(f"{op}: weight must have shape ({classes},), one per class, got {tuple(weight.shape)}")


def _unbatched(op, input, target):
    """(C,) input with a scalar target becomes a batch of one, as PyTorch allows."""
    if input.ndim < 1:
        raise ValueError(f"{op}: input needs a class dimension, got shape {input.shape}")
    if input.ndim == 1:
        return input.reshape(1, -1), target.reshape(1), True
    return input, target, False


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of ``target`` under log-probabilities ``input`` (N, C, ...)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"nll_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    target = target if isinstance(target, Tensor) else Tensor(np.asarray(target))
    input, target, unbatched = _unbatched("nll_loss", input, target)
    w = None if weight is None else (weight.data if isinstance(weight, Tensor) else np.asarray(weight))
    _check_class_target("nll_loss", input, target.data, w, ignore_index)
    if w is not None:
        w = w.astype(input.dtype, copy=False)
    loss = NLLLoss.apply(input, target.data, w, ignore_index, reduction)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Softmax cross-entropy of logits (N, C) or (N, C, H, W, ...) against class ids or class probabilities.

    With integer targets, positions equal to ``ignore_index`` are left out; with a
    float target of the input's shape, it is read as per-class probabilities.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    target = target if isinstance(target, Tensor) else Tensor(np.asarray(target))
    if target.dtype.kind == "f":
        return _soft_cross_entropy(input, target, weight, reduction)
    return nll_loss(log_softmax(input, 1 if input.ndim > 1 else 0), target, weight, ignore_index, reduction)


def _soft_cross_entropy(input, target, weight, reduction):
    if target.shape != input.shape:
        raise ValueError(
            f"cross_entropy: a probability target must have the input's shape {input.shape}, got {target.shape}"
        )
    dim = 1 if input.ndim > 1 else 0
    logp = log_softmax(input, dim)
    if weight is not None:
        shape = (-1,) + (1,) * (input.ndim - dim - 1)
        logp = logp * (weight if isinstance(weight, Tensor) else Tensor(np.asarray(weight))).reshape(shape)
    losses = -(target * logp).sum(dim)
    if reduction == "none":
        return losses
    # PyTorch averages probability targets over positions, not over weights
    return losses.sum() if reduction == "sum" else losses.mean()
