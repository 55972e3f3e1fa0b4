"""im2col and col2im as CUDA kernels, the GPU twins of ``minidl.functional.conv.im2col/col2im``.

Same arguments, same layout: cols is (C·kh·kw, N·H_out·W_out). im2col runs
one thread per entry of cols. col2im runs one thread per input pixel, which
gathers the entries of cols copied from it (the taps whose window position
lands exactly on it), so no two threads write the same place and no atomics
are needed. The matrix products around them stay with cuBLAS (``xp.matmul``).
"""
from numba import cuda

from minidl.backend import get_array_module
from minidl.functional.conv import loop_arguments
from minidl.kernels.cuda.common import divide, launch, window_position

@cuda.jit
def _im2col(images, cols, kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out):
    row, column = divide(cuda.grid(1), cols.shape[1])
    if row >= cols.shape[0]:
        return
    c, tap = divide(row, kh * kw)
    i, j = divide(tap, kw)
    n, position = divide(column, h_out * w_out)
    y = position // w_out * sh + i * dh - ph
    x = position % w_out * sw + j * dw - pw
    inside = 0 <= y < images.shape[2] and 0 <= x < images.shape[3]
    cols[row, column] = images[n, c, y, x] if inside else 0


@cuda.jit
def _col2im(cols, images, kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out):
    rest, x = divide(cuda.grid(1), images.shape[3])
    rest, y = divide(rest, images.shape[2])
    n, c = divide(rest, images.shape[1])
    if n >= images.shape[0]:
        return
    total = 0.0  # at most kh·kw terms; summed in float64, rounded once when stored
    for i in range(kh):
        oy = window_position(y, i, sh, ph, dh, h_out)
        if oy < 0:
            continue
        for j in range(kw):
            ox = window_position(x, j, sw, pw, dw, w_out)
            if ox >= 0:
                total += cols[(c * kh + i) * kw + j, (n * h_out + oy) * w_out + ox]
    images[n, c, y, x] = total


def im2col(x, kernel_size, stride, padding, dilation):
    """x (N, C, H, W) -> cols (C·kh·kw, N·H_out·W_out), as ``minidl.functional.conv.im2col``."""
    xp = get_array_module(x)
    arguments = loop_arguments(x.shape, kernel_size, stride, padding, dilation)
    n, c = x.shape[:2]
    (kh, kw), (h_out, w_out) = kernel_size, arguments[-2:]
    cols = xp.empty((c * kh * kw, n * h_out * w_out), x.dtype)
    launch(_im2col, cols, xp.ascontiguousarray(x), cols, *arguments)
    return cols


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """The adjoint of im2col, as ``minidl.functional.conv.col2im``."""
    xp = get_array_module(cols)
    arguments = loop_arguments(input_shape, kernel_size, stride, padding, dilation)
    image = xp.empty(input_shape, cols.dtype)
    launch(_col2im, image, xp.ascontiguousarray(cols), image, *arguments)
    return image
