"""ResNet backbones for DeepLab, with torchvision's structure and state_dict names.

A ResNet is a stem (7×7 conv with stride 2, BN, ReLU, 3×3 max pool with
stride 2: output stride 4) and four stages ``layer1``..``layer4`` of residual
units. ``layer1`` keeps the resolution; each later stage halves it with a
stride of 2 in its first unit, so a plain ResNet ends at output stride (OS) 32.
The names are torchvision's (``conv1``, ``bn1``, ``layer3.0.downsample.0``,
...), so its ImageNet checkpoints load unchanged; there is no ``avgpool``/``fc``,
which segmentation does not use.

Dense prediction wants a larger final map. DeepLab keeps a stage's resolution
by giving it stride 1 and dilating its 3×3 convolutions instead (atrous
convolution): every later layer then sees the same pixels it would have seen
on the strided map, so the receptive field and the pretrained weights stay
valid while the map stays twice as large:

====  =======================================  ==========================
OS    layer3                                   layer4
====  =======================================  ==========================
32    stride 2, rate 1                         stride 2, rate 1
16    stride 2, rate 1                         stride 1, rate 2
8     stride 1, rate 2                         stride 1, rate 4
====  =======================================  ==========================

Two conventions decide the rate of the FIRST unit of a dilated stage:

- ``"deeplab"`` (the papers, and their reference code): every unit of the
  stage uses the stage's rate.
- ``"torchvision"`` (``replace_stride_with_dilation``): the first unit keeps
  the previous stage's rate, since it is the one that would have downsampled;
  the others use the new rate. OS 8 is torchvision's
  ``replace_stride_with_dilation=[False, True, True]``.

Multi-grid (DeepLab v3) then multiplies the rates of the LAST stage's units by
``multi_grid``: with (1, 2, 4) at OS 16 the three units of layer4 use rates 2,
4 and 8, so neighbouring units do not sample the same sparse grid of pixels.
A stage with more units than the grid has entries repeats the grid (unit i
takes ``multi_grid[i % len(multi_grid)]``); one with fewer uses its first
entries (one unit: ``multi_grid[0]``).

The 3×3 convolution carries the stride (ResNet v1.5, as torchvision), and a
unit's 1×1 ``downsample`` projection of the shortcut has the same stride, so
both paths agree on the size. Every 3×3 conv pads by its rate, so for any
input of size H the final map is ceil(H / OS) and ``low_level`` (layer1) is
ceil(H / 4).
"""
from numbers import Integral

from minidl import nn
from minidl.models.backbones import check_images, check_output_stride, init_conv_weights

DILATION_CONVENTIONS = ("deeplab", "torchvision")
STEM_STRIDE = 4  # conv1 (stride 2) then maxpool (stride 2)


def conv3x3(in_planes, out_planes, stride=1, dilation=1):
    """3×3 conv at rate ``dilation``, padded by the rate so that stride 1 keeps the size."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34). Both are dilated in a dilated stage (torchvision refuses rate > 1 here)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided, dilated), 1×1 expand ×4 (ResNet-50/101).

    The 3×3 conv, the expensive one, works on a quarter of the unit's channels.
    """

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def unit_strides_and_rates(layers, output_stride, multi_grid, dilation_convention):
    """For each stage, the (stride, dilation) of each of its ``layers[stage]`` units.

    Walks the stages keeping the stride reached so far: a stage whose stride 2
    would overshoot ``output_stride`` gets stride 1 and doubles the rate
    instead. Then multi-grid scales the last stage's rates.
    """
    plan, reached, rate = [], STEM_STRIDE, 1
    for stage, units in enumerate(layers):
        stride, previous_rate = (1 if stage == 0 else 2), rate
        if reached * stride > output_stride:
            stride, rate = 1, rate * stride
        reached *= stride
        first_rate = previous_rate if dilation_convention == "torchvision" else rate
        plan.append([(stride, first_rate)] + [(1, rate)] * (units - 1))
    plan[-1] = [(s, r * multi_grid[i % len(multi_grid)]) for i, (s, r) in enumerate(plan[-1])]
    return plan


