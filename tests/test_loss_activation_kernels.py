"""minidl/kernels/cpu/loss.py and activation.py against the readable steps of minidl.functional.loss and
elementwise (which test_ops.py checks against PyTorch and finite differences), on every thread, across blocks,
with NaN and infinite values."""
from unittest import mock

import numpy as np
import pytest

import minidl.kernels.cpu as cpu_kernels
from minidl.functional import elementwise
from minidl.functional import loss as readable
from minidl.kernels.cpu import activation
from minidl.kernels.cpu import loss as compiled

SHAPES = [  # (shape, class axis)
    ((2, 7, 33, 40), 1),  # segmentation's (N, C, H, W), 1320 pixels an image: three blocks, the last partial
    ((5, 3), 1),  # classification's (N, C)
    ((4,), 0),
    ((3, 4, 5), 2),  # the class axis last
    ((2, 21, 1, 1), 1),
    ((0, 4, 3), 1),
]


@pytest.fixture(params=["one thread", "every thread"])
def threads(request):
    # the suite loads NumPy first, so loops this small would run on one thread: share them too
    with mock.patch.object(cpu_kernels, "PARALLEL_WORK", 0 if request.param == "every thread" else 1 << 62):
        yield


def _scores(shape, dtype, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 4).astype(dtype)


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("shape, axis", SHAPES, ids=str)
def test_log_softmax_and_its_gradient_match_the_readable_code(shape, axis, dtype, tolerance, threads):
    x, g = _scores(shape, dtype), _scores(shape, dtype, seed=1)
    y = compiled.log_softmax(x, axis)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, readable._log_softmax_numpy(x, axis), rtol=tolerance, atol=tolerance)
    dx = compiled.log_softmax_grad(g, y, axis)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, readable._log_softmax_grad_numpy(g, y, axis), rtol=tolerance, atol=tolerance * 10)


def test_log_softmax_reads_any_layout():
    x = _scores((3, 8, 6, 5), np.float32).transpose(0, 3, 2, 1)  # not contiguous
    g = _scores((3, 8, 6, 5), np.float32, seed=1)[:, :, ::2, :].transpose(0, 3, 2, 1)
    y = compiled.log_softmax(x, 1)
    np.testing.assert_allclose(y, readable._log_softmax_numpy(x, 1), rtol=2e-6, atol=2e-6)
    y3 = y[:, :, :3]
    np.testing.assert_allclose(compiled.log_softmax_grad(g, y3, 1), readable._log_softmax_grad_numpy(g, y3, 1),
                               rtol=2e-6, atol=2e-5)


def test_log_softmax_with_nan_and_infinite_scores_as_the_readable_code():
    x = _scores((2, 4, 3), np.float64)
    x[0, 1, 0] = np.nan
    x[1, 2, 1] = np.inf
    x[1, :, 2] = -np.inf
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(compiled.log_softmax(x, 1), readable._log_softmax_numpy(x, 1), rtol=1e-14)


@pytest.mark.parametrize("shape", [(2, 33, 40), (6,), (3, 1, 1)], ids=str)
def test_one_hot_scaled_matches_the_readable_code(shape, threads):
    rng = np.random.default_rng(2)
    target = rng.integers(0, 5, shape)
    coef = rng.standard_normal(shape).astype(np.float32)
    out = compiled.one_hot_scaled(target, coef, 5, np.float32)
    assert out.dtype == np.float32 and out.shape == (shape[0], 5) + shape[1:]
    np.testing.assert_array_equal(out, readable._one_hot_scaled_numpy(target, coef, 5, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 5, 33, 41), (7,), (3, 1, 1)], ids=str)
def test_relu_and_relu6_passes_match_the_readable_code(shape, dtype, threads):
    x, g = _scores(shape, dtype), _scores(shape, dtype, seed=1)
    corners = [np.nan, -np.inf, np.inf, 0.0, 6.0, -0.0]  # both ends exactly, NaN, infinities
    x.flat[:len(corners)] = corners[:x.size]
    ours, theirs = activation, elementwise._READABLE_ACTIVATION
    y = ours.relu6(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, theirs.relu6(x))
    np.testing.assert_array_equal(ours.relu6_grad(g, y), theirs.relu6_grad(g, y))
    relu = np.maximum(x, 0)
    np.testing.assert_array_equal(ours.relu_grad(g, relu), theirs.relu_grad(g, relu))
