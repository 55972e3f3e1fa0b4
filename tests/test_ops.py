"""Every op of the engine against PyTorch (forward and every input gradient) and finite differences.

Each case is one line: the input shapes and an expression that runs in both
frameworks (``lib`` is ``minidl`` or ``torch``).
"""
import numpy as np
import pytest
from helpers import Const, Values, check_op

# ---------------------------------------------------------------- arithmetic with broadcasting
BROADCAST_SHAPES = [
    [(3, 4), (3, 4)],
    [(3, 4), (4,)],  # missing leading dimension
    [(3, 1), (1, 4)],  # size-1 on both sides
    [(2, 3, 1), (3, 5)],
    [(5,), (2, 1, 5)],
    [(), (2, 3)],  # a 0-d tensor
    [(1, 1, 1), (4,)],
]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize(
    "name, fn",
    [
        ("add", lambda lib, a, b: a + b),
        ("sub", lambda lib, a, b: a - b),
        ("mul", lambda lib, a, b: a * b),
        ("div", lambda lib, a, b: a / (b.abs() + 0.5)),
        ("pow", lambda lib, a, b: (a.abs() + 0.5) ** b),
    ],
)
def test_binary_broadcast(name, fn, shapes, device):
    check_op(shapes, fn, device=device)


@pytest.mark.parametrize(
    "fn",
    [
        lambda lib, x: x + 2.5,
        lambda lib, x: 2.5 - x,
        lambda lib, x: 3 * x,
        lambda lib, x: 1.5 / (x * x + 1),
        lambda lib, x: -x,
        lambda lib, x: x**2,
        lambda lib, x: x**3,
        lambda lib, x: x.abs() ** 0.5,
        lambda lib, x: 2.0**x,
        lambda lib, x: x.add(1).mul(2).sub(x).div(3).neg().pow(2),
    ],
)
def test_scalar_operands(fn, device):
    check_op([(3, 5)], fn, device=device)


def test_pow_at_zero_base(device):
    # x**2 at x = 0 has gradient 0; torch and minidl must not produce NaN there
    check_op([Values([0.0, 1.0, -2.0])], lambda lib, x: x**2, gradcheck=False, device=device)


@pytest.mark.parametrize(
    "fn, low",
    [
        (lambda lib, x: x.exp(), -2),
        (lambda lib, x: x.log(), 0.1),
        (lambda lib, x: x.sqrt(), 0.1),
        (lambda lib, x: x.abs(), 0.1),
        (lambda lib, x: x.relu(), -2),
        (lambda lib, x: lib.nn.functional.relu(x), -2),
        (lambda lib, x: lib.nn.functional.relu6(x * 4), -2),  # below 0, inside, above 6
        (lambda lib, x: x.sigmoid(), -2),
        (lambda lib, x: x.tanh(), -2),
        (lambda lib, x: lib.exp(x) + lib.log(x.abs()) + lib.sqrt(x.abs()), -2),
        (lambda lib, x: lib.sigmoid(x * 40), -2),  # saturates on both sides
        (lambda lib, x: x.clamp(-0.5, 0.7), -2),
        (lambda lib, x: x.clamp(min=0.2), -2),
        (lambda lib, x: x.clamp(max=0.2), -2),
    ],
)
def test_unary(fn, low, device):
    check_op([(4, 5)], fn, low=low, device=device)


def test_sigmoid_extremes_are_finite(device):
    check_op([Values([-800.0, -30.0, 0.0, 30.0, 800.0])], lambda lib, x: x.sigmoid(), gradcheck=False, device=device)


@pytest.mark.parametrize(
    "shapes",
    [
        [(3, 4), (4, 5)],
        [(4,), (4, 5)],  # vector @ matrix
        [(3, 4), (4,)],  # matrix @ vector
        [(4,), (4,)],  # dot product
        [(2, 3, 4), (4, 5)],  # batch @ matrix
        [(2, 1, 3, 4), (5, 4, 2)],  # batches broadcast
        [(4,), (2, 4, 3)],
        [(2, 3, 4), (4,)],
    ],
    ids=str,
)
def test_matmul(shapes, device):
    check_op(shapes, lambda lib, a, b: a @ b, device=device)


