"""DeepLab's VGG-16 backbone in PyTorch, with minidl.models.vgg's structure and state_dict keys.

pool1-3: 3×3 max-pools, stride 2, padding 1. Output stride 8: pool4 and pool5
stride 1, conv5 at dilation 2; 16: pool4 strides, conv5 undilated; 32: pool5
strides too. ``large_fov`` appends fc6 (3×3, 1024 channels at width 64, rate
96/OS) and fc7 (1×1, 1024), each + ReLU + dropout, as DeepLab-LargeFOV.
"""
from torch import nn

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
STRIDES_AND_DILATION = {8: (1, 1, 2), 16: (2, 1, 1), 32: (2, 2, 1)}  # pool4 stride, pool5 stride, conv5 dilation
LOW_LEVEL_LAYERS = 10  # conv1_1 … pool2


def init_conv_weights(module):
    """As torchvision: kaiming_normal_(fan_out, relu) for conv weights, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class VGG16(nn.Module):
    def __init__(self, output_stride=8, width=64, large_fov=False, dropout=0.5):
        super().__init__()
        self.output_stride, self.large_fov = output_stride, large_fov
        pool4_stride, pool5_stride, conv5_dilation = STRIDES_AND_DILATION[output_stride]
        layers, in_channels = [], 3
        for block, pool_stride, dilation in zip(VGG16_BLOCKS, (2, 2, 2, pool4_stride, pool5_stride),
                                                (1, 1, 1, 1, conv5_dilation)):
            for channels in block:
                layers += [nn.Conv2d(in_channels, channels * width // 64, 3, padding=dilation, dilation=dilation),
                           nn.ReLU()]
                in_channels = channels * width // 64
            layers.append(nn.MaxPool2d(3, stride=pool_stride, padding=1))
        self.features = nn.Sequential(*layers)
        self.low_level_channels, self.out_channels = 2 * width, 8 * width
        if large_fov:
            rate = 96 // output_stride
            self.fc6 = nn.Conv2d(8 * width, 16 * width, 3, padding=rate, dilation=rate)
            self.relu6, self.drop6 = nn.ReLU(), nn.Dropout(dropout)
            self.fc7 = nn.Conv2d(16 * width, 16 * width, 1)
            self.relu7, self.drop7 = nn.ReLU(), nn.Dropout(dropout)
            self.out_channels = 16 * width
        init_conv_weights(self)

    def forward(self, x):
        low_level = self.features[:LOW_LEVEL_LAYERS](x)
        out = self.features[LOW_LEVEL_LAYERS:](low_level)
        if self.large_fov:
            out = self.drop7(self.relu7(self.fc7(self.drop6(self.relu6(self.fc6(out))))))
        return {"low_level": low_level, "out": out}


def vgg16(output_stride=8, width=64, large_fov=False, dropout=0.5):
    return VGG16(output_stride, width, large_fov, dropout)
