"""ResNet backbones: minidl against reference/ at every output stride, and the DeepLab facts they must keep.

The expected strides and rates below are written out by hand from the
DeepLab papers' convention (OS 16: layer4 at rate 2; OS 8: layer3 at rate 2,
layer4 at rate 4; multi-grid multiplies layer4's unit rates) and from
torchvision's ``replace_stride_with_dilation`` convention.
"""
import math

import numpy as np
import pytest
import torch
from helpers import both_features, check_module, package

import minidl
from minidl.models.backbones import build_backbone
from minidl.models.resnet import resnet_small


GRID = [
    ("resnet_small", 8, {"multi_grid": (1, 2, 4)}, 2),
    ("resnet_small", 16, {"multi_grid": (1, 2, 4)}, 2),
    ("resnet_small", 32, {"multi_grid": (1, 2, 4)}, 2),
    ("resnet_small", 16, {"multi_grid": (1, 2, 4), "layers": (1, 1, 1, 3)}, 1),
    ("resnet18", 8, {"multi_grid": (1, 2, 4), "width": 8}, 1),
    ("resnet18", 16, {"multi_grid": (1, 2, 4), "width": 8}, 1),
    ("resnet18", 32, {"multi_grid": (1, 2, 4), "width": 8}, 1),
    ("resnet18", 8, {"multi_grid": (1, 2), "width": 8, "dilation_convention": "torchvision"}, 1),
    ("resnet50", 8, {"multi_grid": (1, 2, 4), "width": 8}, 1),
    ("resnet50", 16, {"multi_grid": (1, 2, 4), "width": 8}, 1),
    ("resnet50", 32, {"multi_grid": (1, 2, 4), "width": 8}, 1),
]


@pytest.mark.parametrize("name, output_stride, options, steps", GRID)
def test_parity_with_reference(name, output_stride, options, steps):
    check_module(both_features(name, output_stride=output_stride, **options), (2, 3, 33, 33), steps=steps)


def test_full_resnet101_parity_at_65():
    """The real thing once: 42.5M weights, DeepLab v3's OS 16 with multi-grid (1, 2, 4), eval then one train step."""
    check_module(both_features("resnet101", output_stride=16, multi_grid=(1, 2, 4)), (1, 3, 65, 65),
                 modes=("eval", "train"), steps=1, atol=1e-8)


@pytest.mark.parametrize("name, width, low_level_channels, out_channels", [
    ("resnet_small", 16, 16, 128),
    ("resnet18", 64, 64, 512),
    ("resnet34", 8, 8, 64),
    ("resnet50", 8, 32, 256),
    ("resnet101", 16, 64, 512),
])
@pytest.mark.parametrize("lib", [minidl, torch])
def test_channels(lib, name, width, low_level_channels, out_channels):
    net = build_backbone(name, output_stride=8, package=package(lib), width=width)
    assert (net.low_level_channels, net.out_channels, net.output_stride) == (low_level_channels, out_channels, 8)


def test_weight_count_matches_torchvision_resnet50():
    """torchvision's ResNet-50 has 25,557,032 weights, of which fc holds 2048·1000 + 1000."""
    net = build_backbone("resnet50", package="minidl")
    assert sum(p.data.size for p in net.parameters()) == 25_557_032 - 2_049_000


def output_sizes(lib, output_stride, shape):
    net = build_backbone("resnet_small", output_stride=output_stride, package=package(lib)).eval()
    x = lib.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with lib.no_grad():
        features = net(x)
    return {key: tuple(value.shape) for key, value in features.items()}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("height, width", [(65, 33), (97, 97), (33, 40)])
@pytest.mark.parametrize("lib", [minidl, torch])
def test_output_size_is_ceil_of_input_over_stride(lib, output_stride, height, width):
    sizes = output_sizes(lib, output_stride, (1, 3, height, width))
    assert sizes["out"] == (1, 128, math.ceil(height / output_stride), math.ceil(width / output_stride))
    assert sizes["low_level"] == (1, 16, math.ceil(height / 4), math.ceil(width / 4))


def unit_plan(net):
    """{stage: [(stride, rate), ...]} read off the 3×3 convs, checking each pads by its rate (size kept)."""
    plan = {}
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        units = []
        for block in getattr(net, stage):
            first_3x3 = block.conv1 if block.conv1.kernel_size == (3, 3) else block.conv2
            convs = [m for m in block.modules() if isinstance(m, type(first_3x3)) and m.kernel_size == (3, 3)]
            assert all(c.padding == c.dilation for c in convs)
            assert len({c.dilation for c in convs}) == 1, "the 3×3 convs of one unit share its rate"
            units.append((first_3x3.stride[0], first_3x3.dilation[0]))
        plan[stage] = units
    return plan


