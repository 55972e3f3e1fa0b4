"""PyTorch twin of minidl.models.xception: DeepLab v3+'s modified aligned Xception-65.

Same modules, names and constructor arguments as the minidl version, but
built the way TF DeepLab's ``xception_65`` is: from a table of blocks walked
by ``stack_blocks_dense``'s stride-to-rate loop, written out here on its own,
so that the parity tests check minidl's rate rule against an independent one.
"""
from collections import OrderedDict

from torch import nn

from reference.layers import SeparableConv2d


class PreActivatedSeparableConv2d(nn.Sequential):
    """ReLU → depthwise k×k (atrous) conv → BN → pointwise 1×1 conv → BN."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1):
        super().__init__()
        self.relu = nn.ReLU()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, dilation * (kernel_size - 1) // 2,
                                   dilation, groups=in_channels, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)


class XceptionBlock(nn.Module):
    """Three separable convs, the third strided, plus a 'conv', 'sum' or 'none' shortcut."""

    def __init__(self, in_channels, channels, stride=1, dilation=1, skip="conv", preactivated=True):
        super().__init__()
        separable = PreActivatedSeparableConv2d if preactivated else SeparableConv2d
        self.skip = skip
        self.sepconv1 = separable(in_channels, channels[0], 3, dilation=dilation)
        self.sepconv2 = separable(channels[0], channels[1], 3, dilation=dilation)
        self.sepconv3 = separable(channels[1], channels[2], 3, stride=stride, dilation=dilation)
        if skip == "conv":
            self.shortcut = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, channels[2], 1, stride, bias=False),
                bn=nn.BatchNorm2d(channels[2]),
            ))

    def forward(self, x):
        return self.forward_with_prestride(x)[1]

    def forward_with_prestride(self, x):
        prestride = self.sepconv2(self.sepconv1(x))
        residual = self.sepconv3(prestride)
        shortcut = {"conv": lambda: self.shortcut(x), "sum": lambda: x, "none": lambda: 0}[self.skip]()
        return prestride, residual + shortcut


def xception65_blocks(middle_units):
    """TF's xception_65 table: (flow, name, depth_list, skip, stride, preactivated)."""
    return (
        [("entry_flow", "block1", (128, 128, 128), "conv", 2, True),
         ("entry_flow", "block2", (256, 256, 256), "conv", 2, True),
         ("entry_flow", "block3", (728, 728, 728), "conv", 2, True)]
        + [("middle_flow", str(i), (728, 728, 728), "sum", 1, True) for i in range(middle_units)]
        + [("exit_flow", "block1", (728, 1024, 1024), "conv", 2, True),
           ("exit_flow", "block2", (1536, 1536, 2048), "none", 1, False)]
    )


class Xception65(nn.Module):
    def __init__(self, output_stride=16, width_mult=1.0, middle_units=16, in_channels=3):
        super().__init__()
        self.in_channels, self.output_stride = in_channels, output_stride

        def width(channels):
            return max(1, int(round(channels * width_mult)))

        self.stem = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, width(32), 3, 2, 1, bias=False),
            bn1=nn.BatchNorm2d(width(32)),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(width(32), width(64), 3, 1, 1, bias=False),
            bn2=nn.BatchNorm2d(width(64)),
            relu2=nn.ReLU(),
        ))
        flows = OrderedDict(entry_flow=OrderedDict(), middle_flow=OrderedDict(), exit_flow=OrderedDict())
        channels, current_stride, rate = width(64), 2, 1
        for flow, name, depths, skip, stride, preactivated in xception65_blocks(middle_units):
            if current_stride == output_stride:  # stack_blocks_dense: stride 1 at the current rate
                unit_stride, unit_rate, rate = 1, rate, rate * stride
            else:
                unit_stride, unit_rate, current_stride = stride, 1, current_stride * stride
            depths = [width(d) for d in depths]
            flows[flow][name] = XceptionBlock(channels, depths, unit_stride, unit_rate, skip, preactivated)
            channels = depths[-1]
        for flow, blocks in flows.items():
            setattr(self, flow, nn.Sequential(blocks))
        self.low_level_channels, self.out_channels = width(256), width(2048)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = self.entry_flow.block1(self.stem(x))
        low_level, x = self.entry_flow.block2.forward_with_prestride(x)
        x = self.exit_flow(self.middle_flow(self.entry_flow.block3(x)))
        return {"low_level": low_level, "out": x}


def xception65(output_stride=16, width_mult=1.0, middle_units=16, in_channels=3):
    return Xception65(output_stride, width_mult, middle_units, in_channels)
