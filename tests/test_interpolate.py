"""interpolate against PyTorch: bilinear (both align_corners), nearest, nearest-exact; kernels and NumPy.

One line per case: the input shape and the keyword arguments of
``interpolate``, run through ``check_op`` (forward, input gradient, gradcheck).
"""
import contextlib

import numpy as np
import pytest
import torch
from helpers import check_op

import minidl
from minidl.nn.functional import interpolate

BILINEAR_CASES = [
    ((1, 2, 3, 4), dict(scale_factor=2)),  # up by a whole number
    ((1, 2, 3, 4), dict(scale_factor=1.7)),  # up by a fraction: the rule uses 1/1.7, not in/out
    ((1, 2, 5, 6), dict(scale_factor=0.6)),  # down by a fraction
    ((1, 1, 4, 6), dict(scale_factor=(1.5, 0.5))),  # one factor per axis
    ((2, 1, 3, 5), dict(scale_factor=(2.5, 1.3))),
    ((1, 2, 3, 4), dict(scale_factor=1.7, recompute_scale_factor=True)),  # then the rule uses in/out
    ((1, 2, 5, 6), dict(scale_factor=0.6, recompute_scale_factor=True)),
    ((1, 2, 3, 4), dict(size=5)),  # size as one int
    ((2, 3, 5, 7), dict(size=(9, 4))),  # odd sizes, up along H and down along W
    ((1, 1, 7, 9), dict(size=(3, 2))),  # down
    ((1, 2, 1, 1), dict(size=(3, 4))),  # from a single pixel
    ((1, 2, 4, 5), dict(size=(1, 1))),  # to a single pixel
    ((1, 2, 4, 5), dict(size=(1, 3))),
    ((1, 2, 4, 5), dict(size=(4, 5))),  # the same size: a copy
    ((1, 2, 5, 4), dict(scale_factor=1.1)),  # 5·1.1 and 4·1.1 floor to the same size: still a copy
    ((1, 1, 2, 3), dict(scale_factor=8)),  # DeepLab v2's ×8
    ((1, 1, 3, 3), dict(size=9)),  # DeepLab v3+'s ×4 on an odd map, (3-1)·4+1
]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape, kwargs", BILINEAR_CASES, ids=str)
def test_bilinear(shape, kwargs, align_corners, device):
    check_op([shape], lambda lib, x: lib.nn.functional.interpolate(
        x, mode="bilinear", align_corners=align_corners, **kwargs), device=device)


def test_bilinear_align_corners_none_means_false(device):
    check_op([(1, 2, 3, 4)], lambda lib, x: lib.nn.functional.interpolate(x, scale_factor=1.7, mode="bilinear"), device=device)


NEAREST_CASES = [
    ((1, 2, 3, 4), dict(scale_factor=2)),
    ((1, 2, 3, 4), dict(scale_factor=1.7)),
    ((1, 2, 6, 5), dict(scale_factor=0.5)),
    ((1, 2, 5, 6), dict(scale_factor=0.6)),
    ((1, 1, 4, 6), dict(scale_factor=(1.5, 0.5))),
    ((1, 2, 5, 6), dict(scale_factor=0.6, recompute_scale_factor=True)),
    ((2, 3, 5, 7), dict(size=(9, 4))),  # several outputs read one input: their gradients add up
    ((1, 2, 1, 1), dict(size=(3, 2))),
    ((1, 2, 4, 5), dict(size=1)),
    ((1, 2, 5, 4), dict(scale_factor=1.1)),  # same size: 'nearest' copies, 'nearest-exact' does not
]


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("shape, kwargs", NEAREST_CASES, ids=str)
def test_nearest_on_floats(shape, kwargs, mode, device):
    check_op([shape], lambda lib, x: lib.nn.functional.interpolate(x, mode=mode, **kwargs), device=device)


