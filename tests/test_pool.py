"""Pooling against PyTorch (output and input gradient) and finite differences, over a grid of window shapes.

Max pooling runs twice: with the compiled Numba kernel and with the readable
NumPy version (``minidl.kernels.disabled()``); both must match torch, ties and
NaNs included, and each other to the last bit.
"""
import contextlib
import itertools

import numpy as np
import pytest
import torch
from helpers import Values, check_op

import minidl
import minidl.nn.functional as F
from minidl import kernels

SIZE = (1, 2, 7, 6)  # odd and even, tiny enough for finite differences


def _fits(size, kernel, padding, dilation):
    """PyTorch accepts the window: padding at most half the kernel, dilated kernel inside the padded input."""
    return all(p <= k // 2 and n + 2 * p >= d * (k - 1) + 1 for n, k, p, d in zip(size, kernel, padding, dilation))


def _as_pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _grid(dilations):
    cases = []
    for kernel, stride, dilation in itertools.product([1, 2, 3, (2, 3)], [None, 1, 2, 3], dilations):
        k = _as_pair(kernel)
        for padding in itertools.product(range(k[0] // 2 + 1), range(k[1] // 2 + 1)):
            if _fits(SIZE[2:], k, padding, _as_pair(dilation)):
                cases.append((kernel, stride, padding if padding[0] != padding[1] else padding[0], dilation))
    return cases


@pytest.fixture(params=[True, False], ids=["numba", "numpy"])
def compiled(request):
    """Run the test with the compiled kernels, then with the readable NumPy versions."""
    if request.param:
        yield True
    else:
        with kernels.disabled():
            yield False


# ---------------------------------------------------------------- max_pool2d
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("kernel, stride, padding, dilation", _grid([1, 2, 3]), ids=str)
def test_max_pool2d_grid(compiled, kernel, stride, padding, dilation, ceil_mode, device):
    check_op([SIZE], lambda lib, x: lib.nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode), device=device)


@pytest.mark.parametrize(
    "shape, args",
    [
        ((2, 3, 9, 9), (3, 2, 1)),  # ResNet's stem pool
        ((1, 1, 1, 1), (1,)),
        ((1, 2, 1, 1), (2, 1, 1)),  # every window mostly padding
        ((1, 2, 1, 3), ((1, 3), 1, (0, 1))),
        ((2, 2, 5, 8), ((1, 3), (2, 1), (0, 1), (1, 2))),
        ((1, 2, 8, 8), (2, 2, 0, 1, True)),  # ceil_mode changes nothing where windows tile exactly
        ((1, 1, 6, 6), (3, 3, 1, 1, True)),  # ceil_mode's last window hangs past the padding
    ],
    ids=str,
)
def test_max_pool2d_shapes(compiled, shape, args, device):
    check_op([shape], lambda lib, x: lib.nn.functional.max_pool2d(x, *args), device=device)


def test_max_pool2d_unbatched(compiled, device):
    check_op([(2, 5, 5)], lambda lib, x: lib.nn.functional.max_pool2d(x, 2, 1, 1), device=device)


def _ties(shape, levels=3, seed=0):
    """Values with many repeats, so windows hold several equal maxima."""
    return Values(np.random.default_rng(seed).integers(0, levels, shape).astype(np.float64))


@pytest.mark.parametrize(
    "args", [(3, 1, 1), (2, 1), (3, 2, 1, 2), ((2, 3), (1, 2), (1, 0), 1, True), (3, 3, 1, 1, True)], ids=str
)
def test_max_pool2d_ties_go_to_the_first_maximum(compiled, args, device):
    check_op([_ties((2, 3, 7, 7))], lambda lib, x: lib.nn.functional.max_pool2d(x, *args), gradcheck=False, device=device)
    check_op([Values(np.ones((1, 2, 5, 6)))], lambda lib, x: lib.nn.functional.max_pool2d(x, *args), gradcheck=False, device=device)


def test_max_pool2d_nan_and_infinity(compiled, device):
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, 6, 6))
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 1, 4, 4] = np.nan  # NaN propagates; of two, torch keeps the last
    x[0, 1, :3, :3] = -np.inf  # windows of only -inf keep their first in-bounds pixel
    for args in [(3, 1, 1), (2, 2), (3, 2, 1, 2, True)]:
        check_op([Values(x)], lambda lib, x: lib.nn.functional.max_pool2d(x, *args), gradcheck=False, device=device)
        _assert_same_indices(x, lambda lib, x: lib.nn.functional.max_pool2d(x, *args, return_indices=True))


def _assert_same_indices(x, fn):
    _, ours = fn(minidl, minidl.tensor(x))
    _, theirs = fn(torch, torch.tensor(x))
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.data, theirs.numpy())


