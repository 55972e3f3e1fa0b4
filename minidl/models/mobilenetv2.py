"""MobileNetV2 (Sandler et al., 2018) as DeepLab v3+'s light backbone, with torchvision's names.

The building block is the inverted residual: a 1×1 conv widens the channels
t times (the expansion), a 3×3 depthwise conv filters each channel on its own,
and a 1×1 conv projects back down with no activation after it (a "linear
bottleneck": ReLU on the few channels would destroy information). When the
block keeps size and width, its input is added back. The activation is ReLU6,
min(max(x, 0), 6), which stays well-behaved at low precision.

Layout (``features.N`` as torchvision's ``mobilenet_v2``)::

    features.0        3×3 conv, stride 2, 32 channels, BN, ReLU6        OS 2
    features.1        t=1, 16 channels                                   OS 2
    features.2-3      t=6, 24 channels, first block stride 2             OS 4   <- low_level
    features.4-6      t=6, 32 channels, stride 2                         OS 8
    features.7-10     t=6, 64 channels, stride 2                         OS 16
    features.11-13    t=6, 96 channels
    features.14-16    t=6, 160 channels, stride 2                        OS 32
    features.17       t=6, 320 channels                                          <- out

torchvision's last layer, a 1×1 conv to 1280 channels that feeds the ImageNet
classifier, is left out: as in DeepLab v3+'s MobileNetV2, ASPP reads the
320-channel features. (torchvision weights load with ``strict=False``, which
reports ``features.18`` as unexpected.) The low-level features are those of the
24-channel stage at OS 4, as in the PyTorch DeepLab v3+ ports.

Output stride: once the blocks have reached ``output_stride``, a block that
would stride keeps stride 1 instead, and every later depthwise conv multiplies
its dilation by the stride given up (padding = dilation keeps the size). The
block that gives up its stride keeps the old dilation — its taps were adjacent
in its input and still are — which is DeepLab's MobileNetV2 and torchvision's
ResNet rule. So at OS 16: features.14 dilation 1, features.15-17 dilation 2; at
OS 8: features.7 dilation 1, features.8-14 dilation 2, features.15-17 dilation 4.
With the same weights (and BN in eval mode) the OS-16 network then computes the
OS-32 one's features densely: every second row and column of its output is
exactly the OS-32 output.

``width_mult`` scales every channel count, rounded by ``make_divisible``;
``mobilenetv2_small`` is a 0.35-wide copy with at most two blocks a stage
that trains on a CPU in minutes.
"""
from minidl import nn
from minidl.nn import functional as F
from minidl.models.backbones import check_images, check_output_stride, init_conv_weights

# One row a stage: expansion t, output channels c, number of blocks n, stride s of the first block.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1))
# The same strides and widths with at most two blocks a stage (12 layers instead of 18): each repeated
# stage keeps one residual block.
SMALL_STAGES = tuple((t, c, min(n, 2), s) for t, c, n, s in MOBILENETV2_STAGES)
STEM_CHANNELS = 32


def make_divisible(value, divisor=8):
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% down.

    torchvision's (and TensorFlow's) channel rounding for width multipliers:
    multiples of 8 suit vector hardware, and the 10% rule keeps a thin network
    from losing much of a layer.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ReLU6(nn.Module):
    """min(max(x, 0), 6) with ``torch.nn.ReLU6``'s gradient: 1 strictly between 0 and 6, else 0.

    ``clamp(0, 6)`` gives the same values but passes the gradient at x = 0
    and x = 6 too; exact zeros are common here (a depthwise window that sees
    only clamped zeros, in eval mode). ``F.relu6`` stops it at both ends.
    """

    def forward(self, input):
        return F.relu6(input)


class ConvBNReLU6(nn.Sequential):
    """conv (no bias) → BN → ReLU6 with padding dilation·(k−1)/2, as torchvision's Conv2dNormActivation."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1):
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
            ReLU6(),
        )


class InvertedResidual(nn.Module):
    """1×1 expand (skipped when t = 1) → 3×3 depthwise (``stride``, ``dilation``) → 1×1 linear projection.

    ``conv`` holds the layers (``conv.0`` … as torchvision); the input is
    added back when the block keeps both size (stride 1) and width.
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio, dilation=1):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.stride, self.dilation, self.out_channels = stride, dilation, out_channels
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers = [] if expand_ratio == 1 else [ConvBNReLU6(in_channels, hidden, kernel_size=1)]
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, dilation=dilation, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, input):
        out = self.conv(input)
        return input + out if self.use_res_connect else out


def atrous_schedule(strides, output_stride, current_stride=2):
    """Each block's (stride, dilation) when the network's stride stops at ``output_stride``.

    ``strides`` are the blocks' strides in the ImageNet network, which starts
    at ``current_stride`` (after the stem). A block that would pass
    ``output_stride`` keeps stride 1 at the current rate; the rate then grows by
    the stride it gave up, for every later block.
    """
    schedule, rate = [], 1
    for stride in strides:
        if current_stride * stride > output_stride:
            schedule.append((1, rate))
            rate *= stride
        else:
            schedule.append((stride, rate))
            current_stride *= stride
    return schedule


def mobilenetv2_layers(output_stride, width_mult, stages):
    """The stem and every inverted residual, and how many of them make the OS-4 (low-level) features."""
    blocks = [(t, make_divisible(c * width_mult), s if i == 0 else 1) for t, c, n, s in stages for i in range(n)]
    schedule = atrous_schedule([s for _, _, s in blocks], output_stride)
    in_channels = make_divisible(STEM_CHANNELS * width_mult)
    layers, imagenet_stride = [ConvBNReLU6(3, in_channels, stride=2)], 2
    for (t, out_channels, s), (stride, dilation) in zip(blocks, schedule):
        imagenet_stride *= s
        if imagenet_stride <= 4:
            low_level_layers = len(layers) + 1
        layers.append(InvertedResidual(in_channels, out_channels, stride, t, dilation))
        in_channels = out_channels
    return layers, low_level_layers


class MobileNetV2(nn.Module):
    """MobileNetV2 features; ``forward`` returns {"low_level": OS-4 features, "out": the last block's}."""

    def __init__(self, output_stride=16, width_mult=1.0, stages=MOBILENETV2_STAGES):
        super().__init__()
        check_output_stride(output_stride)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        self.output_stride = output_stride
        layers, self.low_level_layers = mobilenetv2_layers(output_stride, width_mult, stages)
        self.features = nn.Sequential(*layers)
        self.low_level_channels = layers[self.low_level_layers - 1].out_channels
        self.out_channels = layers[-1].out_channels
        init_conv_weights(self)

    def forward(self, input):
        check_images(input, 3, self.output_stride, "mobilenetv2")
        low_level = self.features[:self.low_level_layers](input)
        return {"low_level": low_level, "out": self.features[self.low_level_layers:](low_level)}


def mobilenetv2(output_stride=16, width_mult=1.0):
    """MobileNetV2 as torchvision builds it, without the final 1280-channel conv (320 × width_mult out)."""
    return MobileNetV2(output_stride, width_mult)


def mobilenetv2_small(output_stride=16, width_mult=0.35):
    """A CPU-sized MobileNetV2: at most two blocks a stage, 0.35 wide (8 low-level, 112 out channels)."""
    return MobileNetV2(output_stride, width_mult, SMALL_STAGES)
