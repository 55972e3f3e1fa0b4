"""The fully connected CRF of Krähenbühl & Koltun (2011), as DeepLab v2 runs it after the network.

Every pixel i of an image gets a distribution Q_i over the C classes. The CRF's energy is

    E(x) = sum_i U_i(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)

with the unary U_i(l) = -log p_i(l) from the network's softmax, the Potts compatibility
mu(l, l') = [l != l'], and two Gaussian kernels on pixel features:

    k(f_i, f_j) = bi_w  * exp(-|p_i - p_j|² / (2 bi_xy_std²) - |I_i - I_j|² / (2 bi_rgb_std²))  (appearance)
                + pos_w * exp(-|p_i - p_j|² / (2 pos_xy_std²))                                   (smoothness)

where p is the pixel's (x, y) position and I its RGB colour. Writing each kernel as
exp(-|f_i - f_j|² / 2) on features f = (x, y) / pos_xy_std or (x, y, r, g, b) / (bi_xy_std,
bi_xy_std, bi_rgb_std, bi_rgb_std, bi_rgb_std), mean-field inference is:

    Q = softmax(-U)
    repeat `iterations` times:
        for each kernel K (an N × N matrix, N = H·W) with weight w:
            m = D^(-1/2) K D^(-1/2) Q        message passing, D = diag(K 1) (symmetric normalisation)
        Q = softmax(-U + sum_K w · m)      Potts: each pixel is pulled towards the labels its
                                           similar pixels hold (the Potts energy of label l is
                                           w · (sum over all labels of m - m_l), and the sum is the
                                           same for every l, so it cancels in the softmax)

These are pydensecrf's conventions exactly (``DenseCRF2D``; ``setUnaryEnergy(-log p)``;
``addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)``; ``addPairwiseBilateral(sxy=bi_xy_std,
srgb=bi_rgb_std, rgbim=image, compat=bi_w)``; ``inference(iterations)``): its
``PottsCompatibility(w)`` turns the filtered Q into -w · m, which inference *subtracts* from
-U, and its default normalisation, ``NORMALIZE_SYMMETRIC``, multiplies by 1/sqrt(K 1) before and
after filtering. One convention differs from the paper's text, whose message sums over j != i:
pydensecrf (Krähenbühl's own code, which DeepLab v2 ran) filters with the whole kernel, pixel i
included (k(f_i, f_i) = 1), and so do we. On a 1-pixel image its inference changes Q, which it
could not if the pixel were left out (tests/test_crf.py checks this). The pixel's own term is
w · Q_i / D_i, a pull towards its current labels that is small wherever D_i, the kernel mass
around the pixel, is large: about w / 57 for the smoothness kernel at pos_xy_std = 3.

Three implementations of the filtering K·v, from definition to fast:

- ``ExactGaussianFilter``: the N × N matrix itself. O(N²) time and memory, for images of a few
  thousand pixels: this is the definition the others are checked against.
- ``PermutohedralLattice``: the approximation pydensecrf uses (Adams, Baek & Davis 2010), in
  O(N·d) per filtering: points splat onto the vertices of the permutohedral lattice that
  encloses them, the lattice is blurred along each of its d + 1 axes, and points read back.
  Written here in whole-array NumPy (readable), and in minidl/kernels/cpu/crf.py as Numba
  loops (fast), which ``dense_crf`` uses unless ``minidl.kernels.disabled()``.
- ``dense_crf_reference`` runs pydensecrf itself (``pip install pydensecrf2``).

The lattice is an approximation: its kernel is close to, not equal to, the Gaussian (it is a
piecewise-linear splat, three-tap blurs and a piecewise-linear slice, at one lattice step per
standard deviation), so ``dense_crf`` and ``dense_crf_exact`` differ by a few per cent in the
messages (most on tiny images, whose colours leave the lattice sparse); their labels differ only
where p is close to a tie, where mean field can settle either way (tests/test_crf.py measures both).
"""
import numpy as np

from minidl import backend, kernels
from minidl.tensor import Tensor

# Probabilities below this are raised to it before -log (pydensecrf.utils.unary_from_softmax's clip),
# so a class the network rules out costs -log(1e-5) ≈ 11.5 instead of infinity.
PROB_FLOOR = 1e-5

