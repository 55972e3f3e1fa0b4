"""PyTorch twin of minidl/models/decoder.py: DeepLab v3+'s decoder, same names and arguments."""
import torch
import torch.nn.functional as F
from torch import nn

from minidl.models.decoder import LOW_LEVEL_OUT
from reference.models.aspp import atrous_conv_bn_relu, conv_bn_relu


class Decoder(nn.Module):
    """Low-level 1×1 conv + BN + ReLU; upsampled encoder features; concat; two 3×3 convs; 1×1 classifier."""

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
        return self.classifier(self.fuse(torch.cat([encoder, low_level], 1)))