def test_linear(device):
    check_op([(5, 3), (4, 3), (4,)], lambda lib, x, w, b: lib.nn.functional.linear(x, w, b), device=device)


# ---------------------------------------------------------------- reductions
@pytest.mark.parametrize(
    "fn",
    [
        lambda lib, x: x.sum(),
        lambda lib, x: x.sum(0),
        lambda lib, x: x.sum(-1, keepdim=True),
        lambda lib, x: x.sum((0, 2)),
        lambda lib, x: x.sum(dim=(1, 2), keepdim=True),
        lambda lib, x: x.mean(),
        lambda lib, x: x.mean(1),
        lambda lib, x: x.mean((0, -1), keepdim=True),
        lambda lib, x: lib.sum(x, 1) + lib.mean(x, 2).sum(),
        lambda lib, x: x.amax(),
        lambda lib, x: x.amax(1),
        lambda lib, x: x.amax((0, 2), keepdim=True),
        lambda lib, x: x.amin(-1),
        lambda lib, x: x.max(),
        lambda lib, x: x.min(),
        lambda lib, x: x.max(1),  # (values, indices)
        lambda lib, x: x.max(dim=2, keepdim=True).values,
        lambda lib, x: x.min(0).values,
        lambda lib, x: lib.max(x, -1)[0],
    ],
)
def test_reductions(fn, device):
    check_op([(2, 3, 4)], fn, device=device)


def test_max_ties_share_gradient_like_torch(device):
    check_op([Values([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])], lambda lib, x: x.max() + x.amax(1).sum(), gradcheck=False, device=device)


def test_max_with_dim_sends_gradient_to_index_like_torch(device):
    check_op([Values([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])], lambda lib, x: x.max(1).values, gradcheck=False, device=device)


@pytest.mark.parametrize(
    "fn",
    [
        lambda lib, x: x.sum(0),  # sums to zeros of shape (3,)
        lambda lib, x: x.sum(),
        lambda lib, x: x.mean(0),  # the mean of nothing is NaN in both
        lambda lib, x: x.sum(1),  # reduces the non-empty axis: shape (0,)
        lambda lib, x: x.amax(1),
    ],
)
def test_empty_reductions(fn, device):
    check_op([(0, 3)], fn, gradcheck=False, device=device)


def test_argmax_argmin_match_torch():
    import torch

    import minidl

    x = np.random.default_rng(3).standard_normal((3, 4, 5))
    for dim in (None, 0, 1, -1):
        for keepdim in (False, True):
            for name in ("argmax", "argmin"):
                ours = getattr(minidl.tensor(x), name)(dim=dim, keepdim=keepdim).numpy()
                theirs = getattr(torch.tensor(x), name)(dim=dim, keepdim=keepdim).numpy()
                np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "fn",
    [
        lambda lib, x: x.reshape(6, 4),
        lambda lib, x: x.reshape(-1),
        lambda lib, x: x.reshape((4, -1, 2)),
        lambda lib, x: x.view(2, 12),
        lambda lib, x: x.transpose(0, 2),
        lambda lib, x: x.transpose(-1, 1),
        lambda lib, x: x.permute(2, 0, 1),
        lambda lib, x: x.permute((1, 2, 0)) * 2,
        lambda lib, x: x.flatten(),
        lambda lib, x: x.flatten(1),
        lambda lib, x: x.unsqueeze(1).unsqueeze(-1),
        lambda lib, x: x[:, :1].squeeze(1),
        lambda lib, x: x[:1].squeeze(),
        lambda lib, x: x[:, :1].expand(2, 3, 4),
        lambda lib, x: x[0].expand(5, -1, -1),
        lambda lib, x: x.T if x.ndim == 2 else x.permute(2, 1, 0),
        lambda lib, x: lib.transpose(x, 0, 1) + 0,
    ],
)
def test_shape_ops(fn, device):
    check_op([(2, 3, 4)], fn, device=device)


