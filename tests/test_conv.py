"""conv2d against PyTorch (output, grad input, grad weight, grad bias) and finite differences.

im2col and col2im are checked against torch's ``unfold`` and ``fold`` (same
row order (c, i, j)), and the Numba kernels against the readable NumPy code,
which also runs the whole op on a sample of the grid inside
``minidl.kernels.disabled()``. Winograd's F(2×2, 3×3) runs the stride-1 3×3
part of the same grid, forced with ``conv_algorithm('winograd')`` (the grid's
4 channels are too few for the automatic choice to take it), and the taps
algorithm (one product per kernel tap) its whole stride-1 part.
"""
import contextlib
import itertools
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import Const, check_op, run_both

import minidl
from minidl.functional import taps, winograd
from minidl.functional.conv import Convolution, col2im, im2col
from minidl.functional.convutils import dilated_extent
import minidl.kernels.cpu as cpu_kernels
from minidl.kernels.cpu import conv as cpu_conv
from minidl.kernels.cpu import taps as cpu_taps
from minidl.kernels.cpu import winograd as cpu_winograd


def conv(lib, x, w, b=None, **options):
    return lib.nn.functional.conv2d(x, w, b, **options)


def check_conv(x_shape, w_shape, bias=True, gradcheck=False, device="cpu", **options):
    """check_op on conv2d: with bias the inputs are x, weight and bias (C_out,)."""
    shapes = [x_shape, w_shape] + ([(w_shape[0],)] if bias else [])
    check_op(shapes, lambda lib, *t: conv(lib, *t, **options), gradcheck=gradcheck, atol=1e-9, device=device)


def gradcheck_with(algorithm, x_shape, w_shape, bias, compiled=True, device="cpu", **options):
    """check_conv with finite differences, ``algorithm`` forced, through the kernels or the readable code."""
    with minidl.nn.functional.conv_algorithm(algorithm), (
        contextlib.nullcontext() if compiled else minidl.kernels.disabled()
    ):
        check_conv(x_shape, w_shape, bias, gradcheck=True, **options, device=device)


def _on_every_thread(kernel):
    """The Numba function with its loop shared among all of Numba's threads, whatever its size and however long
    OpenBLAS's threads spin in this process (the suite loads NumPy first, so there they spin long)."""
    def run(*args):
        with mock.patch.multiple(cpu_kernels, BLAS_SPINS_BRIEFLY=True, PARALLEL_WORK=0):
            return kernel(*args)
    return run


# ---------------------------------------------------------------- the grid: kernel × stride × dilation × padding × groups
KERNELS = [(1, 1), (2, 2), (3, 3), (5, 5), (1, 3), (3, 2)]
PADDINGS = ["none", "reach", "beyond"]  # 0; d·(k-1)/2 (keeps the size at stride 1); more than d·(k-1)