@pytest.mark.parametrize(
    "args", [(3, 2, 1), (2, 1, 0, 2), ((2, 3), 2, (1, 1), (3, 1), True), (3, 3, 1, 1, True)], ids=str
)
def test_max_pool2d_return_indices(compiled, args, device):
    pool = lambda lib, x: lib.nn.functional.max_pool2d(x, *args, return_indices=True)  # noqa: E731
    ties = _ties((2, 3, 7, 8)).array
    for x in [np.random.default_rng(1).standard_normal((2, 3, 7, 8)), ties, ties[0]]:  # the last unbatched
        _assert_same_indices(x, pool)
    # the values that come with the indices still carry the gradient
    check_op([(1, 2, 6, 7)], lambda lib, x: lib.nn.functional.max_pool2d(x, *args, return_indices=True)[0], device=device)


def test_max_pool2d_window_wholly_in_padding(compiled):
    # dilation 3 reaches from the left padding (-1) to column 2 of a 2-pixel input: no pixel inside.
    # PyTorch gives -inf and an index past the plane (its backward then aborts the process, so it is
    # not run here); we give the same, and that window passes no gradient.
    x = np.random.default_rng(0).standard_normal((1, 1, 2, 2))
    pool = lambda lib, x: lib.nn.functional.max_pool2d(x, 2, 1, 1, 3, return_indices=True)  # noqa: E731
    _assert_same_indices(x, pool)
    t = minidl.tensor(x, requires_grad=True)
    out, _ = pool(minidl, t)
    np.testing.assert_array_equal(out.data, pool(torch, torch.tensor(x))[0].numpy())
    out.backward(np.ones(out.shape))
    np.testing.assert_array_equal(t.grad.data, 0)


def _compiled_and_numpy(x, args):
    """Output, indices and input gradient of max_pool2d(x, *args), with the kernel and without."""
    results = []
    for run_compiled in (True, False):
        t = minidl.tensor(x, requires_grad=True)
        with contextlib.nullcontext() if run_compiled else kernels.disabled():
            out, index = F.max_pool2d(t, *args, return_indices=True)
            out.backward(np.random.default_rng(0).standard_normal(out.shape).astype(x.dtype))
        results.append((out.data, index.data, t.grad.data))
    return results


def _ties_nan_inf(shape):
    x = np.random.default_rng(3).integers(0, 4, shape).astype(np.float32)
    x[0, 1, 2:5, 3] = np.nan
    x[1, 2, :4, :4] = -np.inf
    return x


def test_compiled_kernel_matches_numpy_version():
    x = _ties_nan_inf((2, 3, 11, 10))
    for kernel, stride, dilation in itertools.product([1, 2, 3, (3, 2)], [None, 1, 2, (3, 1)], [1, 2, (1, 3)]):
        k = _as_pair(kernel)
        for ceil_mode in (False, True):
            args = kernel, stride, (k[0] // 2, k[1] // 2), dilation, ceil_mode
            compiled, numpy = _compiled_and_numpy(x, args)
            for a, b in zip(compiled, numpy):
                np.testing.assert_array_equal(a, b, err_msg=str(args))


def test_compiled_kernel_on_many_threads():
    # large enough for both kernels (search and scatter) to spread their planes over several threads
    compiled, numpy = _compiled_and_numpy(_ties_nan_inf((2, 16, 128, 128)), (3, 2, 1))
    for a, b in zip(compiled, numpy):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- avg_pool2d
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("kernel, stride, padding, dilation", _grid([1]), ids=str)
def test_avg_pool2d_grid(kernel, stride, padding, dilation, ceil_mode, count_include_pad, device):
    check_op(
        [SIZE], lambda lib, x: lib.nn.functional.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad), device=device)


@pytest.mark.parametrize(
    "args",
    [
        dict(kernel_size=3, stride=2, padding=1, divisor_override=2),
        dict(kernel_size=(2, 3), padding=(1, 0), ceil_mode=True, divisor_override=5),
        dict(kernel_size=3, stride=3, padding=1, ceil_mode=True, count_include_pad=False, divisor_override=1),
    ],
    ids=str,
)
def test_avg_pool2d_divisor_override(args, device):
    check_op([SIZE], lambda lib, x: lib.nn.functional.avg_pool2d(x, **args), device=device)


@pytest.mark.parametrize(
    "shape, args",
    [
        ((1, 1, 1, 1), (1,)),
        ((1, 2, 1, 1), (2, 1, 1)),
        ((1, 2, 1, 1), (2, 1, 1, False, False)),
        ((2, 3, 9, 9), (3, 2, 1, True, False)),
        ((1, 1, 6, 6), (3, 3, 1, True)),  # ceil_mode's last window hangs past the padding
        ((2, 5, 5), (2, 1, 1)),  # unbatched
    ],
    ids=str,
)
def test_avg_pool2d_shapes(shape, args, device):
    check_op([shape], lambda lib, x: lib.nn.functional.avg_pool2d(x, *args), device=device)


