"""The functional ops under PyTorch's names: ``import minidl.nn.functional as F``."""
from minidl.functional import (  # noqa: F401
    cross_entropy,
    dropout,
    linear,
    log_softmax,
    nll_loss,
    pad,
    relu,
    sigmoid,
    softmax,
    tanh,
)