@pytest.mark.parametrize(
    "index",
    [
        (1,),
        (slice(None), 2),
        (slice(0, 2), slice(None), slice(1, 4, 2)),
        (Ellipsis, -1),
        (None, 0, slice(None, None, 2)),
        (slice(None), [0, 2, 2]),  # integer array, repeated index: gradients add up
        ([1, 0, 1], [2, 2, 2]),  # paired integer arrays
        (slice(None), slice(None), np.array([[0, 3], [3, 3]])),
    ],
    ids=str,
)
def test_getitem(index, device):
    check_op([(2, 3, 4)], lambda lib, x: x[index], device=device)


def test_getitem_boolean_mask(device):
    mask = np.random.default_rng(1).random((3, 4)) > 0.5
    check_op([(3, 4), Const(mask)], lambda lib, x, m: x[m] * 2, device=device)
    check_op([(3, 4)], lambda lib, x: x[x > 0], device=device)


@pytest.mark.parametrize(
    "shapes, dim",
    [
        ([(2, 3), (2, 3)], 0),
        ([(2, 3), (2, 5), (2, 1)], 1),
        ([(2, 3, 4), (2, 1, 4)], -2),
        ([(0, 3), (2, 3)], 0),  # an empty tensor joins in
    ],
    ids=str,
)
def test_cat(shapes, dim, device):
    check_op(shapes, lambda lib, *xs: lib.cat(list(xs), dim), device=device)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack(dim, device):
    check_op([(2, 3), (2, 3), (2, 3)], lambda lib, *xs: lib.stack(xs, dim), device=device)


@pytest.mark.parametrize(
    "pad, mode",
    [
        ((1, 2), "constant"),
        ((1, 2, 3, 0), "constant"),
        ((0, 0, 2, 1, 1, 1), "constant"),
        ((-1, 2, 1, -2), "constant"),  # negative widths crop
        ((2, 1, 1, 2), "reflect"),
        ((3, 3, 0, 2), "replicate"),
        ((2, 1, 3, 3), "circular"),
    ],
    ids=str,
)
def test_pad(pad, mode, device):
    check_op([(2, 3, 4, 5)], lambda lib, x: lib.nn.functional.pad(x, pad, mode=mode), device=device)


def test_pad_value(device):
    check_op([(3, 4)], lambda lib, x: lib.nn.functional.pad(x, (1, 1, 2, 0), value=-1.5), device=device)


def test_gather(device):
    index = np.array([[0, 2, 2], [1, 0, 3]])
    check_op([(2, 4), Const(index)], lambda lib, x, i: lib.gather(x, 1, i), device=device)
    check_op([(3, 3), Const(index[:, :3] % 3)], lambda lib, x, i: x.gather(0, i), device=device)


# ---------------------------------------------------------------- softmax and losses
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax(dim, device):
    check_op([(3, 4, 5)], lambda lib, x: lib.nn.functional.softmax(x, dim), device=device)
    check_op([(3, 4, 5)], lambda lib, x: lib.nn.functional.log_softmax(x, dim), device=device)
    check_op([(3, 4, 5)], lambda lib, x: x.softmax(dim) * x.log_softmax(dim), device=device)


def test_softmax_large_logits_stay_finite(device):
    check_op([Values([[1000.0, 0.0, -1000.0]])], lambda lib, x: x.log_softmax(1) + x.softmax(1), gradcheck=False, device=device)


def _targets(shape, classes, ignore=None, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, classes, size=shape)
    if ignore is not None:
        t[rng.random(shape) < 0.3] = ignore
    return t


CE = [
    # (input shape, target, kwargs)
    ((6, 5), _targets((6,), 5), {}),
    ((6, 5), _targets((6,), 5), {"reduction": "sum"}),
    ((6, 5), _targets((6,), 5), {"reduction": "none"}),
    ((6, 5), _targets((6,), 5, ignore=-100), {}),
    ((2, 4, 3, 5), _targets((2, 3, 5), 4, ignore=255), {"ignore_index": 255}),
    ((2, 4, 3, 5), _targets((2, 3, 5), 4, ignore=255), {"ignore_index": 255, "reduction": "none"}),
    ((2, 4, 3, 5), _targets((2, 3, 5), 4, ignore=255), {"ignore_index": 255, "reduction": "sum"}),
    ((2, 3, 2, 2, 3), _targets((2, 2, 2, 3), 3), {}),  # a 3-d volume
    ((5,), np.array(3), {}),  # unbatched
    ((5,), np.array(3), {"reduction": "none"}),
]


