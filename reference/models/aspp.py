"""PyTorch twin of minidl/models/aspp.py: DeepLab v2's ASPP-L and v3's ASPP, same names and arguments.

The rate arithmetic is plain Python and shared with minidl.
"""
import torch
import torch.nn.functional as F
from torch import nn

from minidl.models.aspp import ASPP_RATES, ASPP_V2_RATES, set_atrous_rates
from reference.layers import SeparableConv2d


def conv_bn_relu(in_channels, out_channels, kernel_size=1, rate=1):
    padding = rate * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=rate, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def atrous_conv_bn_relu(in_channels, out_channels, rate=1, separable=False):
    if separable:
        return SeparableConv2d(in_channels, out_channels, 3, dilation=rate)
    return conv_bn_relu(in_channels, out_channels, 3, rate)


class ASPPv2(nn.Module):
    """v2's ASPP-L: four 3×3 atrous convs straight to class scores, summed; N(0, 0.01) weights, zero biases."""

    def __init__(self, in_channels, num_classes, rates=ASPP_V2_RATES):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    @property
    def rates(self):
        return tuple(conv.dilation[0] for conv in self.branches)

    def set_rates(self, rates):
        set_atrous_rates(self.branches, rates)

    def forward(self, x):
        scores = self.branches[0](x)
        for branch in self.branches[1:]:
            scores = scores + branch(x)
        return scores


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pooling → 1×1 conv → BN → ReLU → bilinear upsampling."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x):
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """v3's ASPP: 1×1, three atrous 3×3 (dense or separable) and image pooling; concat, 1×1 projection, dropout."""

    def __init__(self, in_channels, out_channels=256, rates=ASPP_RATES, separable=False, dropout=0.5,
                 image_pooling=True):
        super().__init__()
        self.convs = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels)]
            + [atrous_conv_bn_relu(in_channels, out_channels, rate, separable) for rate in rates]
            + ([ASPPPooling(in_channels, out_channels)] if image_pooling else [])
        )
        self.num_rates = len(rates)
        self.project = nn.Sequential(
            nn.Conv2d(out_channels * len(self.convs), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.out_channels = out_channels

    def _atrous_convs(self):
        for branch in self.convs[1:1 + self.num_rates]:
            yield branch.depthwise if isinstance(branch, SeparableConv2d) else branch[0]

    @property
    def rates(self):
        return tuple(conv.dilation[0] for conv in self._atrous_convs())

    def set_rates(self, rates):
        set_atrous_rates(self._atrous_convs(), rates)

    def forward(self, x):
        return self.project(torch.cat([branch(x) for branch in self.convs], 1))
