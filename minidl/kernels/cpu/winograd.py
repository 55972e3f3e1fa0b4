"""Winograd F(2×2, 3×3)'s tile and filter transforms as Numba loops, twins of ``minidl.functional.winograd``.

Same arguments and layouts as the readable version: V, M and their gradients
are (16, C, N·Ty·Tx), tile t = (n, ty, tx) with tx fastest. Instead of
padding the input (and the output by one dilation step for a half-outside
last tile), each loop reads zero and skips writes outside the image, so no
padded copy is made. Channels are independent, so ``prange`` spreads them
over the cores; the tile loops read and write each plane once.

The transforms are the matrices written out: Bᵀ d B, Aᵀ m A, A g Aᵀ and
B v Bᵀ for the tiles, G g Gᵀ and Gᵀ dU G for the filters, one axis at a
time on a small scratch tile.

Every tile writes one value in each of the 16 planes of V (or U, or dM).
When the planes lie a multiple of 4 KiB apart, which (C, tiles) of DeepLab's
sizes often makes them, those 16 addresses share one set of the L1 cache
(12 ways here) and evict each other: the input transform of a 256-channel
33×33 map took 14.5 ms instead of 4.6. ``planes`` staggers them.
"""
import numba
import numpy as np

from minidl.kernels.cpu import threads_for

_PARALLEL = dict(cache=True, parallel=True)


def planes(rows, cols, dtype):
    """An uninitialised (16, rows, cols) array whose planes start 16 elements apart modulo 4 KiB (see above)."""
    size = rows * cols
    flat = np.empty(16 * (size + 16), dtype)
    return flat.reshape(16, size + 16)[:, :size].reshape(16, rows, cols)


@numba.njit(cache=True, inline="always")
def _value(plane, y, x):
    """plane[y, x], or 0 outside the plane (the padding)."""
    if 0 <= y < plane.shape[0] and 0 <= x < plane.shape[1]:
        return plane[y, x]
    return 0


@numba.njit(**_PARALLEL)
def _input(x, v, ys, xs, ph, pw, dh, dw):
    """v[:, c, t] = Bᵀ d B for the 4×4 tile d of x that tile t reads, rows ys[ty] - ph + dh·{0..3}."""
    images, channels = x.shape[:2]
    for c in numba.prange(channels):
        d = np.empty((4, 4), x.dtype)
        for n in range(images):
            plane = x[n, c]
            for a in range(len(ys)):
                for b in range(len(xs)):
                    y0, x0 = ys[a] - ph, xs[b] - pw
                    for j in range(4):  # Bᵀ d, column by column
                        d0 = _value(plane, y0, x0 + j * dw)
                        d1 = _value(plane, y0 + dh, x0 + j * dw)
                        d2 = _value(plane, y0 + 2 * dh, x0 + j * dw)
                        d3 = _value(plane, y0 + 3 * dh, x0 + j * dw)
                        d[0, j], d[1, j], d[2, j], d[3, j] = d0 - d2, d1 + d2, d2 - d1, d1 - d3
                    t = (n * len(ys) + a) * len(xs) + b
                    for i in range(4):  # (Bᵀ d) B, row by row
                        v[4 * i, c, t] = d[i, 0] - d[i, 2]
                        v[4 * i + 1, c, t] = d[i, 1] + d[i, 2]
                        v[4 * i + 2, c, t] = d[i, 2] - d[i, 1]
                        v[4 * i + 3, c, t] = d[i, 1] - d[i, 3]