def _grid_case(kernel, stride, dilation, padding, groups):
    """Shapes and options of one grid case: a batch of 2, odd and even sizes where the kernel just fits."""
    extent = [dilated_extent(k, dilation) for k in kernel]
    pad = {"none": 0, "reach": [e // 2 for e in extent], "beyond": [e + 1 for e in extent]}[padding]
    pad = tuple(pad) if isinstance(pad, list) else pad
    x_shape = (2, 4, extent[0] + stride + 1, extent[1] + 2)
    w_shape = (6, 4 // groups) + kernel
    return x_shape, w_shape, dict(stride=stride, padding=pad, dilation=dilation, groups=groups)


GRID = list(itertools.product(KERNELS, [1, 2, 3], [1, 2, 3, 6], PADDINGS, [1, 2]))


@pytest.mark.parametrize("kernel, stride, dilation, padding, groups", GRID, ids=str)
def test_grid(kernel, stride, dilation, padding, groups, device):
    x_shape, w_shape, options = _grid_case(kernel, stride, dilation, padding, groups)
    check_conv(x_shape, w_shape, **options, device=device)


@pytest.mark.parametrize("kernel, stride, dilation, padding, groups", GRID[::9], ids=str)
def test_grid_numpy_path(kernel, stride, dilation, padding, groups):
    x_shape, w_shape, options = _grid_case(kernel, stride, dilation, padding, groups)
    with minidl.kernels.disabled():
        check_conv(x_shape, w_shape, **options)


# ---------------------------------------------------------------- awkward cases, one line each
@pytest.mark.parametrize(
    "x_shape, w_shape, bias, options",
    [
        ((2, 3, 1, 1), (5, 3, 1, 1), True, {}),  # 1×1 input, pointwise
        ((1, 2, 1, 1), (3, 2, 3, 3), True, dict(padding=1)),  # 1×1 input, only the centre tap sees it
        ((1, 2, 1, 1), (3, 2, 2, 2), False, dict(padding=1, stride=2)),
        ((1, 2, 1, 1), (3, 2, 3, 3), True, dict(padding=6, dilation=6)),  # every other tap in the padding
        ((1, 3, 7, 5), (2, 3, 3, 3), True, dict(padding=(4, 0), dilation=(1, 2))),
        ((3, 2, 9, 9), (4, 2, 3, 3), False, dict(stride=(1, 3), padding=(2, 1), dilation=(4, 5))),
        ((1, 8, 9, 9), (4, 8, 3, 3), True, dict(padding=12, dilation=12)),  # ASPP rate 12 on a small map
        ((1, 4, 11, 10), (4, 4, 3, 3), True, dict(padding=2, dilation=2, stride=2)),  # atrous with stride
        ((2, 3, 13, 13), (8, 3, 3, 3), True, dict(stride=2, padding=1)),  # the stem
        ((2, 4, 6, 6), (6, 2, 2, 3), True, dict(groups=2, padding=(0, 1))),
        ((1, 6, 5, 7), (9, 2, 3, 1), False, dict(groups=3, stride=2, padding=1, dilation=(2, 1))),
        ((2, 4, 5, 5), (4, 4, 5, 5), True, dict(padding=10)),  # output all border: bias and corner taps
        ((2, 3, 8, 6), (2, 3, 8, 6), True, {}),  # the kernel covers the whole image
        ((1, 2, 6, 6), (3, 2, 3, 3), True, dict(padding="valid", stride=2)),
        ((1, 2, 7, 6), (3, 2, 3, 3), True, dict(padding="same", dilation=2)),
        ((1, 2, 6, 7), (3, 2, 2, 4), True, dict(padding="same")),  # even kernels: the odd pixel goes after
        ((1, 2, 6, 7), (3, 2, 4, 3), False, dict(padding="same", dilation=(3, 2))),
        ((1, 4, 6, 7), (6, 2, 2, 2), True, dict(padding="same", groups=2)),
        ((3, 6, 6), (4, 3, 3, 3), True, dict(padding=1)),  # unbatched (C, H, W)
        ((3, 5, 5), (4, 3, 1, 1), False, {}),  # unbatched pointwise
    ],
    ids=str,
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's note on its padded copy
def test_awkward(x_shape, w_shape, bias, options, device):
    check_conv(x_shape, w_shape, bias, **options, device=device)


# ---------------------------------------------------------------- pointwise: a matrix product over channels, no im2col
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise(batch, groups, bias, device):
    check_conv((batch, 4, 5, 3), (6, 4 // groups, 1, 1), bias, groups=groups, device=device)


def test_pointwise_with_stride_or_padding_takes_im2col(device):
    check_conv((2, 4, 5, 5), (3, 4, 1, 1), stride=2, device=device)
    check_conv((2, 4, 5, 5), (3, 4, 1, 1), padding=(1, 2), device=device)
    check_conv((2, 4, 5, 5), (3, 4, 1, 1), dilation=3, device=device)  # dilation changes nothing for a 1×1 kernel


# ---------------------------------------------------------------- finite differences on tiny shapes
@pytest.mark.parametrize(
    "x_shape, w_shape, bias, options",
    [
        ((2, 2, 5, 4), (3, 2, 3, 3), True, dict(padding=1)),
        ((1, 2, 6, 7), (2, 2, 3, 2), True, dict(stride=2, dilation=2, padding=(2, 1))),
        ((1, 4, 5, 5), (2, 2, 2, 2), False, dict(groups=2, stride=(1, 2), padding=3)),
        ((2, 3, 4, 3), (2, 3, 1, 1), True, {}),
        ((2, 4, 3, 3), (4, 2, 1, 1), False, dict(groups=2)),
        ((1, 2, 4, 5), (2, 2, 4, 3), True, dict(padding="same", dilation=(1, 2))),
        ((2, 5, 5), (2, 2, 3, 3), True, dict(padding=3, dilation=3)),
    ],
    ids=str,
)
@pytest.mark.parametrize("compiled", [True, False], ids=["kernels", "numpy"])
def test_gradcheck(x_shape, w_shape, bias, options, compiled, device):
    with contextlib.nullcontext() if compiled else minidl.kernels.disabled():
        check_conv(x_shape, w_shape, bias, gradcheck=True, **options, device=device)


# ---------------------------------------------------------------- constants get no gradient
def test_constant_input_only_weight_and_bias_gradients(device):
    image = np.random.default_rng(3).uniform(-1, 1, (2, 3, 9, 9))
    check_op([Const(image), (4, 3, 3, 3), (4,)], lambda lib, x, w, b: conv(lib, x, w, b, stride=2, padding=1), device=device)


def test_constant_weight_only_input_gradient(device):
    weight = np.random.default_rng(4).uniform(-1, 1, (4, 3, 3, 3))
    check_op([(2, 3, 6, 6), Const(weight)], lambda lib, x, w: conv(lib, x, w, dilation=2, padding=2), device=device)


# ---------------------------------------------------------------- im2col's products: one for the batch, or one per image
@pytest.mark.parametrize("per_image_below", [0, 10**6], ids=["one product", "per image"])
@pytest.mark.parametrize(
    "x_shape, w_shape, bias, options",
    [
        ((2, 3, 13, 13), (8, 3, 3, 3), True, dict(stride=2, padding=1)),  # the stem
        ((3, 6, 7, 6), (9, 2, 3, 2), False, dict(groups=3, stride=(2, 1), padding=(1, 2), dilation=(2, 1))),
        ((1, 4, 6, 6), (6, 2, 2, 2), True, dict(groups=2, padding=1)),
    ],
    ids=str,
)
def test_product_arrangements(per_image_below, x_shape, w_shape, bias, options, monkeypatch):
    """Both ways of arranging im2col's products (``PER_IMAGE_BELOW`` chooses by the columns' depth) match
    PyTorch and finite differences, groups included."""
    monkeypatch.setattr(minidl.functional.conv, "PER_IMAGE_BELOW", per_image_below)
    gradcheck_with("im2col", x_shape, w_shape, bias, **options)


@pytest.mark.parametrize("shape", [(3, 2, 5, 2100, 7), (2, 1, 4, 1024, 8), (4, 1, 3, 40, 2)], ids=str)  # N, groups, M, pixels, rows
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("implementation", [cpu_conv.image_products, _on_every_thread(cpu_conv.image_products)],
                         ids=["numba", "numba-threads"])
def test_image_products_kernel(shape, dtype, implementation):
    """The kernel that splits grad weight's sum over pixels among threads (images of 1024 pixels or more; fewer
    go to BLAS) against the sum written out with einsum."""
    n, groups, rows_g, pixels, rows_c = shape
    rng = np.random.default_rng(8)
    g = rng.standard_normal((n, groups, rows_g, pixels)).astype(dtype)
    cols = rng.standard_normal((groups, rows_c, n * pixels)).astype(dtype)
    expected = np.einsum("ngap,gbnp->gab", g.astype(np.float64), cols.reshape(groups, rows_c, n, pixels))
    result = implementation(g, cols)
    assert result.dtype == dtype
    np.testing.assert_allclose(result, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-3)


def test_stem_on_a_large_map_matches_torch():
    """The stem's arrangement where the kernel above computes grad weight (per image 65 × 65 pixels)."""
    check_conv((2, 3, 129, 129), (8, 3, 3, 3), stride=2, padding=1)


def test_stems_take_one_product_per_image():
    x = minidl.tensor(np.zeros((2, 3, 9, 9), np.float32), requires_grad=True)
    for kernel, per_image in ((3, True), (7, False)):  # 27 and 147 rows of columns
        w = minidl.tensor(np.zeros((4, 3, kernel, kernel), np.float32), requires_grad=True)
        assert conv(minidl, x, w, stride=2, padding=kernel // 2).grad_fn.ctx.per_image is per_image


# ---------------------------------------------------------------- groups == in_channels
def _general_grouped(lib, x, w, b, stride, padding, dilation):
    """Torch's conv2d, or minidl's im2col path called directly (conv2d sends this case to depthwise)."""
    if lib is torch:
        return conv(lib, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=x.shape[1])
    return Convolution.apply(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=x.shape[1])


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("stride, padding, dilation", [((1, 1), (1, 1), (1, 1)), ((2, 1), (4, 2), (2, 2))], ids=str)
def test_groups_equal_channels_through_im2col(multiplier, stride, padding, dilation, device):
    shapes = [(2, 3, 7, 6), (3 * multiplier, 1, 3, 3), (3 * multiplier,)]
    check_op(shapes, lambda lib, x, w, b: _general_grouped(lib, x, w, b, stride, padding, dilation), device=device)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_groups_equal_channels_dispatches_to_depthwise(multiplier, device):
    check_conv((2, 3, 7, 6), (3 * multiplier, 1, 3, 3), groups=3, padding=2, dilation=2, device=device)


# ---------------------------------------------------------------- im2col / col2im: torch's unfold / fold, NumPy vs Numba
GEOMETRIES = [  # (input shape, kernel, stride, padding, dilation)
    ((1, 1, 4, 4), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 3, 9, 8), (3, 2), (2, 1), (1, 0), (2, 3)),
    ((1, 2, 6, 5), (1, 3), (3, 2), (2, 3), (1, 2)),  # padding beyond the kernel's reach
    ((3, 2, 7, 7), (2, 2), (2, 3), (0, 1), (4, 2)),
    ((2, 4, 5, 5), (3, 3), (1, 1), (6, 6), (6, 6)),  # rows that lie wholly in the padding
    ((2, 2, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1)),
]


def _unfold_torch(x, kernel, stride, padding, dilation):
    """torch's unfold is (N, C·kh·kw, L); im2col puts the images side by side: (C·kh·kw, N·L)."""
    cols = torch.nn.functional.unfold(torch.from_numpy(x), kernel, dilation, padding, stride).numpy()
    return cols.transpose(1, 0, 2).reshape(cols.shape[1], -1)


def _fold_torch(cols, shape, kernel, stride, padding, dilation):
    batched = torch.from_numpy(np.ascontiguousarray(cols.reshape(cols.shape[0], shape[0], -1).transpose(1, 0, 2)))
    return torch.nn.functional.fold(batched, shape[2:], kernel, dilation, padding, stride).numpy()


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", GEOMETRIES, ids=str)
@pytest.mark.parametrize("implementation", [im2col, cpu_conv.im2col, _on_every_thread(cpu_conv.im2col)],
                         ids=["numpy", "numba", "numba-threads"])
def test_im2col_is_torch_unfold(shape, kernel, stride, padding, dilation, implementation):
    x = np.random.default_rng(0).standard_normal(shape)
    expected = _unfold_torch(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(implementation(x, kernel, stride, padding, dilation), expected)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", GEOMETRIES, ids=str)
@pytest.mark.parametrize("implementation", [col2im, cpu_conv.col2im, _on_every_thread(cpu_conv.col2im)],
                         ids=["numpy", "numba", "numba-threads"])
def test_col2im_is_torch_fold(shape, kernel, stride, padding, dilation, implementation):
    rows = _unfold_torch(np.zeros(shape), kernel, stride, padding, dilation).shape
    cols = np.random.default_rng(1).standard_normal(rows)
    expected = _fold_torch(cols, shape, kernel, stride, padding, dilation)
    image = implementation(cols, shape, kernel, stride, padding, dilation)
    np.testing.assert_allclose(image, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", GEOMETRIES, ids=str)
def test_numba_matches_numpy_in_float32(shape, kernel, stride, padding, dilation):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    cols = cpu_conv.im2col(x, kernel, stride, padding, dilation)
    assert cols.dtype == np.float32
    np.testing.assert_array_equal(cols, im2col(x, kernel, stride, padding, dilation))
    image = cpu_conv.col2im(cols, shape, kernel, stride, padding, dilation)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, col2im(cols, shape, kernel, stride, padding, dilation), rtol=1e-6, atol=1e-6)


def test_col2im_is_the_adjoint_of_im2col():
    # <im2col(x), c> = <x, col2im(c)>: col2im is exactly the transpose of the linear map im2col
    rng = np.random.default_rng(5)
    shape, geometry = (2, 3, 8, 7), ((3, 2), (2, 1), (2, 3), (3, 2))
    x = rng.standard_normal(shape)
    cols = rng.standard_normal(im2col(x, *geometry).shape)
    np.testing.assert_allclose((im2col(x, *geometry) * cols).sum(), (x * col2im(cols, shape, *geometry)).sum())


@pytest.mark.parametrize(
    "x_shape, w_shape, options",
    [((2, 4, 9, 9), (6, 2, 3, 3), dict(groups=2, padding=2, dilation=2)), ((2, 5, 8, 8), (3, 5, 1, 1), {})],
    ids=str,
)
def test_kernels_and_numpy_path_agree(x_shape, w_shape, options):
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (x_shape, w_shape, w_shape[:1])]
    results = []
    for context in (contextlib.nullcontext(), minidl.kernels.disabled()):
        with context:
            tensors = [minidl.tensor(a, requires_grad=True) for a in arrays]
            out = conv(minidl, *tensors, **options)
            (out * out).sum().backward()
            results.append([out.data] + [t.grad.data for t in tensors])
    for compiled, readable in zip(*results):
        np.testing.assert_allclose(compiled, readable, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize("options", [dict(padding=2, dilation=2), {}], ids=str)
def test_float32_in_float32_out(options, device):
    (outs, grads), (t_outs, t_grads) = run_both(
        [(2, 4, 7, 7), (3, 4, 3, 3), (3,)], lambda lib, *t: conv(lib, *[a.float() for a in t], **options), device=device)
    assert outs[0].dtype == np.float32
    np.testing.assert_allclose(outs[0], t_outs[0], rtol=1e-5, atol=1e-5)
    for g, t in zip(grads, t_grads):
        np.testing.assert_allclose(g, t, rtol=1e-5, atol=1e-4)


def test_float32_gradients_are_float32():
    tensors = [minidl.tensor(np.ones(s, np.float32), requires_grad=True) for s in [(1, 2, 5, 5), (3, 2, 3, 3), (3,)]]
    out = conv(minidl, *tensors, padding=1)
    out.sum().backward()
    assert out.dtype == minidl.float32
    assert [t.grad.dtype for t in tensors] == [minidl.float32] * 3


# ---------------------------------------------------------------- bad input: the message names what was wrong
def _raises(message, x_shape, w_shape, b_shape=None, error=ValueError, dtype=np.float64, **options):
    x, w = minidl.tensor(np.zeros(x_shape, dtype)), minidl.tensor(np.zeros(w_shape))
    b = None if b_shape is None else minidl.tensor(np.zeros(b_shape))
    with pytest.raises(error, match=message):
        minidl.nn.functional.conv2d(x, w, b, **options)


@pytest.mark.parametrize(
    "message, x_shape, w_shape, b_shape, options",
    [
        (r"weight of shape \(3, 3, 3, 3\) with groups=1 expects 3 × 1 = 3 input channels, but input of shape "
         r"\(2, 4, 5, 5\) has in_channels=4", (2, 4, 5, 5), (3, 3, 3, 3), None, {}),
        (r"weight of shape \(4, 1, 3, 3\) with groups=2 expects 1 × 2 = 2 input channels.*in_channels=4",
         (2, 4, 5, 5), (4, 1, 3, 3), None, dict(groups=2)),
        (r"in_channels=3 \(input shape \(1, 3, 5, 5\)\) is not divisible by groups=2", (1, 3, 5, 5), (4, 1, 3, 3),
         None, dict(groups=2)),
        (r"out_channels=3 \(weight shape \(3, 2, 3, 3\)\) is not divisible by groups=2", (1, 4, 5, 5), (3, 2, 3, 3),
         None, dict(groups=2)),
        (r"groups must be a positive int, got 0", (1, 4, 5, 5), (3, 4, 3, 3), None, dict(groups=0)),
        (r"dilated extent 5 \(kernel 3, dilation 2\) is larger than the padded input 4", (1, 1, 4, 4), (1, 1, 3, 3),
         None, dict(dilation=2)),
        (r"dilated extent 3 .* padded input 2 \(size 2, padding 0\)", (1, 1, 6, 2), (1, 1, 3, 3), None, {}),
        (r"stride must be at least 1, got \(0, 0\)", (1, 1, 4, 4), (1, 1, 3, 3), None, dict(stride=0)),
        (r"dilation must be at least 1, got \(1, 0\)", (1, 1, 4, 4), (1, 1, 3, 3), None, dict(dilation=(1, 0))),
        (r"padding must be at least 0, got \(-1, -1\)", (1, 1, 4, 4), (1, 1, 3, 3), None, dict(padding=-1)),
        (r"stride must be an int or a pair of ints, got \(1, 2, 3\)", (1, 1, 4, 4), (1, 1, 3, 3), None,
         dict(stride=(1, 2, 3))),
        (r"padding='same' needs stride 1 .* got stride=\(2, 2\)", (1, 1, 4, 4), (1, 1, 3, 3), None,
         dict(stride=2, padding="same")),
        (r"padding must be an int, a pair of ints, 'same' or 'valid', got 'full'", (1, 1, 4, 4), (1, 1, 3, 3),
         None, dict(padding="full")),
        (r"input must be 4-D \(N, C_in, H, W\) or 3-D \(C_in, H, W\), got shape \(4, 4\)", (4, 4), (1, 1, 3, 3),
         None, {}),
        (r"input must be 4-D .* got shape \(1, 1, 1, 4, 4\)", (1, 1, 1, 4, 4), (1, 1, 3, 3), None, {}),
        (r"weight must be 4-D \(C_out, C_in/groups, kh, kw\), got shape \(1, 3, 3\)", (1, 1, 4, 4), (1, 3, 3),
         None, {}),
        (r"bias must have shape \(2,\), one per output channel, got \(3,\)", (1, 1, 4, 4), (2, 1, 3, 3), (3,), {}),
        (r"bias must have shape \(2,\).* got \(1, 2\)", (1, 1, 4, 4), (2, 1, 3, 3), (1, 2), {}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input(message, x_shape, w_shape, b_shape, options):
    _raises(message, x_shape, w_shape, b_shape, **options)


def test_mismatched_dtypes():
    _raises(r"input is float32 but weight is float64", (1, 1, 4, 4), (1, 1, 3, 3), error=TypeError, dtype=np.float32)


# ---------------------------------------------------------------- Winograd F(2×2, 3×3) and the taps: the same grid, forced
FORCED_GRID = ([("winograd", *case) for case in GRID if case[0] == (3, 3) and case[1] == 1]  # stride-1 3×3
               + [("taps", *case) for case in GRID if case[1] == 1])  # stride 1, any kernel: where each applies


@pytest.mark.parametrize("algorithm, kernel, stride, dilation, padding, groups", FORCED_GRID, ids=str)
def test_forced_algorithm_grid(algorithm, kernel, stride, dilation, padding, groups, device):
    x_shape, w_shape, options = _grid_case(kernel, stride, dilation, padding, groups)
    with minidl.nn.functional.conv_algorithm(algorithm):
        check_conv(x_shape, w_shape, **options, device=device)


@pytest.mark.parametrize(
    "x_shape, w_shape, options",
    [
        ((1, 2, 1, 1), (3, 2, 3, 3), dict(padding=1)),  # one tile, three quarters outside the output
        ((1, 2, 1, 1), (3, 2, 3, 3), dict(padding=6, dilation=6)),
        ((1, 3, 7, 5), (2, 3, 3, 3), dict(padding=(4, 0), dilation=(1, 2))),  # odd phases: half-outside tiles
        ((1, 8, 9, 9), (4, 8, 3, 3), dict(padding=12, dilation=12)),  # ASPP rate 12 on a small map
        ((2, 4, 6, 6), (6, 2, 3, 3), dict(groups=2, padding=(0, 1))),
        ((1, 2, 7, 6), (3, 2, 3, 3), dict(padding="same", dilation=2)),
        ((3, 6, 6), (4, 3, 3, 3), dict(padding=1)),  # unbatched
    ],
    ids=str,
)
@pytest.mark.parametrize("compiled", [True, False], ids=["kernels", "numpy"])
def test_winograd_awkward(x_shape, w_shape, options, compiled, device):
    with minidl.nn.functional.conv_algorithm("winograd"), (
        contextlib.nullcontext() if compiled else minidl.kernels.disabled()
    ):
        check_conv(x_shape, w_shape, **options, device=device)


@pytest.mark.parametrize(
    "x_shape, w_shape, bias, options",
    [
        ((2, 2, 5, 4), (3, 2, 3, 3), True, dict(padding=1)),
        ((1, 2, 7, 6), (2, 2, 3, 3), False, dict(dilation=(2, 3), padding=(3, 1))),
        ((1, 4, 5, 5), (2, 2, 3, 3), True, dict(groups=2, padding=3, dilation=2)),
    ],
    ids=str,
)
@pytest.mark.parametrize("compiled", [True, False], ids=["kernels", "numpy"])
def test_winograd_gradcheck(x_shape, w_shape, bias, options, compiled, device):
    gradcheck_with("winograd", x_shape, w_shape, bias, compiled, device, **options)


def _relative_errors_float32(algorithm, x, w, upstream, **options):
    """Max |float32 - float64| / max |float64| of the output and both gradients, the float64 run by im2col."""
    results = {}
    for name, dtype in ((algorithm, np.float32), ("im2col", np.float64)):
        tensors = [minidl.tensor(a.astype(dtype), requires_grad=True) for a in (x, w)]
        with minidl.nn.functional.conv_algorithm(name):
            out = conv(minidl, *tensors, **options)
        out.backward(minidl.tensor(upstream.astype(dtype)))
        results[dtype] = [out.data, tensors[0].grad.data, tensors[1].grad.data]
    return [np.abs(a - b).max() / np.abs(b).max() for a, b in zip(results[np.float32], results[np.float64])]


@pytest.mark.parametrize("dilation", [1, 2, 12])
def test_winograd_and_taps_float32_error_is_bounded(dilation):
    # The transforms add and halve (B, G, A hold 0, ±1 and ±½), so F(2×2, 3×3) loses little to rounding:
    # measured 4-5e-7 of the largest value here (im2col: 2-7e-7), 8e-7 at 256 channels. The bound leaves headroom.
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 128, 13, 13)), rng.standard_normal((128, 128, 3, 3)) / np.sqrt(9 * 128)
    upstream = rng.standard_normal((2, 128, 13, 13))
    for algorithm in ("winograd", "taps", "im2col"):
        errors = _relative_errors_float32(algorithm, x, w, upstream, padding=dilation, dilation=dilation)
        assert max(errors) < 3e-6, f"{algorithm}: relative float32 errors (output, grad input, grad weight) {errors}"


# ---------------------------------------------------------------- one product per tap: awkward cases
@pytest.mark.parametrize(
    "x_shape, w_shape, bias, options",
    [
        ((1, 8, 9, 9), (4, 8, 3, 3), True, dict(padding=12, dilation=12)),  # only the centre tap reads the image
        ((2, 3, 7, 5), (2, 3, 3, 3), False, dict(padding=(4, 0), dilation=(1, 2))),
        ((1, 2, 3, 4), (3, 2, 3, 3), True, dict(padding=(5, 1), dilation=(4, 1))),  # whole rows of taps outside
        ((2, 4, 6, 6), (6, 2, 3, 3), True, dict(groups=2, padding=(0, 1))),
        ((1, 2, 7, 6), (3, 2, 5, 2), False, dict(padding="same", dilation=2)),
        ((1, 3, 5, 5), (2, 3, 1, 1), True, dict(padding=2)),  # 1×1 with padding: the border is bias only
        ((3, 6, 6), (4, 3, 3, 3), False, dict(padding=1)),  # unbatched
    ],
    ids=str,
)
@pytest.mark.parametrize("compiled", [True, False], ids=["kernels", "numpy"])
def test_taps_awkward_with_gradcheck(x_shape, w_shape, bias, options, compiled, device):
    gradcheck_with("taps", x_shape, w_shape, bias, compiled, device, **options)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, cols", [(slice(0, 7), slice(0, 9)), (slice(2, 5), slice(4, 9)), (slice(6, 7), slice(0, 1))],
                         ids=str)
def test_taps_copies_match_the_readable_slicing(rows, cols, dtype):
    array_c = np.random.default_rng(3).standard_normal((5, 3, 7, 9)).astype(dtype)
    for rectangle in (cpu_taps.rectangle, _on_every_thread(cpu_taps.rectangle)):
        np.testing.assert_array_equal(rectangle(array_c, rows, cols), taps._rectangle_readable(array_c, rows, cols))
    values = np.random.default_rng(4).standard_normal(array_c[:, :, rows, cols].shape).astype(dtype)
    for add_rectangle in (cpu_taps.add_rectangle, _on_every_thread(cpu_taps.add_rectangle)):
        ours, theirs = array_c.copy(), array_c.copy()
        add_rectangle(ours, rows, cols, values)
        taps._add_rectangle_readable(theirs, rows, cols, values)
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("size, rate, rectangles, share", [
    (33, 12, 9, (33 * 33 + 4 * 21 * 33 + 4 * 21 * 21) / (9 * 33 * 33)),  # ASPP's rate 12 at output stride 16
    (33, 1, 9, (33 * 33 + 4 * 32 * 33 + 4 * 32 * 32) / (9 * 33 * 33)),
    (9, 12, 1, 1 / 9),  # every tap but the centre falls wholly in the padding
])
def test_taps_plan_counts_only_what_reads_the_image(size, rate, rectangles, share):
    plan = taps.Plan((2, 4, size, size), (4, 4, 3, 3), (rate, rate), (rate, rate))
    assert len(plan.rectangles) == rectangles
    assert plan.share_of_im2col() == pytest.approx(share)


# ---------------------------------------------------------------- Winograd's pieces: tiles, transforms, kernels
@pytest.mark.parametrize("out, dilation", [(1, 1), (7, 1), (8, 1), (33, 2), (33, 12), (7, 18), (5, 3)])
def test_tile_starts_cover_every_output_once(out, dilation):
    starts = winograd.tile_starts(out, dilation)
    covered = np.concatenate([starts, starts + dilation])  # a tile is the outputs y and y + dilation
    inside = np.sort(covered[covered < out])
    np.testing.assert_array_equal(inside, np.arange(out))
    assert len(covered) - out <= min(dilation, out)  # at most one half-outside tile per phase


TRANSFORM_GEOMETRIES = [  # (input shape, padding, dilation)
    ((2, 3, 7, 9), (1, 1), (1, 1)),
    ((1, 2, 11, 10), (2, 3), (2, 3)),
    ((2, 3, 9, 9), (12, 12), (12, 12)),
    ((1, 2, 3, 3), (0, 0), (1, 1)),
    ((1, 1, 1, 1), (4, 1), (4, 1)),
]


@pytest.mark.parametrize("shape, padding, dilation", TRANSFORM_GEOMETRIES, ids=str)
def test_winograd_kernels_match_numpy_in_float32(shape, padding, dilation):
    rng = np.random.default_rng(8)
    tiling = winograd.Tiling(shape, padding, dilation)
    c_out = 4
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((c_out, shape[1], 3, 3)).astype(np.float32)
    m = rng.standard_normal((16, c_out, tiling.count)).astype(np.float32)
    grad_out = rng.standard_normal((shape[0], c_out, *tiling.out_hw)).astype(np.float32)
    pairs = [
        ("transform_input", x, 0), ("transform_output", m, 0), ("transform_output_adjoint", grad_out, 0),
        ("transform_input_adjoint", rng.standard_normal((16, shape[1], tiling.count)).astype(np.float32), 2e-6),
    ]
    for name, argument, tolerance in pairs:
        compiled, readable = getattr(cpu_winograd, name)(argument, tiling), getattr(winograd, name)(argument, tiling)
        assert compiled.dtype == np.float32, name
        np.testing.assert_allclose(compiled, readable, rtol=0, atol=tolerance, err_msg=name)
    u = rng.standard_normal((16, c_out, shape[1])).astype(np.float32)
    np.testing.assert_array_equal(cpu_winograd.transform_weight(w), winograd.transform_weight(w))
    np.testing.assert_allclose(cpu_winograd.transform_weight_adjoint(u), winograd.transform_weight_adjoint(u),
                               rtol=0, atol=1e-6)


def test_winograd_matrices_compute_two_outputs_of_three_taps():
    # Lavin & Gray's identity on one axis: Aᵀ[(G g) ⊙ (Bᵀ d)] = the 2 outputs of correlating d (4) with g (3)
    rng = np.random.default_rng(9)
    d, g = rng.standard_normal(4), rng.standard_normal(3)
    expected = [d[0:3] @ g, d[1:4] @ g]
    np.testing.assert_allclose(winograd.A_T @ ((winograd.G @ g) * (winograd.B_T @ d)), expected, rtol=1e-12)


# ---------------------------------------------------------------- which algorithm runs
def _algorithm_of(x_shape, w_shape, **options):
    x = minidl.tensor(np.zeros(x_shape, np.float32), requires_grad=True)
    w = minidl.tensor(np.zeros(w_shape, np.float32))
    return conv(minidl, x, w, **options).grad_fn.function.__name__


def test_auto_takes_winograd_or_the_taps_where_they_pay():
    assert _algorithm_of((2, 64, 17, 17), (64, 64, 3, 3), padding=2, dilation=2) == "WinogradConvolution"
    assert _algorithm_of((2, 4, 17, 17), (64, 4, 3, 3), padding=1) == "Convolution"  # few input channels
    assert _algorithm_of((2, 64, 17, 17), (64, 64, 3, 3), padding=6, dilation=6) == "Convolution"  # phases of ~3×3
    assert _algorithm_of((2, 64, 17, 17), (64, 64, 3, 3), stride=2, padding=1) == "Convolution"  # stride 2
    # ASPP's rates at output stride 16 on 33×33: most taps read padding, and the products are large
    assert _algorithm_of((4, 256, 33, 33), (256, 256, 3, 3), padding=12, dilation=12) == "TapConvolution"
    assert _algorithm_of((4, 256, 33, 33), (256, 256, 3, 3), padding=2, dilation=2) == "WinogradConvolution"
    # the same rates on the main job's 7×7 maps: products too small for nine of them to pay
    assert _algorithm_of((16, 256, 7, 7), (64, 256, 3, 3), padding=12, dilation=12) == "Convolution"


def test_conv_algorithm_overrides_and_nests(monkeypatch):
    shapes = (2, 64, 9, 9), (64, 64, 3, 3)
    with minidl.nn.functional.conv_algorithm("im2col"):
        assert _algorithm_of(*shapes, padding=1) == "Convolution"
        with minidl.nn.functional.conv_algorithm("winograd"):
            assert _algorithm_of((1, 2, 5, 5), (3, 2, 3, 3), padding=1) == "WinogradConvolution"
            assert _algorithm_of((1, 2, 5, 5), (3, 2, 3, 3), stride=2) == "Convolution"  # where it does not apply
        assert _algorithm_of(*shapes, padding=1) == "Convolution"
    monkeypatch.setenv("MINIDL_CONV_ALGORITHM", "im2col")
    assert _algorithm_of(*shapes, padding=1) == "Convolution"
    monkeypatch.setenv("MINIDL_CONV_ALGORITHM", "fast")
    with pytest.raises(ValueError, match=r"MINIDL_CONV_ALGORITHM must be one of auto, im2col, winograd, taps, got 'fast'"):
        _algorithm_of(*shapes, padding=1)
    with pytest.raises(ValueError, match=r"conv_algorithm: name must be one of auto, im2col, winograd, taps, got 'gemm'"):
        with minidl.nn.functional.conv_algorithm("gemm"):
            pass