@pytest.mark.parametrize("shape, target, kwargs", CE, ids=lambda v: str(getattr(v, "shape", v)))
def test_cross_entropy(shape, target, kwargs, device):
    check_op([shape, Const(target)], lambda lib, x, t: lib.nn.functional.cross_entropy(x, t, **kwargs), device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_class_weights(reduction, device):
    weight = np.array([0.2, 1.0, 3.0, 0.5])
    target = _targets((2, 3, 5), 4, ignore=255)
    check_op(
        [(2, 4, 3, 5), Const(target), Const(weight)],
        lambda lib, x, t, w: lib.nn.functional.cross_entropy(x, t, weight=w, ignore_index=255, reduction=reduction), device=device)


def test_cross_entropy_probability_targets(device):
    p = np.random.default_rng(2).dirichlet(np.ones(4), size=(3, 2)).transpose(0, 2, 1)
    check_op([(3, 4, 2), Const(p)], lambda lib, x, t: lib.nn.functional.cross_entropy(x, t), device=device)
    check_op([(3, 4, 2), Const(p), Const([1.0, 2.0, 0.5, 1.0])], lambda lib, x, t, w: lib.nn.functional.cross_entropy(x, t, w), device=device)


def test_cross_entropy_all_ignored_is_nan_like_torch(device):
    target = np.full((2, 3), 255)
    check_op(
        [(2, 4, 3), Const(target)],
        lambda lib, x, t: lib.nn.functional.cross_entropy(x, t, ignore_index=255),
        gradcheck=False, device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(reduction, device):
    target = _targets((4, 3), 5, ignore=-100)
    check_op(
        [(4, 5, 3), Const(target)],
        lambda lib, x, t: lib.nn.functional.nll_loss(lib.nn.functional.log_softmax(x, 1), t, reduction=reduction), device=device)


def test_where(device):
    cond = np.random.default_rng(4).random((3, 4)) > 0.5
    check_op([Const(cond), (3, 4), (4,)], lambda lib, c, a, b: lib.where(c, a, b), device=device)


def test_axis_is_an_alias_of_dim(device):
    check_op([(2, 3, 4)], lambda lib, x: x.sum(axis=1).sum() * x.mean(axis=(0, 2), keepdim=True), device=device)


# ---------------------------------------------------------------- dropout: random, so checked by its properties
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zeroes_p_and_rescales_the_rest(p):
    import minidl

    x = minidl.tensor(np.random.default_rng(0).uniform(1, 2, size=(200, 100)), requires_grad=True)
    y = minidl.nn.functional.dropout(x, p)
    kept = y.detach().numpy() != 0
    assert abs(1 - kept.mean() - p) < 0.01  # 20,000 draws: 0.01 is about 3 standard deviations (and the seed is fixed)
    np.testing.assert_allclose(y.detach().numpy()[kept], x.detach().numpy()[kept] / (1 - p))
    y.backward(np.ones(y.shape))
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p))  # the same mask, forward and backward


def test_dropout_gradcheck_with_a_fixed_mask():
    import minidl

    def fn(x):
        minidl.manual_seed(5)  # the same mask on every call, as finite differences need
        return minidl.nn.functional.dropout(x, 0.4)

    minidl.gradcheck(fn, [minidl.randn(4, 6, requires_grad=True)])


def test_dropout_is_the_identity_when_not_training_like_torch(device):
    check_op([(3, 4)], lambda lib, x: lib.nn.functional.dropout(x, 0.5, training=False), device=device)
    check_op([(3, 4)], lambda lib, x: lib.nn.functional.dropout(x, 0.0) * 2, device=device)
    check_op([(3, 4)], lambda lib, x: lib.nn.functional.dropout(x, 1.0) + x, gradcheck=False, device=device)