@numba.njit(**_PARALLEL)
def _output(m, out, ys, xs, dh, dw):
    """out[n, c] at tile t's 2×2 outputs = Aᵀ m A, m = the tile's values m[:, c, t]; none written past the edge."""
    images, channels, height, width = out.shape
    for c in numba.prange(channels):
        r = np.empty((2, 4), m.dtype)
        for n in range(images):
            for a in range(len(ys)):
                for b in range(len(xs)):
                    t = (n * len(ys) + a) * len(xs) + b
                    for j in range(4):  # Aᵀ m, column by column
                        m0, m1, m2, m3 = m[j, c, t], m[4 + j, c, t], m[8 + j, c, t], m[12 + j, c, t]
                        r[0, j], r[1, j] = m0 + m1 + m2, m1 - m2 - m3
                    for i in range(2):  # (Aᵀ m) A, row by row
                        y = ys[a] + i * dh
                        if y < height:
                            out[n, c, y, xs[b]] = r[i, 0] + r[i, 1] + r[i, 2]
                            if xs[b] + dw < width:
                                out[n, c, y, xs[b] + dw] = r[i, 1] - r[i, 2] - r[i, 3]


@numba.njit(**_PARALLEL)
def _output_adjoint(grad, dm, ys, xs, dh, dw):
    """dm[:, c, t] = A g Aᵀ for the 2×2 tile g of the upstream gradient (zero past the edge)."""
    images, channels = grad.shape[:2]
    for c in numba.prange(channels):
        s = np.empty((4, 2), grad.dtype)
        for n in range(images):
            plane = grad[n, c]
            for a in range(len(ys)):
                for b in range(len(xs)):
                    for j in range(2):  # A g, column by column
                        g0 = _value(plane, ys[a], xs[b] + j * dw)
                        g1 = _value(plane, ys[a] + dh, xs[b] + j * dw)
                        s[0, j], s[1, j], s[2, j], s[3, j] = g0, g0 + g1, g0 - g1, -g1
                    t = (n * len(ys) + a) * len(xs) + b
                    for i in range(4):  # (A g) Aᵀ, row by row
                        dm[4 * i, c, t] = s[i, 0]
                        dm[4 * i + 1, c, t] = s[i, 0] + s[i, 1]
                        dm[4 * i + 2, c, t] = s[i, 0] - s[i, 1]
                        dm[4 * i + 3, c, t] = -s[i, 1]


@numba.njit(**_PARALLEL)
def _input_adjoint(dv, gx, ys, xs, ph, pw, dh, dw):
    """gx += B v Bᵀ at the 4×4 input pixels tile t read, v the tile's values in dv[:, c, t]; padding dropped."""
    images, channels, height, width = gx.shape
    for c in numba.prange(channels):
        u = np.empty((4, 4), dv.dtype)
        for n in range(images):
            for a in range(len(ys)):
                for b in range(len(xs)):
                    t = (n * len(ys) + a) * len(xs) + b
                    for j in range(4):  # B v, column by column
                        v0, v1, v2, v3 = dv[j, c, t], dv[4 + j, c, t], dv[8 + j, c, t], dv[12 + j, c, t]
                        u[0, j], u[1, j], u[2, j], u[3, j] = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                    y0, x0 = ys[a] - ph, xs[b] - pw
                    for i in range(4):  # (B v) Bᵀ, row by row, added where the pixel is inside the image
                        y = y0 + i * dh
                        if 0 <= y < height:
                            row = (u[i, 0], u[i, 1] - u[i, 2] + u[i, 3], u[i, 1] + u[i, 2] - u[i, 0], -u[i, 3])
                            for j in range(4):
                                x = x0 + j * dw
                                if 0 <= x < width:
                                    gx[n, c, y, x] += row[j]


@numba.njit(**_PARALLEL)
def _weight(w, u):
    """u[:, o, i] = G g Gᵀ for the 3×3 filter g = w[o, i]."""
    for o in numba.prange(w.shape[0]):
        r = np.empty((4, 3), w.dtype)
        for i in range(w.shape[1]):
            g = w[o, i]
            for j in range(3):  # G g, column by column
                r[0, j], r[3, j] = g[0, j], g[2, j]
                r[1, j], r[2, j] = (g[0, j] + g[1, j] + g[2, j]) * 0.5, (g[0, j] - g[1, j] + g[2, j]) * 0.5
            for k in range(4):  # (G g) Gᵀ, row by row
                u[4 * k, o, i], u[4 * k + 3, o, i] = r[k, 0], r[k, 2]
                u[4 * k + 1, o, i] = (r[k, 0] + r[k, 1] + r[k, 2]) * 0.5
                u[4 * k + 2, o, i] = (r[k, 0] - r[k, 1] + r[k, 2]) * 0.5


