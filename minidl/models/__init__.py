"""DeepLab v2, v3 and v3+: backbones by name, the ASPP heads, the v3+ decoder, the models and their summary.

Backbones are imported only when built (``build_backbone``), so this package
loads without importing every architecture.
"""
from minidl.models.aspp import ASPP, ASPPPooling, ASPPv2  # noqa: F401
from minidl.models.backbones import BACKBONES, build_backbone  # noqa: F401
from minidl.models.decoder import Decoder  # noqa: F401
from minidl.models.deeplab import (  # noqa: F401
    DeepLabV2,
    DeepLabV3,
    DeepLabV3Plus,
    deeplabv2,
    deeplabv3,
    deeplabv3plus,
)
from minidl.models.summary import summary  # noqa: F401  (the function; minidl.models.summary is it, not the module)
from minidl.models.torchvision_compat import deeplabv3_resnet50, deeplabv3_resnet101  # noqa: F401,E402
