"""Batch normalisation layers: parameters, running statistics and the batch counter of PyTorch's."""
import numpy as np

from minidl import functional as F
from minidl.nn import init
from minidl.nn.module import Module, Parameter
from minidl.tensor import empty, tensor, zeros


class _BatchNorm(Module):
    """Normalise each channel by the batch's statistics in train(), by the running ones in eval().

    Buffers ``running_mean``, ``running_var`` and ``num_batches_tracked`` are
    named as in PyTorch, so torchvision checkpoints load unchanged.
    """

    expected_ndim = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        options = {"device": device or "cpu", "dtype": np.float32 if dtype is None else dtype}
        if affine:
            self.weight = Parameter(empty(num_features, **options))
            self.bias = Parameter(empty(num_features, **options))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, **options))
            self.register_buffer("running_var", empty(num_features, **options))
            self.register_buffer("num_batches_tracked", tensor(0, device=options["device"]))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        if input.ndim not in self.expected_ndim or input.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expects an input with {self.num_features} channels "
                f"and {' or '.join(map(str, self.expected_ndim))} dimensions, got shape {input.shape}"
            )
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:  # a cumulative average over all batches seen
                momentum = 1.0 / int(self.num_batches_tracked.item())
        # without running statistics, eval() too normalises by the batch's own, as in PyTorch
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, use_batch_stats,
                            0.0 if momentum is None else momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    expected_ndim = (2, 3)


class BatchNorm2d(_BatchNorm):
    expected_ndim = (4,)
