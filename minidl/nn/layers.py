"""Basic layers: Linear, activations, Dropout, reshaping, softmax and the loss.

Each is a thin Module over an op of ``minidl.nn.functional``: the module holds
the parameters and settings, the op does the computing (and differentiating).
"""
import numpy as np

from minidl import functional as F
from minidl.nn import init
from minidl.nn.module import Module, Parameter
from minidl.tensor import empty


class _WeightAndBias(Module):
    """A layer with a weight and an optional bias, initialised as PyTorch initialises Linear and Conv2d."""

    def _create(self, weight_shape, bias, device, dtype):
        options = {"device": device or "cpu", "dtype": np.float32 if dtype is None else dtype}
        self.weight = Parameter(empty(*weight_shape, **options))
        if bias:
            self.bias = Parameter(empty(weight_shape[0], **options))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.layer_defaults_(self.weight, self.bias)


class Linear(_WeightAndBias):
    """y = x @ weight.T + bias, with weight (out_features, in_features) as in PyTorch."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._create((out_features, in_features), bias, device, dtype)

    def forward(self, input):
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear(in_features={self.in_features}) expects inputs whose last dimension is "
                f"{self.in_features}, got shape {input.shape}"
            )
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace  # accepted for PyTorch's signature; minidl never writes in place

    def forward(self, input):
        return F.relu(input)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return F.tanh(input)


class Identity(Module):
    """Returns its input; takes (and ignores) any arguments, to stand in for a layer."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Dropout(Module):
    """Zero each element with probability p while training (scaling the rest by 1/(1-p)); identity in eval()."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
    """Flatten dims start_dim..end_dim into one; by default everything but the batch dimension."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Softmax(Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, input):
        return F.log_softmax(input, self.dim)


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits (N, C, ...) against class ids (N, ...).

    ``weight`` (a Tensor of C class weights) is a buffer, as in PyTorch, so it
    moves with ``to()``; positions labelled ``ignore_index`` (255 in Pascal VOC)
    count for nothing.
    """

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean"):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction)
