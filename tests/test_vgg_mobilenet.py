"""VGG-16 (DeepLab v1/v2) and MobileNetV2 (DeepLab v3+) backbones: minidl against reference/, and DeepLab's facts.

Expected strides, rates, channel and weight counts are written out by hand
from the papers and torchvision (VGG-16: 14,714,688 weights in its conv layers;
MobileNetV2: 3,504,872 weights in all, 1,281,000 of them in the classifier and
412,160 in the 1280-channel conv this backbone leaves out).
"""
import math

import numpy as np
import pytest
import torch
from helpers import Values, both_features, check_module, check_op, package

import minidl
from minidl.models.backbones import build_backbone
from minidl.models.mobilenetv2 import ReLU6, mobilenetv2, mobilenetv2_small
from minidl.models.vgg import vgg16

TINY = {"vgg16": {"width": 8, "large_fov": True}, "mobilenetv2": {"width_mult": 0.25}}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("large_fov", [False, True])
def test_vgg16_parity_with_reference(output_stride, large_fov):
    check_module(both_features("vgg16", output_stride=output_stride, width=8, large_fov=large_fov, dropout=0.0),
                 (2, 3, 33, 33), steps=1)


@pytest.mark.parametrize("name, output_stride, width_mult", [
    ("mobilenetv2", 8, 0.25), ("mobilenetv2", 16, 0.25), ("mobilenetv2", 32, 0.25), ("mobilenetv2_small", 16, 0.35),
])
def test_mobilenetv2_parity_with_reference(name, output_stride, width_mult):
    check_module(both_features(name, output_stride=output_stride, width_mult=width_mult), (2, 3, 33, 33), steps=1)


def test_full_deeplab_largefov_parity_at_65():
    """DeepLab-LargeFOV's VGG-16 at full width (20.5M weights), OS 8: eval, then one train step."""
    check_module(both_features("vgg16", output_stride=8, large_fov=True, dropout=0.0), (1, 3, 65, 65),
                 modes=("eval", "train"), steps=1, atol=1e-8)


def test_full_mobilenetv2_parity_at_65():
    check_module(both_features("mobilenetv2", output_stride=16), (1, 3, 65, 65), modes=("eval", "train"), steps=1)


def test_relu6_matches_torch_at_its_corners():
    """Values and gradient as torch.nn.ReLU6 (hardtanh): no gradient at exactly 0 or 6."""
    x = Values([[-1.0, 0.0, 1e-300, 3.0, 6.0 - 1e-12, 6.0, 7.0, np.nan]])
    check_op([x], lambda lib, t: (ReLU6() if lib is minidl else torch.nn.ReLU6())(t), gradcheck=False)


@pytest.mark.parametrize("name, options, low_level_channels, out_channels", [
    ("vgg16", {}, 128, 512),
    ("vgg16", {"large_fov": True}, 128, 1024),
    ("vgg16", {"width": 8, "large_fov": True}, 16, 128),
    ("mobilenetv2", {}, 24, 320),
    ("mobilenetv2", {"width_mult": 0.25}, 8, 80),  # 24·0.25 = 6 rounds up to 8; 320·0.25 = 80
    ("mobilenetv2_small", {}, 8, 112),  # 24·0.35 = 8.4 rounds to 8; 320·0.35 = 112
])
@pytest.mark.parametrize("lib", [minidl, torch])
def test_channels(lib, name, options, low_level_channels, out_channels):
    net = build_backbone(name, output_stride=16, package=package(lib), **options)
    assert (net.low_level_channels, net.out_channels, net.output_stride) == (low_level_channels, out_channels, 16)


def weight_count(net):
    return sum(p.data.size for p in net.parameters())


def test_weight_counts_match_torchvision_and_deeplab():
    assert weight_count(build_backbone("vgg16")) == 14_714_688
    fc6, fc7 = 512 * 1024 * 9 + 1024, 1024 * 1024 + 1024
    assert weight_count(build_backbone("vgg16", large_fov=True)) == 14_714_688 + fc6 + fc7  # 20.5M, as DeepLab
    assert weight_count(build_backbone("mobilenetv2")) == 3_504_872 - 1_281_000 - 412_160


