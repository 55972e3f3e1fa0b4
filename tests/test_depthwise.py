"""Depthwise convolution against PyTorch's conv2d(groups=C), finite differences, and kernel vs NumPy.

Each case is one line: (N, C, multiplier, H, W), kernel, stride, padding,
dilation, bias. minidl runs its internal entry ``depthwise_conv2d``; PyTorch
runs ``conv2d(..., groups=C)``, the same computation.
"""
import contextlib

import numpy as np
import pytest
from helpers import Const, check_op

import minidl
from minidl.functional import depthwise as dw
from minidl.functional.convutils import output_size
from minidl.kernels.cpu import depthwise as cpu_kernels


def depthwise(lib, x, w, b, stride, padding, dilation):
    if lib.__name__ == "torch":
        return lib.nn.functional.conv2d(x, w, b, stride, padding, dilation, groups=x.shape[1])
    return dw.depthwise_conv2d(x, w, b, stride, padding, dilation)


def shapes(n, c, m, h, w, kernel, bias):
    return [(n, c, h, w), (c * m, 1) + kernel] + ([(c * m,)] if bias else [])


def case_fn(stride, padding, dilation, bias):
    if bias:
        return lambda lib, x, w, b: depthwise(lib, x, w, b, stride, padding, dilation)
    return lambda lib, x, w: depthwise(lib, x, w, None, stride, padding, dilation)


# (N, C, m, H, W), kernel, stride, padding, dilation, bias
CASES = [
    ((2, 3, 1, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1), True),  # 'same' 3×3
    ((1, 2, 1, 8, 8), (3, 3), (1, 1), (2, 2), (2, 2), True),  # atrous rate 2, 'same'
    ((2, 2, 2, 9, 7), (3, 3), (2, 2), (1, 1), (1, 1), True),  # stride 2, multiplier 2
    ((1, 2, 1, 11, 10), (3, 3), (2, 2), (4, 4), (4, 4), False),  # stride with dilation
    ((1, 2, 1, 13, 13), (3, 3), (3, 3), (6, 6), (6, 6), True),  # rate 6, stride 3
    ((1, 2, 1, 9, 8), (3, 3), (1, 2), (5, 3), (5, 3), True),  # rates 5 and 3
    ((1, 2, 1, 6, 5), (5, 5), (1, 1), (2, 2), (1, 1), True),  # kernel 5
    ((1, 2, 1, 12, 12), (5, 5), (2, 3), (3, 1), (2, 1), False),  # kernel 5, mixed
    ((1, 2, 2, 6, 6), (2, 2), (1, 1), (0, 0), (1, 1), True),  # even kernel, no padding
    ((1, 2, 1, 7, 6), (2, 2), (2, 2), (1, 0), (3, 1), True),  # even kernel, dilated
    ((1, 2, 1, 6, 5), (1, 1), (2, 3), (0, 0), (1, 1), True),  # 1×1 taps skipping pixels
    ((1, 2, 2, 5, 5), (1, 1), (1, 1), (2, 1), (1, 1), False),  # 1×1 with padding: zero border
    ((1, 2, 1, 7, 6), (3, 1), (1, 2), (1, 0), (2, 1), True),  # non-square 3×1
    ((1, 2, 2, 6, 7), (2, 3), (2, 1), (1, 2), (1, 3), True),  # non-square 2×3
    ((1, 3, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), True),  # 1×1 input
    ((2, 2, 2, 1, 1), (3, 3), (1, 1), (1, 1), (1, 1), True),  # 1×1 input, 3×3 kernel padded
    ((1, 2, 1, 1, 1), (3, 3), (2, 2), (4, 4), (3, 3), False),  # 1×1 input, dilation, stride
    ((1, 2, 1, 3, 3), (3, 3), (1, 1), (5, 5), (2, 2), True),  # padding beyond the dilated reach
    ((1, 1, 2, 4, 4), (3, 3), (3, 3), (7, 7), (1, 1), True),  # some outputs see only padding
    ((2, 3, 1, 5, 4), (3, 3), (2, 3), (2, 1), (3, 2), False),  # odd everything
    ((1, 2, 3, 5, 6), (3, 3), (1, 1), (1, 1), (1, 1), True),  # multiplier 3
    ((1, 2, 1, 3, 9), (1, 3), (1, 2), (0, 4), (1, 4), True),  # a single row of taps
    ((0, 2, 2, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1), True),  # an empty batch
]
CASE_IDS = [f"{s}-k{k}-s{st}-p{p}-d{d}-{'bias' if b else 'nobias'}" for s, k, st, p, d, b in CASES]


