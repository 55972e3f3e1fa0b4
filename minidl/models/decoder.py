"""DeepLab v3+'s decoder (Chen et al., ECCV 2018, Sec. 3.1, Fig. 2): sharper object boundaries.

The v3 encoder's output sits at output stride 16, and upsampling its logits
×16 blurs boundaries. v3+ instead upsamples the encoder features ×4 to the
backbone's low-level features at stride 4, which still know where edges are,
and lets two 3×3 convs combine both before classifying. The low-level
features are first squeezed to few channels (48, Sec. 4.1) so they do not
outweigh the 256 encoder channels.
"""
import minidl
import minidl.nn.functional as F
from minidl import nn
from minidl.models.aspp import atrous_conv_bn_relu, conv_bn_relu

LOW_LEVEL_OUT = 48  # the paper's width for the projected low-level features (Sec. 4.1, Table 1)


def low_level_width(channels):
    """The low-level projection's width beside ``channels`` encoder channels: the paper's 48 per 256."""
    return max(1, channels * LOW_LEVEL_OUT // 256)


class Decoder(nn.Module):
    """Low-level 1×1 conv + BN + ReLU; upsampled encoder features; concat; two 3×3 convs; 1×1 classifier.

    ``forward(low_level, encoder)`` returns class scores at the low-level
    features' size. The two 3×3 convs are depthwise separable by default, as
    in v3+ (Sec. 3.2); ``separable=False`` makes them dense.
    """

    def __init__(self, low_level_channels, encoder_channels=256, num_classes=21, low_level_out=LOW_LEVEL_OUT,
                 channels=256, separable=True):
        super().__init__()
        self.low_level = conv_bn_relu(low_level_channels, low_level_out)
        self.fuse = nn.Sequential(
            atrous_conv_bn_relu(encoder_channels + low_level_out, channels, separable=separable),
            atrous_conv_bn_relu(channels, channels, separable=separable),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low_level, encoder):
        low_level = self.low_level(low_level)
        encoder = F.interpolate(encoder, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(minidl.cat([encoder, low_level], 1)))
