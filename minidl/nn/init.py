"""Weight initialisation, with PyTorch's names and formulas.

The point of Kaiming (He) and Xavier (Glorot) initialisation is to keep the
variance of activations (or gradients) the same from layer to layer: a weight
with ``fan`` inputs gets variance gain**2 / fan (Kaiming) or
gain**2 * 2 / (fan_in + fan_out) (Xavier), where the gain corrects for what
the nonlinearity does to the variance (sqrt(2) for ReLU, which zeroes half).

Every function fills the tensor in place, draws from minidl's seeded generator
(``minidl.manual_seed``) and returns the tensor. A convolution weight
(out, in/groups, kh, kw) counts each of the kh*kw taps as an input:
fan_in = in/groups * kh * kw.
"""
import math

from minidl import backend
from minidl.backend import get_array_module
from minidl.tensor import random_module


def calculate_gain(nonlinearity, param=None):
    """The factor by which to scale the standard deviation for ``nonlinearity``."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight shaped (out, in, *kernel)."""
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor, draw):
    """Write ``draw(generator, shape)`` into the tensor's array, in place, in its dtype."""
    xp = get_array_module(tensor.data)
    with backend.on_device_of(tensor.data):
        tensor.data[...] = draw(random_module(xp), tensor.shape)
    return tensor


def uniform_(tensor, a=0.0, b=1.0):
    return _fill(tensor, lambda rng, shape: rng.uniform(a, b, shape))


def normal_(tensor, mean=0.0, std=1.0):
    return _fill(tensor, lambda rng, shape: rng.normal(mean, std, shape))


def constant_(tensor, val):
    tensor.data[...] = val
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def _kaiming_std(tensor, a, mode, nonlinearity):
    fan = _calculate_correct_fan(tensor, mode)
    # a zero-element tensor has fan 0 and nothing to draw
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-bound, bound) with bound = gain * sqrt(3 / fan): variance gain**2 / fan."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std**2) with std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def _xavier_std(tensor, gain):
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


def xavier_uniform_(tensor, gain=1.0):
    """U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    bound = math.sqrt(3.0) * _xavier_std(tensor, gain)
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    return normal_(tensor, 0.0, _xavier_std(tensor, gain))


def layer_defaults_(weight, bias=None):
    """PyTorch's default initialisation of Linear and Conv2d: weight and bias uniform in ±1/sqrt(fan_in).

    (kaiming_uniform_ with a=sqrt(5) gives gain sqrt(2/6) and so exactly that bound.)
    """
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)
