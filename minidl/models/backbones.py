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

from minidl import nn

OUTPUT_STRIDES = (8, 16, 32)

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


# ---------------------------------------------------------------- what every backbone shares
def check_output_stride(output_stride):
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")


def check_images(x, channels, total_stride, who):
    """Refuse, with a message that says what was expected, what the network cannot take."""
    if x.ndim != 4 or x.shape[1] != channels:
        got = f"{x.shape[1]} channels" if x.ndim == 4 else f"{x.ndim} dimensions"
        raise ValueError(f"{who}: input x must be images of shape (N, {channels}, H, W), got shape "
                         f"{tuple(x.shape)} ({got})")
    if min(x.shape[2:]) < total_stride:
        raise ValueError(f"{who}: input x is {x.shape[2]}×{x.shape[3]}, smaller than the network's total stride "
                         f"{total_stride}; H and W must each be at least {total_stride}")


def init_conv_weights(module):
    """torchvision's initialisation of its CNNs: He-normal with fan_out for every conv, zero biases.

    (BatchNorm keeps its own ones and zeros.) Scaling by fan_out = out_channels·k²
    keeps the variance of the gradients steady on the way back through ReLUs.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