def run_case(case, gradcheck=True):
    (n, c, m, h, w), kernel, stride, padding, dilation, bias = case
    check_op(shapes(n, c, m, h, w, kernel, bias), case_fn(stride, padding, dilation, bias), gradcheck=gradcheck)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_parity_kernels(case):
    run_case(case)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_parity_readable(case):
    with minidl.kernels.disabled():
        run_case(case)


@pytest.mark.parametrize("size", [(65, 65), (33, 20)])
@pytest.mark.parametrize("stride, padding, dilation", [(1, 2, 2), (2, 1, 1), (1, 12, 12)])
def test_parity_larger(size, stride, padding, dilation, device):
    # enough pixels for vector loops with remainders; no gradcheck (too many elements)
    geometry = (stride,) * 2, (padding,) * 2, (dilation,) * 2
    check_op([(2, 4) + size, (4, 1, 3, 3), (4,)], case_fn(*geometry, True), gradcheck=False, device=device)


def test_parity_float32(device):
    fn = case_fn((2, 1), (2, 2), (2, 2), True)
    as_float = lambda lib, x, w, b: fn(lib, x.float(), w.float(), b.float())  # noqa: E731
    check_op([(2, 3, 17, 19), (6, 1, 3, 3), (6,)], as_float, atol=1e-5, rtol=1e-5, gradcheck=False, device=device)


def test_non_contiguous_input_and_gradient(device):
    # a transposed input, and a transposed gradient arriving from the op after
    def fn(lib, x, w):
        y = depthwise(lib, x.transpose(2, 3), w, None, (1, 2), (1, 1), (2, 1))
        return y.transpose(2, 3)

    check_op([(2, 2, 6, 9), (4, 1, 3, 2)], fn, device=device)


@pytest.mark.parametrize("constant", [0, 1], ids=["input constant", "weight constant"])
def test_one_input_constant(constant, device):
    # backward computes (and forward keeps what it needs for) only the gradients asked for
    rng = np.random.default_rng(3)
    inputs = [(2, 2, 6, 6), (4, 1, 3, 3), (4,)]
    inputs[constant] = Const(rng.standard_normal(inputs[constant]))
    check_op(inputs, case_fn((1, 1), (1, 1), (2, 2), True), device=device)


# ---------------------------------------------------------------- through the public conv2d(groups=C)
CONV2D_CASES = [
    ([(2, 4, 9, 9), (4, 1, 3, 3), (4,)], dict(stride=1, padding=2, dilation=2)),  # atrous 'same' by hand
    ([(1, 3, 8, 7), (6, 1, 3, 3), (6,)], dict(stride=2, padding=1)),  # strided, multiplier 2
    ([(1, 2, 9, 8), (2, 1, 3, 3), (2,)], dict(padding="same", dilation=3)),  # 'same' with a rate
    ([(2, 7, 6), (2, 1, 2, 3), (2,)], dict(stride=(2, 1), padding=(1, 0))),  # unbatched input
]


@pytest.mark.parametrize("inputs, options", CONV2D_CASES, ids=str)
def test_through_conv2d(inputs, options, device):
    groups = inputs[0][-3]
    check_op(inputs, lambda lib, x, w, b: lib.nn.functional.conv2d(x, w, b, groups=groups, **options), device=device)


def test_conv2d_dispatches_here():
    x = minidl.tensor(np.ones((1, 3, 5, 5)), requires_grad=True)
    y = minidl.nn.functional.conv2d(x, minidl.tensor(np.ones((3, 1, 3, 3))), groups=3)
    assert y.grad_fn.function is dw.DepthwiseConv2d


