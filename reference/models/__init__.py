"""PyTorch twins of minidl.models, with the same names, arguments and state_dict keys.

Backbones are imported only when built (``minidl.models.build_backbone(...,
package='reference')``), so this package loads without importing every one.
"""
from reference.models.aspp import ASPP, ASPPPooling, ASPPv2  # noqa: F401
from reference.models.decoder import Decoder  # noqa: F401
from reference.models.deeplab import (  # noqa: F401
    DeepLabV2,
    DeepLabV3,
    DeepLabV3Plus,
    deeplabv2,
    deeplabv3,
    deeplabv3plus,
)
