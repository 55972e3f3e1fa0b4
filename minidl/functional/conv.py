"""conv2d: a convolution is one matrix product once every receptive field is unrolled into a column.

``im2col`` copies, for each output position, the input pixels the kernel sees
there (dilation spreads the taps apart, stride spaces the positions, padding
adds zeros around the border) into one column of a matrix of shape
(C_in·kh·kw, N·H_out·W_out). The convolution is then
``weight.reshape(C_out, C_in·kh·kw) @ cols``, a large product that BLAS (or
cuBLAS) does fast. With groups, channels and filters split into ``groups``
independent blocks: one product per group.

Backward is two more products and the adjoint of im2col:
grad_weight = grad_out @ colsᵀ, grad_cols = weightᵀ @ grad_out, and
``col2im`` adds each entry of grad_cols back onto the pixel it was copied
from (a pixel seen by several windows collects all their gradients). With
few rows of columns (a network's first convolution: 27 for 3 channels and a
3×3 kernel) each image gets its own product instead (``PER_IMAGE_BELOW``),
which writes the output in NCHW order without a copy, and grad_weight is the
sum of the images' products (``image_products``).

A 1×1 convolution with stride 1 and no padding needs no im2col: it is a
matrix product over channels at every pixel. Depthwise convolutions
(groups == in_channels) go to ``minidl.functional.depthwise``.

A stride-1 3×3 convolution (any dilation) can also run Winograd's
F(2×2, 3×3) (``minidl.functional.winograd``): 16 matrix products of
(C_out × C_in) @ (C_in × tiles), 16/36 of im2col's multiply-adds. Any
stride-1 convolution can run one product per kernel tap over only the
outputs where the tap reads the image (``minidl.functional.taps``), which
skips the zero padding that a large atrous rate multiplies in im2col.
``conv_algorithm`` says which runs: by default the one that is fastest for
the shape (``_fastest``), on the CPU.
"""
import contextlib
import functools
import os
from types import SimpleNamespace

from minidl import kernels
from minidl.backend import get_array_module
from minidl.functional import taps, winograd
from minidl.functional.convutils import output_size, pair, tap_positions
from minidl.functional.shape import pad, squeeze, unsqueeze
from minidl.tensor import Function

__all__ = ["conv2d", "conv_algorithm"]


# ---------------------------------------------------------------- im2col / col2im, the readable NumPy version
def conv_output_hw(input_hw, kernel_size, stride, padding, dilation, op="conv2d"):
    """(H_out, W_out) of a convolution; a ValueError naming the sizes when the kernel does not fit."""
    return tuple(output_size(op, *axis) for axis in zip(input_hw, kernel_size, stride, padding, dilation))


def loop_arguments(input_shape, kernel_size, stride, padding, dilation):
    """The scalars the compiled im2col/col2im loops take: kh, kw, sh, sw, ph, pw, dh, dw, H_out, W_out."""
    h_out, w_out = conv_output_hw(input_shape[2:], kernel_size, stride, padding, dilation, "im2col")
    return (*kernel_size, *stride, *padding, *dilation, h_out, w_out)


