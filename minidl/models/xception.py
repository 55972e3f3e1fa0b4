"""The modified aligned Xception-65, DeepLab v3+'s backbone (Chen et al., ECCV 2018, section 3.2).

Xception (Chollet 2017) builds a network from depthwise separable
convolutions in residual "Xception modules". DeepLab v3+ takes the deeper,
"aligned" version of MSRA's COCO 2017 entry and changes three things:

1. deeper: 16 middle-flow modules instead of 8 (65 layers);
2. every max pooling becomes a separable conv with stride 2, so that any
   stride can later be traded for atrous convolution (max pooling with a
   rate is not a thing); the third separable conv of a module carries the
   stride, and a 1×1 conv with the same stride + BN is the shortcut;
3. batch normalization after each depthwise conv, as in MobileNet.

Layout (channels at ``width_mult`` 1, strides at output stride 32)::

    stem        conv 3×3/2 32, conv 3×3 64 (each + BN + ReLU)          OS 2
    entry_flow  block1 128 /2, block2 256 /2, block3 728 /2            OS 16
    middle_flow 16 × (728, 728, 728), identity shortcut                OS 16
    exit_flow   block1 (728, 1024, 1024) /2, conv shortcut             OS 32
                block2 (1536, 1536, 2048), no shortcut

Activation order, as the TF DeepLab ``xception_65`` that trained the
published models (its ``activation_fn_in_separable_conv``): in every module
but the last, each separable conv is ReLU → depthwise → BN → pointwise → BN
(``PreActivatedSeparableConv2d``). The ReLU sits before the conv, not after,
so a module's residual branch ends in BN and may be negative: with a ReLU at
its end, each middle-flow module could only add to its input. The last exit
module has no shortcut and uses the paper's full form, depthwise → BN → ReLU
→ pointwise → BN → ReLU (``minidl.nn.SeparableConv2d``), so the backbone's
output is rectified. The two forms have the same parameters and names. So
the BN after each depthwise conv (point 3) is everywhere, while the ReLU the
paper's text also puts there is, in the released model, only in that last
module; elsewhere the ReLUs stay between separable convs, as in Xception.

Output stride follows TF's ``stack_blocks_dense``: strides are applied
until the running stride reaches the target; from there each remaining stride
becomes 1 and multiplies the atrous rate of the modules *after* it (the
module that gave up its stride still runs at the old rate). So at OS 16 the
exit flow's block1 runs at rate 1 and block2 at rate 2; at OS 8 the entry
block3 runs at rate 1, the middle flow and exit block1 at rate 2 and exit
block2 at rate 4. Every 3×3 conv pads by its rate, so a stride-2 conv maps
h to ceil(h/2) and the output is ceil(H / output_stride) for any H.
"""
from collections import OrderedDict
from numbers import Integral

from minidl import nn
from minidl.models.backbones import check_images, init_conv_weights

STEM_STRIDE = 2


