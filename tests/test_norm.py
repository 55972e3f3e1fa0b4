"""batch_norm against PyTorch: outputs, input/weight/bias gradients, running statistics, errors."""
import contextlib

import numpy as np
import pytest
import torch
from helpers import Const, check_op

import minidl
import minidl.nn.functional as F

SHAPES = [(6, 3), (4, 3, 5), (2, 3, 4, 5), (1, 3, 2, 3), (5, 1, 2, 2)]


@pytest.fixture(autouse=True, params=["kernels", "readable"])
def implementation(request):
    """Every test runs twice: through the compiled CPU kernels and through the readable array code."""
    with contextlib.nullcontext() if request.param == "kernels" else minidl.kernels.disabled():
        yield request.param


def _running(channels, seed=1):
    """Running statistics as a layer would hold them: any mean, a positive variance."""
    rng = np.random.default_rng(seed)
    return Const(rng.uniform(-1, 1, channels)), Const(rng.uniform(0.5, 2, channels))


# ---------------------------------------------------------------- parity: output and every gradient
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_affine(shape, training, device):
    c = shape[1]
    check_op(
        [shape, *_running(c), (c,), (c,)],
        lambda lib, x, m, v, w, b: lib.nn.functional.batch_norm(x, m, v, w, b, training), device=device)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_no_weight_no_bias(shape, training, device):
    run = _running(shape[1])
    check_op([shape, *run], lambda lib, x, m, v: lib.nn.functional.batch_norm(x, m, v, None, None, training), device=device)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_weight_only_and_bias_only(training, device):
    run = _running(3)
    check_op([(4, 3, 3), *run, (3,)], lambda lib, x, m, v, w: lib.nn.functional.batch_norm(x, m, v, w, None, training), device=device)
    check_op([(4, 3, 3), *run, (3,)], lambda lib, x, m, v, b: lib.nn.functional.batch_norm(x, m, v, None, b, training), device=device)


def test_training_without_running_stats(device):
    check_op([(3, 2, 3, 3), (2,), (2,)], lambda lib, x, w, b: lib.nn.functional.batch_norm(x, None, None, w, b, True), device=device)


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
def test_momentum_and_eps_do_not_change_gradients(momentum, device):
    check_op(
        [(4, 3, 2, 2), *_running(3), (3,), (3,)],
        lambda lib, x, m, v, w, b: lib.nn.functional.batch_norm(x, m, v, w, b, True, momentum, eps=1e-3), device=device)


def test_constant_weight_and_bias(device):
    w, b = Const(np.array([0.5, -2.0, 3.0])), Const(np.array([1.0, 0.0, -1.0]))
    check_op([(4, 3, 5), w, b], lambda lib, x, w, b: lib.nn.functional.batch_norm(x, None, None, w, b, True), device=device)


def test_inside_a_larger_graph(device):
    # the normalised output feeds a nonlinearity, so the upstream gradient is not uniform per channel
    check_op(
        [(3, 2, 3, 3), *_running(2), (2,), (2,)],
        lambda lib, x, m, v, w, b: lib.nn.functional.batch_norm(x * x, m, v, w, b, True).tanh().sum(1), device=device)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-4), (np.float64, 1e-10)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_large_input_far_from_zero(dtype, tol, training):
    # enough values for the kernels' threads, and a mean 100x the spread: var = E[x²] - E[x]² would cancel
    rng = np.random.default_rng(0)
    x = rng.normal(300, 3, (8, 16, 33, 33)).astype(dtype)
    mean, var = rng.normal(300, 1, 16), rng.uniform(5, 10, 16)
    weight, bias, upstream = rng.normal(1, 0.2, 16), rng.normal(0, 1, 16), rng.normal(0, 1, x.shape)
    grads = {}
    for lib, make in ((minidl, minidl.tensor), (torch, torch.tensor)):
        inputs = [make(a.astype(dtype), requires_grad=True) for a in (x, weight, bias)]
        out = lib.nn.functional.batch_norm(inputs[0], make(mean.astype(dtype)), make(var.astype(dtype)), *inputs[1:],
                                           training)
        (out * make(upstream.astype(dtype))).sum().backward()
        grads[lib] = [out.data if lib is minidl else out.detach().numpy()] + [
            t.grad.data if lib is minidl else t.grad.numpy() for t in inputs]
    for mine, theirs in zip(grads[minidl], grads[torch]):
        assert mine.dtype == dtype
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol * scale)


