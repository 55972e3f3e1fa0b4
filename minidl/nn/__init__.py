"""Layers and the Module machinery, under PyTorch's names."""
from minidl.nn import functional, init  # noqa: F401
from minidl.nn.containers import ModuleDict, ModuleList, Sequential  # noqa: F401
from minidl.nn.layers import (  # noqa: F401
    CrossEntropyLoss,
    Dropout,
    Flatten,
    Identity,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from minidl.nn.module import Module, Parameter  # noqa: F401