# ---------------------------------------------------------------- adaptive pooling
ADAPTIVE = [
    ((2, 3, 7, 6), 1),  # ASPP's image-level pooling
    ((2, 3, 7, 7), 3),  # windows overlap: 7 -> 3
    ((1, 2, 5, 5), 4),  # 5 -> 4
    ((1, 2, 7, 5), (3, 4)),
    ((1, 2, 6, 4), (3, 2)),  # windows tile exactly
    ((1, 2, 5, 3), (7, 8)),  # larger than the input: pixels repeat
    ((1, 2, 5, 4), (None, 3)),  # None keeps the input's height
    ((1, 2, 5, 4), (2, None)),
    ((1, 1, 1, 1), 1),
    ((1, 1, 1, 1), 3),
    ((2, 7, 6), 2),  # unbatched
]


@pytest.mark.parametrize("shape, size", ADAPTIVE, ids=str)
def test_adaptive_avg_pool2d(shape, size, device):
    check_op([shape], lambda lib, x: lib.nn.functional.adaptive_avg_pool2d(x, size), device=device)


@pytest.mark.parametrize("shape, size", ADAPTIVE, ids=str)
def test_adaptive_max_pool2d(shape, size, device):
    check_op([shape], lambda lib, x: lib.nn.functional.adaptive_max_pool2d(x, size), device=device)


@pytest.mark.parametrize("size", [1, 3, (2, 4), (9, 8)], ids=str)
def test_adaptive_max_pool2d_ties_and_indices(size, device):
    x = _ties((2, 3, 7, 6))
    check_op([x], lambda lib, x: lib.nn.functional.adaptive_max_pool2d(x, size), gradcheck=False, device=device)
    _assert_same_indices(x.array, lambda lib, x: lib.nn.functional.adaptive_max_pool2d(x, size, return_indices=True))


def test_adaptive_to_zero_size():
    x = minidl.randn(1, 2, 5, 5)
    assert F.adaptive_avg_pool2d(x, 0).shape == (1, 2, 0, 0)
    assert F.adaptive_max_pool2d(x, (0, 3)).shape == (1, 2, 0, 3)


def test_global_average_by_hand():
    # independent of torch: output size 1 is the mean of each channel
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7))
    out = F.adaptive_avg_pool2d(minidl.tensor(x), 1).data
    np.testing.assert_allclose(out, x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)


# ---------------------------------------------------------------- dtypes and errors
@pytest.mark.parametrize(
    "fn",
    [
        lambda x: F.max_pool2d(x, 3, 2, 1),
        lambda x: F.avg_pool2d(x, 3, 2, 1),
        lambda x: F.adaptive_avg_pool2d(x, 3),
        lambda x: F.adaptive_max_pool2d(x, 3),
    ],
)
def test_float32_stays_float32(fn):
    x = minidl.randn(2, 3, 8, 8, requires_grad=True)
    out = fn(x)
    out.sum().backward()
    assert out.dtype == np.float32 and x.grad.dtype == np.float32


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: F.max_pool2d(x, 3, 1, 2), r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"),
        (lambda x: F.avg_pool2d(x, (2, 4), 1, (1, 3)), r"padding \(1, 3\) must be at most half"),
        (lambda x: F.max_pool2d(x, 6), "larger than the padded input 5"),
        (lambda x: F.max_pool2d(x, 3, dilation=3), r"dilated extent 7 \(kernel 3, dilation 3\)"),
        (lambda x: F.max_pool2d(x, 0), "kernel_size must be at least 1"),
        (lambda x: F.max_pool2d(x, 2, stride=0), "stride must be at least 1"),
        (lambda x: F.max_pool2d(x, 2, padding=-1), "padding must be at least 0"),
        (lambda x: F.max_pool2d(x, (2, 2, 2)), "kernel_size must be an int or a pair"),
        (lambda x: F.avg_pool2d(x, 2, divisor_override=0), "divisor_override must not be zero"),
        (lambda x: F.max_pool2d(x[0, 0], 2), r"\(N, C, H, W\) or \(C, H, W\).*\(5, 5\)"),
        (lambda x: F.adaptive_avg_pool2d(x, (3,)), "output_size must be an int, None or a pair"),
        (lambda x: F.adaptive_max_pool2d(x, -1), "output_size must not be negative"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(minidl.randn(2, 3, 5, 5))
