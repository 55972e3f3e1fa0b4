"""PyTorch twin of minidl/models/deeplab.py: DeepLab v2, v3 and v3+ with the same names and arguments.

The plain-Python parts (rates, multi-grid options, the settings copy behind
``set_output_stride``) are shared with minidl; the backbones come from
``reference.models`` through the same registry.
"""
import torch
import torch.nn.functional as F
from torch import nn

from minidl.models.aspp import ASPP_RATES, ASPP_STRIDE, ASPP_V2_RATES, ASPP_V2_STRIDE, check_rates, scaled_rates
from minidl.models.decoder import low_level_width
from minidl.models.deeplab import HEAD_CHANNELS, backbone_builder, copy_settings, with_multi_grid
from reference.models.aspp import ASPP, ASPPv2
from reference.models.decoder import Decoder


class _DeepLab(nn.Module):
    """The backbone, the output-stride switch and the final bilinear upsampling to the input's size."""

    PAPER_RATES, PAPER_STRIDE = ASPP_RATES, ASPP_STRIDE

    def __init__(self, make_backbone, output_stride, num_classes, atrous_rates=None):
        super().__init__()
        self.make_backbone = make_backbone
        self.backbone = make_backbone(output_stride)
        self.num_classes = num_classes
        # the head's rates and the stride they hold at; other strides scale them (see rates_at)
        self.rates_stride = ((self.PAPER_RATES, self.PAPER_STRIDE) if atrous_rates is None
                             else (check_rates(atrous_rates), output_stride))

    @property
    def output_stride(self):
        return self.backbone.output_stride

    def rates_at(self, output_stride):
        return scaled_rates(*self.rates_stride, output_stride)

    def set_output_stride(self, output_stride):
        with torch.random.fork_rng(devices=[]):
            template = self.make_backbone(output_stride)
        copy_settings(self.backbone, template)
        self.aspp.set_rates(self.rates_at(output_stride))
        return self

    def forward(self, images):
        scores = self.head(self.backbone(images))
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV2(_DeepLab):
    PAPER_RATES, PAPER_STRIDE = ASPP_V2_RATES, ASPP_V2_STRIDE

    def __init__(self, make_backbone, num_classes=21, output_stride=8, atrous_rates=None):
        super().__init__(make_backbone, output_stride, num_classes, atrous_rates)
        self.aspp = ASPPv2(self.backbone.out_channels, num_classes, self.rates_at(output_stride))

    def head(self, features):
        return self.aspp(features["out"])


class DeepLabV3(_DeepLab):
    def __init__(self, make_backbone, num_classes=21, output_stride=16, head_channels=HEAD_CHANNELS, dropout=0.5,
                 separable=False, image_pooling=True, atrous_rates=None):
        super().__init__(make_backbone, output_stride, num_classes, atrous_rates)
        self.aspp = ASPP(self.backbone.out_channels, head_channels, self.rates_at(output_stride), separable, dropout,
                         image_pooling)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def head(self, features):
        return self.classifier(self.aspp(features["out"]))


class DeepLabV3Plus(_DeepLab):
    def __init__(self, make_backbone, num_classes=21, output_stride=16, separable=True, head_channels=HEAD_CHANNELS,
                 dropout=0.5, image_pooling=True, atrous_rates=None):
        super().__init__(make_backbone, output_stride, num_classes, atrous_rates)
        self.aspp = ASPP(self.backbone.out_channels, head_channels, self.rates_at(output_stride), separable, dropout,
                         image_pooling)
        self.decoder = Decoder(self.backbone.low_level_channels, head_channels, num_classes,
                               low_level_out=low_level_width(head_channels),
                               channels=head_channels, separable=separable)

    def head(self, features):
        return self.decoder(features["low_level"], self.aspp(features["out"]))


def deeplabv2(backbone="resnet101", num_classes=21, output_stride=8, atrous_rates=None, **backbone_options):
    return DeepLabV2(backbone_builder(backbone, "reference", backbone_options), num_classes, output_stride, atrous_rates)


def deeplabv3(backbone="resnet101", num_classes=21, output_stride=16, multi_grid=None, head_channels=HEAD_CHANNELS,
              dropout=0.5, separable=False, image_pooling=True, atrous_rates=None, **backbone_options):
    make = backbone_builder(backbone, "reference", with_multi_grid(backbone, multi_grid, backbone_options))
    return DeepLabV3(make, num_classes, output_stride, head_channels, dropout, separable, image_pooling, atrous_rates)


def deeplabv3plus(backbone="xception65", num_classes=21, output_stride=16, separable=True,
                  head_channels=HEAD_CHANNELS, dropout=0.5, image_pooling=True, atrous_rates=None,
                  **backbone_options):
    make = backbone_builder(backbone, "reference", backbone_options)
    return DeepLabV3Plus(make, num_classes, output_stride, separable, head_channels, dropout, image_pooling,
                         atrous_rates)