class PreActivatedSeparableConv2d(nn.Sequential):
    """ReLU, then depthwise k×k (atrous) conv + BN, then pointwise 1×1 conv + BN: Xception's own order.

    The same parameters, names and padding as ``nn.SeparableConv2d``; only
    the ReLUs move, from after each BN to one before the depthwise conv.
    ``padding`` = dilation·(k−1)/2 is TF's explicit padding for a strided
    conv as well, so a stride-2 conv keeps the pixels 0, 2, 4, ... aligned
    with the 1×1 strided shortcut.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1):
        super().__init__()
        self.relu = nn.ReLU()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, dilation * (kernel_size - 1) // 2,
                                   dilation, groups=in_channels, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)


class XceptionBlock(nn.Module):
    """One Xception module: three separable convs (the third strided) plus a shortcut.

    ``skip`` is TF's skip_connection_type: 'conv' adds a 1×1 strided conv +
    BN of the input (entry flow, exit block1), 'sum' adds the input itself
    (middle flow), 'none' adds nothing (exit block2). ``preactivated``
    chooses ReLU-before separable convs, else ``nn.SeparableConv2d``.
    """

    def __init__(self, in_channels, channels, stride=1, dilation=1, skip="conv", preactivated=True):
        super().__init__()
        if skip not in ("conv", "sum", "none"):
            raise ValueError(f"XceptionBlock: skip must be 'conv', 'sum' or 'none', got {skip!r}")
        separable = PreActivatedSeparableConv2d if preactivated else nn.SeparableConv2d
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
        """(the second separable conv's output, the block's output).

        The first is the last map before the block's stride, at the input's
        resolution: what DeepLab v3+ takes from entry block2 as low-level
        features.
        """
        prestride = self.sepconv2(self.sepconv1(x))
        out = self.sepconv3(prestride)
        if self.skip == "conv":
            out = out + self.shortcut(x)
        elif self.skip == "sum":
            out = out + x
        return prestride, out


def strides_and_rates(block_strides, output_stride, current_stride=STEM_STRIDE):
    """(stride, dilation) of each block for a target ``output_stride``: TF's stack_blocks_dense rule.

    While the running stride is below the target a block keeps its stride at
    rate 1. Once it equals the target, the block runs at stride 1 with the
    current rate, and its stride multiplies the rate of every later block.
    """
    rate, plan = 1, []
    for stride in block_strides:
        if current_stride == output_stride:
            plan.append((1, rate))
            rate *= stride
        else:
            plan.append((stride, 1))
            current_stride *= stride
    return plan


class Xception65(nn.Module):
    """Modified aligned Xception-65: forward(x) gives {"low_level": OS-4 features, "out": final features}.

    ``width_mult`` scales every channel count (rounded, at least 1) and
    ``middle_units`` sets the depth of the middle flow; 1.0 and 16 are the
    paper's network, smaller values make a net that trains on a CPU.
    """

    def __init__(self, output_stride=16, width_mult=1.0, middle_units=16, in_channels=3):
        super().__init__()
        _check_options(output_stride, width_mult, middle_units, in_channels)
        self.in_channels, self.output_stride = in_channels, output_stride
        width = _widths(width_mult)
        strides = [2, 2, 2] + [1] * middle_units + [2, 1]  # entry, middle, exit blocks
        plan = iter(dict(stride=s, dilation=d) for s, d in strides_and_rates(strides, output_stride))
        self.stem = _stem(in_channels, width(32), width(64))
        self.entry_flow = nn.Sequential(OrderedDict(
            block1=XceptionBlock(width(64), [width(128)] * 3, **next(plan)),
            block2=XceptionBlock(width(128), [width(256)] * 3, **next(plan)),
            block3=XceptionBlock(width(256), [width(728)] * 3, **next(plan)),
        ))
        self.middle_flow = nn.Sequential(*(
            XceptionBlock(width(728), [width(728)] * 3, **next(plan), skip="sum") for _ in range(middle_units)
        ))
        self.exit_flow = nn.Sequential(OrderedDict(
            block1=XceptionBlock(width(728), [width(728), width(1024), width(1024)], **next(plan)),
            block2=XceptionBlock(width(1024), [width(1536), width(1536), width(2048)], **next(plan), skip="none",
                                 preactivated=False),
        ))
        self.low_level_channels, self.out_channels = width(256), width(2048)
        init_conv_weights(self)

    def forward(self, x):
        check_images(x, self.in_channels, self.output_stride, type(self).__name__)
        x = self.entry_flow.block1(self.stem(x))
        # low-level features for the v3+ decoder: entry block2's second separable conv, the last map
        # before its stride, at OS 4 (TF: entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise)
        low_level, x = self.entry_flow.block2.forward_with_prestride(x)
        x = self.exit_flow(self.middle_flow(self.entry_flow.block3(x)))
        return {"low_level": low_level, "out": x}


def _check_options(output_stride, width_mult, middle_units, in_channels):
    if output_stride not in (8, 16, 32):
        raise ValueError(f"Xception65: output_stride must be 8, 16 or 32, got {output_stride}")
    if not width_mult > 0:
        raise ValueError(f"Xception65: width_mult must be positive, got {width_mult}")
    if not (isinstance(middle_units, Integral) and middle_units >= 0):
        raise ValueError(f"Xception65: middle_units must be a non-negative integer, got {middle_units!r}")
    if not (isinstance(in_channels, Integral) and in_channels >= 1):
        raise ValueError(f"Xception65: in_channels must be a positive integer, got {in_channels!r}")


def _widths(width_mult):
    """Channel count at ``width_mult``: the paper's count scaled and rounded, at least 1."""
    return lambda channels: max(1, int(round(channels * width_mult)))


def _stem(in_channels, mid_channels, out_channels):
    """Two plain 3×3 convs + BN + ReLU, the first with stride 2 (TF's entry_flow/conv1_1, conv1_2)."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, mid_channels, 3, STEM_STRIDE, 1, bias=False),
        bn1=nn.BatchNorm2d(mid_channels),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False),
        bn2=nn.BatchNorm2d(out_channels),
        relu2=nn.ReLU(),
    ))


def xception65(output_stride=16, width_mult=1.0, middle_units=16, in_channels=3):
    """DeepLab v3+'s modified aligned Xception-65 at ``output_stride`` (8, 16 or 32)."""
    return Xception65(output_stride, width_mult, middle_units, in_channels)
