"""ResNet backbones in PyTorch, module for module as minidl.models.resnet (read that file's notes).

The stages are built the way torchvision builds them (``_make_layer`` with a
running ``self.dilation``), extended with DeepLab's convention and multi-grid:
a second, independent spelling of the same rule, so the parity tests check
minidl's stride/rate plan rather than a copy of it.
"""
from torch import nn


def conv3x3(in_planes, out_planes, stride=1, dilation=1):
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


# which of layer2, layer3, layer4 trade their stride for dilation (torchvision's replace_stride_with_dilation)
REPLACE_STRIDE_WITH_DILATION = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


class ResNet(nn.Module):
    def __init__(self, block, layers, output_stride=16, multi_grid=(1, 1, 1), width=64,
                 dilation_convention="deeplab"):
        super().__init__()
        dilate = REPLACE_STRIDE_WITH_DILATION[output_stride]
        self.dilation_convention = dilation_convention
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2, dilate=dilate[2], multi_grid=multi_grid)
        self.low_level_channels = width * block.expansion
        self.out_channels = width * 8 * block.expansion
        self.output_stride = output_stride
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False, multi_grid=(1,)):
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        first = previous_dilation if self.dilation_convention == "torchvision" else self.dilation
        rates = [first] + [self.dilation] * (blocks - 1)
        rates = [rate * multi_grid[i % len(multi_grid)] for i, rate in enumerate(rates)]
        layers = [block(self.inplanes, planes, stride, downsample, rates[0])]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=rate) for rate in rates[1:]]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        return {"low_level": low_level, "out": self.layer4(self.layer3(self.layer2(low_level)))}


def resnet18(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    return ResNet(BasicBlock, [2, 2, 2, 2], output_stride, multi_grid, width, dilation_convention)


def resnet34(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    return ResNet(BasicBlock, [3, 4, 6, 3], output_stride, multi_grid, width, dilation_convention)


def resnet50(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    return ResNet(Bottleneck, [3, 4, 6, 3], output_stride, multi_grid, width, dilation_convention)


def resnet101(output_stride=16, multi_grid=(1, 1, 1), width=64, dilation_convention="deeplab"):
    return ResNet(Bottleneck, [3, 4, 23, 3], output_stride, multi_grid, width, dilation_convention)


def resnet_small(output_stride=16, multi_grid=(1, 1, 1), width=16, dilation_convention="deeplab", layers=(1, 1, 1, 1)):
    return ResNet(BasicBlock, list(layers), output_stride, multi_grid, width, dilation_convention)