# ---------------------------------------------------------------- label maps
def _label_map(shape, classes=21, seed=0):
    """Class ids with a border of the ignore label 255, as in Pascal VOC."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=shape)
    labels[..., :1, :] = labels[..., :, -2:] = 255
    return labels


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((2, 1, 17, 23), dict(scale_factor=0.125)),  # DeepLab v2: labels down by 8
        ((2, 1, 17, 23), dict(size=(3, 4))),
        ((1, 1, 9, 10), dict(scale_factor=(0.6, 1.7))),
        ((1, 1, 5, 5), dict(size=(11, 13))),
    ],
    ids=str,
)
def test_nearest_label_maps_equal_torch(shape, kwargs, mode):
    labels = _label_map(shape)
    # torch resizes integer maps only as uint8; ours keeps int64 (what cross_entropy takes) and uint8
    expected = torch.nn.functional.interpolate(torch.tensor(labels.astype(np.uint8)), mode=mode, **kwargs).numpy()
    for dtype in (np.int64, np.uint8):
        out = interpolate(minidl.tensor(labels.astype(dtype)), mode=mode, **kwargs)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out.data, expected)


# ---------------------------------------------------------------- compiled kernels and the NumPy version
@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "numpy"])
@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((1, 2, 3, 4), dict(scale_factor=1.7, align_corners=False)),
        ((2, 3, 5, 7), dict(size=(9, 4), align_corners=True)),
        ((1, 2, 5, 6), dict(scale_factor=0.6, align_corners=True)),
        ((1, 2, 1, 1), dict(size=(3, 4), align_corners=False)),
    ],
    ids=str,
)
def test_bilinear_both_paths(shape, kwargs, kernels, device):
    with contextlib.nullcontext() if kernels else minidl.kernels.disabled():
        check_op([shape], lambda lib, x: lib.nn.functional.interpolate(x, mode="bilinear", **kwargs), device=device)


def _forward_backward(x, g, **kwargs):
    t = minidl.tensor(x, requires_grad=True)
    y = interpolate(t, mode="bilinear", **kwargs)
    y.backward(minidl.tensor(g))
    return y.data, t.grad.data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_hw, out_hw", [((9, 11), (21, 17)), ((21, 17), (9, 11)), ((7, 7), (7, 7))], ids=str)
def test_kernel_matches_numpy(in_hw, out_hw, align_corners, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + in_hw).astype(dtype)
    g = rng.standard_normal((2, 3) + out_hw).astype(dtype)
    compiled = _forward_backward(x, g, size=out_hw, align_corners=align_corners)
    with minidl.kernels.disabled():
        readable = _forward_backward(x, g, size=out_hw, align_corners=align_corners)
    for got, expected in zip(compiled, readable):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 if dtype == np.float32 else 1e-13)


def test_kernel_reads_non_contiguous_input():
    x = np.random.default_rng(0).standard_normal((2, 5, 4, 3)).transpose(0, 3, 2, 1)  # (2, 3, 4, 5), strided
    out = interpolate(minidl.tensor(x), size=(7, 6), mode="bilinear").data
    expected = torch.nn.functional.interpolate(torch.tensor(x), size=(7, 6), mode="bilinear").numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- float32 at DeepLab's sizes
@pytest.mark.parametrize("kernels", [True, False], ids=["kernels", "numpy"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("in_size, out_size", [(9, 65), (33, 129), (65, 9)], ids=str)
def test_float32_stays_float32_and_matches_torch(in_size, out_size, align_corners, kernels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, in_size, in_size)).astype(np.float32)
    g = rng.standard_normal((2, 4, out_size, out_size)).astype(np.float32)
    with contextlib.nullcontext() if kernels else minidl.kernels.disabled():
        out, grad = _forward_backward(x, g, size=out_size, align_corners=align_corners)
    t = torch.tensor(x, requires_grad=True)
    expected = torch.nn.functional.interpolate(t, size=out_size, mode="bilinear", align_corners=align_corners)
    expected.backward(torch.tensor(g))
    assert out.dtype == np.float32 and grad.dtype == np.float32
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "shape, kwargs, error, message",
    [
        ((1, 1, 4, 4), dict(size=2, scale_factor=2), ValueError, "exactly one of size and scale_factor"),
        ((1, 1, 4, 4), dict(), ValueError, "exactly one of size and scale_factor"),
        ((1, 1, 4, 4), dict(size=0), ValueError, "size must be positive"),
        ((1, 1, 4, 4), dict(size=(3, -1)), ValueError, "size must be positive"),
        ((1, 1, 4, 4), dict(size=(3, 3, 3)), ValueError, "size must be one number or a pair"),
        ((1, 1, 4, 4), dict(size=2.5), TypeError, "size must hold integers"),
        ((1, 1, 4, 4), dict(scale_factor=0), ValueError, "scale_factor must be positive"),
        ((1, 1, 4, 4), dict(scale_factor=(2, -1)), ValueError, "scale_factor must be positive"),
        ((1, 1, 4, 4), dict(scale_factor=0.1), ValueError, r"scale_factor=0.1 .* empty output \(0, 0\)"),
        ((1, 1, 4, 4), dict(scale_factor=(1, 2, 3)), ValueError, "scale_factor must be one number or a pair"),
        ((1, 1, 4, 4), dict(size=2, mode="bicubic"), ValueError, r"mode must be one of \('nearest', 'bilinear'"),
        ((1, 1, 4, 4), dict(size=2, align_corners=False), ValueError, "align_corners can only be set"),
        ((1, 1, 4, 4), dict(size=2, mode="nearest-exact", align_corners=True), ValueError, "align_corners"),
        ((1, 1, 4, 4), dict(size=2, recompute_scale_factor=True), ValueError, "recompute_scale_factor"),
        ((1, 4, 4), dict(size=2), ValueError, r"4-D input \(N, C, H, W\), got shape \(1, 4, 4\)"),
        ((1, 1, 1, 4, 4), dict(size=2), ValueError, r"got shape \(1, 1, 1, 4, 4\)"),
        ((1, 1, 4, 4), dict(size=2, mode="bilinear", antialias=True), NotImplementedError, "antialias"),
    ],
    ids=str,
)
def test_errors(shape, kwargs, error, message):
    with pytest.raises(error, match=message):
        interpolate(minidl.zeros(*shape), **kwargs)


def test_bilinear_refuses_integer_input():
    with pytest.raises(TypeError, match="floating-point input, got dtype int64"):
        interpolate(minidl.tensor(_label_map((1, 1, 4, 4))), size=2, mode="bilinear")