# dense_crf_exact builds an N × N matrix; beyond this many pixels use dense_crf.
MAX_EXACT_PIXELS = 4096


# --------------------------------------------------------------------------------------------------
# Inputs and features
# --------------------------------------------------------------------------------------------------


def _as_numpy(x):
    if isinstance(x, Tensor):
        x = x.data
    return backend.to_numpy(x)


def _check_inputs(image, probs, iterations, stds, weights):
    image, probs = _as_numpy(image), _as_numpy(probs)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an (H, W, 3) uint8 RGB array; got shape {tuple(image.shape)} and dtype {image.dtype}"
        )
    h, w = image.shape[:2]
    if probs.ndim != 3 or tuple(probs.shape[1:]) != (h, w) or probs.shape[0] < 1:
        raise ValueError(
            f"probs must be (C, H, W) = (C, {h}, {w}) to match image of shape {tuple(image.shape)}; "
            f"got shape {tuple(probs.shape)}"
        )
    if probs.dtype.kind != "f":
        raise ValueError(f"probs must be floating-point softmax probabilities; got dtype {probs.dtype}")
    if probs.size:
        if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
            raise ValueError("probs must be probabilities in [0, 1] (softmax over axis 0), not logits or NaN")
        sums = probs.sum(axis=0, dtype=np.float64)
        if np.abs(sums - 1).max() > 1e-3:
            raise ValueError(
                "probs must sum to 1 over the class axis 0 (softmax probabilities); "
                f"got sums from {sums.min():.4g} to {sums.max():.4g}"
            )
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer; got {iterations!r}")
    for name, value in stds.items():
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive standard deviation; got {value!r}")
    for name, value in weights.items():
        if not np.isfinite(value):
            raise ValueError(f"{name} must be a finite kernel weight; got {value!r}")
    return image, probs


def crf_features(image, pos_xy_std=3.0, bi_xy_std=80.0, bi_rgb_std=13.0):
    """The two kernels' features, one row per pixel in row-major order: (N, 2) and (N, 5) float32.

    Smoothness: (x, y) / pos_xy_std. Appearance: (x, y) / bi_xy_std and (r, g, b) / bi_rgb_std,
    with x the column and y the row, as pydensecrf's DenseCRF2D builds them.
    """
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    position = np.stack([x.ravel(), y.ravel()], axis=1)
    colour = image.reshape(-1, 3).astype(np.float32)
    smoothness = position / np.float32(pos_xy_std)
    appearance = np.concatenate([position / np.float32(bi_xy_std), colour / np.float32(bi_rgb_std)], axis=1)
    return smoothness, appearance


# --------------------------------------------------------------------------------------------------
# Filtering: out_i = sum_j exp(-|f_i - f_j|² / 2) v_j
# --------------------------------------------------------------------------------------------------


class ExactGaussianFilter:
    """The definition: the N × N Gaussian kernel matrix of ``features`` (N, d), applied as a product."""

    def __init__(self, features):
        f = np.asarray(features, np.float64)
        sq = (f * f).sum(axis=1)
        m = f @ f.T  # becomes -|f_i - f_j|² / 2 = f_i·f_j - |f_i|²/2 - |f_j|²/2, then its exp, in place
        m -= 0.5 * sq[:, None]
        m -= 0.5 * sq[None, :]
        np.minimum(m, 0, out=m)
        self.matrix = np.exp(m, out=m)

    def __call__(self, values):
        return self.matrix @ values


class PermutohedralLattice:
    """Gaussian filtering of ``features`` (N, d) in O(N·d) per call, as pydensecrf's ``Permutohedral``.

    Built once per image and kernel; each call filters values (N, C). Uses the Numba kernels
    of minidl/kernels/cpu/crf.py unless ``minidl.kernels.disabled()``, and otherwise the NumPy
    below, which is the same computation step by step.
    """

    def __init__(self, features):
        features = np.ascontiguousarray(features, np.float32)
        self.compiled = kernels.for_array(features, "crf")
        build = self.compiled.build if self.compiled is not None else _lattice_build
        self.offsets, self.weights, self.neighbours = build(features)

    @property
    def num_vertices(self):
        return self.neighbours.shape[1]

    def __call__(self, values):
        filter = self.compiled.filter if self.compiled is not None else _lattice_filter
        return filter(np.asarray(values, np.float32), self.offsets, self.weights, self.neighbours)

    def add_filtered(self, out, values, pre, post):
        """``out += post * self(pre * values)`` in place (out, values (N, C) float32; pre, post (N, 1))."""
        if self.compiled is None:
            out += post * self(pre * values)
        else:
            self.compiled.add_filtered(out, values, pre.ravel(), post.ravel(), self.offsets, self.weights,
                                       self.neighbours)


