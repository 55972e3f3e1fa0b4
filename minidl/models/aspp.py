"""Atrous Spatial Pyramid Pooling: the heads of DeepLab v2 and v3 (and v3+'s encoder).

ASPP looks at the last backbone feature map through several atrous
convolutions at once, each with a different rate, so that every output pixel
sees context at several scales with the same number of weights. A 3×3 kernel
at rate r covers 2r + 1 feature pixels, i.e. (2r + 1)·OS input pixels.

Rates are tied to the output stride (OS): the same field of view in input
pixels needs twice the rate at half the stride. ``scaled_rates`` does that
arithmetic for the models' output-stride switch.
"""
import minidl
import minidl.nn.functional as F
from minidl import nn

# The papers' rates, and the output stride they were chosen for.
ASPP_V2_RATES, ASPP_V2_STRIDE = (6, 12, 18, 24), 8  # v2, TPAMI 2017, Sec. 3.3 (ASPP-L)
ASPP_RATES, ASPP_STRIDE = (6, 12, 18), 16  # v3, Sec. 3.3 ("doubled when output_stride = 8")


def scaled_rates(rates, from_stride, to_stride):
    """The atrous rates at ``to_stride`` that keep the field of view the ``rates`` had at ``from_stride``.

    A tap spacing of r feature pixels is r·OS input pixels, so r becomes
    r·from/to: v3's (6, 12, 18) at OS 16 is (12, 24, 36) at OS 8, as the v3
    paper says, and (3, 6, 9) at OS 32. Where the ratio is not whole (v2's
    rates at OS 32: 1.5, 3, 4.5, 6) the rate is rounded half up, and never
    falls below 1 (a rate-1 conv is an ordinary one).
    """
    return tuple(max(1, int(r * from_stride / to_stride + 0.5)) for r in rates)


def check_rates(rates):
    """``rates`` as a tuple of positive ints (a JSON list is fine), or a ValueError naming the argument."""
    try:
        checked = tuple(int(r) for r in rates)
    except (TypeError, ValueError):
        checked = ()
    if not checked or checked != tuple(rates) or min(checked) < 1:
        raise ValueError(f"atrous_rates must be one or more positive ints, got {rates!r}")
    return checked


def conv_bn_relu(in_channels, out_channels, kernel_size=1, rate=1):
    """Conv (no bias: BN's shift replaces it) + BN + ReLU, the unit every v3 head branch is made of."""
    padding = rate * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=rate, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def atrous_conv_bn_relu(in_channels, out_channels, rate=1, separable=False):
    """A 3×3 conv at ``rate`` with BN + ReLU: dense (v3), or depthwise separable (v3+, Sec. 3.2)."""
    if separable:
        return nn.SeparableConv2d(in_channels, out_channels, 3, dilation=rate)
    return conv_bn_relu(in_channels, out_channels, 3, rate)


def set_atrous_rates(convs, rates):
    """Change 3×3 convs' atrous rates in place; padding = rate keeps the feature map's size."""
    convs = list(convs)
    if len(rates) != len(convs):
        raise ValueError(f"expected {len(convs)} atrous rates, one per branch, got {tuple(rates)}")
    for conv, rate in zip(convs, rates):
        conv.dilation = conv.padding = (rate, rate)


class ASPPv2(nn.Module):
    """DeepLab v2's ASPP-L (TPAMI 2017, Sec. 3.3, Fig. 4): class scores from four atrous rates, summed.

    Each branch is a single 3×3 atrous conv from the features straight to
    ``num_classes`` scores (the ResNet-101 variant of the paper); the branches
    are fused by addition. Weights start as the paper's Caffe model (and the
    common PyTorch ports) start them: normal with std 0.01, biases zero.
    """

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
        """New atrous rates, same weights (for a new output stride)."""
        set_atrous_rates(self.branches, rates)

    def forward(self, x):
        scores = self.branches[0](x)
        for branch in self.branches[1:]:
            scores = scores + branch(x)
        return scores


class ASPPPooling(nn.Sequential):
    """v3's image-level features (Sec. 3.3): global average pooling → 1×1 conv → BN → ReLU → upsampling.

    The pooled branch gives every pixel the context of the whole image, which
    the atrous branches lose when the rate nears the feature map's size (a
    3×3 kernel at a large rate degenerates to its centre tap). Upsampling a
    1×1 map bilinearly copies it to every pixel.

    In training mode its BN sees one value per channel per image, so a batch of
    one raises "Expected more than 1 value per channel" (as in PyTorch): train
    with batches of two or more.
    """

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
    """DeepLab v3's ASPP (Sec. 3.3, Fig. 5), also v3+'s encoder head.

    Five parallel branches of ``out_channels`` each: a 1×1 conv, three 3×3
    atrous convs at ``rates``, and image pooling, all with BN + ReLU;
    concatenated, projected by a 1×1 conv + BN + ReLU, then Dropout (p =
    ``dropout``; torchvision's choice, not the paper's, which describes no
    dropout in ASPP). With
    ``separable=True`` the atrous branches are depthwise separable (v3+);
    ``image_pooling=False`` leaves out the pooled branch (v3's Table 3
    ablation: what image-level context adds).

    Module names follow torchvision's ASPP (``convs.0`` … ``convs.4``,
    ``project``), so its dense variant loads torchvision's head weights.
    See ``ASPPPooling`` for why training needs batches of two or more.
    """

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
        # the 3×3 conv of each atrous branch: the first layer, or the depthwise conv of a separable one
        for branch in self.convs[1:1 + self.num_rates]:
            yield branch.depthwise if isinstance(branch, nn.SeparableConv2d) else branch[0]

    @property
    def rates(self):
        return tuple(conv.dilation[0] for conv in self._atrous_convs())

    def set_rates(self, rates):
        """New atrous rates, same weights (v3 trains at OS 16 and evaluates at OS 8 with doubled rates)."""
        set_atrous_rates(self._atrous_convs(), rates)

    def forward(self, x):
        return self.project(minidl.cat([branch(x) for branch in self.convs], 1))
