"""VGG-16 as DeepLab v1 and v2 use it: dense features at output stride 8 through atrous convolution.

An ImageNet VGG-16 halves the resolution five times (OS 32). DeepLab changes it so:

* every max-pool is 3×3 with padding 1 (not 2×2), so a map of size n pools to
  ceil(n/2) and the grids of successive layers stay aligned;
* pool4 and pool5 keep stride 1, and the conv5 block, which now sees a map
  twice as fine as it was trained on, spreads its taps 2 apart (dilation 2);
* the fully connected fc6/fc7 become convolutions. DeepLab-LargeFOV (v1) uses
  fc6 = 3×3 at rate 12 with 1024 channels, fc7 = 1×1 with 1024 channels.

``output_stride`` sets how much of that is undone (which pools stride, which
block dilates)::

    output_stride   pool1-3   pool4   pool5   conv5 dilation   fc6 rate
          8            2        1       1           2             12
         16            2        2       1           1              6
         32            2        2       2           1              3

fc6's rate scales with the output stride so its taps stay 96 input pixels
apart (12·8 = 6·16 = 3·32): the same field of view at every stride.

The backbone ends at pool5 (``out_channels`` = 512 at full width): DeepLab v2's
ASPP-L reads pool5 with four branches, each its own fc6 (3×3 at rate 6, 12, 18
or 24) → fc7 → fc8. ``large_fov=True`` appends DeepLab-LargeFOV's single
fc6/fc7 instead (``out_channels`` = 1024): the v1 model, whose classifier is a
1×1 conv on fc7. The names (``features.N`` as torchvision's ``vgg16``, then
``fc6``, ``fc7``) let ImageNet VGG weights load into ``features``.

Pooling uses PyTorch's floor rounding, so every odd or even size n gives
ceil(n/OS). Caffe (where DeepLab was written) rounds up and gives n/2 + 1 for
an even n; the two agree on DeepLab's odd crops (321, 513).
"""
from minidl import nn
from minidl.models.backbones import check_images, check_output_stride, init_conv_weights

# The 13 convolutions of VGG-16, block by block: their output channels at width 64.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

# output stride -> (pool4 stride, pool5 stride, dilation of the conv5 block); see the module docstring.
STRIDES_AND_DILATION = {8: (1, 1, 2), 16: (2, 1, 1), 32: (2, 2, 1)}

# fc6's rate at output stride 8 (DeepLab-LargeFOV); at output stride s it is FC6_RATE_AT_OS8 * 8 / s.
FC6_RATE_AT_OS8 = 12

# features[:LOW_LEVEL_LAYERS] is conv1_1 … pool2: the output stride 4 features DeepLab v3+'s decoder reads.
LOW_LEVEL_LAYERS = 10


def vgg16_features(width, output_stride):
    """conv1_1 … pool5 as one list, laid out as torchvision's ``vgg16().features`` (indices 0 … 30)."""
    pool4_stride, pool5_stride, conv5_dilation = STRIDES_AND_DILATION[output_stride]
    pool_strides = (2, 2, 2, pool4_stride, pool5_stride)
    dilations = (1, 1, 1, 1, conv5_dilation)
    layers, in_channels = [], 3
    for block, pool_stride, dilation in zip(VGG16_BLOCKS, pool_strides, dilations):
        for channels in block:
            out_channels = channels * width // 64
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.MaxPool2d(3, stride=pool_stride, padding=1))
    return layers


class VGG16(nn.Module):
    """DeepLab's VGG-16 backbone; ``forward`` returns {"low_level": pool2 (OS 4), "out": pool5 or fc7}.

    ``width`` is conv1's channel count (64 in VGG-16); every layer scales with
    it, so ``width=8`` is a narrow copy for tests. ``dropout`` is the drop
    probability after fc6 and fc7 (0.5 in DeepLab).
    """

    def __init__(self, output_stride=8, width=64, large_fov=False, dropout=0.5):
        super().__init__()
        check_output_stride(output_stride)
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        self.output_stride, self.large_fov = output_stride, large_fov
        self.features = nn.Sequential(*vgg16_features(width, output_stride))
        self.low_level_channels = 2 * width
        self.out_channels = 8 * width
        if large_fov:
            self._add_large_fov(dropout)
        init_conv_weights(self)

    def _add_large_fov(self, dropout):
        """fc6 (3×3 atrous, rate 96/OS) and fc7 (1×1), each + ReLU + dropout, 2·width·8 channels."""
        rate = FC6_RATE_AT_OS8 * 8 // self.output_stride
        channels = 2 * self.out_channels
        self.fc6 = nn.Conv2d(self.out_channels, channels, 3, padding=rate, dilation=rate)
        self.relu6, self.drop6 = nn.ReLU(), nn.Dropout(dropout)
        self.fc7 = nn.Conv2d(channels, channels, 1)
        self.relu7, self.drop7 = nn.ReLU(), nn.Dropout(dropout)
        self.out_channels = channels

    def forward(self, input):
        check_images(input, 3, self.output_stride, "vgg16")
        low_level = self.features[:LOW_LEVEL_LAYERS](input)
        out = self.features[LOW_LEVEL_LAYERS:](low_level)
        if self.large_fov:
            out = self.drop6(self.relu6(self.fc6(out)))
            out = self.drop7(self.relu7(self.fc7(out)))
        return {"low_level": low_level, "out": out}


def vgg16(output_stride=8, width=64, large_fov=False, dropout=0.5):
    """VGG-16 for DeepLab v2 (ends at pool5) or, with ``large_fov=True``, DeepLab-LargeFOV (ends at fc7)."""
    return VGG16(output_stride, width, large_fov, dropout)