def im2col(x, kernel_size, stride, padding, dilation):
    """Unroll the receptive fields of x (N, C, H, W) into columns: (C·kh·kw, N·H_out·W_out).

    Row (c, i, j) holds, at column (n, y, x), the padded-input pixel that tap
    (i, j) of channel c sees at output position (y, x) of image n:
    ``padded[n, c, y·sh + i·dh, x·sw + j·dw]``. Rows are channel-major, so the
    rows of one group of channels are a contiguous block. The loop runs over
    the kh·kw taps only: each tap is one strided slice of the padded input.
    """
    (kh, kw), (ph, pw), (dh, dw), (sh, sw) = kernel_size, padding, dilation, stride
    n, c, h, w = x.shape
    h_out, w_out = conv_output_hw((h, w), kernel_size, stride, padding, dilation, "im2col")
    xp = get_array_module(x)
    padded = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = xp.empty((c, kh, kw, n, h_out, w_out), x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, tap_positions(i, dh, sh, h_out), tap_positions(j, dw, sw, w_out)]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * h_out * w_out)


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """The adjoint of im2col: add every entry of ``cols`` onto the input pixel it was copied from.

    Windows overlap (and dilated taps interleave), so one pixel may have been
    copied into several columns; its gradient is the sum of theirs. Within one
    tap the strided slice never names a pixel twice, so ``+=`` is exact.
    Entries that came from the zero padding are dropped at the end.
    """
    (kh, kw), (ph, pw), (dh, dw), (sh, sw) = kernel_size, padding, dilation, stride
    n, c, h, w = input_shape
    h_out, w_out = conv_output_hw((h, w), kernel_size, stride, padding, dilation, "col2im")
    xp = get_array_module(cols)
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), cols.dtype)
    taps = cols.reshape(c, kh, kw, n, h_out, w_out)
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(None), tap_positions(i, dh, sh, h_out), tap_positions(j, dw, sw, w_out))
            padded[window] += taps[:, i, j].transpose(1, 0, 2, 3)
    return padded[:, :, ph : ph + h, pw : pw + w]


