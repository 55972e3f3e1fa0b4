"""Layers and the Module machinery, under PyTorch's names."""
from minidl.nn import functional  # noqa: F401
