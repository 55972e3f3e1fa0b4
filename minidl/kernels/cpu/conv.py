"""im2col, col2im and image_products as Numba loops, the compiled twins of those in ``minidl.functional.conv``.

Same arguments, same layout: cols is (C·kh·kw, N·H_out·W_out), row (c, i, j)
channel-major. Instead of padding the input, each loop computes the range of
output positions whose tap lands inside the image and writes zeros outside
it, so every entry of cols is written exactly once.

The loops share their rows (im2col) or their (image, channel) planes (col2im)
among Numba's threads only while OpenBLAS's idle threads spin briefly
(``threads_beside_blas``): they only move memory between two BLAS products, and
with OpenBLAS's long default spin a Numba thread pool beside BLAS's own made
each switch between the two stall while the other pool's idle threads spun (the
3→32 stem conv ran 2-6× slower on 2 cores). With brief spins, two threads
unfold the main job's 7×7 stem in 2.2 ms against 4.1 ms on one.
"""
import numba
import numpy as np

from minidl.functional.conv import image_products as _blas_image_products, loop_arguments
from minidl.kernels.cpu import dot, threads_beside_blas


@numba.njit(cache=True, inline="always")
def _inside(offset, stride, size, out):
    """[lo, hi): the output positions p with 0 <= p·stride + offset < size (clipped to [0, out))."""
    lo = min(max(0, (-offset + stride - 1) // stride), out)
    hi = max(min(out, (size - 1 - offset) // stride + 1), lo)
    return lo, hi


@numba.njit(cache=True, parallel=True)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out):
    n_images, channels, height, width = x.shape
    source, target = x.reshape(-1), cols.reshape(-1)  # flat offsets: no array views built per line
    per_image = h_out * w_out
    for row in numba.prange(cols.shape[0]):
        c, i, j = row // (kh * kw), row // kw % kh, row % kw
        y_offset, x_offset = i * dh - ph, j * dw - pw
        y_lo, y_hi = _inside(y_offset, sh, height, h_out)
        x_lo, x_hi = _inside(x_offset, sw, width, w_out)
        for n in range(n_images):
            image = row * cols.shape[1] + n * per_image
            for oy in range(h_out):
                line = image + oy * w_out
                if oy < y_lo or oy >= y_hi:  # the tap's whole row lies in the padding
                    target[line : line + w_out] = 0
                    continue
                pixel = ((n * channels + c) * height + oy * sh + y_offset) * width + x_offset
                target[line : line + x_lo] = 0
                for ox in range(x_lo, x_hi):
                    target[line + ox] = source[pixel + ox * sw]
                target[line + x_hi : line + w_out] = 0


@numba.njit(cache=True, parallel=True)
def _col2im(cols, image, kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out):
    n_images, channels, height, width = image.shape
    source, target = cols.reshape(-1), image.reshape(-1)
    per_image = h_out * w_out
    for image_channel in numba.prange(n_images * channels):  # a plane is one thread's: no two write a pixel
        n, c = image_channel // channels, image_channel % channels
        plane = image_channel * height * width  # stays in cache while kh·kw rows pour into it
        for i in range(kh):
            y_offset = i * dh - ph
            y_lo, y_hi = _inside(y_offset, sh, height, h_out)
            for j in range(kw):
                x_offset = j * dw - pw
                x_lo, x_hi = _inside(x_offset, sw, width, w_out)
                row = ((c * kh + i) * kw + j) * cols.shape[1] + n * per_image
                for oy in range(y_lo, y_hi):
                    pixel = plane + (oy * sh + y_offset) * width + x_offset
                    line = row + oy * w_out
                    for ox in range(x_lo, x_hi):
                        target[pixel + ox * sw] += source[line + ox]


# Pieces of one image's columns this long: one of them for every row of both operands (27 + 32 rows for the stem)
# stays in the core's cache while each row pair's dot product runs over it.
_PIECE = 1024


# Reassociating the dot products' sums lets LLVM keep them in vector registers; eight of them at once (two lines
# of g against four of cols) make each load serve two or four multiply-adds, which doubled the stem's speed.
@numba.njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def _image_products(g, cols, parts):
    n_images, groups, rows_g, pixels = g.shape
    blocks, rows_c = parts.shape[0], parts.shape[3]
    per_image = (pixels + _PIECE - 1) // _PIECE
    pieces = n_images * per_image
    pairs, fours = rows_g - rows_g % 2, rows_c - rows_c % 4
    for block in numba.prange(blocks):  # a block's share of the (image, piece) pairs, summed apart
        for piece in range(block * pieces // blocks, (block + 1) * pieces // blocks):
            n, start = piece // per_image, piece % per_image * _PIECE
            stop = min(start + _PIECE, pixels)
            for group in range(groups):
                sums = parts[block, group]
                for a in range(0, pairs, 2):
                    line0, line1 = g[n, group, a, start:stop], g[n, group, a + 1, start:stop]
                    for b in range(0, fours, 4):
                        col0, col1 = cols[group, b, n, start:stop], cols[group, b + 1, n, start:stop]
                        col2, col3 = cols[group, b + 2, n, start:stop], cols[group, b + 3, n, start:stop]
                        s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = g.dtype.type(0)
                        for p in range(stop - start):
                            u, v = line0[p], line1[p]
                            c0, c1, c2, c3 = col0[p], col1[p], col2[p], col3[p]
                            s0 += u * c0
                            s1 += u * c1
                            s2 += u * c2
                            s3 += u * c3
                            t0 += v * c0
                            t1 += v * c1
                            t2 += v * c2
                            t3 += v * c3
                        sums[a, b] += s0
                        sums[a, b + 1] += s1
                        sums[a, b + 2] += s2
                        sums[a, b + 3] += s3
                        sums[a + 1, b] += t0
                        sums[a + 1, b + 1] += t1
                        sums[a + 1, b + 2] += t2
                        sums[a + 1, b + 3] += t3
                for a in range(rows_g):  # what the blocks of 2 × 4 left: an odd last line, the last columns
                    for b in range(fours if a < pairs else 0, rows_c):
                        sums[a, b] += dot(g[n, group, a, start:stop], cols[group, b, n, start:stop])


def image_products(g, cols):
    """Σ over images of g_n @ cols_nᵀ per group, as ``minidl.functional.conv.image_products``.

    OpenBLAS shares a product among its threads by rows and columns of the result, and this one's result is
    small (32 × 27 for the stem) while its sum runs over every pixel: BLAS runs it on one thread. Here the
    threads split the pixels. Images smaller than a piece go to BLAS, for which their products are not thin.
    """
    n_images, groups, rows_g, pixels = g.shape
    if pixels < _PIECE:
        return _blas_image_products(g, cols)
    cols = np.ascontiguousarray(cols).reshape(groups, -1, n_images, pixels)
    with threads_beside_blas(g.size):  # one block of pixels per thread that the loop may use
        parts = np.zeros((numba.get_num_threads(), groups, rows_g, cols.shape[1]))
        _image_products(np.ascontiguousarray(g), cols, parts)
    return parts.sum(axis=0).astype(g.dtype)


def im2col(x, kernel_size, stride, padding, dilation):
    """x (N, C, H, W) -> cols (C·kh·kw, N·H_out·W_out), as ``minidl.functional.conv.im2col``."""
    arguments = loop_arguments(x.shape, kernel_size, stride, padding, dilation)
    n, c = x.shape[:2]
    (kh, kw), (h_out, w_out) = kernel_size, arguments[-2:]
    cols = np.empty((c * kh * kw, n * h_out * w_out), x.dtype)
    with threads_beside_blas(cols.size):
        _im2col(np.ascontiguousarray(x), cols, *arguments)
    return cols


def col2im(cols, input_shape, kernel_size, stride, padding, dilation):
    """The adjoint of im2col, as ``minidl.functional.conv.col2im``."""
    arguments = loop_arguments(input_shape, kernel_size, stride, padding, dilation)
    image = np.zeros(input_shape, cols.dtype)
    with threads_beside_blas(cols.size):
        _col2im(np.ascontiguousarray(cols), image, *arguments)
    return image
