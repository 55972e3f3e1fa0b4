"""PyTorch versions of the layers torch.nn lacks, named as minidl.nn names them."""
from torch import nn


class SeparableConv2d(nn.Sequential):
    """Depthwise k×k (atrous) conv + BN + ReLU, then pointwise 1×1 conv + BN + ReLU (DeepLab v3+)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, dilation=1):
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.depthwise_relu = nn.ReLU()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)
        self.pointwise_relu = nn.ReLU()