PLAN_CASES = [
    # (constructor, options, expected plan of layer3, expected plan of layer4)
    ("resnet50", {"output_stride": 32}, [(2, 1)] + [(1, 1)] * 5, [(2, 1), (1, 1), (1, 1)]),
    ("resnet50", {"output_stride": 16}, [(2, 1)] + [(1, 1)] * 5, [(1, 2), (1, 2), (1, 2)]),
    ("resnet50", {"output_stride": 8}, [(1, 2)] * 6, [(1, 4), (1, 4), (1, 4)]),
    ("resnet50", {"output_stride": 32, "multi_grid": (1, 2, 4)}, [(2, 1)] + [(1, 1)] * 5, [(2, 1), (1, 2), (1, 4)]),
    ("resnet50", {"output_stride": 16, "multi_grid": (1, 2, 4)}, [(2, 1)] + [(1, 1)] * 5, [(1, 2), (1, 4), (1, 8)]),
    ("resnet50", {"output_stride": 8, "multi_grid": (1, 2, 4)}, [(1, 2)] * 6, [(1, 4), (1, 8), (1, 16)]),
    # a grid shorter than the stage repeats; a longer one is cut
    ("resnet50", {"output_stride": 16, "multi_grid": (1, 2)}, [(2, 1)] + [(1, 1)] * 5, [(1, 2), (1, 4), (1, 2)]),
    ("resnet18", {"output_stride": 16, "multi_grid": (1, 2, 4)}, [(2, 1), (1, 1)], [(1, 2), (1, 4)]),
    ("resnet_small", {"output_stride": 8, "multi_grid": (2, 4)}, [(1, 2)], [(1, 8)]),
    ("resnet_small", {"output_stride": 16, "multi_grid": (1, 2, 4), "layers": (1, 1, 1, 3)}, [(2, 1)],
     [(1, 2), (1, 4), (1, 8)]),
    # torchvision: the first unit of a dilated stage keeps the previous rate
    ("resnet50", {"output_stride": 8, "dilation_convention": "torchvision"}, [(1, 1)] + [(1, 2)] * 5,
     [(1, 2), (1, 4), (1, 4)]),
    ("resnet50", {"output_stride": 16, "dilation_convention": "torchvision"}, [(2, 1)] + [(1, 1)] * 5,
     [(1, 1), (1, 2), (1, 2)]),
]


@pytest.mark.parametrize("name, options, layer3, layer4", PLAN_CASES)
@pytest.mark.parametrize("lib", [minidl, torch])
def test_strides_and_rates_per_stage(lib, name, options, layer3, layer4):
    net = build_backbone(name, package=package(lib), width=4, **options)
    plan = unit_plan(net)
    assert plan["layer1"] == [(1, 1)] * len(net.layer1)
    assert plan["layer2"] == [(2, 1)] + [(1, 1)] * (len(net.layer2) - 1), "layer2 is never dilated"
    assert (plan["layer3"], plan["layer4"]) == (layer3, layer4)


@pytest.mark.parametrize("output_stride, layer3_stride, layer4_stride", [(8, 1, 1), (16, 2, 1), (32, 2, 2)])
def test_downsample_keeps_the_stage_stride(output_stride, layer3_stride, layer4_stride):
    net = build_backbone("resnet50", output_stride=output_stride, width=4)
    assert net.layer1[0].downsample[0].stride == (1, 1), "layer1 widens 4× without downsampling"
    assert net.layer3[0].downsample[0].stride == (layer3_stride,) * 2
    assert net.layer4[0].downsample[0].stride == (layer4_stride,) * 2
    assert net.layer4[1].downsample is None


def test_state_dict_names_are_torchvisions():
    keys = list(build_backbone("resnet50", width=4).state_dict())
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked"]
    assert "layer3.0.downsample.1.running_var" in keys and "layer1.2.conv3.weight" in keys
    assert not any(k.startswith(("fc.", "avgpool")) for k in keys)


def test_initialisation_is_torchvisions():
    """Convs Kaiming normal with fan_out (std sqrt(2 / (out·k·k))), BN weight 1 and bias 0."""
    net = build_backbone("resnet18", width=32)
    weight = net.layer4[1].conv2.weight.data
    assert abs(weight.std() / math.sqrt(2 / (256 * 9)) - 1) < 0.02
    assert np.all(net.layer2[0].bn1.weight.data == 1) and np.all(net.layer2[0].bn1.bias.data == 0)


@pytest.mark.parametrize("shape, message", [
    ((1, 4, 33, 33), r"\(N, 3, H, W\).*4 channels"),
    ((3, 33, 33), r"\(N, 3, H, W\).*3 dimensions"),
    ((1, 3, 15, 33), r"15×33, smaller than the network's total stride 16"),
])
def test_bad_input_is_refused_clearly(shape, message):
    net = build_backbone("resnet_small", output_stride=16)
    with pytest.raises(ValueError, match=message):
        net(minidl.zeros(shape))


@pytest.mark.parametrize("options, message", [
    ({"output_stride": 4}, "output_stride must be one of"),
    ({"multi_grid": ()}, "multi_grid must be a non-empty sequence of positive integers"),
    ({"multi_grid": (1, 0)}, "multi_grid"),
    ({"width": 0}, "width must be a positive integer"),
    ({"dilation_convention": "tf"}, "dilation_convention must be one of"),
])
def test_bad_options_are_refused_clearly(options, message):
    with pytest.raises(ValueError, match=message):
        resnet_small(**options)
