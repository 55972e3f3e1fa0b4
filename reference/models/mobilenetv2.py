"""MobileNetV2 in PyTorch, with minidl.models.mobilenetv2's structure and state_dict keys.

torchvision's ``mobilenet_v2`` without its final 1280-channel conv; past
``output_stride`` a block that would stride keeps stride 1 at the current rate
and the rate of every later depthwise conv grows by that stride (DeepLab's rule).
"""
from torch import nn

from reference.models.vgg import init_conv_weights

MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1))
SMALL_STAGES = tuple((t, c, min(n, 2), s) for t, c, n, s in MOBILENETV2_STAGES)


def make_divisible(value, divisor=8):
    """torchvision's _make_divisible."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2 * dilation, dilation,
                      groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels, out_channels, stride, expand_ratio, dilation=1):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.stride, self.dilation, self.out_channels = stride, dilation, out_channels
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = [ConvBNReLU6(in_channels, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, output_stride=16, width_mult=1.0, stages=MOBILENETV2_STAGES):
        super().__init__()
        self.output_stride = output_stride
        in_channels = make_divisible(32 * width_mult)
        layers = [ConvBNReLU6(3, in_channels, stride=2)]
        current_stride, rate = 2, 1
        for t, c, n, s in stages:
            out_channels = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                dilation = rate
                if current_stride * stride > output_stride:
                    stride, rate = 1, rate * stride
                else:
                    current_stride *= stride
                layers.append(InvertedResidual(in_channels, out_channels, stride, t, dilation))
                in_channels = out_channels
            if current_stride <= 4:
                self.low_level_layers, self.low_level_channels = len(layers), out_channels
        self.features = nn.Sequential(*layers)
        self.out_channels = in_channels
        init_conv_weights(self)

    def forward(self, x):
        low_level = self.features[:self.low_level_layers](x)
        return {"low_level": low_level, "out": self.features[self.low_level_layers:](low_level)}


def mobilenetv2(output_stride=16, width_mult=1.0):
    return MobileNetV2(output_stride, width_mult)


def mobilenetv2_small(output_stride=16, width_mult=0.35):
    return MobileNetV2(output_stride, width_mult, SMALL_STAGES)
