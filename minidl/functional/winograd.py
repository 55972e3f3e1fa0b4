"""Winograd's F(2×2, 3×3): a stride-1 3×3 convolution with 16 multiplications per 2×2 outputs instead of 36.

Along one axis, two outputs of a 3-tap filter g over four inputs d,
y0 = d0·g0 + d1·g1 + d2·g2 and y1 = d1·g0 + d2·g1 + d3·g2, take 4
multiplications instead of 6 when written as ``y = Aᵀ [(G g) ⊙ (Bᵀ d)]``
(Lavin & Gray, 2016). Nested over both axes, a 2×2 output tile is
``Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` for a 4×4 input tile d: 16 products, not 36.
In a layer the elementwise product becomes a sum over input channels, so
each of the 16 positions ξ of the 4×4 transformed tile is one matrix
product: M[ξ] (C_out × tiles) = U[ξ] (C_out × C_in) @ V[ξ] (C_in × tiles),
with U the transformed weights and V the transformed input tiles.

Atrous convolution: with dilation r the taps of an output at y read
y - p + {0, r, 2r}, so the outputs y ≡ a (mod r) form an ordinary stride-1
3×3 convolution of the input rows ≡ a - p (mod r) (TensorFlow's
``atrous_conv2d`` does the same with space_to_batch). A tile here is
therefore two outputs r apart, y and y + r, reading inputs y - p + {0, r, 2r, 3r};
``tile_starts`` lists the first output of every tile, phase by phase.

Backward is the same algorithm read backwards (the adjoint of each linear
step): dM = A dY Aᵀ per tile, dV[ξ] = U[ξ]ᵀ @ dM[ξ] and dU[ξ] = dM[ξ] @ V[ξ]ᵀ,
then dX = B dV Bᵀ added back onto the overlapping input tiles and
dW = Gᵀ dU G. The three products are 16/36 the size of im2col's.

This module is the readable array code (NumPy or CuPy); ``minidl.kernels.cpu.winograd``
does the four tile transforms as Numba loops, on the same layouts.
"""
import numpy as np

from minidl.backend import get_array_module

