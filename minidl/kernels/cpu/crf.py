"""The permutohedral lattice (Adams, Baek & Davis 2010) as loops compiled with Numba: the CRF's filtering.

The readable twin is ``minidl.crf.PermutohedralLattice`` (whole-array NumPy, with
``np.unique`` where these loops keep a hash table); both follow pydensecrf's
``Permutohedral`` step by step, so they build the same lattice (up to the order in
which vertices are numbered) and filter to the same numbers up to float32 rounding.

``build(features)`` places each point (a row of ``features``, already divided by the
kernel's standard deviations) in the simplex of the d-dimensional permutohedral
lattice that encloses it, and returns for every point its d + 1 vertices and
barycentric weights, and for every vertex its two neighbours along each of the
d + 1 lattice axes. ``filter(values, ...)`` then approximates
``out_i = sum_j exp(-|f_i - f_j|² / 2) values_j`` in three passes that each cost
O(N·d·C): splat (each point adds its values to its vertices, weighted), blur
(along each axis, a vertex becomes itself + ½ · (its two neighbours)), and slice
(each point reads its vertices back, with the same weights).

Vertex numbers start at 1 in everything these functions return: row 0 of the blur
buffer is a vertex that is never written and stays zero, the neighbour a vertex
lacks. One thread: the splat's scatter would need atomics or a copy per thread,
and at CRF sizes the whole filter already takes a few milliseconds.
"""
import numba
import numpy as np


def build(features):
    """The lattice of ``features`` (N, d): vertex numbers and weights (N, d + 1) and neighbours (d + 1, M, 2)."""
    offsets, weights, keys, num_vertices = _splat_positions(np.ascontiguousarray(features, np.float32))
    neighbours = _neighbours(keys, num_vertices)
    return offsets, weights, neighbours


def filter(values, offsets, weights, neighbours):
    """Splat ``values`` (N, C) onto the lattice, blur along each axis, slice back: (N, C) float32."""
    values = np.ascontiguousarray(values, np.float32)
    ones = np.ones(values.shape[0], np.float32)
    out = np.zeros(values.shape, np.float32)
    _filter(values, ones, offsets, weights, neighbours, ones, out)
    return out


def add_filtered(out, values, pre, post, offsets, weights, neighbours):
    """``out += post * filter(pre * values)`` in place, for out and values (N, C), pre and post (N,).

    One pairwise term of a mean-field step (pre = D^(-1/2), post = w · D^(-1/2)) in one pass
    over the pixels each way, instead of four more NumPy passes and their temporaries.
    """
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == values.shape
    _filter(np.ascontiguousarray(values, np.float32), np.ascontiguousarray(pre, np.float32),
            offsets, weights, neighbours, np.ascontiguousarray(post, np.float32), out)


@numba.njit(cache=True)
def _hash(keys, row):
    """pydensecrf's hash of a key (a multiply-add per coordinate), with the high bits folded into the low."""
    h = np.uint64(0)
    for i in range(keys.shape[1]):
        h = (h + np.uint64(keys[row, i] + 32768)) * np.uint64(1664525)
    return h ^ (h >> np.uint64(29))


@numba.njit(cache=True)
def _find(table, keys, row):
    """The slot of ``keys[row]`` in ``table``: the slot that holds it, or the empty slot where it belongs.

    ``table`` holds the numbers of stored keys (rows of ``keys``; -1 = empty slot) and has a
    power-of-two size, searched from the key's hash onwards (linear probing).
    """
    mask = np.uint64(table.size - 1)
    slot = _hash(keys, row) & mask
    d = keys.shape[1]
    while True:
        e = table[slot]
        if e < 0:
            return slot
        same = True
        for i in range(d):
            if keys[e, i] != keys[row, i]:
                same = False
                break
        if same:
            return slot
        slot = (slot + np.uint64(1)) & mask


@numba.njit(cache=True)
def _regrow(table, keys, num_keys):
    """A table twice the size of ``table``, holding the same keys."""
    bigger = np.full(table.size * 2, -1, np.int32)
    for e in range(num_keys):
        bigger[_find(bigger, keys, e)] = e
    return bigger


