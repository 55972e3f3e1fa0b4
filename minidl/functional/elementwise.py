"""Elementwise ops: arithmetic with broadcasting, exp/log/sqrt, activations, dropout.

Binary ops broadcast like NumPy. Their backward must undo the broadcast: a
gradient has the output's shape and is summed back to each input's shape
(``unbroadcast``), over the dimensions the input lacked or had as size 1.
"""
from types import SimpleNamespace

import numpy as np

from minidl import kernels
from minidl.backend import fused, get_array_module, scalars_like
from minidl.tensor import Function, Tensor, random_module


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``, the inverse of broadcasting ``shape`` up to grad.shape."""
    if grad.shape == tuple(shape):
        return grad
    leading = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(leading))) if leading else grad
    ones = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=ones, keepdims=True) if ones else grad


def _shape(x):
    return np.shape(x)


def _broadcast_shapes(op, a, b):
    try:
        return np.broadcast_shapes(_shape(a), _shape(b))
    except ValueError:
        raise ValueError(
            f"{op}: shapes {tuple(_shape(a))} and {tuple(_shape(b))} cannot be broadcast together"
        ) from None


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shapes("add", a, b)
        ctx.shapes = _shape(a), _shape(b)
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(g, sb)


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shapes("sub", a, b)
        ctx.shapes = _shape(a), _shape(b)
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(-g, sb)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shapes("mul", a, b)
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g * b, _shape(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(g * a, _shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shapes("div", a, b)
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g / b, _shape(a)) if ctx.needs_input_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), _shape(b)) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    """a ** b for a tensor or number on either side."""

    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shapes("pow", a, b)
        y = a**b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = unbroadcast(g * b * _power_below(a, b), _shape(a))
        if ctx.needs_input_grad[1]:
            gb = unbroadcast(g * y * _log_base(a, y.dtype), _shape(b))
        return ga, gb


# Either side of a ** b may be a Python number. A test on a number is decided here, on the host: a
# number's comparison is a Python bool, which NumPy's ``where`` takes and CuPy's does not.
def _power_below(a, b):
    """a ** (b - 1), taken as 0 where b = 0, so that a = 0 with b = 0 gives a finite b·a**(b-1)."""
    if np.isscalar(b):
        return 0 if b == 0 else a ** (b - 1)
    return get_array_module(b).where(b == 0, 0, a ** (b - 1))


def _log_base(a, dtype):
    """log(a) for d(a**b)/db = a**b · log(a), taken as 0 where a = 0 (PyTorch's rule)."""
    if np.isscalar(a):
        return 0 if a == 0 else float(np.log(a))
    xp = get_array_module(a)
    return xp.log(xp.where(a == 0, 1, a)).astype(dtype, copy=False)


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * y


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).log(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g / x


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g / (2 * y)


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).abs(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        return g * get_array_module(x).sign(x)


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).maximum(x, 0)  # maximum, not where: NaN stays NaN
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return _activation(y).relu_grad(g, y)


class ReLU6(Function):
    """min(max(x, 0), 6), with PyTorch's gradient: 1 strictly between 0 and 6, 0 at both ends and beyond.

    As ReLU followed by a ``where`` capping at 6, MobileNetV2's activations took four passes each way, and the
    where's gradient for the constant 6 summed the whole upstream gradient.
    """

    @staticmethod
    def forward(ctx, x):
        y = _activation(x).relu6(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return _activation(y).relu6_grad(g, y)


# ReLU's and ReLU6's passes in readable array code; minidl.kernels.cpu.activation compiles the same.
@fused
def _pass_where_positive(xp):
    return lambda g, y: g * (y > 0)


@fused
def _pass_strictly_inside(xp):
    return lambda g, y, low, high: g * ((y > low) & (y < high))


_READABLE_ACTIVATION = SimpleNamespace(
    relu_grad=_pass_where_positive,
    relu6=lambda x: get_array_module(x).clip(x, 0, 6),  # clip, not where: NaN stays NaN
    relu6_grad=lambda g, y: _pass_strictly_inside(g, y, *scalars_like(y, 0, 6)),
)


def _activation(x):
    """The compiled passes for x's device and dtype, or the readable array code."""
    return kernels.for_float_array(x, "activation", _READABLE_ACTIVATION)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        # Two branches so that exp never overflows: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below.
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * y * (1 - y)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return g * (1 - y * y)


class Clamp(Function):
    @staticmethod
    def forward(ctx, x, low, high):
        xp = get_array_module(x)
        y = x
        if low is not None:
            y = xp.maximum(y, low)
        if high is not None:
            y = xp.minimum(y, high)
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return y.astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved
        # PyTorch passes the gradient where low <= x <= high, boundaries included
        inside = True
        if ctx.low is not None:
            inside = inside & (x >= ctx.low)
        if ctx.high is not None:
            inside = inside & (x <= ctx.high)
        return g * inside, None, None


class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.dtype), None


class ToDevice(Function):
    @staticmethod
    def forward(ctx, x, device):
        from minidl.backend import device_of, to_device

        ctx.device = device_of(x)
        return to_device(x, device)

    @staticmethod
    def backward(ctx, g):
        from minidl.backend import to_device

        return to_device(g, ctx.device), None


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p):
        xp = get_array_module(x)
        keep = random_module(xp).random(x.shape) >= p
        # Scale at training time ("inverted dropout") so evaluation is the identity.
        ctx.mask = keep.astype(x.dtype) / (1 - p)
        return x * ctx.mask

    @staticmethod
    def backward(ctx, g):
        return g * ctx.mask, None


# ------------------------------------------------------------ the public functions
def add(a, b):
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(a, b)


def mul(a, b):
    return Mul.apply(a, b)


def div(a, b):
    return Div.apply(a, b)


def neg(x):
    return Neg.apply(x)


def pow(a, b):
    return Pow.apply(a, b)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def abs(x):  # noqa: A001  (PyTorch's name)
    return Abs.apply(x)


def relu(input, inplace=False):
    return ReLU.apply(input)


def relu6(input, inplace=False):
    return ReLU6.apply(input)


def sigmoid(input):
    return Sigmoid.apply(input)


def tanh(input):
    return Tanh.apply(input)


def clamp(input, min=None, max=None):  # noqa: A002
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    return Clamp.apply(input, min, max)


def cast(x, dtype):
    return Cast.apply(x, np.dtype(dtype))


def to_device(x, device):
    return ToDevice.apply(x, device)


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) (identity when not training)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0
    return Dropout.apply(input, p)


def _compare(op):
    def compare(a, b):
        xp = get_array_module(*(t.data for t in (a, b) if isinstance(t, Tensor)))
        a_ = a.data if isinstance(a, Tensor) else a
        b_ = b.data if isinstance(b, Tensor) else b
        return Tensor(getattr(xp, op)(a_, b_))

    compare.__name__ = op
    return compare


eq, ne, lt, le, gt, ge = (
    _compare(op) for op in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")
)


def where(condition, input, other):
    """``input`` where ``condition`` holds, else ``other``; differentiable in both."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    return Where.apply(cond, input, other)


class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        xp = get_array_module(cond, a, b)
        ctx.cond = cond
        ctx.shapes = _shape(a), _shape(b)
        return xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        xp = get_array_module(g)
        sa, sb = ctx.shapes
        zero = xp.zeros((), g.dtype)
        return None, unbroadcast(xp.where(ctx.cond, g, zero), sa), unbroadcast(xp.where(ctx.cond, zero, g), sb)