def test_state_dict_names_are_torchvisions():
    vgg = list(build_backbone("vgg16", width=8, large_fov=True).state_dict())
    assert vgg[:4] == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert vgg[-6:] == ["features.28.weight", "features.28.bias", "fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"]
    mobilenet = build_backbone("mobilenetv2", width_mult=0.25).state_dict()
    for key in ("features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight",
                "features.1.conv.1.weight", "features.2.conv.0.0.weight", "features.2.conv.1.0.weight",
                "features.2.conv.2.weight", "features.17.conv.3.num_batches_tracked"):
        assert key in mobilenet, key
    assert not any(k.startswith(("features.18", "classifier")) for k in mobilenet)


def output_sizes(lib, name, output_stride, shape):
    net = build_backbone(name, output_stride=output_stride, package=package(lib), **TINY[name]).eval()
    x = lib.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with lib.no_grad():
        features = net(x)
    return {key: tuple(value.shape) for key, value in features.items()}


@pytest.mark.parametrize("name, low_level_channels, out_channels", [("vgg16", 16, 128), ("mobilenetv2", 8, 80)])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("height, width", [(33, 33), (65, 33), (97, 97), (33, 40)])
def test_output_size_is_ceil_of_input_over_stride(name, low_level_channels, out_channels, output_stride, height,
                                                  width):
    sizes = output_sizes(minidl, name, output_stride, (1, 3, height, width))
    assert sizes == output_sizes(torch, name, output_stride, (1, 3, height, width))
    assert sizes["out"] == (1, out_channels, math.ceil(height / output_stride), math.ceil(width / output_stride))
    assert sizes["low_level"] == (1, low_level_channels, math.ceil(height / 4), math.ceil(width / 4))


# output stride: (strides of pool1-pool5, dilation of the conv5 block, fc6's rate) — DeepLab's VGG-16
VGG_PLAN = {
    8: ((2, 2, 2, 1, 1), 2, 12),
    16: ((2, 2, 2, 2, 1), 1, 6),
    32: ((2, 2, 2, 2, 2), 1, 3),
}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("lib", [minidl, torch])
def test_vgg16_strides_and_rates(lib, output_stride):
    net = build_backbone("vgg16", output_stride=output_stride, package=package(lib), **TINY["vgg16"])
    pool_strides, conv5_dilation, fc6_rate = VGG_PLAN[output_stride]
    pools = [m for m in net.features if isinstance(m, lib.nn.MaxPool2d)]
    convs = [m for m in net.features if isinstance(m, lib.nn.Conv2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, s, 1) for s in pool_strides]
    assert [c.dilation[0] for c in convs] == [1] * 10 + [conv5_dilation] * 3
    assert all(c.padding == c.dilation for c in convs), "3×3 convs pad by their rate: stride 1 keeps the size"
    assert (net.fc6.kernel_size, net.fc6.dilation, net.fc6.padding) == ((3, 3), (fc6_rate,) * 2, (fc6_rate,) * 2)
    assert fc6_rate * output_stride == 96, "fc6's taps stay 96 input pixels apart at every output stride"
    assert net.fc7.kernel_size == (1, 1)


