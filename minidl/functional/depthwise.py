"""Depthwise convolution: every channel convolved with its own small kernels.

The spatial half of DeepLab v3+'s separable convolutions (a 1×1 pointwise
convolution then mixes the channels). It is conv2d with groups = in_channels,
and conv2d hands such calls here. The weight is (C·m, 1, kh, kw) for a channel
multiplier m: output channel o reads input channel o // m, as in PyTorch.

The readable version loops over the kh×kw taps. Tap (i, j) of output pixel
(p, q) reads padded-input pixel (p·sh + i·dh, q·sw + j·dw), so for all outputs
at once the tap reads one strided slice of the padded input, and the output
is the sum over taps of slice × that tap's per-channel weight. Backward runs
the same slices the other way: each tap adds its share of the gradient back
into the slice it read (grad input), and sums slice × grad_output over the
batch and the pixels (grad weight).
"""
from types import SimpleNamespace


from minidl import kernels
from minidl.backend import get_array_module
from minidl.functional.convutils import output_size, tap_positions
from minidl.tensor import Function

__all__ = []  # conv2d(..., groups=in_channels) is the public entry


def _tap_slice(i, j, out_hw, stride, dilation):
    """Where tap (i, j) reads in the padded input, for every output pixel at once."""
    rows, cols = (tap_positions(t, d, s, o) for t, d, s, o in zip((i, j), dilation, stride, out_hw))
    return (slice(None), slice(None), rows, cols)


def _split_multiplier(a, channels):
    """(N, C·m, H, W) as (N, C, m, H, W): output channel o = c·m + k reads input channel c."""
    n, cm, h, w = a.shape
    return a.reshape(n, channels, cm // channels, h, w)


def _forward_numpy(x, weight, bias, stride, padding, dilation, out_hw):
    xp = get_array_module(x)
    (n, c, _, _), (cm, _, kh, kw), (ph, pw) = x.shape, weight.shape, padding
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    taps = weight.reshape(c, cm // c, kh, kw)
    out = xp.zeros((n, c, cm // c) + out_hw, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            piece = padded[_tap_slice(i, j, out_hw, stride, dilation)]
            out += piece[:, :, None] * taps[None, :, :, i, j, None, None]
    out = out.reshape((n, cm) + out_hw)
    return out if bias is None else out + bias[None, :, None, None]


def _grad_input_numpy(grad, weight, x_shape, stride, padding, dilation):
    xp = get_array_module(grad)
    (n, c, h, w), (cm, _, kh, kw), (ph, pw) = x_shape, weight.shape, padding
    grad = _split_multiplier(grad, c)
    taps = weight.reshape(c, cm // c, kh, kw)
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype)
    for i in range(kh):
        for j in range(kw):
            # slices of one tap never overlap, so += adds every contribution once
            share = (grad * taps[None, :, :, i, j, None, None]).sum(axis=2)
            padded[_tap_slice(i, j, grad.shape[3:], stride, dilation)] += share
    return padded[:, :, ph : ph + h, pw : pw + w]


def _grad_weight_numpy(x, grad, weight_shape, stride, padding, dilation):
    xp = get_array_module(x)
    (_, c, _, _), (cm, _, kh, kw), (ph, pw) = x.shape, weight_shape, padding
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    grad = _split_multiplier(grad, c)
    gw = xp.empty((c, cm // c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            piece = padded[_tap_slice(i, j, grad.shape[3:], stride, dilation)]
            gw[:, :, i, j] = (piece[:, :, None] * grad).sum(axis=(0, 3, 4))
    return gw.reshape(weight_shape)


# the readable versions under the kernel modules' names, so the op calls either alike
_READABLE = SimpleNamespace(forward=_forward_numpy, grad_input=_grad_input_numpy, grad_weight=_grad_weight_numpy)


def _implementation(x):
    """The compiled kernels for x's device, or the readable NumPy/CuPy code."""
    return kernels.for_array(x, "depthwise", _READABLE)


class DepthwiseConv2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        out_hw = tuple(
            output_size("conv2d", size, k, s, p, d)
            for size, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)
        )
        need_x, need_weight, _ = ctx.needs_input_grad
        # grad input needs only the weight, grad weight only the input: keep no more than that
        ctx.save_for_backward(x if need_weight else None, weight if need_x else None)
        ctx.shapes, ctx.geometry = (x.shape, weight.shape), (stride, padding, dilation)
        return _implementation(x).forward(x, weight, bias, *ctx.geometry, out_hw)

    @staticmethod
    def backward(ctx, grad):
        (x, weight), (x_shape, weight_shape) = ctx.saved, ctx.shapes
        implementation = _implementation(grad)
        need_x, need_weight, need_bias = ctx.needs_input_grad
        gx = implementation.grad_input(grad, weight, x_shape, *ctx.geometry) if need_x else None
        gw = implementation.grad_weight(x, grad, weight_shape, *ctx.geometry) if need_weight else None
        gb = grad.sum(axis=(0, 2, 3)) if need_bias else None
        return gx, gw, gb


def depthwise_conv2d(input, weight, bias, stride, padding, dilation):
    """conv2d(input, weight, bias, stride, padding, dilation, groups=C) for input (N, C, H, W).

    ``weight`` is (C·m, 1, kh, kw); stride, padding and dilation are (h, w)
    pairs of ints, already checked by the caller (conv2d).
    """
    if input.ndim != 4:
        raise ValueError(f"depthwise_conv2d: input must be (N, C, H, W), got shape {tuple(input.shape)}")
    channels = input.shape[1]
    if weight.ndim != 4 or weight.shape[1] != 1 or weight.shape[0] % channels or weight.shape[0] == 0:
        raise ValueError(
            f"depthwise_conv2d: weight must be (C·m, 1, kh, kw) with C = {channels} input channels, "
            f"got shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"depthwise_conv2d: bias must have shape ({weight.shape[0]},), one per output channel, "
            f"got {tuple(bias.shape)}"
        )
    if weight.dtype != input.dtype or (bias is not None and bias.dtype != input.dtype):
        raise ValueError(
            f"depthwise_conv2d: input, weight and bias must have the same dtype, got input {input.dtype}, "
            f"weight {weight.dtype}" + ("" if bias is None else f", bias {bias.dtype}")
        )
    return DepthwiseConv2d.apply(input, weight, bias, stride=stride, padding=padding, dilation=dilation)
