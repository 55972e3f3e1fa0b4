"""Convolution layers: Conv2d, and the depthwise separable convolution of DeepLab v3+."""
from minidl import functional as F
from minidl.functional.convutils import pair
from minidl.nn.containers import Sequential
from minidl.nn.layers import ReLU, _WeightAndBias
from minidl.nn.norm import BatchNorm2d

_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


class Conv2d(_WeightAndBias):
    """2-D convolution with weight (out_channels, in_channels/groups, kh, kw), as ``torch.nn.Conv2d``.

    ``dilation`` > 1 is atrous convolution: the taps spread ``dilation`` pixels
    apart, so a 3×3 kernel at rate r sees 2r+1 pixels with nine weights.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"Conv2d: in_channels={in_channels} and out_channels={out_channels} must both be divisible "
                f"by groups={groups}"
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {tuple(_PADDING_MODES)}, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair("kernel_size", kernel_size, "Conv2d", minimum=1)
        self.stride = pair("stride", stride, "Conv2d", minimum=1)
        self.padding = padding if isinstance(padding, str) else pair("padding", padding, "Conv2d", minimum=0)
        self.dilation = pair("dilation", dilation, "Conv2d", minimum=1)
        self.padding_mode = padding_mode
        self._create((out_channels, in_channels // groups) + self.kernel_size, bias, device, dtype)

    def forward(self, input):
        if input.ndim not in (3, 4) or input.shape[-3] != self.in_channels:
            raise ValueError(
                f"Conv2d(in_channels={self.in_channels}) expects input (N, {self.in_channels}, H, W), "
                f"got shape {input.shape}"
            )
        padding = self.padding
        if self.padding_mode != "zeros" and not isinstance(padding, str):
            ph, pw = padding
            input, padding = F.pad(input, (pw, pw, ph, ph), mode=_PADDING_MODES[self.padding_mode]), 0
        return F.conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class SeparableConv2d(Sequential):
    """Depthwise separable (atrous) convolution, as DeepLab v3+ uses in ASPP, decoder and Xception.

    A k×k depthwise conv filters each channel on its own (with ``dilation``,
    it is atrous), BN + ReLU; then a 1×1 pointwise conv mixes the channels,
    BN + ReLU. Against a dense k×k conv it needs C_in·k² + C_in·C_out weights
    instead of C_in·C_out·k². ``padding`` defaults to dilation·(k−1)/2, which
    keeps the size at stride 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, dilation=1):
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        super().__init__()
        self.depthwise = Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                groups=in_channels, bias=False)
        self.depthwise_bn = BatchNorm2d(in_channels)
        self.depthwise_relu = ReLU()
        self.pointwise = Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = BatchNorm2d(out_channels)
        self.pointwise_relu = ReLU()
