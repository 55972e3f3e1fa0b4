"""Resizing feature maps: ``interpolate`` with mode 'bilinear', 'nearest' or 'nearest-exact'.

DeepLab resizes in both directions: logits go up bilinearly (×8 in v2, to the
image size in v3, ×4 twice in v3+) and label maps come down with 'nearest'.

Every mode here is separable. Along one axis, each output position reads a few
input positions with fixed weights; we call that list its *taps*: bilinear has
two (the neighbours on either side, weights summing to 1), nearest one (weight
1). The taps are worked out once per axis, as vectors, with exactly PyTorch's
rule for where an output pixel lands in the input. Forward then gathers along W
and blends, then along H. Backward is the adjoint: the gradient goes back along
H, then along W, each output position scatter-adding its gradient, times the
weight, onto the input positions it read.

Why gather and scatter rather than multiplying by a small interpolation matrix
per axis (out = A_h @ x @ A_w^T)? The matrix form is elegant but reads every
input position with weight 0 too: one NaN or infinity would spread along a
whole row, where PyTorch keeps it in place; gathers keep the work and the
dtype (integer label maps) to what each output pixel really reads.
"""
import math
from types import SimpleNamespace

import numpy as np

from minidl import kernels
from minidl.backend import get_array_module, on_device_of, scatter_add
from minidl.tensor import Function

__all__ = ["interpolate"]

_MODES = ("nearest", "bilinear", "nearest-exact")


# ------------------------------------------------------------ where an output pixel reads from
def _ratio(in_size, out_size, align_corners, scale_factor, real):
    """Input pixels per output pixel along one axis (PyTorch's ``area_pixel_compute_scale``).

    A scale_factor the caller gave (and did not ask to recompute) is used as
    1/scale_factor, not in/out: the two differ when in·scale is not a whole number.
    ``real`` is the float type the rule is computed in, as in PyTorch.
    """
    if align_corners:
        return real(in_size - 1) / real(out_size - 1) if out_size > 1 else real(0)
    if scale_factor is not None:
        return real(1.0 / scale_factor)
    return real(in_size) / real(out_size)


def _linear_taps(in_size, out_size, align_corners, scale_factor, dtype):
    """The two input positions and weights behind each output position along one axis.

    align_corners=True lines up the centres of the corner pixels (out → out·(in-1)/(out-1));
    False lines up the pixel edges (out → (out+0.5)·ratio - 0.5, clamped at 0).
    The ratio is rounded to the input's precision, as in PyTorch; the source
    position is rounded once from the exact ratio·(out+0.5)-0.5, as PyTorch's
    compiled fused multiply-add does, so float32 weights match it to the last bit.
    """
    if out_size == in_size:  # PyTorch copies then, whatever the scale_factor
        index = np.arange(in_size)
        return (index, np.ones(in_size, dtype)), (index, np.zeros(in_size, dtype))
    ratio = float(_ratio(in_size, out_size, align_corners, scale_factor, dtype.type))
    dst = np.arange(out_size, dtype=np.float64)
    src = (ratio * dst if align_corners else np.maximum(ratio * (dst + 0.5) - 0.5, 0)).astype(dtype)
    index0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    index1 = np.minimum(index0 + 1, in_size - 1)
    weight1 = np.clip(src - index0.astype(dtype), 0, 1)
    return (index0, 1 - weight1), (index1, weight1)


def _nearest_taps(in_size, out_size, scale_factor, exact):
    """The one input position behind each output position along one axis.

    PyTorch computes this rule in float32 whatever the input's dtype. 'nearest'
    is its legacy rule, floor(out·ratio), which shifts the picture towards the
    top-left; 'nearest-exact' rounds where the output pixel's centre lands,
    (out+0.5)·ratio - 0.5, to the nearest input pixel.
    """
    if out_size == in_size and not exact:  # PyTorch copies then, whatever the scale_factor
        return ((np.arange(in_size), None),)
    f32 = np.float32
    ratio = _ratio(in_size, out_size, False, scale_factor, f32)
    dst = np.arange(out_size, dtype=f32)
    if exact:
        src = np.maximum(ratio * (dst + f32(0.5)) - f32(0.5), f32(0)) + f32(0.5)
    else:
        src = ratio * dst
    return ((np.minimum(np.floor(src).astype(np.int64), in_size - 1), None),)


def _taps(mode, in_size, out_size, align_corners, scale_factor, dtype):
    if mode == "bilinear":
        return _linear_taps(in_size, out_size, align_corners, scale_factor, dtype)
    return _nearest_taps(in_size, out_size, scale_factor, exact=mode == "nearest-exact")


# ------------------------------------------------------------ the readable version
def _along(weight, axis, ndim):
    """A weight vector shaped to broadcast along ``axis``."""
    return weight.reshape((-1,) + (1,) * (ndim - 1 - axis))


def _gather(x, taps, axis):
    """Resize one axis: each output position is the weighted sum of the input positions it reads."""
    out = None
    for index, weight in taps:
        part = x.take(index, axis=axis)
        if weight is not None:
            part = _along(weight, axis, x.ndim) * part
        out = part if out is None else out + part
    return out