def _lattice_build(features):
    """The lattice of ``features`` (N, d), in whole-array NumPy.

    Returns, with vertices numbered from 1 (0 = no vertex): offsets (N, d + 1), the vertices of
    the simplex around each point; weights (N, d + 1), the point's barycentric coordinates in it;
    neighbours (d + 1, M, 2), each vertex's neighbours one step back and forward along each axis.
    """
    n, d = features.shape
    d1 = d + 1
    # Elevate each point onto the hyperplane sum(y) = 0 of R^(d+1), scaled so that one lattice step
    # is about one standard deviation (y = E f, pp. 5-6 of Adams et al. 2010).
    i = np.arange(d)
    scale = (np.sqrt(2.0 / 3.0) * d1 / np.sqrt((i + 2.0) * (i + 1.0))).astype(np.float32)
    cf = features * scale  # (N, d)
    tail = np.concatenate([np.cumsum(cf[:, ::-1], axis=1)[:, ::-1], np.zeros((n, 1), np.float32)], axis=1)
    elevated = tail.copy()  # y_0 = sum_k cf_k;  y_j = sum_{k >= j} cf_k - j cf_(j-1)
    elevated[:, 1:] -= np.arange(1, d1, dtype=np.float32) * cf
    # The nearest 0-coloured lattice point (coordinates that are multiples of d + 1) ...
    nearest = np.rint(elevated / np.float32(d1))
    rem0 = nearest * np.float32(d1)
    total = nearest.sum(axis=1).astype(np.int64)
    # ... and the simplex: rank the coordinates' remainders (ties: the earlier coordinate ranks lower)
    rest = elevated - rem0
    later = np.triu(np.ones((d1, d1), bool), 1)  # later[i, j]: j > i
    above = rest[:, None, :] > rest[:, :, None]  # above[n, i, j]: rest_j > rest_i
    rank = (above & later).sum(axis=2) + (~above.transpose(0, 2, 1) & later.T).sum(axis=2)
    rank = rank + total[:, None]  # rounding may leave the point off the plane: bring it back
    rem0 = rem0 + d1 * ((rank < 0).astype(np.float32) - (rank > d))
    rank = np.where(rank < 0, rank + d1, np.where(rank > d, rank - d1, rank))
    # Barycentric coordinates (p. 10 of Adams et al.): the ranks are a permutation of 0 .. d
    v = (elevated - rem0) / np.float32(d1)
    bary = np.zeros((n, d1 + 1), np.float32)
    np.put_along_axis(bary, d - rank, v, axis=1)
    lower = np.zeros((n, d1 + 1), np.float32)
    np.put_along_axis(lower, d - rank + 1, v, axis=1)
    bary -= lower
    bary[:, 0] += 1 + bary[:, d1]
    # The simplex's vertices: vertex r is rem0 + canonical[r, rank], in the first d coordinates
    r = np.arange(d1)
    canonical = np.where(r[None, :] <= d - r[:, None], r[:, None], r[:, None] - d1)
    keys = rem0[:, None, :d].astype(np.int64) + canonical[r[None, :, None], rank[:, None, :d]]  # (N, d+1, d)
    vertices, inverse = np.unique(keys.reshape(-1, d), axis=0, return_inverse=True)
    offsets = (inverse.reshape(n, d1) + 1).astype(np.int32)
    # Neighbours along axis j: +-d in coordinate j and -+1 in the others (axis d: -+1 in all)
    m = len(vertices)
    step = -np.ones((d1, d), np.int64)
    step[np.arange(d), np.arange(d)] = d
    candidates = np.concatenate([vertices[None] + step[:, None], vertices[None] - step[:, None]])  # (2(d+1), M, d)
    both, where = np.unique(np.concatenate([vertices, candidates.reshape(-1, d)]), axis=0, return_inverse=True)
    number = np.zeros(len(both), np.int64)
    number[where[:m]] = np.arange(1, m + 1)
    found = number[where[m:]]  # the vertex number, from 1, of each candidate; 0 = not a vertex
    neighbours = found.reshape(2, d1, m).transpose(1, 2, 0).astype(np.int32)
    return offsets, bary[:, :d1], neighbours


