"""DeepLab v2, v3 and v3+: a backbone at some output stride, a head, and logits at the input's size.

- ``DeepLabV2`` (TPAMI 2017): backbone at OS 8 → ASPP-L class scores.
- ``DeepLabV3`` (2017): backbone at OS 16 (8 to evaluate) → ASPP with BN and
  image pooling → 1×1 classifier (Sec. 3.3).
- ``DeepLabV3Plus`` (ECCV 2018): v3's ASPP as the encoder, then a decoder that
  fuses the OS-4 low-level features (Sec. 3.1).

All three upsample their scores bilinearly (align_corners=False) to the
input's size, so a loss can be taken against full-resolution labels (v3,
Sec. 4.1) and any image size works. The factories ``deeplabv2``,
``deeplabv3`` and ``deeplabv3plus`` build them from a backbone's name.
"""
import functools

import minidl
import minidl.nn.functional as F
from minidl import nn
from minidl.models.aspp import (ASPP, ASPP_RATES, ASPP_STRIDE, ASPP_V2_RATES, ASPP_V2_STRIDE, ASPPv2, check_rates,
                                scaled_rates)
from minidl.models.backbones import BACKBONES, build_backbone, check_images
from minidl.models.decoder import Decoder, low_level_width

HEAD_CHANNELS = 256  # every v3/v3+ head branch, projection and decoder conv (v3 Sec. 3.3, v3+ Sec. 4.1)
MULTI_GRID = (1, 2, 4)  # v3's unit rates for ResNet's last block (Sec. 4.1, Table 3): rates 2·(1, 2, 4) at OS 16

# Plain values a module's constructor decides (stride, padding, dilation, output_stride, ...).
_SETTING_TYPES = (bool, int, float, str, tuple, list, type(None))


def _layout(module):
    """What a module's weights depend on: submodule names and types, parameter and buffer shapes."""
    modules = [(name, type(m).__name__) for name, m in module.named_modules()]
    tensors = [(name, tuple(t.shape)) for name, t in [*module.named_parameters(), *module.named_buffers()]]
    return modules, tensors


def copy_settings(target, source):
    """Give every submodule of ``target`` the plain settings of its twin in ``source``, keeping its weights.

    This is how a model changes output stride in place: build the backbone
    afresh at the new stride (its constructor knows which strides become
    dilations, and how multi-grid multiplies them), then copy its convs'
    stride, padding and dilation (and any other plain attribute, such as the
    backbone's ``output_stride``) onto the trained modules. The two must have
    the same modules and weight shapes; training mode is left as it is.
    """
    if _layout(target) != _layout(source):
        raise ValueError(
            f"cannot copy settings between {type(source).__name__} and {type(target).__name__}: their modules or "
            "weight shapes differ (a backbone whose layers depend on the output stride cannot switch it in place)"
        )
    sources = dict(source.named_modules())
    for name, module in target.named_modules():
        for key, value in vars(sources[name]).items():
            if key != "training" and isinstance(value, _SETTING_TYPES) and vars(module).get(key) != value:
                setattr(module, key, value)


class _DeepLab(nn.Module):
    """What the three models share: the backbone, the output-stride switch, input checks, final upsampling.

    ``make_backbone(output_stride)`` builds the backbone; the model keeps it to
    rebuild the backbone's settings when the output stride changes.
    Subclasses set ``PAPER_RATES`` at ``PAPER_STRIDE`` and a ``head``.
    """

    PAPER_RATES, PAPER_STRIDE = ASPP_RATES, ASPP_STRIDE

    def __init__(self, make_backbone, output_stride, num_classes, atrous_rates=None):
        super().__init__()
        self.make_backbone = make_backbone
        self.backbone = make_backbone(output_stride)
        self.num_classes = num_classes
        # the head's rates and the stride they hold at; other strides scale them (see rates_at)
        self.rates_stride = ((self.PAPER_RATES, self.PAPER_STRIDE) if atrous_rates is None
                             else (check_rates(atrous_rates), output_stride))
        self.in_channels = next(m.in_channels for m in self.backbone.modules() if isinstance(m, nn.Conv2d))

    @property
    def output_stride(self):
        return self.backbone.output_stride

    def rates_at(self, output_stride):
        """The head's atrous rates at ``output_stride``: the paper's (or ``atrous_rates``), scaled to keep
        their field of view."""
        return scaled_rates(*self.rates_stride, output_stride)

    def set_output_stride(self, output_stride):
        """Switch output stride in place, weights untouched (v3, Sec. 4.1: train at 16, evaluate at 8).

        The backbone trades stride for dilation (see ``copy_settings``) and the
        ASPP rates scale with it, so every conv sees the same input pixels as
        before, on a denser grid. Building the template backbone draws random
        weights; the random stream is put back, so a training run goes on
        with the same dropout masks whether or not it switched.
        """
        state = minidl.get_rng_state()
        try:
            template = self.make_backbone(output_stride)
        finally:
            minidl.set_rng_state(state)
        copy_settings(self.backbone, template)
        self.aspp.set_rates(self.rates_at(output_stride))
        return self

    def forward(self, images):
        check_images(images, self.in_channels, self.output_stride, type(self).__name__)
        scores = self.head(self.backbone(images))
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV2(_DeepLab):
    """DeepLab v2: ASPP-L scores on the backbone's final features (rates 6, 12, 18, 24 at OS 8)."""

    PAPER_RATES, PAPER_STRIDE = ASPP_V2_RATES, ASPP_V2_STRIDE

    def __init__(self, make_backbone, num_classes=21, output_stride=8, atrous_rates=None):
        super().__init__(make_backbone, output_stride, num_classes, atrous_rates)
        self.aspp = ASPPv2(self.backbone.out_channels, num_classes, self.rates_at(output_stride))

    def head(self, features):
        return self.aspp(features["out"])


