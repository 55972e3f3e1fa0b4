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
from minidl.nn.norm import BatchNorm1d, BatchNorm2d  # noqa: F401
from minidl.nn.conv import Conv2d, SeparableConv2d  # noqa: F401,E402
from minidl.nn.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, Upsample  # noqa: F401