# ---------------------------------------------------------------- compiled kernel vs readable NumPy
def check_kernels_match_readable(kernels_module, shape, kernel, geometry, dtype, tol):
    """A kernel module's forward (with and without bias), grad_input and grad_weight vs the readable version.

    Shared with tests/cudasim, which runs it on the CUDA kernels.
    """
    (n, c, m, h, w), (stride, padding, dilation) = shape, geometry
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((c * m, 1) + kernel).astype(dtype)
    bias = rng.standard_normal(c * m).astype(dtype)
    out_hw = tuple(output_size("test", *sizes) for sizes in zip((h, w), kernel, *geometry))
    grad = rng.standard_normal((n, c * m) + out_hw).astype(dtype)
    for name, arguments in [
        ("forward", (x, weight, bias, *geometry, out_hw)),
        ("forward", (x, weight, None, *geometry, out_hw)),
        ("grad_input", (grad, weight, x.shape, *geometry)),
        ("grad_weight", (x, grad, weight.shape, *geometry)),
    ]:
        compiled, readable = getattr(kernels_module, name)(*arguments), getattr(dw._READABLE, name)(*arguments)
        assert compiled.dtype == dtype and compiled.shape == readable.shape, name
        np.testing.assert_allclose(compiled, readable, rtol=tol, atol=tol, err_msg=name)


GEOMETRIES = [
    ((3, 3), ((1, 1), (2, 2), (2, 2))),
    ((3, 3), ((2, 2), (1, 1), (1, 1))),
    ((2, 3), ((3, 1), (3, 0), (2, 4))),
    ((5, 1), ((1, 3), (0, 2), (1, 1))),
    # stride 1, the whole-plane loops: no padding, padding past every tap, uneven
    ((3, 3), ((1, 1), (0, 0), (1, 1))),
    ((3, 3), ((1, 1), (12, 12), (12, 12))),
    ((3, 3), ((1, 1), (20, 20), (20, 20))),  # on 21×18, the side taps read only padding (ASPP on a small map)
    ((2, 3), ((1, 1), (1, 0), (3, 2))),
    ((1, 1), ((1, 1), (0, 0), (1, 1))),
]


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("kernel, geometry", GEOMETRIES, ids=str)
def test_kernel_matches_numpy(kernel, geometry, multiplier, dtype, tol):
    check_kernels_match_readable(cpu_kernels, (3, 4, multiplier, 21, 18), kernel, geometry, dtype, tol)


@pytest.mark.parametrize("use_kernels", [True, False])
def test_float32_stays_float32(use_kernels):
    x = minidl.tensor(np.ones((1, 2, 5, 5), np.float32), requires_grad=True)
    w = minidl.tensor(np.ones((4, 1, 3, 3), np.float32), requires_grad=True)
    b = minidl.tensor(np.ones(4, np.float32), requires_grad=True)
    with contextlib.nullcontext() if use_kernels else minidl.kernels.disabled():
        y = dw.depthwise_conv2d(x, w, b, (1, 1), (1, 1), (1, 1))
        y.sum().backward()
    assert y.dtype == np.float32
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32


# ---------------------------------------------------------------- errors
def test_errors_name_the_argument():
    x = minidl.tensor(np.zeros((1, 3, 5, 5)))
    ones = (1, 1)
    with pytest.raises(ValueError, match=r"input must be \(N, C, H, W\), got shape \(3, 5, 5\)"):
        dw.depthwise_conv2d(minidl.tensor(np.zeros((3, 5, 5))), minidl.tensor(np.zeros((3, 1, 3, 3))), None, ones, ones, ones)
    with pytest.raises(ValueError, match=r"weight must be \(C·m, 1, kh, kw\) with C = 3.*\(4, 1, 3, 3\)"):
        dw.depthwise_conv2d(x, minidl.tensor(np.zeros((4, 1, 3, 3))), None, ones, ones, ones)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\).*got \(3,\)"):
        dw.depthwise_conv2d(x, minidl.tensor(np.zeros((6, 1, 3, 3))), minidl.tensor(np.zeros(3)), ones, ones, ones)
    with pytest.raises(ValueError, match="same dtype.*float64.*float32"):
        dw.depthwise_conv2d(x, minidl.tensor(np.zeros((3, 1, 3, 3), np.float32)), None, ones, ones, ones)
    with pytest.raises(ValueError, match="dilated extent 9"):
        dw.depthwise_conv2d(x, minidl.tensor(np.zeros((3, 1, 3, 3))), None, ones, ones, (4, 4))