class DeepLabV3(_DeepLab):
    """DeepLab v3: ASPP (rates 6, 12, 18 at OS 16) then a 1×1 classifier, as in the paper (Sec. 3.3).

    torchvision's variant puts a 3×3 conv + BN + ReLU before the classifier;
    see minidl.models.torchvision_compat for that one.
    """

    def __init__(self, make_backbone, num_classes=21, output_stride=16, head_channels=HEAD_CHANNELS, dropout=0.5,
                 separable=False, image_pooling=True, atrous_rates=None):
        super().__init__(make_backbone, output_stride, num_classes, atrous_rates)
        self.aspp = ASPP(self.backbone.out_channels, head_channels, self.rates_at(output_stride), separable, dropout,
                         image_pooling)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)

    def head(self, features):
        return self.classifier(self.aspp(features["out"]))


class DeepLabV3Plus(_DeepLab):
    """DeepLab v3+: v3's ASPP as encoder, the decoder on the OS-4 features, separable convs in both.

    The low-level projection keeps the paper's ratio of 48 to 256 channels
    when ``head_channels`` is narrower (small models for the CPU).
    """

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


def with_multi_grid(backbone, multi_grid, options):
    """The backbone's options with v3's multi-grid: (1, 2, 4) by default on ResNets, refused on the others."""
    if BACKBONES.get(backbone, ("",))[0] == "resnet":
        return {"multi_grid": MULTI_GRID if multi_grid is None else tuple(multi_grid), **options}
    if multi_grid is not None and backbone in BACKBONES:
        resnets = ", ".join(name for name, (module, _) in BACKBONES.items() if module == "resnet")
        raise ValueError(f"multi_grid applies to ResNet backbones ({resnets}); backbone {backbone!r} has no multi-grid")
    return dict(options)


def backbone_builder(backbone, package, options):
    """A function output_stride → the named backbone from ``package`` with ``options``."""
    return functools.partial(build_backbone, backbone, package=package, **options)


def deeplabv2(backbone="resnet101", num_classes=21, output_stride=8, atrous_rates=None, **backbone_options):
    """DeepLab v2 (ResNet-101 or VGG-16 in the paper) at output stride 8.

    ``atrous_rates`` are ASPP-L's rates at ``output_stride`` (default: the paper's 6, 12, 18, 24 at OS 8);
    one rate, e.g. ``(12,)``, is v2's single-branch LargeFOV head.
    """
    return DeepLabV2(backbone_builder(backbone, "minidl", backbone_options), num_classes, output_stride, atrous_rates)


def deeplabv3(backbone="resnet101", num_classes=21, output_stride=16, multi_grid=None, head_channels=HEAD_CHANNELS,
              dropout=0.5, separable=False, image_pooling=True, atrous_rates=None, **backbone_options):
    """DeepLab v3 at output stride 16; ``multi_grid`` (ResNets only) defaults to the paper's (1, 2, 4).

    ``separable`` and ``image_pooling`` change the ASPP (see ``ASPP``): v3 with
    v3+'s separable ASPP differs from v3+ only by the decoder. ``atrous_rates`` are ASPP's rates at
    ``output_stride`` (default: the paper's 6, 12, 18 at OS 16, scaled to the stride).
    """
    make = backbone_builder(backbone, "minidl", with_multi_grid(backbone, multi_grid, backbone_options))
    return DeepLabV3(make, num_classes, output_stride, head_channels, dropout, separable, image_pooling, atrous_rates)


def deeplabv3plus(backbone="xception65", num_classes=21, output_stride=16, separable=True,
                  head_channels=HEAD_CHANNELS, dropout=0.5, image_pooling=True, atrous_rates=None,
                  **backbone_options):
    """DeepLab v3+ with aligned Xception-65 at output stride 16, separable ASPP and decoder (``atrous_rates``
    as in ``deeplabv3``)."""
    make = backbone_builder(backbone, "minidl", backbone_options)
    return DeepLabV3Plus(make, num_classes, output_stride, separable, head_channels, dropout, image_pooling,
                         atrous_rates)
