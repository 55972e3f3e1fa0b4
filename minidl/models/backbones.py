"""Every backbone by name, for minidl and for reference/ alike.

A backbone is a Module whose ``forward(x)`` returns ``{"low_level": ..., "out": ...}``:
the features at output stride 4 (what the v3+ decoder sharpens boundaries
with) and the final features at the requested ``output_stride`` (what ASPP
looks at). It also says ``out_channels``, ``low_level_channels`` and
``output_stride``. Each constructor takes ``output_stride`` (32, 16 or 8:
the stride of the last stages becomes dilation) and its own options (widths,
multi-grid rates).
"""
import importlib

# name -> (module under <package>.models, constructor); the same modules exist in minidl and in reference
BACKBONES = {
    "resnet18": ("resnet", "resnet18"),
    "resnet34": ("resnet", "resnet34"),
    "resnet50": ("resnet", "resnet50"),
    "resnet101": ("resnet", "resnet101"),
    "resnet_small": ("resnet", "resnet_small"),
    "vgg16": ("vgg", "vgg16"),
    "mobilenetv2": ("mobilenetv2", "mobilenetv2"),
    "mobilenetv2_small": ("mobilenetv2", "mobilenetv2_small"),
    "xception65": ("xception", "xception65"),
}


def build_backbone(name, output_stride=16, package="minidl", **options):
    """The backbone called ``name`` from ``package`` ('minidl' or 'reference'), at ``output_stride``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(BACKBONES))}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    module, constructor = BACKBONES[name]
    return getattr(importlib.import_module(f"{package}.models.{module}"), constructor)(
        output_stride=output_stride, **options
    )
