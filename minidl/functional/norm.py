"""Batch normalization, with its closed-form backward.

Per channel c, over the batch and every spatial position:

    x̂ = (x - μ) / σ,   σ = sqrt(var + eps),   y = γ·x̂ + β

In training μ and var are the batch's own statistics (var biased, divided by
the count m), so every output depends on every input of its channel through
them; differentiating through μ and var gives, per channel,

    dx = (γ/σ) · (g - mean(g) - x̂ · mean(g·x̂)),   dγ = Σ g·x̂,   dβ = Σ g.

In evaluation μ and var are the running statistics, constants, and dx = g·γ/σ.
Training also moves the running statistics towards the batch's, in place:
running = (1 - momentum)·running + momentum·batch, where the variance fed in
is the unbiased one (divided by m - 1), as PyTorch does.
"""
import functools
import math
from types import SimpleNamespace

from minidl import kernels
from minidl.backend import fused, get_array_module, scalars_like
from minidl.tensor import Function, Tensor

__all__ = ["batch_norm"]


def _channel_axes(x):
    """The axes a channel's statistics run over: the batch and every spatial axis."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim):
    """A (C,) vector shaped (1, C, 1, ...) to broadcast against an input with ``ndim`` axes."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# Per-channel bookkeeping and elementwise passes, each one kernel on a GPU (backend.fused): on the main
# job's model that is most of batch norm's launches, since a (C,) vector costs a launch as a tensor does.
@fused
def _update_running(xp):
    """running = (1 - momentum)·running + momentum·batch, in place; the variance fed in is the unbiased one."""
    def update(running_mean, running_var, mean, var, decay, momentum, unbiased):
        running_mean *= decay
        running_mean += momentum * mean
        running_var *= decay
        running_var += momentum * (var * unbiased)
    return update


@fused
def _scale_and_shift(xp):
    """1/σ, and y = x·scale + shift with scale = γ/σ, shift = β - μ·scale (γ = 1, β = 0 when absent)."""
    def scale_and_shift(mean, var, weight, bias, eps):
        invstd = 1 / xp.sqrt(var + eps)
        scale = weight * invstd
        return invstd, scale, bias - mean * scale
    return scale_and_shift


@fused
def _multiply_add(xp):
    return lambda x, scale, shift: x * scale + shift


@fused
def _centred_gradient(xp):
    def centred(g, x, mean, invstd, scale, sum_g, sum_g_centred, count):
        x_hat = (x - mean) * invstd
        return (g - sum_g / count - x_hat * (sum_g_centred * invstd / count)) * scale
    return centred


# The four steps, in readable array code; minidl.kernels.cpu.norm compiles the same steps for NumPy arrays.
def _statistics_numpy(x):
    """Per channel: the batch mean and the biased variance."""
    axes = _channel_axes(x)
    return x.mean(axis=axes), x.var(axis=axes)


def _normalize_numpy(x, scale, shift):
    """x·scale + shift per channel: γ·(x - μ)/σ + β as one multiply-add per element, as PyTorch computes it."""
    return _multiply_add(x, _per_channel(scale, x.ndim), _per_channel(shift, x.ndim))


def _grad_sums_numpy(g, x, mean):
    """Per channel: Σ g and Σ g·(x - μ)."""
    axes = _channel_axes(x)
    return g.sum(axis=axes), _sum_of_g_centred(axes)(g, x, _per_channel(mean, x.ndim))


@functools.lru_cache(maxsize=None)
def _sum_of_g_centred(axes):
    """Σ g·(x - μ) over ``axes``: one kernel on a GPU (product and sum fused), made once per axes."""
    return fused(lambda xp: lambda g, x, mean: xp.sum(g * (x - mean), axis=axes))


def _grad_input_numpy(g, x, mean, invstd, scale, sum_g, sum_g_centred):
    """(g - mean(g) - x̂·mean(g·x̂))·scale with x̂ = (x - μ)·invstd and Σ g·x̂ = invstd·Σ g·(x - μ)."""
    per_channel = (_per_channel(v, g.ndim) for v in (mean, invstd, scale, sum_g, sum_g_centred))
    return _centred_gradient(g, x, *per_channel, *scalars_like(g, g.size // g.shape[1]))


_READABLE = SimpleNamespace(statistics=_statistics_numpy, normalize=_normalize_numpy, grad_sums=_grad_sums_numpy,
                            grad_input=_grad_input_numpy)


def _implementation(x):
    """The compiled kernels for x's device, or the readable NumPy/CuPy code."""
    return kernels.for_array(x, "norm", _READABLE)


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        steps = _implementation(x)
        if training:
            mean, var = steps.statistics(x)
            if running_mean is not None:
                count, decay = x.size // x.shape[1], 1 - momentum
                _update_running(running_mean, running_var, mean, var, *scalars_like(mean, decay, momentum,
                                                                                   count / (count - 1)))
        else:  # a copy: a later training call must not change what this backward sees
            mean, var = running_mean.copy(), running_var
        one, zero, eps = scalars_like(mean, 1, 0, eps)
        invstd, scale, shift = _scale_and_shift(mean, var, one if weight is None else weight,
                                                zero if bias is None else bias, eps)
        # x̂ is recomputed in backward from x, which the graph keeps alive anyway: no extra copy is held
        ctx.save_for_backward(x, mean, invstd, scale)
        ctx.training = training
        return steps.normalize(x, scale, shift)

    @staticmethod
    def backward(ctx, g):
        x, mean, invstd, scale = ctx.saved
        steps = _implementation(g)
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        sum_g, sum_g_centred = steps.grad_sums(g, x, mean)
        dx = None
        if needs_x and ctx.training:
            dx = steps.grad_input(g, x, mean, invstd, scale, sum_g, sum_g_centred)
        elif needs_x:  # the statistics are constants: only the scaling remains
            dx = steps.normalize(g, scale, 0 * scale)
        return dx, sum_g_centred * invstd if needs_weight else None, sum_g if needs_bias else None


def _array(v):
    return v.data if isinstance(v, Tensor) else v


def _check_channels(input, **vectors):
    channels = input.shape[1]
    for name, v in vectors.items():
        if v is not None and tuple(v.shape) != (channels,):
            raise ValueError(
                f"batch_norm: {name} has shape {tuple(v.shape)}, but the input of shape {input.shape} "
                f"has {channels} channels: expected shape ({channels},)"
            )


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalize each channel of ``input`` (N, C, ...) as ``torch.nn.functional.batch_norm``.

    ``training=True`` uses the batch's statistics and, when running_mean and
    running_var are given (Tensors or arrays), updates them in place;
    ``training=False`` uses the running statistics.
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, ...), got shape {input.shape}")
    _check_channels(input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if training:
        if input.shape[0] * math.prod(input.shape[2:]) == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        if momentum is None:
            raise TypeError(
                "batch_norm: momentum=None (a cumulative moving average) needs the number of batches seen, "
                "which nn.BatchNorm2d counts; pass momentum=1/num_batches_tracked instead"
            )
    elif running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var must be given in evaluation mode (training=False)")
    return BatchNorm.apply(
        input,
        weight,
        bias,
        running_mean=_array(running_mean),
        running_var=_array(running_var),
        training=bool(training),
        momentum=momentum,
        eps=eps,
    )