def _image_columns(cols, n):
    """cols (groups, rows, N·H_out·W_out) seen as (N, groups, rows, H_out·W_out), each image's columns: a view."""
    groups, rows, width = cols.shape
    return cols.reshape(groups, rows, n, width // n).transpose(2, 0, 1, 3)


def image_products(g, cols):
    """Σ over images n of g_n @ cols_nᵀ, per group: grad weight when each image's output had its own product.

    g (N, groups, C_out/groups, H_out·W_out), cols (groups, rows, N·H_out·W_out) -> (groups, C_out/groups, rows).
    """
    return (g @ _image_columns(cols, g.shape[0]).transpose(0, 1, 3, 2)).sum(axis=0)


# the readable versions under the kernel modules' names, so the op calls either alike
_READABLE = SimpleNamespace(im2col=im2col, col2im=col2im, image_products=image_products)


def _unfold(x, *geometry):
    return kernels.for_array(x, "conv", _READABLE).im2col(x, *geometry)


def _fold(cols, input_shape, *geometry):
    return kernels.for_array(cols, "conv", _READABLE).col2im(cols, input_shape, *geometry)


# ---------------------------------------------------------------- the Functions
def _add_bias(out, b):
    """out (N, C_out, H, W) += b per output channel, in place."""
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def _bias_grad(ctx, g):
    return g.sum(axis=(0, 2, 3)) if ctx.needs_input_grad[2] else None


def _sized_products(method):
    """Give a Function's matrix products as many BLAS threads as their size is worth (see kernels.cpu).

    Forward (called with x and the weight) works out the number of
    multiply-adds; backward, whose products are as large, reuses it.
    """

    @functools.wraps(method)
    def run(ctx, first, *rest, **params):
        if not hasattr(ctx, "multiply_adds"):
            w = rest[0]
            ctx.multiply_adds = first.size * w.shape[0] * w.shape[2] * w.shape[3] // (first.shape[1] // w.shape[1])
        threads = contextlib.nullcontext()
        if get_array_module(first).__name__ == "numpy":
            from minidl.kernels.cpu import blas_threads_for

            threads = blas_threads_for(ctx.multiply_adds)
        with threads:
            return method(ctx, first, *rest, **params)

    return staticmethod(run)


# With fewer column rows per group than this (C_in/groups·kh·kw: a network's first convolution), each image's
# output comes from its own product, written in NCHW order in place: the copy between NCHW and one product's
# (C_out, N·H_out·W_out) layout, there and back, otherwise costs as much as the thin product itself.
PER_IMAGE_BELOW = 50


class Convolution(Function):
    """conv2d through im2col: out = weight @ cols per group, with cols (C_in·kh·kw, N·H_out·W_out)."""

    @_sized_products
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        c_out, _, kh, kw = w.shape
        n, _, height, width = x.shape
        geometry = ((kh, kw), stride, padding, dilation)
        h_out, w_out = conv_output_hw((height, width), *geometry)
        xp = get_array_module(x)
        cols = _unfold(x, *geometry)
        cols = cols.reshape(groups, -1, cols.shape[1])  # rows are channel-major: one block per group
        w_groups = w.reshape(groups, c_out // groups, -1)
        ctx.per_image = xp.__name__ == "numpy" and w_groups.shape[2] < PER_IMAGE_BELOW
        if ctx.per_image:  # (N, groups, C_out/groups, H_out·W_out): NCHW
            out = (w_groups @ _image_columns(cols, n)).reshape(n, c_out, h_out, w_out)
        else:  # (groups, C_out/groups, N·H_out·W_out), then copied to NCHW
            out = (w_groups @ cols).reshape(c_out, n, h_out, w_out).transpose(1, 0, 2, 3)
        # grad_input needs the weight, grad_weight the columns: keep only what will be used. On a GPU, where
        # memory is the scarcer, backward makes the columns again from the input (kh·kw times smaller, and
        # kept alive by the graph anyway): one more launch for a fraction of the memory.
        needs_x, needs_w = ctx.needs_input_grad[:2]
        ctx.refold = xp.__name__ != "numpy"
        ctx.save_for_backward((x if ctx.refold else cols) if needs_w else None, w_groups if needs_x else None)
        ctx.x_shape, ctx.w_shape, ctx.geometry = x.shape, w.shape, geometry
        del cols  # where not saved, gone before the output's copy is made
        return _add_bias(xp.ascontiguousarray(out), b)

    @_sized_products
    def backward(ctx, g):
        cols, w_groups = ctx.saved
        c_out, groups, n = ctx.w_shape[0], ctx.x_shape[1] // ctx.w_shape[1], ctx.x_shape[0]
        xp = get_array_module(g)
        if ctx.refold and cols is not None:  # the input was kept: unfold it again
            cols = _unfold(cols, *ctx.geometry)
            cols = cols.reshape(groups, -1, cols.shape[1])
        if ctx.per_image:  # (N, groups, C_out/groups, H_out·W_out), the layout the forward products wrote
            g_groups = xp.ascontiguousarray(g).reshape(n, groups, c_out // groups, -1)
        else:  # (N, C_out, H_out, W_out) -> (groups, C_out/groups, N·H_out·W_out), the forward product's layout
            g_groups = g.transpose(1, 0, 2, 3).reshape(groups, c_out // groups, -1)
        gx = gw = None
        if ctx.needs_input_grad[1]:  # first, so that the columns are gone before their gradient is made
            if ctx.per_image:
                gw = kernels.for_array(g_groups, "conv", _READABLE).image_products(g_groups, cols)
            else:
                gw = g_groups @ cols.transpose(0, 2, 1)
            gw = gw.reshape(ctx.w_shape)
        del cols
        if ctx.needs_input_grad[0]:
            w_t = w_groups.transpose(0, 2, 1)
            if ctx.per_image:  # each image's product writes its own columns of grad_cols
                grad_cols = xp.empty((groups, w_t.shape[1], n * g_groups.shape[3]), g.dtype)
                xp.matmul(w_t, g_groups, out=_image_columns(grad_cols, n))
            else:
                grad_cols = w_t @ g_groups
            gx = _fold(grad_cols.reshape(-1, grad_cols.shape[2]), ctx.x_shape, *ctx.geometry)
        return gx, gw, _bias_grad(ctx, g)


class WinogradConvolution(Function):
    """conv2d of a stride-1 3×3 kernel by F(2×2, 3×3): out tiles from M[ξ] = U[ξ] @ V[ξ] for the 16 positions ξ.

    U (16, groups, C_out/groups, C_in/groups) are the transformed filters, V
    (16, groups, C_in/groups, tiles) the transformed input tiles; backward
    runs the same steps' adjoints (see ``minidl.functional.winograd``).
    """

    @_sized_products
    def forward(ctx, x, w, b, padding, dilation, groups):
        transforms, tiling = _winograd_transforms(x), winograd.Tiling(x.shape, padding, dilation)
        u = transforms.transform_weight(w).reshape(16, groups, -1, w.shape[1])
        v = transforms.transform_input(x, tiling).reshape(16, groups, -1, tiling.count)
        out = transforms.transform_output((u @ v).reshape(16, w.shape[0], -1), tiling)
        needs_x, needs_w = ctx.needs_input_grad[:2]
        ctx.save_for_backward(v if needs_w else None, u if needs_x else None)
        ctx.tiling, ctx.w_shape = tiling, w.shape
        return _add_bias(out, b)

    @_sized_products
    def backward(ctx, g):
        v, u = ctx.saved
        tiling, (c_out, c_in_group) = ctx.tiling, ctx.w_shape[:2]
        groups = tiling.x_shape[1] // c_in_group
        transforms = _winograd_transforms(g)
        dm = transforms.transform_output_adjoint(g, tiling).reshape(16, groups, -1, tiling.count)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            dv = u.transpose(0, 1, 3, 2) @ dm
            gx = transforms.transform_input_adjoint(dv.reshape(16, tiling.x_shape[1], -1), tiling)
        if ctx.needs_input_grad[1]:
            gw = transforms.transform_weight_adjoint((dm @ v.transpose(0, 1, 3, 2)).reshape(16, c_out, c_in_group))
        return gx, gw, _bias_grad(ctx, g)


class TapConvolution(Function):
    """conv2d at stride 1 as one product per kernel tap over the outputs where it reads the image (see
    ``minidl.functional.taps``), in channels-first layout (C, N, H, W)."""

    @_sized_products
    def forward(ctx, x, w, b, padding, dilation, groups):
        xp = get_array_module(x)
        plan = taps.Plan(x.shape, w.shape, padding, dilation)
        x_c = xp.ascontiguousarray(x.transpose(1, 0, 2, 3))
        w_taps = xp.ascontiguousarray(w.transpose(2, 3, 0, 1))
        out = taps.forward(x_c, w_taps, plan).transpose(1, 0, 2, 3)
        needs_x, needs_w = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x_c if needs_w else None, w_taps if needs_x else None)
        ctx.plan = plan
        return _add_bias(xp.ascontiguousarray(out), b)

    @_sized_products
    def backward(ctx, g):
        x_c, w_taps = ctx.saved
        xp = get_array_module(g)
        gx_c, gw_taps = taps.backward(xp.ascontiguousarray(g.transpose(1, 0, 2, 3)), x_c, w_taps, ctx.plan)
        gx = None if gx_c is None else xp.ascontiguousarray(gx_c.transpose(1, 0, 2, 3))
        gw = None if gw_taps is None else xp.ascontiguousarray(gw_taps.transpose(2, 3, 0, 1))
        return gx, gw, _bias_grad(ctx, g)


def _winograd_transforms(array):
    """The tile transforms for array's device: the Numba loops on the CPU, else the readable array code."""
    return kernels.for_array(array, "winograd", winograd)


class PointwiseConvolution(Function):
    """A 1×1 convolution (stride 1, no padding): weight (C_out, C_in) @ x at every pixel, no im2col."""

    @_sized_products
    def forward(ctx, x, w, b, groups):
        n, c_in, height, width = x.shape
        c_out = w.shape[0]
        x_groups = x.reshape(n, groups, c_in // groups, height * width)
        w_groups = w.reshape(groups, c_out // groups, c_in // groups)
        needs_x, needs_w = ctx.needs_input_grad[:2]
        ctx.save_for_backward(x_groups if needs_w else None, w_groups if needs_x else None)
        ctx.x_shape, ctx.w_shape = x.shape, w.shape
        out = (w_groups @ x_groups).reshape(n, c_out, height, width)  # one product per image and group
        return _add_bias(out, b)

    @_sized_products
    def backward(ctx, g):
        x_groups, w_groups = ctx.saved
        (n, c_in, height, width), c_out = ctx.x_shape, ctx.w_shape[0]
        groups = c_in // ctx.w_shape[1]
        g_groups = g.reshape(n, groups, c_out // groups, height * width)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = (w_groups.transpose(0, 2, 1) @ g_groups).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            gw = (g_groups @ x_groups.transpose(0, 1, 3, 2)).sum(axis=0).reshape(ctx.w_shape)
        return gx, gw, _bias_grad(ctx, g)


# ---------------------------------------------------------------- which algorithm
ALGORITHMS = ("auto", "im2col", "winograd", "taps")


class _Choice:
    forced = None  # set by conv_algorithm(); None: the environment variable, else "auto"


def _chosen_algorithm():
    name = _Choice.forced or os.environ.get("MINIDL_CONV_ALGORITHM", "auto")
    if name not in ALGORITHMS:
        raise ValueError(f"MINIDL_CONV_ALGORITHM must be one of {', '.join(ALGORITHMS)}, got {name!r}")
    return name


@contextlib.contextmanager
def conv_algorithm(name):
    """Run the convolutions in the block with ``name``: 'auto' (the default), 'im2col', 'winograd' or 'taps'.

    'winograd' applies to stride-1 3×3 kernels (any dilation, padding, groups), 'taps' (one product per
    kernel tap, ``minidl.functional.taps``) to any stride-1 kernel; other convolutions keep im2col. 'auto'
    takes whichever is fastest on the CPU (``_fastest``) and im2col on a GPU. Without a block, the
    environment variable ``MINIDL_CONV_ALGORITHM`` sets the default.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"conv_algorithm: name must be one of {', '.join(ALGORITHMS)}, got {name!r}")
    previous, _Choice.forced = _Choice.forced, name
    try:
        yield
    finally:
        _Choice.forced = previous


# Each algorithm pays on the CPU below this share of im2col's multiply-adds (benchmarks/RESULTS.md, issue 16).
# Winograd's: every shape at 0.72 or more measured slower than im2col, at 0.58 or less faster or level. The
# taps' (session 8): their time came to about share / 0.65 of im2col's (0.57-0.58: 0.80-0.94, 0.40: 0.67,
# 0.28: 0.73), where a tap's product is large enough: below TAPS_MIN_PRODUCT multiply-adds (a 17×17 pair of
# 256-channel maps, or 7×7 maps of 64 channels at a batch of 16) nine small products and their copies took
# 1.2-1.9× im2col's time at any share.
WINOGRAD_PAYS_BELOW = 0.7
TAPS_PAYS_BELOW = 0.65
TAPS_MIN_PRODUCT = 1 << 26


def _winograd_share(x, w, padding, dilation, groups):
    """Winograd's multiply-adds over im2col's, half-outside tiles included; None where it does not pay at all.

    With fewer than 8 channels a group on either side the tile transforms cost more than the products save;
    a map of 1×1, or 33×33 at rate 24, wastes most of its tiles (phases of about 3×3 pixels, as at rate 6 on
    17×17 or rate 3 on 9×9, come to 0.74-0.79 and measured 1.27-1.31× im2col's time).
    """
    if tuple(w.shape[2:]) != (3, 3) or min(w.shape[0] // groups, w.shape[1]) < 8:
        return None
    tiling = winograd.Tiling(x.shape, padding, dilation)
    return 16 * tiling.count / (9 * x.shape[0] * tiling.out_hw[0] * tiling.out_hw[1])


def _fastest(x, w, padding, dilation, groups):
    """'auto' on the CPU at stride 1: the algorithm with the fewest multiply-adds, each counted against the
    share of im2col's below which it pays."""
    costs = {"im2col": 1.0}
    plan = taps.Plan(x.shape, w.shape, padding, dilation)
    if w.shape[0] * w.shape[1] * x.shape[0] * plan.out_hw[0] * plan.out_hw[1] >= TAPS_MIN_PRODUCT:
        costs["taps"] = plan.share_of_im2col() / TAPS_PAYS_BELOW
    winograd_share = _winograd_share(x, w, padding, dilation, groups)
    if winograd_share is not None:
        costs["winograd"] = winograd_share / WINOGRAD_PAYS_BELOW
    return min(costs, key=costs.get)


def _algorithm(x, w, stride, padding, dilation, groups):
    """Which Function computes this convolution: 'im2col', 'winograd' or 'taps'."""
    if stride != (1, 1):
        return "im2col"
    name = _chosen_algorithm()
    if name == "auto":
        return _fastest(x, w, padding, dilation, groups) if x.device.type == "cpu" else "im2col"
    return "im2col" if name == "winograd" and tuple(w.shape[2:]) != (3, 3) else name


# ---------------------------------------------------------------- argument checks and the public function
def _check_shapes(input, weight, bias, groups):
    if input.ndim != 4:
        raise ValueError(
            f"conv2d: input must be 4-D (N, C_in, H, W) or 3-D (C_in, H, W), got shape {tuple(input.shape)}"
        )
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-D (C_out, C_in/groups, kh, kw), got shape {tuple(weight.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    c_in, c_out = input.shape[1], weight.shape[0]
    if c_in % groups:
        raise ValueError(f"conv2d: in_channels={c_in} (input shape {tuple(input.shape)}) is not divisible by groups={groups}")
    if c_out % groups:
        raise ValueError(
            f"conv2d: out_channels={c_out} (weight shape {tuple(weight.shape)}) is not divisible by groups={groups}"
        )
    if weight.shape[1] * groups != c_in:
        raise ValueError(
            f"conv2d: weight of shape {tuple(weight.shape)} with groups={groups} expects "
            f"{weight.shape[1]} × {groups} = {weight.shape[1] * groups} input channels, but input of shape "
            f"{tuple(input.shape)} has in_channels={c_in} (in_channels / groups = {c_in / groups:g})"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"conv2d: bias must have shape ({c_out},), one per output channel, got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"conv2d: input is {input.dtype} but {name} is {t.dtype}; convert one to match")


def _same_padding(input, kernel_size, dilation):
    """padding='same': total d·(k-1) per axis, the odd pixel after (PyTorch pads it explicitly first)."""
    totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
    extra_h, extra_w = (t % 2 for t in totals)
    if extra_h or extra_w:
        input = pad(input, (0, extra_w, 0, extra_h))
    return input, tuple(t // 2 for t in totals)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002  (PyTorch's names)
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    input (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in/groups, kh, kw);
    bias (C_out,) or None. ``padding`` is an int, a pair, 'valid' (0) or 'same'
    (stride 1 only; output size = input size, any extra pixel padded after).
    """
    if input.ndim == 3:  # unbatched, as PyTorch allows
        return squeeze(conv2d(unsqueeze(input, 0), weight, bias, stride, padding, dilation, groups), 0)
    _check_shapes(input, weight, bias, groups)
    stride = pair("stride", stride, "conv2d", minimum=1)
    dilation = pair("dilation", dilation, "conv2d", minimum=1)
    kernel_size = tuple(weight.shape[2:])
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"conv2d: padding='same' needs stride 1 (as in PyTorch), got stride={stride}")
        input, padding = _same_padding(input, kernel_size, dilation)
    elif padding == "valid":
        padding = (0, 0)
    elif isinstance(padding, str):
        raise ValueError(f"conv2d: padding must be an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    else:
        padding = pair("padding", padding, "conv2d", minimum=0)
    conv_output_hw(input.shape[2:], kernel_size, stride, padding, dilation)  # a clear error if it does not fit
    if groups == input.shape[1] and groups > 1:  # depthwise: one filter (or k) per channel
        from minidl.functional.depthwise import depthwise_conv2d

        return depthwise_conv2d(input, weight, bias, stride, padding, dilation)
    if kernel_size == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return PointwiseConvolution.apply(input, weight, bias, groups=groups)
    algorithm = _algorithm(input, weight, stride, padding, dilation, groups)
    if algorithm == "winograd":
        return WinogradConvolution.apply(input, weight, bias, padding=padding, dilation=dilation, groups=groups)
    if algorithm == "taps":
        return TapConvolution.apply(input, weight, bias, padding=padding, dilation=dilation, groups=groups)
    return Convolution.apply(input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