def _lattice_filter(values, offsets, weights, neighbours):
    """Splat ``values`` (N, C) onto the lattice, blur along each axis with (½, 1, ½), slice back."""
    n, c = values.shape
    d1, m = neighbours.shape[:2]
    flat = offsets.ravel()
    buf = np.stack(
        [np.bincount(flat, (weights * values[:, k : k + 1]).ravel(), minlength=m + 1) for k in range(c)], axis=1
    ).astype(np.float32)
    buf[0] = 0
    for j in range(d1):
        blurred = buf.copy()
        blurred[1:] += np.float32(0.5) * (buf[neighbours[j, :, 0]] + buf[neighbours[j, :, 1]])
        buf = blurred
    alpha = np.float32(1 / (1 + 2.0 ** -(d1 - 1)))
    return np.einsum("nr,nrc->nc", weights * alpha, buf[offsets]).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Mean-field inference
# --------------------------------------------------------------------------------------------------


class NormalisedKernel:
    """One pairwise term's message passing: m = D^(-1/2) K D^(-1/2) Q with D = diag(K 1).

    ``filter`` computes K·v (exact or lattice) for v of shape (N, C). pydensecrf's
    NORMALIZE_SYMMETRIC, including its 1e-20 guard.
    """

    def __init__(self, filter, num_pixels):
        self.filter = filter
        self.norm = 1 / np.sqrt(filter(np.ones((num_pixels, 1), np.float32)) + 1e-20)  # (N, 1)

    def __call__(self, q):
        return self.norm * self.filter(self.norm * q)

    def add_to(self, energy, q, weight):
        """``energy += weight * self(q)`` in place; fused into one kernel call on the compiled lattice."""
        if isinstance(self.filter, PermutohedralLattice) and energy.dtype == np.float32 and energy.flags.c_contiguous:
            self.filter.add_filtered(energy, q, self.norm, np.float32(weight) * self.norm)
        else:
            energy += weight * self(q)


def _softmax_rows(x):
    """Softmax of each row of x (N, C), in place when x is a writable float32 array."""
    compiled = kernels.for_array(x, "crf")
    if compiled is not None and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable:
        return compiled.softmax_rows(x)
    x = x - x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


def mean_field(unary, pairwise, iterations):
    """Mean-field inference: Q = softmax(-U), then ``iterations`` times Q = softmax(-U + sum w · m(Q)).

    unary (N, C) energies; pairwise a list of (Potts weight w, NormalisedKernel m). Returns Q (N, C),
    in float32, or float64 where a kernel's normalisation is (the exact filter's).
    """
    dtype = np.result_type(unary, *(kernel.norm for _, kernel in pairwise))
    q = _softmax_rows(np.ascontiguousarray(-unary, dtype))
    for _ in range(iterations):
        energy = np.ascontiguousarray(-unary, dtype)
        for weight, kernel in pairwise:
            kernel.add_to(energy, q, weight)
        q = _softmax_rows(energy)
    return q


def _dense_crf(image, probs, iterations, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w, make_filter):
    c, h, w = probs.shape
    if c == 0 or h * w == 0:
        return probs.astype(np.float32)
    unary = -np.log(np.clip(probs.reshape(c, -1).T, PROB_FLOOR, 1)).astype(np.float32)  # (N, C)
    smoothness, appearance = crf_features(image, pos_xy_std, bi_xy_std, bi_rgb_std)
    n = h * w
    pairwise = [
        (pos_w, NormalisedKernel(make_filter(smoothness), n)),
        (bi_w, NormalisedKernel(make_filter(appearance), n)),
    ]
    q = mean_field(unary, pairwise, iterations)
    return np.ascontiguousarray(q.T.reshape(c, h, w), dtype=np.float32)