def test_non_contiguous_input(device):
    # a transposed view: the kernels must read it by its strides (or a copy), not as if it were contiguous
    check_op([(4, 3, 5, 2), (3,), (3,)],
             lambda lib, x, w, b: lib.nn.functional.batch_norm(x.transpose(2, 3), None, None, w, b, True), device=device)


# ---------------------------------------------------------------- running statistics, updated in place
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5), (1, 3, 2, 1)], ids=str)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
def test_running_stats_follow_torch(shape, momentum):
    rng = np.random.default_rng(0)
    mean, var = rng.uniform(-1, 1, shape[1]), rng.uniform(0.5, 2, shape[1])
    ours = minidl.tensor(mean), minidl.tensor(var)
    theirs = torch.tensor(mean), torch.tensor(var)
    for step in range(4):
        x = rng.normal(step, 1 + step, shape)  # each batch with other statistics
        F.batch_norm(minidl.tensor(x), *ours, training=True, momentum=momentum)
        torch.nn.functional.batch_norm(torch.tensor(x), *theirs, training=True, momentum=momentum)
        for mine, reference in zip(ours, theirs):
            np.testing.assert_allclose(mine.data, reference.numpy(), rtol=1e-12, atol=1e-12)
    # evaluation reads them and leaves them alone
    x = rng.normal(0, 1, shape)
    out = F.batch_norm(minidl.tensor(x), *ours, training=False)
    expected = torch.nn.functional.batch_norm(torch.tensor(x), *theirs, training=False)
    np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours[0].data, theirs[0].numpy(), rtol=1e-12, atol=1e-12)


def test_running_stats_as_arrays_are_updated_in_place():
    x = np.arange(12.0).reshape(4, 3)  # per channel the batch mean is 4.5 + c, unbiased variance 15
    mean, var = np.zeros(3), np.ones(3)
    F.batch_norm(minidl.tensor(x), mean, var, training=True, momentum=0.25)
    np.testing.assert_allclose(mean, 0.25 * (4.5 + np.arange(3)))
    np.testing.assert_allclose(var, 0.75 + 0.25 * 15)


def test_float32_running_stats_with_float32_input():
    x = np.random.default_rng(0).normal(2, 3, (8, 4, 3, 3)).astype(np.float32)
    mean, var = minidl.zeros(4), minidl.ones(4)
    out = F.batch_norm(minidl.tensor(x), mean, var, training=True)
    t_mean, t_var = torch.zeros(4), torch.ones(4)
    expected = torch.nn.functional.batch_norm(torch.tensor(x), t_mean, t_var, training=True)
    assert out.dtype == np.float32 and mean.dtype == np.float32 and var.dtype == np.float32
    np.testing.assert_allclose(out.data, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var.data, t_var.numpy(), rtol=1e-5)


def test_training_normalises_each_channel():
    # a hand check, independent of torch: zero mean and unit (biased) variance per channel
    x = np.random.default_rng(0).normal(5, 3, (4, 2, 3, 3))
    y = F.batch_norm(minidl.tensor(x), None, None, training=True, eps=0.0).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-12)


# ---------------------------------------------------------------- errors
def test_single_value_per_channel_when_training():
    for shape in [(1, 3), (1, 3, 1, 1), (1, 3, 1)]:
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            F.batch_norm(minidl.randn(*shape), minidl.zeros(3), minidl.ones(3), training=True)
    # in evaluation a single value is fine
    F.batch_norm(minidl.randn(1, 3), minidl.zeros(3), minidl.ones(3), training=False)


@pytest.mark.parametrize("name", ["running_mean", "running_var", "weight", "bias"])
def test_channel_count_mismatch(name):
    args = dict(running_mean=minidl.zeros(3), running_var=minidl.ones(3), weight=minidl.ones(3), bias=minidl.zeros(3))
    args[name] = minidl.ones(4)
    with pytest.raises(ValueError, match=rf"{name} has shape \(4,\).*\(2, 3, 5, 5\).*3 channels"):
        F.batch_norm(minidl.randn(2, 3, 5, 5), training=True, **args)


def test_other_errors():
    x = minidl.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="evaluation mode"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(TypeError, match="momentum=None"):
        F.batch_norm(x, minidl.zeros(3), minidl.ones(3), training=True, momentum=None)
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\).*\(4,\)"):
        F.batch_norm(minidl.randn(4), None, None, training=True)
    with pytest.raises(ValueError, match="both running_mean and running_var"):
        F.batch_norm(x, minidl.zeros(3), None, training=True)