def make_stage(block, inplanes, planes, units):
    """A stage (``layer1``..``layer4``) as a Sequential of blocks, ``units`` = [(stride, rate), ...].

    Only the first block changes the size or the width, so only it needs a
    ``downsample`` projection (1×1 conv with the block's stride, BN) on its shortcut.
    """
    (stride, rate), *rest = units
    out_planes = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_planes:
        downsample = nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
    blocks = [block(inplanes, planes, stride, downsample, rate)]
    blocks += [block(out_planes, planes, dilation=rate) for _, rate in rest]
    return nn.Sequential(*blocks)


def check_options(output_stride, multi_grid, width, dilation_convention):
    check_output_stride(output_stride)
    if not multi_grid or any(not isinstance(r, Integral) or r < 1 for r in multi_grid):
        raise ValueError(f"multi_grid must be a non-empty sequence of positive integers, got {multi_grid!r}")
    if not isinstance(width, Integral) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if dilation_convention not in DILATION_CONVENTIONS:
        raise ValueError(f"dilation_convention must be one of {DILATION_CONVENTIONS}, got {dilation_convention!r}")


class ResNet(nn.Module):
    """ResNet trunk (no fc); ``forward`` returns {"low_level": layer1 (OS 4), "out": layer4 (OS ``output_stride``)}.

    ``layers``: units per stage; ``width``: channels of the stem and of layer1's
    3×3 convs (64 in the paper), doubling at each stage. ``out_channels`` is
    8·width·expansion (512 or 2048 at width 64), ``low_level_channels``
    width·expansion.
    """

    in_channels = 3

    def __init__(self, block, layers, output_stride=16, multi_grid=(1, 1, 1), width=64,
                 dilation_convention="deeplab"):
        super().__init__()
        check_options(output_stride, multi_grid, width, dilation_convention)
        plan = unit_strides_and_rates(layers, output_stride, multi_grid, dilation_convention)
        self.conv1 = nn.Conv2d(self.in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        e = block.expansion
        self.layer1 = make_stage(block, width, width, plan[0])
        self.layer2 = make_stage(block, width * e, width * 2, plan[1])
        self.layer3 = make_stage(block, width * 2 * e, width * 4, plan[2])
        self.layer4 = make_stage(block, width * 4 * e, width * 8, plan[3])
        self.low_level_channels, self.out_channels = width * e, width * 8 * e
        self.output_stride = output_stride
        init_conv_weights(self)

    def forward(self, x):
        check_images(x, self.in_channels, self.output_stride, type(self).__name__)
        low_level = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        out = self.layer4(self.layer3(self.layer2(low_level)))
        return {"low_level": low_level, "out": out}


def resnet18(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    return ResNet(BasicBlock, [2, 2, 2, 2], output_stride, multi_grid, width, dilation_convention)


def resnet34(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    return ResNet(BasicBlock, [3, 4, 6, 3], output_stride, multi_grid, width, dilation_convention)


def resnet50(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    return ResNet(Bottleneck, [3, 4, 6, 3], output_stride, multi_grid, width, dilation_convention)


def resnet101(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    """DeepLab's backbone of choice (v2, v3, and v3+'s ResNet variant)."""
    return ResNet(Bottleneck, [3, 4, 23, 3], output_stride, multi_grid, width, dilation_convention)


def resnet_small(output_stride=16, multi_grid=(1, 1, 1), width=16, dilation_convention="deeplab", layers=(1, 1, 1, 1)):
    """One BasicBlock per stage at width 16 (about 0.3M weights): a backbone that trains on a CPU in minutes.

    ``layers`` sets the units per stage: (1, 1, 1, 3) gives layer4 the three units that v3's multi-grid
    rates apply to, as in ResNet-101's block4.
    """
    return ResNet(BasicBlock, list(layers), output_stride, multi_grid, width, dilation_convention)