@numba.njit(cache=True)
def _splat_positions(features):
    n, d = features.shape
    d1 = d + 1
    # The canonical simplex: vertex r of the simplex of rank permutation "rank" is rem0 + canonical[r, rank]
    canonical = np.empty((d1, d1), np.int32)
    for r in range(d1):
        for j in range(d1):
            canonical[r, j] = r if j <= d - r else r - d1
    # Scale so that the blur below is a Gaussian of standard deviation 1 (p. 6 of Adams et al. 2010)
    inv_std_dev = np.float32(np.sqrt(2.0 / 3.0) * d1)
    scale = np.empty(d, np.float32)
    for i in range(d):
        scale[i] = np.float32(1.0 / np.sqrt((i + 2.0) * (i + 1.0))) * inv_std_dev
    down = np.float32(1.0 / d1)

    offsets = np.empty((n, d1), np.int32)
    weights = np.empty((n, d1), np.float32)
    # The table grows with the vertices found, which are far fewer than N·(d + 1): a small table stays in cache
    table = np.full(1024, -1, np.int32)
    keys = np.empty((1024, d), np.int32)  # the last row is scratch for the key being looked up
    num_keys = 0
    # Neighbouring pixels mostly fall in the same simplex: the previous point's vertices are tried first
    previous = np.full((d1, d), np.iinfo(np.int32).min, np.int32)
    previous_offsets = np.zeros(d1, np.int32)

    elevated = np.empty(d1, np.float32)
    rem0 = np.empty(d1, np.float32)
    rank = np.empty(d1, np.int32)
    bary = np.empty(d1 + 1, np.float32)
    for p in range(n):
        # Elevate onto the plane sum(x) = 0 of R^(d+1) (y = E f, p. 5 of Adams et al.)
        sm = np.float32(0.0)
        for j in range(d, 0, -1):
            cf = features[p, j - 1] * scale[j - 1]
            elevated[j] = sm - np.float32(j) * cf
            sm += cf
        elevated[0] = sm
        # The nearest point of the 0-coloured lattice (coordinates that are multiples of d + 1)
        total = 0
        for i in range(d1):
            v = np.rint(elevated[i] * down)
            rem0[i] = v * np.float32(d1)
            total += np.int32(v)
        # Rank the coordinates' remainders (ties: the earlier coordinate ranks lower) ...
        for i in range(d1):
            rank[i] = 0
        for i in range(d):
            di = elevated[i] - rem0[i]
            for j in range(i + 1, d1):
                if di < elevated[j] - rem0[j]:
                    rank[i] += 1
                else:
                    rank[j] += 1
        # ... and bring the point back onto the plane if the rounding left it off
        for i in range(d1):
            rank[i] += total
            if rank[i] < 0:
                rank[i] += d1
                rem0[i] += np.float32(d1)
            elif rank[i] > d:
                rank[i] -= d1
                rem0[i] -= np.float32(d1)
        # Barycentric coordinates in the enclosing simplex (p. 10 of Adams et al.)
        for i in range(d1 + 1):
            bary[i] = 0.0
        for i in range(d1):
            v = (elevated[i] - rem0[i]) * down
            bary[d - rank[i]] += v
            bary[d - rank[i] + 1] -= v
        bary[0] += np.float32(1.0) + bary[d1]
        # The simplex's d + 1 vertices: look each up, adding the new ones
        for r in range(d1):
            weights[p, r] = bary[r]
            same = True
            for i in range(d):
                k = np.int32(rem0[i]) + canonical[r, rank[i]]
                if k != previous[r, i]:
                    same = False
                    previous[r, i] = k
            if same:
                offsets[p, r] = previous_offsets[r]
                continue
            if num_keys + 1 >= keys.shape[0]:
                more = np.empty((keys.shape[0] * 2, d), np.int32)
                more[: keys.shape[0]] = keys
                keys = more
            scratch = keys.shape[0] - 1
            keys[scratch] = previous[r]
            slot = _find(table, keys, scratch)
            e = table[slot]
            if e < 0:
                e = num_keys
                keys[e] = previous[r]
                table[slot] = e
                num_keys += 1
                if 2 * num_keys >= table.size:
                    table = _regrow(table, keys, num_keys)
            offsets[p, r] = previous_offsets[r] = e + 1
    return offsets, weights, keys[:num_keys].copy(), num_keys


@numba.njit(cache=True)
def _neighbours(keys, num_keys):
    """For each axis j and vertex v: the vertex numbers (from 1; 0 = none) of v - e_j and v + e_j.

    In lattice coordinates (the first d of d + 1, which sum to 0) the step along axis j
    adds d to coordinate j and subtracts 1 from every other; the last axis (j = d) has
    no stored coordinate and moves all d of them by 1.
    """
    d = keys.shape[1]
    capacity = 16
    while capacity < 2 * num_keys:
        capacity *= 2
    table = np.full(capacity, -1, np.int32)
    lookup = np.empty((num_keys + 1, d), np.int32)
    lookup[:num_keys] = keys
    for e in range(num_keys):
        table[_find(table, lookup, e)] = e
    scratch = num_keys
    out = np.zeros((d + 1, num_keys, 2), np.int32)
    for j in range(d + 1):
        for v in range(num_keys):
            for side in range(2):
                step = -1 if side == 0 else 1
                for i in range(d):
                    lookup[scratch, i] = keys[v, i] + step
                if j < d:
                    lookup[scratch, j] = keys[v, j] - step * d
                e = table[_find(table, lookup, scratch)]
                out[j, v, side] = e + 1  # -1 (absent) becomes 0
    return out


@numba.njit(cache=True)
def _filter(values, pre, offsets, weights, neighbours, post, out):
    n, c = values.shape
    d1 = offsets.shape[1]
    m = neighbours.shape[1]
    buf = np.zeros((m + 1, c), np.float32)
    # Splat
    for p in range(n):
        for r in range(d1):
            o, w = offsets[p, r], weights[p, r] * pre[p]
            for k in range(c):
                buf[o, k] += w * values[p, k]
    # Blur along each axis in turn with the kernel (½, 1, ½)
    other = np.zeros((m + 1, c), np.float32)
    half = np.float32(0.5)
    for j in range(d1):
        for v in range(1, m + 1):
            a, b = neighbours[j, v - 1, 0], neighbours[j, v - 1, 1]
            for k in range(c):
                other[v, k] = buf[v, k] + half * (buf[a, k] + buf[b, k])
        buf, other = other, buf
    # Slice, with the constant that makes the result a normalised Gaussian
    alpha = np.float32(1.0 / (1.0 + 2.0 ** (-(d1 - 1))))
    for p in range(n):
        scale = alpha * post[p]
        for r in range(d1):
            o, w = offsets[p, r], weights[p, r] * scale
            for k in range(c):
                out[p, k] += w * buf[o, k]


def softmax_rows(x):
    """Softmax of each row of ``x`` (N, C) float32, in place; returns x."""
    _softmax_rows(x)
    return x


@numba.njit(cache=True)
def _softmax_rows(x):
    n, c = x.shape
    for p in range(n):
        top = x[p, 0]
        for k in range(1, c):
            top = max(top, x[p, k])
        total = np.float32(0.0)
        for k in range(c):
            e = np.exp(x[p, k] - top)
            x[p, k] = e
            total += e
        scale = np.float32(1.0) / total
        for k in range(c):
            x[p, k] *= scale