def dense_crf(image, probs, iterations=10, pos_xy_std=3.0, pos_w=3.0, bi_xy_std=80.0, bi_rgb_std=13.0, bi_w=10.0):
    """Refine softmax probabilities with the fully connected CRF: (C, H, W) float32.

    image: (H, W, 3) uint8 RGB. probs: (C, H, W) softmax probabilities (NumPy, CuPy or a minidl
    Tensor; the CRF runs on the CPU). The module docstring explains every parameter. The defaults
    (bi_w = 10, bi_xy_std = 80, bi_rgb_std = 13, pos_w = 3, pos_xy_std = 3) are the example values of
    Krähenbühl's code and pydensecrf, not DeepLab v2's: v2 fixes the smoothness kernel (pos_w = w₂ = 3,
    pos_xy_std = θγ = 3) and picks the appearance kernel by cross-validation on part of the validation
    set (bi_w = w₁ in [3, 6], bi_xy_std = θα in [30, 100], bi_rgb_std = θβ in [3, 6]); the settings
    released with its ResNet-101 model are bi_w = 4, bi_xy_std = 67, bi_rgb_std = 3, pos_xy_std = 1.
    The filtering runs on the permutohedral lattice, O(H·W) per iteration, as pydensecrf's does, and
    gives its result to float32 rounding (|ΔQ| ~1e-5) in about the same time.
    """
    image, probs = _check(image, probs, iterations, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w)
    return _dense_crf(image, probs, iterations, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w,
                      PermutohedralLattice)


def compile_kernels():
    """Run the CRF once on a tiny image, so that Numba compiles its kernels into its on-disk cache.

    ``minidl run`` calls this in a second process while its first training step compiles on one core: the
    evaluation at the end then loads the CRF's kernels instead of compiling them (5.5 s on a fresh clone).
    """
    dense_crf(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32))


def dense_crf_exact(image, probs, iterations=10, pos_xy_std=3.0, pos_w=3.0, bi_xy_std=80.0, bi_rgb_std=13.0,
                    bi_w=10.0):
    """``dense_crf`` by the definition: exact Gaussian kernels as N × N matrices, float64 messages.

    O(N²) time and memory, so only for images of at most MAX_EXACT_PIXELS pixels.
    """
    image, probs = _check(image, probs, iterations, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w)
    n = image.shape[0] * image.shape[1]
    if n > MAX_EXACT_PIXELS:
        raise ValueError(
            f"dense_crf_exact builds an N x N kernel matrix, for at most {MAX_EXACT_PIXELS} pixels; "
            f"image {tuple(image.shape)} has {n}: use dense_crf"
        )
    return _dense_crf(image, probs, iterations, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w,
                      ExactGaussianFilter)


def dense_crf_reference(image, probs, iterations=10, pos_xy_std=3.0, pos_w=3.0, bi_xy_std=80.0, bi_rgb_std=13.0,
                        bi_w=10.0):
    """The same CRF run by pydensecrf (Krähenbühl's C++ code), the reference ``dense_crf`` is checked against."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as e:
        raise ImportError(
            "dense_crf_reference needs pydensecrf: `pip install pydensecrf2` (its module is pydensecrf)"
        ) from e
    image, probs = _check(image, probs, iterations, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w)
    c, h, w = probs.shape
    if c == 0 or h * w == 0:
        return probs.astype(np.float32)
    unary = np.ascontiguousarray(-np.log(np.clip(probs.reshape(c, -1), PROB_FLOOR, 1)), dtype=np.float32)
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    crf.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=np.array(image, np.uint8, order="C"),
                             compat=bi_w)
    q = np.array(crf.inference(iterations), dtype=np.float32)
    return q.reshape(c, h, w)


def _check(image, probs, iterations, pos_xy_std, pos_w, bi_xy_std, bi_rgb_std, bi_w):
    stds = {"pos_xy_std": pos_xy_std, "bi_xy_std": bi_xy_std, "bi_rgb_std": bi_rgb_std}
    return _check_inputs(image, probs, iterations, stds, {"pos_w": pos_w, "bi_w": bi_w})