# F(2×2, 3×3)'s matrices, in Lavin & Gray's notation: input transform Bᵀ, filter transform G, output transform Aᵀ.
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def tile_starts(out, dilation):
    """The first output position of every tile along one axis: tiles are (y, y + dilation), phase by phase.

    Phase a holds the outputs a, a + r, a + 2r, … (r = dilation); pairing them
    gives ceil(count / 2) tiles, the last one half outside when count is odd.
    """
    starts = []
    for phase in range(min(dilation, out)):
        count = -(-(out - phase) // dilation)
        starts += [phase + 2 * dilation * k for k in range(-(-count // 2))]
    return np.array(starts, dtype=np.int64)


class Tiling:
    """Where the tiles of one convolution lie: their starts along each axis, padding, dilation, output size."""

    def __init__(self, x_shape, padding, dilation):
        self.x_shape, self.padding, self.dilation = tuple(x_shape), padding, dilation
        height, width = x_shape[2:]
        self.out_hw = tuple(size + 2 * p - 2 * d for size, p, d in zip((height, width), padding, dilation))
        self.ys, self.xs = (tile_starts(o, d) for o, d in zip(self.out_hw, dilation))
        self.count = x_shape[0] * len(self.ys) * len(self.xs)  # tiles of the whole batch, the products' width

    def positions(self, xp, taps):
        """Row and column indices (Ty, Tx, taps, taps) of every tile's ``taps``×``taps`` points, step = dilation."""
        dh, dw = self.dilation
        rows = xp.asarray(self.ys[:, None] + dh * np.arange(taps))  # (Ty, taps)
        cols = xp.asarray(self.xs[:, None] + dw * np.arange(taps))  # (Tx, taps)
        return rows[:, None, :, None], cols[None, :, None, :]


# ---------------------------------------------------------------- the four tile transforms, readable
def _tiles_last(array, ty, tx):
    """(16, C, N·Ty·Tx) -> (N, C, Ty, Tx, 4, 4): each tile's 4×4 values in the last two axes."""
    channels = array.shape[1]
    return array.reshape(4, 4, channels, -1, ty, tx).transpose(3, 2, 4, 5, 0, 1)


def _positions_first(tiles):
    """(N, C, Ty, Tx, 4, 4) -> (16, C, N·Ty·Tx), the layout of the 16 matrix products."""
    n, c = tiles.shape[:2]
    return tiles.transpose(4, 5, 1, 0, 2, 3).reshape(16, c, -1)


def _padded(array, before, after):
    xp = get_array_module(array)
    return xp.pad(array, ((0, 0), (0, 0), (before[0], after[0]), (before[1], after[1])))


def transform_input(x, tiling):
    """V = Bᵀ d B for every 4×4 input tile d: (16, C, N·Ty·Tx).

    The input is padded by the convolution's padding, plus one dilation step
    at the end for a last tile that reaches past the output.
    """
    xp = get_array_module(x)
    padded = _padded(x, tiling.padding, [p + d for p, d in zip(tiling.padding, tiling.dilation)])
    rows, cols = tiling.positions(xp, 4)
    tiles = padded[:, :, rows, cols]  # (N, C, Ty, Tx, 4, 4)
    b_t = xp.asarray(B_T, x.dtype)
    return xp.ascontiguousarray(_positions_first(b_t @ tiles @ b_t.T))


def transform_output(m, tiling):
    """Y = Aᵀ M A for every tile, put in place: (N, C_out, H_out, W_out) from M (16, C_out, N·Ty·Tx)."""
    xp = get_array_module(m)
    (h_out, w_out), (dh, dw) = tiling.out_hw, tiling.dilation
    a_t = xp.asarray(A_T, m.dtype)
    tiles = a_t @ _tiles_last(m, len(tiling.ys), len(tiling.xs)) @ a_t.T  # (N, C_out, Ty, Tx, 2, 2)
    out = xp.empty((tiling.x_shape[0], m.shape[1], h_out + dh, w_out + dw), m.dtype)
    rows, cols = tiling.positions(xp, 2)
    out[:, :, rows, cols] = tiles  # every output lies in exactly one tile
    return xp.ascontiguousarray(out[:, :, :h_out, :w_out])


def transform_output_adjoint(grad_out, tiling):
    """dM = A dY Aᵀ for every 2×2 tile of the upstream gradient (zero past the output): (16, C_out, N·Ty·Tx)."""
    xp = get_array_module(grad_out)
    a_t = xp.asarray(A_T, grad_out.dtype)
    padded = _padded(grad_out, (0, 0), tiling.dilation)
    rows, cols = tiling.positions(xp, 2)
    tiles = padded[:, :, rows, cols]  # (N, C_out, Ty, Tx, 2, 2)
    return xp.ascontiguousarray(_positions_first(a_t.T @ tiles @ a_t))


def transform_input_adjoint(dv, tiling):
    """dX: B dV Bᵀ for every tile, added onto the input pixels the tile read (tiles overlap)."""
    xp = get_array_module(dv)
    b_t = xp.asarray(B_T, dv.dtype)
    tiles = b_t.T @ _tiles_last(dv, len(tiling.ys), len(tiling.xs)) @ b_t  # (N, C, Ty, Tx, 4, 4)
    (ph, pw), (dh, dw) = tiling.padding, tiling.dilation
    n, c, height, width = tiling.x_shape
    padded = xp.zeros((n, c, height + 2 * ph + dh, width + 2 * pw + dw), dv.dtype)
    rows, cols = tiling.positions(xp, 4)
    for i in range(4):  # for one tap (i, j) no two tiles read the same pixel, so += is exact
        for j in range(4):
            padded[:, :, rows[:, :, i, 0], cols[:, :, 0, j]] += tiles[..., i, j]
    return padded[:, :, ph : ph + height, pw : pw + width]


# ---------------------------------------------------------------- the filter transform and its adjoint
def _both_axes(matrix, filters):
    """matrix @ f @ matrixᵀ for every 2-D filter f in the last two axes of ``filters``.

    Written as two tensordots, one large matrix product each, not as a stack of
    3×3 products (which NumPy runs one by one: 10 ms for 256×256 filters).
    """
    xp = get_array_module(filters)
    m = xp.asarray(matrix, filters.dtype)
    rows_done = xp.tensordot(filters, m, axes=([-2], [1]))  # (…, k_w, m_rows): the row axis transformed, now last
    return xp.tensordot(rows_done, m, axes=([-2], [1]))  # (…, m_rows, m_rows)


def transform_weight(w):
    """U = G g Gᵀ for every 3×3 filter g: (16, C_out, C_in/groups)."""
    u = _both_axes(G, w)  # (C_out, C_in/groups, 4, 4)
    return get_array_module(w).ascontiguousarray(u.transpose(2, 3, 0, 1).reshape(16, *w.shape[:2]))


def transform_weight_adjoint(du):
    """dW = Gᵀ dU G: (C_out, C_in/groups, 3, 3) from dU (16, C_out, C_in/groups)."""
    return _both_axes(G.T, du.reshape(4, 4, *du.shape[1:]).transpose(2, 3, 0, 1))
