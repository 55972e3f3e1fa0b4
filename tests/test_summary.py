"""summary(): parameter and MAC counts computed by hand for small models, and against PyTorch for the DeepLab models."""
import numpy as np
import pytest

import minidl
import minidl.models
import reference.models
from minidl import nn
from minidl.models import summary


def test_single_conv_by_hand():
    result = summary(nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 9, 9))
    assert result.output_shape == (1, 4, 5, 5)
    assert result.total_parameters == result.trainable_parameters == 4 * 3 * 9 + 4
    assert result.macs == (4 * 5 * 5) * (3 * 9)  # each output value: one MAC per weight tap
    assert result.flops == 2 * result.macs
    assert result.output_stride == 2


def test_depthwise_conv_and_batch_by_hand():
    result = summary(nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False), (2, 4, 5, 5))
    assert result.macs == 2 * (4 * 5 * 5) * 9  # groups = channels: each output sees one input channel
    assert result.total_parameters == 4 * 9


def test_small_sequential_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    model[1].requires_grad_(False)
    result = summary(model, (3, 6, 6))
    per_layer = [(8 * 36) * 27, 8 * 36, 0, (2 * 36) * 8]  # conv 3×3, BN one per element, ReLU free, conv 1×1
    assert [(row.name, row.macs) for row in result.rows] == list(zip("0123", per_layer))
    assert [row.parameters for row in result.rows] == [8 * 27, 16, 0, 2 * 8 + 2]
    assert result.macs == sum(per_layer)
    assert (result.total_parameters, result.trainable_parameters) == (250, 250 - 16)
    assert result.output_shape == (1, 2, 6, 6) and result.output_stride == 1


def test_linear_by_hand():
    result = summary(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (2, 3, 2, 2))
    assert result.macs == 2 * 5 * 12 and result.total_parameters == 65


def test_table_lists_parts_and_totals():
    text = str(summary(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (3, 5, 5)))
    assert text.splitlines()[0].split() == ["Submodule", "Type", "Output", "shape", "Parameters", "MACs"]
    assert "Conv2d  (1, 8, 3, 3)" in text and "1,944" in text  # 8·9 outputs × 27 taps
    assert "Parameters: 224 (224 trainable)" in text and "FLOPs = 2 × MACs = 3,888" in text


def test_model_left_as_it_was():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model.train()
    model[1].eval()  # e.g. frozen BN while the rest trains
    before = model.state_dict()
    summary(model, (3, 5, 5))
    assert model.training and model[0].training and not model[1].training
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all("forward" not in vars(m) for m in model.modules())


SMALL = {"num_classes": 3, "head_channels": 8}
DEEPLABS = [
    ("deeplabv2", {"backbone": "resnet_small", "num_classes": 3}),
    ("deeplabv3", {"backbone": "resnet_small", **SMALL}),
    ("deeplabv3plus", {"backbone": "mobilenetv2_small", **SMALL}),
    ("deeplabv3plus", {"backbone": "xception65", "width_mult": 1 / 16, "middle_units": 2, **SMALL}),
]


@pytest.mark.parametrize("name, options", DEEPLABS)
def test_deeplab_parameters_as_pytorch_counts_them(name, options):
    ours = summary(getattr(minidl.models, name)(**options), (3, 33, 33))
    theirs = getattr(reference.models, name)(**options)
    assert ours.total_parameters == sum(p.numel() for p in theirs.parameters())
    assert [row.parameters for row in ours.rows] == [sum(p.numel() for p in child.parameters())
                                                     for child in theirs.children()]
    assert ours.output_shape == (1, 3, 33, 33)


@pytest.mark.parametrize("output_stride, size, features", [(16, 513, 33), (8, 65, 9), (16, 64, 4)])
def test_deeplab_output_stride(output_stride, size, features):
    result = summary(minidl.models.deeplabv3("resnet_small", output_stride=output_stride, **SMALL), (3, size, size))
    assert result.output_stride == output_stride
    assert result.rows[0].output_shape[2:] == (features, features)


def test_aspp_costs_four_times_as_much_at_output_stride_8():
    """The same weights on a 2× finer grid: every ASPP branch runs per pixel, but image pooling on one pixel."""
    models = {os: minidl.models.deeplabv3("resnet_small", output_stride=os, **SMALL) for os in (8, 16)}
    costs = {os: summary(model, (3, 64, 64)) for os, model in models.items()}
    pooled = models[8].backbone.out_channels * 8 + 8  # pooling branch: 1×1 conv to 8 channels + BN, on 1×1
    assert costs[8].total_parameters == costs[16].total_parameters
    assert costs[8].rows[1].macs - pooled == 4 * (costs[16].rows[1].macs - pooled)  # 8×8 features against 4×4
