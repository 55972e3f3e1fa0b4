"""torchvision's DeepLabV3 (ResNet-50/101), module for module, so that its checkpoints load into minidl.

``deeplabv3_resnet50()`` has exactly the modules, names and state_dict keys of
``torchvision.models.segmentation.deeplabv3_resnet50()`` (num_batches_tracked
included) and computes the same function, so

    model = deeplabv3_resnet50(num_classes=21, aux_loss=True)
    model.load_state_dict({k: v.numpy() for k, v in torch_state_dict.items()})

gives torchvision's predictions from the from-scratch engine.

torchvision's variant of DeepLab v3, against the paper (see DESIGN.md):

- the backbone runs at OS 8 with torchvision's dilation convention
  (``replace_stride_with_dilation=[False, True, True]``: layer3 at rate 2 and
  layer4 at rate 4, the first unit of each keeping the previous rate), and no
  multi-grid;
- ASPP uses the OS-8 rates 12, 24, 36 and ends with Dropout(0.5);
- the head adds a 3×3 conv + BN + ReLU between ASPP and the 1×1 classifier;
- an optional auxiliary FCN head on layer3 (OS 8, 1024 channels) gives a
  second loss during training (``aux_loss=True``; the checkpoints carry it).

Both outputs are upsampled to the input size (bilinear, align_corners=False),
so the loss is taken at full resolution.
"""
from collections import OrderedDict

from minidl import nn
from minidl.nn import functional as F
from minidl.models.aspp import ASPP  # v3's dense ASPP: torchvision's, module for module and key for key
from minidl.models.backbones import check_images
from minidl.models.resnet import resnet50, resnet101

ASPP_RATES = (12, 24, 36)  # v3's (6, 12, 18) at OS 16, doubled for OS 8
BACKBONE = {"output_stride": 8, "dilation_convention": "torchvision"}  # replace_stride_with_dilation=[F, T, T]


class IntermediateLayerGetter(nn.ModuleDict):
    """torchvision's wrapper: the model's children up to the last one named in ``return_layers``.

    ``forward`` runs them in order and returns {new name: output} for the
    named ones, e.g. {"layer4": "out", "layer3": "aux"}. Holding the children
    directly (not the ResNet) is what makes the keys ``backbone.layer1.0.conv1.weight``.
    """

    def __init__(self, model, return_layers):
        layers, remaining = OrderedDict(), set(return_layers)
        for name, module in model.named_children():
            if not remaining:
                break
            layers[name] = module
            remaining.discard(name)
        if remaining:
            raise ValueError(f"return_layers {sorted(remaining)} are not children of the model")
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class DeepLabHead(nn.Sequential):
    """ASPP, then a 3×3 conv + BN + ReLU, then the 1×1 classifier (with bias) to ``num_classes`` scores."""

    def __init__(self, in_channels, num_classes, atrous_rates=ASPP_RATES):
        super().__init__(
            ASPP(in_channels, 256, atrous_rates),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, num_classes, 1),
        )


class FCNHead(nn.Sequential):
    """The auxiliary head: 3×3 conv to in_channels/4 + BN + ReLU, Dropout(0.1), 1×1 classifier."""

    def __init__(self, in_channels, channels):
        inter_channels = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter_channels, channels, 1),
        )


class DeepLabV3(nn.Module):
    """torchvision's DeepLabV3 (its _SimpleSegmentationModel): backbone, classifier, optional aux_classifier.

    ``forward`` returns an OrderedDict: "out" (and "aux" with an aux_classifier),
    each (N, num_classes, H, W), logits at the input's size.
    """

    def __init__(self, backbone, classifier, aux_classifier=None):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x):
        check_images(x, 3, BACKBONE["output_stride"], type(self).__name__)
        features = self.backbone(x)
        heads = [("out", self.classifier)]
        if self.aux_classifier is not None:
            heads.append(("aux", self.aux_classifier))
        return OrderedDict(
            (name, F.interpolate(head(features[name]), size=x.shape[-2:], mode="bilinear", align_corners=False))
            for name, head in heads
        )


def _deeplabv3_resnet(resnet, num_classes, aux_loss):
    return_layers = {"layer4": "out", "layer3": "aux"} if aux_loss else {"layer4": "out"}
    backbone = IntermediateLayerGetter(resnet(**BACKBONE), return_layers)
    aux_classifier = FCNHead(1024, num_classes) if aux_loss else None
    return DeepLabV3(backbone, DeepLabHead(2048, num_classes), aux_classifier)


def deeplabv3_resnet50(num_classes=21, aux_loss=False):
    """torchvision's ``deeplabv3_resnet50(weights=None, weights_backbone=None, ...)``, untrained."""
    return _deeplabv3_resnet(resnet50, num_classes, aux_loss)


def deeplabv3_resnet101(num_classes=21, aux_loss=False):
    """torchvision's ``deeplabv3_resnet101(weights=None, weights_backbone=None, ...)``, untrained."""
    return _deeplabv3_resnet(resnet101, num_classes, aux_loss)
