"""conv2d (stride 1) as one matrix product per kernel tap, over only the outputs where that tap reads the image.

At a large atrous rate, the taps of a 3×3 kernel fall in the zero padding over much of the map: on 33×33 at
rate 12, tap (0, 0) reads the image only for the 21×21 outputs at the bottom right, and the other 648 of its
1,089 outputs read zeros. im2col copies those zeros into its columns and multiplies them. Here tap (i, j), at
offset (dy, dx) = (i·rate - padding, j·rate - padding), multiplies only its rectangle of outputs:

    out[:, :, rows, cols] += W[:, :, i, j] @ x[:, :, rows + dy, cols + dx]

a (C_out × C_in) @ (C_in × pixels) product, with channels first ((C, N, H, W) layout) so that a tap's
rectangle over all images is one matrix. Backward runs the same loop with the products' adjoints:
gW[:, :, i, j] = g_rect @ x_rectᵀ, and gx[:, :, rows + dy, cols + dx] += W[:, :, i, j]ᵀ @ g_rect.

The multiply-adds are the rectangles' pixels over im2col's kh·kw·H_out·W_out (``Plan.share_of_im2col``):
0.57 on 33×33 at rate 12, 0.41 at rate 18, 0.58 on 17×17 at rate 6; 0.92 at rate 2, where Winograd does
better. The same array code runs on NumPy and CuPy; on the CPU, the rectangles' copies have compiled twins
(``minidl.kernels.cpu.taps``).
"""
from types import SimpleNamespace

from minidl import kernels
from minidl.backend import get_array_module
from minidl.functional.convutils import output_size


def _along_axis(size, out, tap, dilation, padding):
    """(output slice, input slice) of one tap along one axis, or None where it never reads the image."""
    offset = tap * dilation - padding
    lo, hi = max(0, -offset), min(out, size - offset)
    return (slice(lo, hi), slice(lo + offset, hi + offset)) if hi > lo else None


class Plan:
    """Where each tap of weight (C_out, C_in/groups, kh, kw) reads input (N, C_in, H, W), at stride 1.

    ``rectangles``: for each tap that reads the image somewhere, ((i, j), output rows, output cols, input rows,
    input cols) as slices.
    """

    def __init__(self, x_shape, w_shape, padding, dilation):
        n, c_in, height, width = x_shape
        c_out, c_in_group, kh, kw = w_shape
        self.groups = c_in // c_in_group
        self.out_hw = (output_size("conv2d", height, kh, 1, padding[0], dilation[0]),
                       output_size("conv2d", width, kw, 1, padding[1], dilation[1]))
        self.x_shape_c, self.w_taps_shape = (c_in, n, height, width), (kh, kw, c_out, c_in_group)
        self.rectangles = []
        for i in range(kh):
            rows = _along_axis(height, self.out_hw[0], i, dilation[0], padding[0])
            for j in range(kw):
                cols = _along_axis(width, self.out_hw[1], j, dilation[1], padding[1])
                if rows and cols:
                    self.rectangles.append(((i, j), rows[0], cols[0], rows[1], cols[1]))

    def share_of_im2col(self):
        """This algorithm's multiply-adds over im2col's."""
        pixels = sum((rows.stop - rows.start) * (cols.stop - cols.start) for _, rows, cols, _, _ in self.rectangles)
        kh, kw = self.w_taps_shape[:2]
        return pixels / (kh * kw * self.out_hw[0] * self.out_hw[1])


# The copies, in readable array code; minidl.kernels.cpu.taps compiles the same.
def _rectangle_readable(array_c, rows, cols):
    """array_c[:, :, rows, cols] as a new (C, N, h, w) array."""
    return array_c[:, :, rows, cols].copy()


def _add_rectangle_readable(target_c, rows, cols, values):
    """target_c[:, :, rows, cols] += values, in place."""
    target_c[:, :, rows, cols] += values


_READABLE = SimpleNamespace(rectangle=_rectangle_readable, add_rectangle=_add_rectangle_readable)


def _copies(array):
    """The compiled copies for array's device and dtype, or the readable slicing."""
    return kernels.for_float_array(array, "taps", _READABLE)


def _matrix(array_c, rows, cols, groups):
    """A rectangle of every image of a (C, N, H, W) array, as one (groups, C/groups, N·h·w) matrix (a copy)."""
    return _copies(array_c).rectangle(array_c, rows, cols).reshape(groups, array_c.shape[0] // groups, -1)


def _add_product(target_c, rows, cols, product):
    """target_c[:, :, rows, cols] += product, a (groups, C/groups, N·h·w) matrix of that rectangle."""
    shape = target_c.shape[:2] + (rows.stop - rows.start, cols.stop - cols.start)
    _copies(target_c).add_rectangle(target_c, rows, cols, product.reshape(shape))


def _tap_weight(w_taps, tap, groups):
    return w_taps[tap].reshape(groups, w_taps.shape[2] // groups, w_taps.shape[3])


def forward(x_c, w_taps, plan):
    """out (C_out, N, H_out, W_out) from x_c (C_in, N, H, W) and w_taps (kh, kw, C_out, C_in/groups)."""
    out = get_array_module(x_c).zeros((w_taps.shape[2], x_c.shape[1]) + plan.out_hw, x_c.dtype)
    for tap, rows, cols, in_rows, in_cols in plan.rectangles:
        product = _tap_weight(w_taps, tap, plan.groups) @ _matrix(x_c, in_rows, in_cols, plan.groups)
        _add_product(out, rows, cols, product)
    return out


def backward(g_c, x_c, w_taps, plan):
    """(gx_c (C_in, N, H, W), gw_taps (kh, kw, C_out, C_in/groups)) from g_c (C_out, N, H_out, W_out), by forward's
    loop with each product's adjoints. Without x_c there is no gw_taps, without w_taps no gx_c (None)."""
    xp = get_array_module(g_c)
    gx_c = None if w_taps is None else xp.zeros(plan.x_shape_c, g_c.dtype)
    gw_taps = None if x_c is None else xp.zeros(plan.w_taps_shape, g_c.dtype)
    for tap, rows, cols, in_rows, in_cols in plan.rectangles:
        g_rect = _matrix(g_c, rows, cols, plan.groups)
        if gw_taps is not None:
            x_rect = _matrix(x_c, in_rows, in_cols, plan.groups)
            gw_taps[tap] = (g_rect @ x_rect.transpose(0, 2, 1)).reshape(plan.w_taps_shape[2:])
        if gx_c is not None:
            _add_product(gx_c, in_rows, in_cols, _tap_weight(w_taps, tap, plan.groups).transpose(0, 2, 1) @ g_rect)
    return gx_c, gw_taps