@numba.njit(**_PARALLEL)
def _weight_adjoint(du, gw):
    """gw[o, i] = Gᵀ dU G, dU the 4×4 values du[:, o, i]."""
    for o in numba.prange(gw.shape[0]):
        r = np.empty((3, 4), du.dtype)
        for i in range(gw.shape[1]):
            for j in range(4):  # Gᵀ dU, column by column
                u0, u1, u2, u3 = du[j, o, i], du[4 + j, o, i], du[8 + j, o, i], du[12 + j, o, i]
                r[0, j], r[1, j], r[2, j] = u0 + (u1 + u2) * 0.5, (u1 - u2) * 0.5, (u1 + u2) * 0.5 + u3
            for k in range(3):  # (Gᵀ dU) G, row by row
                gw[o, i, k, 0] = r[k, 0] + (r[k, 1] + r[k, 2]) * 0.5
                gw[o, i, k, 1] = (r[k, 1] - r[k, 2]) * 0.5
                gw[o, i, k, 2] = (r[k, 1] + r[k, 2]) * 0.5 + r[k, 3]


def transform_weight(w):
    """U = G g Gᵀ for every filter: (16, C_out, C_in/groups), as ``minidl.functional.winograd.transform_weight``."""
    u = planes(*w.shape[:2], w.dtype)
    with threads_for(u.size):
        _weight(np.ascontiguousarray(w), u)
    return u


def transform_weight_adjoint(du):
    """dW = Gᵀ dU G: (C_out, C_in/groups, 3, 3), as ``minidl.functional.winograd.transform_weight_adjoint``."""
    gw = np.empty((*du.shape[1:], 3, 3), du.dtype)
    with threads_for(du.size):
        _weight_adjoint(du, gw)
    return gw


def transform_input(x, tiling):
    """V = Bᵀ d B for every tile: (16, C, N·Ty·Tx), as ``minidl.functional.winograd.transform_input``."""
    v = planes(x.shape[1], tiling.count, x.dtype)
    with threads_for(v.size):
        _input(np.ascontiguousarray(x), v, tiling.ys, tiling.xs, *tiling.padding, *tiling.dilation)
    return v


def transform_output(m, tiling):
    """Y = Aᵀ M A put in place: (N, C_out, H_out, W_out), as ``minidl.functional.winograd.transform_output``."""
    out = np.empty((tiling.x_shape[0], m.shape[1], *tiling.out_hw), m.dtype)
    with threads_for(m.size):
        _output(m, out, tiling.ys, tiling.xs, *tiling.dilation)
    return out


def transform_output_adjoint(grad_out, tiling):
    """dM = A dY Aᵀ per tile: (16, C_out, N·Ty·Tx), as ``minidl.functional.winograd.transform_output_adjoint``."""
    dm = planes(grad_out.shape[1], tiling.count, grad_out.dtype)
    with threads_for(dm.size):
        _output_adjoint(np.ascontiguousarray(grad_out), dm, tiling.ys, tiling.xs, *tiling.dilation)
    return dm


def transform_input_adjoint(dv, tiling):
    """dX = B dV Bᵀ added onto each tile's pixels, as ``minidl.functional.winograd.transform_input_adjoint``."""
    gx = np.zeros(tiling.x_shape, dv.dtype)
    with threads_for(dv.size):
        _input_adjoint(dv, gx, tiling.ys, tiling.xs, *tiling.padding, *tiling.dilation)
    return gx

