"""The convolution, normalisation and pooling layers against torch.nn (and reference/ where torch.nn has none)."""
import numpy as np
import pytest
import torch
from helpers import check_module

import minidl
import reference.layers


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda lib: lib.nn.Conv2d(3, 4, 3), (2, 3, 7, 7)),
        (lambda lib: lib.nn.Conv2d(4, 6, (3, 2), stride=2, padding=(2, 1), dilation=(2, 1), groups=2), (2, 4, 9, 8)),
        (lambda lib: lib.nn.Conv2d(4, 4, 3, padding=3, dilation=3, groups=4, bias=False), (1, 4, 7, 7)),  # atrous depthwise
        (lambda lib: lib.nn.Conv2d(3, 5, 1), (2, 3, 5, 4)),  # pointwise
        (lambda lib: lib.nn.Conv2d(3, 2, 3, padding="same", dilation=2), (1, 3, 6, 5)),
        (lambda lib: lib.nn.Conv2d(2, 2, 3, padding=2, padding_mode="reflect"), (1, 2, 5, 5)),
        (lambda lib: lib.nn.Conv2d(2, 2, 3, padding=1, padding_mode="replicate"), (1, 2, 4, 5)),
        (lambda lib: lib.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), (1, 2, 4, 5)),
        (lambda lib: lib.nn.BatchNorm2d(3), (4, 3, 5, 5)),
        (lambda lib: lib.nn.BatchNorm2d(3, momentum=None), (4, 3, 2, 3)),  # cumulative average
        (lambda lib: lib.nn.BatchNorm2d(3, affine=False, momentum=0.3), (2, 3, 3, 3)),
        (lambda lib: lib.nn.BatchNorm2d(3, track_running_stats=False), (2, 3, 3, 3)),
        (lambda lib: lib.nn.BatchNorm1d(5), (6, 5)),
        (lambda lib: lib.nn.BatchNorm1d(5), (3, 5, 4)),
        (lambda lib: lib.nn.MaxPool2d(3, 2, 1), (2, 3, 9, 9)),
        (lambda lib: lib.nn.MaxPool2d(2, ceil_mode=True), (1, 2, 5, 7)),
        (lambda lib: lib.nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 7, 6)),
        (lambda lib: lib.nn.AdaptiveAvgPool2d(1), (2, 3, 5, 7)),
        (lambda lib: lib.nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
        (lambda lib: lib.nn.AdaptiveMaxPool2d(2), (2, 3, 5, 5)),
        (lambda lib: lib.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), (1, 2, 3, 4)),
        (lambda lib: lib.nn.Upsample(size=(7, 9), mode="bilinear", align_corners=True), (1, 2, 3, 4)),
        (lambda lib: lib.nn.Upsample(scale_factor=3), (1, 2, 3, 4)),
    ],
)
def test_layers_match_torch_nn(make, shape, device):
    check_module(make, shape, device=device)


def _separable(lib, *args, **kwargs):
    module = minidl.nn if lib is minidl else reference.layers
    return module.SeparableConv2d(*args, **kwargs)


@pytest.mark.parametrize(
    "args, kwargs, shape",
    [
        ((4, 6), {}, (2, 4, 7, 7)),
        ((4, 6, 3), {"dilation": 2}, (2, 4, 9, 9)),  # atrous separable, as in v3+'s ASPP
        ((3, 5, 3), {"stride": 2}, (2, 3, 9, 8)),  # strided, as in aligned Xception
        ((3, 3, 5), {"dilation": 3}, (1, 3, 13, 13)),
    ],
)
def test_separable_conv_matches_reference(args, kwargs, shape, device):
    check_module(lambda lib: _separable(lib, *args, **kwargs), shape, device=device)


def test_separable_conv_weighs_less_than_dense():
    separable = minidl.nn.SeparableConv2d(256, 256, 3)
    dense = minidl.nn.Conv2d(256, 256, 3, bias=False)
    count = sum(p.numel() for n, p in separable.named_parameters() if "bn" not in n)
    assert count == 256 * 9 + 256 * 256  # depthwise C·k² plus pointwise C_in·C_out
    assert dense.weight.numel() == 256 * 256 * 9


def test_conv_default_init_bounds_like_torch():
    conv = minidl.nn.Conv2d(8, 4, 3)
    bound = 1 / np.sqrt(8 * 9)  # PyTorch's default: uniform in ±1/sqrt(fan_in)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound  # 288 draws reach near the bound


def test_batch_norm_buffers_named_as_torch():
    ours, theirs = minidl.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.state_dict()["num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: minidl.nn.Conv2d(3, 4, 3)(minidl.randn(1, 5, 8, 8)), r"in_channels=3.*\(1, 5, 8, 8\)"),
        (lambda: minidl.nn.Conv2d(3, 4, 3, groups=2), "divisible by groups=2"),
        (lambda: minidl.nn.Conv2d(3, 4, 3, padding_mode="mirror"), "padding_mode"),
        (lambda: minidl.nn.Conv2d(3, 4, 0), "kernel_size must be at least 1"),
        (lambda: minidl.nn.BatchNorm2d(3)(minidl.randn(2, 4, 5, 5)), r"BatchNorm2d\(3\).*\(2, 4, 5, 5\)"),
        (lambda: minidl.nn.BatchNorm2d(3)(minidl.randn(2, 3)), r"4 dimensions"),
    ],
)
def test_bad_layer_input_is_named(call, words):
    with pytest.raises(ValueError, match=words):
        call()