# output stride: (stride, dilation) of the depthwise conv of features.1 … features.17
MOBILENET_STRIDES = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]  # the ImageNet network's
MOBILENET_PLAN = {
    32: list(zip(MOBILENET_STRIDES, [1] * 17)),
    # features.14 gives up its stride at rate 1; features.15-17 run at rate 2
    16: list(zip(MOBILENET_STRIDES[:13] + [1] * 4, [1] * 14 + [2] * 3)),
    # features.7 gives up its stride at rate 1; features.8-14 run at rate 2; features.14 gives up
    # its stride at rate 2, so features.15-17 run at rate 4
    8: list(zip(MOBILENET_STRIDES[:6] + [1] * 11, [1] * 7 + [2] * 7 + [4] * 3)),
}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("lib", [minidl, torch])
def test_mobilenetv2_strides_and_rates(lib, output_stride):
    net = build_backbone("mobilenetv2", output_stride=output_stride, package=package(lib), **TINY["mobilenetv2"])
    depthwise = [block.conv[-3][0] for block in net.features[1:]]
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    assert [(c.stride[0], c.dilation[0]) for c in depthwise] == MOBILENET_PLAN[output_stride]
    assert all(c.padding == c.dilation for c in depthwise)
    assert net.features[0][0].stride == (2, 2)
    # a block adds its input back when it keeps size and width; at width 0.25 features.1 keeps 8 channels
    # (the stem's 32·0.25 and its own 16·0.25 both round up to 8), at full width it goes from 32 to 16
    skips = [i for i, block in enumerate(net.features) if i > 0 and block.use_res_connect]
    assert skips == [1, 3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


def load_same_weights(name, output_strides, **options):
    """The backbone at each output stride, all in eval mode with the weights of the first."""
    nets = [build_backbone(name, output_stride=s, **options).double().eval() for s in output_strides]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    return nets


def run(net, x):
    with minidl.no_grad():
        return net(minidl.tensor(x))


@pytest.mark.parametrize("fine, coarse", [(8, 16), (16, 32)])
def test_atrous_mobilenetv2_computes_the_strided_one_densely(fine, coarse):
    """Trading a stride for dilation keeps every output of the strided network and fills in between."""
    dense, strided = load_same_weights("mobilenetv2", (fine, coarse), width_mult=0.25)
    x = np.random.default_rng(0).standard_normal((1, 3, 65, 65))
    np.testing.assert_allclose(run(dense, x)["out"].data[..., ::2, ::2], run(strided, x)["out"].data, atol=1e-12)


def test_atrous_vgg16_computes_the_strided_one_densely():
    """OS 16 → OS 32 is exact through fc7; OS 8 → 16 is exact through conv5_3 but not after DeepLab's pool5.

    At OS 8 pool5 (3×3, stride 1) is not dilated, so it pools neighbours that
    the OS-16 network never had: DeepLab's choice, kept here.
    """
    fine, dense, strided = load_same_weights("vgg16", (8, 16, 32), width=8, large_fov=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 65, 65))
    np.testing.assert_allclose(run(dense, x)["out"].data[..., ::2, ::2], run(strided, x)["out"].data, atol=1e-12)
    conv5 = [run(net.features[:-1], x).data for net in (fine, dense)]
    np.testing.assert_allclose(conv5[0][..., ::2, ::2], conv5[1], atol=1e-12)
    assert not np.allclose(run(fine, x)["out"].data[..., ::2, ::2], run(dense, x)["out"].data)


def test_initialisation_is_torchvisions():
    """Convs Kaiming normal with fan_out (std sqrt(2 / (out·k·k)), depthwise included), biases 0, BN 1 and 0."""
    vgg = build_backbone("vgg16", width=32, large_fov=True)
    assert abs(vgg.fc6.weight.data.std() / math.sqrt(2 / (512 * 9)) - 1) < 0.02
    assert np.all(vgg.fc6.bias.data == 0) and np.all(vgg.features[28].bias.data == 0)
    mobilenet = build_backbone("mobilenetv2")
    depthwise, bn = mobilenet.features[17].conv[1][:2]
    assert abs(depthwise.weight.data.std() / math.sqrt(2 / (960 * 9)) - 1) < 0.03
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)


@pytest.mark.parametrize("name", ["vgg16", "mobilenetv2"])
@pytest.mark.parametrize("shape, message", [
    ((1, 4, 33, 33), r"\(N, 3, H, W\).*4 channels"),
    ((3, 33, 33), r"\(N, 3, H, W\).*3 dimensions"),
    ((1, 3, 33, 15), r"33×15, smaller than the network's total stride 16"),
])
def test_bad_input_is_refused_clearly(name, shape, message):
    net = build_backbone(name, output_stride=16, **TINY[name])
    with pytest.raises(ValueError, match=message):
        net(minidl.zeros(shape))


@pytest.mark.parametrize("constructor, options, message", [
    (vgg16, {"output_stride": 4}, "output_stride must be one of"),
    (vgg16, {"width": 0}, "width must be a positive integer"),
    (vgg16, {"width": 8.0}, "width must be a positive integer"),
    (mobilenetv2, {"output_stride": 64}, "output_stride must be one of"),
    (mobilenetv2_small, {"width_mult": 0}, "width_mult must be positive"),
])
def test_bad_options_are_refused_clearly(constructor, options, message):
    with pytest.raises(ValueError, match=message):
        constructor(**options)