def _scatter(g, taps, axis, in_size):
    """The adjoint of ``_gather``: hand each output's gradient back to what it read, weighted."""
    shape = list(g.shape)
    shape[axis] = in_size
    grad = get_array_module(g).zeros(shape, g.dtype)
    for index, weight in taps:
        part = g if weight is None else _along(weight, axis, g.ndim) * g
        scatter_add(grad, (slice(None),) * axis + (index,), part)  # many outputs may read one input
    return grad


def _resize(x, h_taps, w_taps):
    return _gather(_gather(x, w_taps, axis=3), h_taps, axis=2)


def _resize_backward(g, h_taps, w_taps, in_size):
    return _scatter(_scatter(g, h_taps, 2, in_size[0]), w_taps, 3, in_size[1])


# the readable versions under the kernel modules' names, so the op calls either alike
_READABLE = SimpleNamespace(bilinear_forward=_resize, bilinear_backward=_resize_backward)


def _implementation(x, taps):
    """The bilinear kernels for x's device, or the readable array code (which also does 'nearest')."""
    return _READABLE if len(taps) != 2 else kernels.for_float_array(x, "interpolate", _READABLE)


class Resize(Function):
    """Separable resampling of (N, C, H, W): along W, then along H."""

    @staticmethod
    def forward(ctx, x, h_taps, w_taps):
        ctx.taps, ctx.in_size = (h_taps, w_taps), x.shape[2:]
        return _implementation(x, h_taps).bilinear_forward(x, h_taps, w_taps)

    @staticmethod
    def backward(ctx, g):
        h_taps, w_taps = ctx.taps
        return _implementation(g, h_taps).bilinear_backward(g, h_taps, w_taps, ctx.in_size)


# ------------------------------------------------------------ the public function
def _pair(value, name):
    """An int/float or a pair of them, as a pair; ValueError naming ``name`` otherwise."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"interpolate: {name} must be one number or a pair (H, W) for a 4-D input, got {value!r}")
        return tuple(value)
    return value, value


def _output_size(in_hw, size, scale_factor, recompute_scale_factor):
    """The output (H, W) and the scale factors the source-index rule may use (None: in/out)."""
    if min(in_hw) <= 0:
        raise ValueError(f"interpolate: the input's H and W must be positive, got {tuple(in_hw)}")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor, "
                         f"got size={size!r} and scale_factor={scale_factor!r}")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor=True is not meaningful with an explicit size")
        out_hw = _pair(size, "size")
        if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in out_hw):
            raise TypeError(f"interpolate: size must hold integers, got {size!r}")
        if min(out_hw) <= 0:
            raise ValueError(f"interpolate: size must be positive, got {size!r}")
        return tuple(int(n) for n in out_hw), (None, None)
    scales = tuple(float(s) for s in _pair(scale_factor, "scale_factor"))
    if min(scales) <= 0:
        raise ValueError(f"interpolate: scale_factor must be positive, got {scale_factor!r}")
    out_hw = tuple(math.floor(n * s) for n, s in zip(in_hw, scales))
    if min(out_hw) <= 0:
        raise ValueError(f"interpolate: scale_factor={scale_factor!r} turns an input of size {tuple(in_hw)} "
                         f"into an empty output {out_hw}")
    return out_hw, (None, None) if recompute_scale_factor else scales


def _check_mode(input, mode, align_corners, antialias):
    if mode not in _MODES:
        raise ValueError(f"interpolate: mode must be one of {_MODES}, got {mode!r}")
    if mode != "bilinear" and align_corners is not None:
        raise ValueError(f"interpolate: align_corners can only be set with mode='bilinear', got mode={mode!r} "
                         f"and align_corners={align_corners!r}")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not implemented")
    if input.ndim != 4:
        raise ValueError(f"interpolate: expected a 4-D input (N, C, H, W), got shape {tuple(input.shape)}")
    if mode == "bilinear" and input.dtype.kind != "f":
        raise TypeError(f"interpolate: mode='bilinear' needs a floating-point input, got dtype {input.dtype}")


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the H and W of an (N, C, H, W) tensor, as ``torch.nn.functional.interpolate``.

    ``size`` (int or (H, W)) or ``scale_factor`` (float or (sh, sw)) gives the
    output size; a scale_factor also sets where output pixels read from unless
    ``recompute_scale_factor=True``. 'nearest' works on integer label maps too.
    """
    _check_mode(input, mode, align_corners, antialias)
    in_hw = input.shape[2:]
    out_hw, scales = _output_size(in_hw, size, scale_factor, recompute_scale_factor)
    xp = get_array_module(input.data)
    with on_device_of(input.data):  # the taps go where the input is
        h_taps, w_taps = (
            tuple((xp.asarray(index), None if weight is None else xp.asarray(weight))
                  for index, weight in _taps(mode, n_in, n_out, bool(align_corners), scale, input.dtype))
            for n_in, n_out, scale in zip(in_hw, out_hw, scales)
        )
    return Resize.apply(input, h_taps=h_taps, w_taps=w_taps)
