"""The fully connected CRF: the O(N²) definition, the permutohedral lattice (NumPy and Numba), pydensecrf.

Probabilities on real photos are made the way a DeepLab network's look: "ground truth" labels
from a k-means clustering of the photo's colours (4 classes), their one-hot scores averaged over
8 × 8 blocks (output stride 8), plus Gaussian noise, bilinearly upsampled to the image and
softmaxed. So they are right in the middle of regions, blurred and wrong near boundaries.
"""
import subprocess
import sys

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

import minidl
from minidl import crf, kernels


def grace_hopper(width, height):
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
        return np.array(image.convert("RGB").resize((width, height), Image.BILINEAR))


def kmeans_labels(image, k=4, steps=8):
    """Labels from Lloyd's k-means on the pixel colours, started at brightness quantiles (deterministic)."""
    x = image.reshape(-1, 3).astype(np.float64)
    order = np.argsort(x.sum(axis=1), kind="stable")
    centres = x[order[(np.linspace(0.1, 0.9, k) * (len(x) - 1)).astype(int)]]
    for _ in range(steps):
        labels = ((x[:, None] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        centres = np.stack([x[labels == j].mean(axis=0) if (labels == j).any() else centres[j] for j in range(k)])
    return labels.reshape(image.shape[:2])


def coarse_probabilities(labels, num_classes, seed=0, factor=8, gain=4.0, noise=1.0):
    """Softmax of (gain · one-hot labels) averaged over factor × factor blocks, plus noise, upsampled."""
    h, w = labels.shape
    bh, bw = -(-h // factor), -(-w // factor)
    scores = np.zeros((num_classes, bh * factor, bw * factor), np.float32)
    scores[:, :h, :w] = gain * (labels[None] == np.arange(num_classes)[:, None, None])
    coarse = scores.reshape(num_classes, bh, factor, bw, factor).mean(axis=(2, 4))
    coarse += noise * np.random.default_rng(seed).standard_normal(coarse.shape).astype(np.float32)
    logits = np.stack([np.asarray(Image.fromarray(c).resize((bw * factor, bh * factor), Image.BILINEAR))
                       for c in coarse])[:, :h, :w]
    p = np.exp(logits - logits.max(axis=0))
    return (p / p.sum(axis=0)).astype(np.float32)


def photo_case(width, height, factor=8, seed=0):
    image = grace_hopper(width, height)
    labels = kmeans_labels(image)
    return image, labels, coarse_probabilities(labels, 4, seed=seed, factor=factor)


class MatrixFilter:
    """K·v with a given matrix K."""

    def __init__(self, matrix):
        self.matrix = matrix

    def __call__(self, values):
        return (self.matrix @ values).astype(np.float32)


def run_mean_field(image, probs, make_filter, iterations=10):
    """dense_crf's inference assembled from the public pieces, with any filter."""
    c, h, w = probs.shape
    smoothness, appearance = crf.crf_features(image)
    unary = -np.log(np.clip(probs.reshape(c, -1).T, crf.PROB_FLOOR, 1)).astype(np.float32)
    pairwise = [(3.0, crf.NormalisedKernel(make_filter(smoothness), h * w)),
                (10.0, crf.NormalisedKernel(make_filter(appearance), h * w))]
    return crf.mean_field(unary, pairwise, iterations).T.reshape(c, h, w)


# --------------------------------------------------------------------------------------------------
# pydensecrf's conventions
# --------------------------------------------------------------------------------------------------


def test_pydensecrf_keeps_the_pixel_itself_in_its_messages():
    """One pixel: with no other pixel to hear from, a sum over j != i would leave Q = p. pydensecrf does not.

    Its kernel is normalised by its own sum, so the pixel's message is its own Q, and each
    iteration is Q = softmax(log p + (pos_w + bi_w) · Q). So is ours.
    """
    pytest.importorskip("pydensecrf")
    image = np.array([[[200, 30, 60]]], np.uint8)
    probs = np.array([0.6, 0.4], np.float32).reshape(2, 1, 1)
    q = probs.ravel()
    for _ in range(2):
        q = np.exp(np.log(probs.ravel()) + (3.0 + 10.0) * q)
        q /= q.sum()
    reference = crf.dense_crf_reference(image, probs, iterations=2)
    np.testing.assert_allclose(reference.ravel(), q, rtol=1e-5)
    np.testing.assert_allclose(crf.dense_crf(image, probs, iterations=2).ravel(), q, rtol=1e-5)
    np.testing.assert_allclose(crf.dense_crf_exact(image, probs, iterations=2).ravel(), q, rtol=1e-5)


def test_mean_field_reproduces_pydensecrf_given_the_lattice_kernel_as_a_matrix():
    """Our unary, symmetric normalisation, Potts sign and update, fed the lattice's own N × N matrix
    (the lattice is linear: column j is the filtered unit vector e_j), give pydensecrf's output to
    float32 rounding. So the only difference between the exact definition and pydensecrf is the
    kernel: exp(-|f_i - f_j|² / 2) exactly, or the lattice's approximation of it."""
    pytest.importorskip("pydensecrf")
    image, _, probs = photo_case(12, 10, factor=4)
    n = image.shape[0] * image.shape[1]
    ours = run_mean_field(image, probs, lambda f: MatrixFilter(crf.PermutohedralLattice(f)(np.eye(n))))
    np.testing.assert_allclose(ours, crf.dense_crf_reference(image, probs), atol=2e-5)


# --------------------------------------------------------------------------------------------------
# The lattice: Numba kernel vs NumPy twin, and vs the exact Gaussian
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5])
def test_lattice_kernel_matches_numpy_twin(d):
    rng = np.random.default_rng(d)
    features = (rng.standard_normal((500, d)) * 3).astype(np.float32)
    features[250:300] = features[:50]  # repeated points share their simplex
    values = rng.random((500, 3)).astype(np.float32)
    fast = crf.PermutohedralLattice(features)
    with kernels.disabled():
        readable = crf.PermutohedralLattice(features)
    assert fast.compiled is not None and readable.compiled is None
    assert fast.num_vertices == readable.num_vertices
    expected = readable(values)
    np.testing.assert_allclose(fast(values), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # The fused form a mean-field step uses: out += post * K (pre * values)
    pre, post = rng.random((2, 500, 1)).astype(np.float32)
    start = rng.random((500, 3)).astype(np.float32)
    fused, unfused = start.copy(), start.copy()
    fast.add_filtered(fused, values, pre, post)
    readable.add_filtered(unfused, values, pre, post)
    np.testing.assert_allclose(fused, start + post * readable(pre * values), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(unfused, start + post * readable(pre * values), rtol=1e-6)


def test_lattice_kernel_matches_numpy_twin_on_a_photo():
    smoothness, appearance = crf.crf_features(grace_hopper(40, 32))
    values = np.random.default_rng(0).random((len(appearance), 4)).astype(np.float32)
    for features in smoothness, appearance:
        with kernels.disabled():
            expected = crf.PermutohedralLattice(features)(values)
        np.testing.assert_allclose(crf.PermutohedralLattice(features)(values), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size", [(12, 10), (40, 32)])
@pytest.mark.parametrize("compiled", [True, False])
def test_lattice_messages_approximate_the_exact_gaussian(size, compiled):
    """The normalised messages D^(-1/2) K D^(-1/2) Q from the lattice vs from the exact kernel matrix.

    The lattice samples the features at about one lattice step per standard deviation and blurs
    with three taps per axis, so it is close to, not equal to, the Gaussian: measured relative
    errors are 1.4% (smoothness, 2-D) and 6.5% (appearance, 5-D, where the image's colours
    leave most of the lattice empty) at 12 × 10, 1.0% and 3.4% at 40 × 32. The bounds leave a
    margin over those, and are far below the error of a wrong width (kernel exp(-0.8 |Δf|²) or
    exp(-0.6 |Δf|²): 10% and 20% on the smoothness kernel).
    """
    smoothness, appearance = crf.crf_features(grace_hopper(*size))
    q = np.random.default_rng(1).dirichlet(np.ones(4), len(smoothness)).astype(np.float32)
    for features, bound in (smoothness, 0.025), (appearance, 0.09):
        exact = crf.NormalisedKernel(crf.ExactGaussianFilter(features), len(features))(q)
        if compiled:
            lattice = crf.PermutohedralLattice(features)
        else:
            with kernels.disabled():
                lattice = crf.PermutohedralLattice(features)
        approximate = crf.NormalisedKernel(lattice, len(features))(q)
        assert np.linalg.norm(approximate - exact) / np.linalg.norm(exact) < bound


# --------------------------------------------------------------------------------------------------
# Whole CRF: exact definition and our lattice vs pydensecrf
# --------------------------------------------------------------------------------------------------


def test_exact_definition_agrees_with_pydensecrf_on_a_tiny_photo():
    """12 × 10 pixels, where pydensecrf's lattice approximation is at its coarsest (see above).

    One iteration, Q = softmax(log p + sum w · m), shows the approximation directly: pydensecrf's
    appearance messages m differ from the exact ones by ~6.5% (up to ~0.1 at a pixel), and bi_w = 10
    turns that into up to ~1 nat of energy, which moves a probability by at most ~1/4 (the slope of
    the logistic function). Measured over 15 probability maps: mean |ΔQ| 0.005-0.009, max 0.09-0.17;
    the bounds are 0.015 and 0.25. Ten iterations compound this: mean field moves towards one of
    several fixed points, and where p is near a tie the two kernels can pick different ones, so we
    compare labels: 0 to 11 of 120 differed (3 on average) over the same 15 maps; the bound is 90%.
    """
    pytest.importorskip("pydensecrf")
    image = grace_hopper(12, 10)
    labels = kmeans_labels(image)
    for seed in range(3):
        probs = coarse_probabilities(labels, 4, seed=seed, factor=4, noise=1.5)
        one_step = np.abs(crf.dense_crf_exact(image, probs, 1) - crf.dense_crf_reference(image, probs, 1))
        assert one_step.mean() < 0.015 and one_step.max() < 0.25
        exact, reference = crf.dense_crf_exact(image, probs), crf.dense_crf_reference(image, probs)
        assert (exact.argmax(0) == reference.argmax(0)).mean() >= 0.9


def test_dense_crf_matches_pydensecrf_on_a_photo():
    """Same lattice, same arithmetic: the same labels (target ≥ 97%; all of them in fact) and Q to 1e-4."""
    pytest.importorskip("pydensecrf")
    image, labels, probs = photo_case(120, 100)
    ours, reference = crf.dense_crf(image, probs), crf.dense_crf_reference(image, probs)
    assert ours.shape == probs.shape and ours.dtype == np.float32
    assert (ours.argmax(0) == reference.argmax(0)).mean() >= 0.97
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    assert (reference.argmax(0) != probs.argmax(0)).mean() > 0.02  # the CRF did change labels here
    # The readable NumPy path, on a smaller image
    image, labels, probs = photo_case(48, 40)
    with kernels.disabled():
        ours = crf.dense_crf(image, probs)
    reference = crf.dense_crf_reference(image, probs)
    assert (ours.argmax(0) == reference.argmax(0)).mean() >= 0.97
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_crf_sharpens_a_blurred_noisy_segmentation():
    """Three flat colours with sharp edges (plus a little pixel noise); probabilities from 8 × 8 blocks
    and noise, so boundaries are smeared over ~8 pixels. The colour edges pull them back into place."""
    h, w = 48, 64
    y, x = np.mgrid[0:h, 0:w]
    labels = np.zeros((h, w), np.int64)
    labels[(y - 24) ** 2 + (x - 20) ** 2 < 13 ** 2] = 1
    labels[(y > 10) & (y < 38) & (x > 38) & (x < 58)] = 2
    colours = np.array([[90, 110, 140], [210, 50, 40], [40, 170, 60]], np.float64)
    noise = np.random.default_rng(0).normal(0, 8, (h, w, 3))
    image = np.clip(colours[labels] + noise, 0, 255).astype(np.uint8)
    probs = coarse_probabilities(labels, 3, seed=1, factor=8, gain=4.0, noise=0.7)
    before = (probs.argmax(0) == labels).mean()
    after = (crf.dense_crf(image, probs).argmax(0) == labels).mean()
    assert before < 0.95 and after > before + 0.03


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def test_tensor_input_and_zero_iterations():
    image, _, probs = photo_case(16, 12, factor=4)
    out = crf.dense_crf(image, minidl.tensor(probs), iterations=3)
    np.testing.assert_allclose(out, crf.dense_crf(image, probs, iterations=3))
    clipped = np.clip(probs, crf.PROB_FLOOR, 1)
    np.testing.assert_allclose(crf.dense_crf(image, probs, iterations=0), clipped / clipped.sum(0), atol=1e-6)


@pytest.mark.parametrize("function", [crf.dense_crf, crf.dense_crf_exact])
def test_bad_inputs(function):
    image = np.zeros((6, 5, 3), np.uint8)
    probs = np.full((2, 6, 5), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"image must be an \(H, W, 3\) uint8 RGB array; got shape \(6, 5, 3\) and dtype "
                                         r"float32"):
        function(image.astype(np.float32), probs)
    with pytest.raises(ValueError, match=r"image must be .* got shape \(6, 5\)"):
        function(image[..., 0], probs)
    with pytest.raises(ValueError, match=r"probs must be \(C, H, W\) = \(C, 6, 5\) to match image of shape "
                                         r"\(6, 5, 3\); got shape \(2, 5, 6\)"):
        function(image, probs.transpose(0, 2, 1))
    with pytest.raises(ValueError, match=r"probs must be \(C, H, W\)"):
        function(image, probs[0])
    with pytest.raises(ValueError, match="floating-point softmax probabilities; got dtype int64"):
        function(image, np.ones((1, 6, 5), np.int64))
    with pytest.raises(ValueError, match="not logits"):
        function(image, np.stack([probs[0] * 4, probs[1] * -2]))  # logits
    with pytest.raises(ValueError, match="must sum to 1 over the class axis 0"):
        function(image, probs * 0.9)
    with pytest.raises(ValueError, match="iterations must be a non-negative integer; got -1"):
        function(image, probs, iterations=-1)
    with pytest.raises(ValueError, match="bi_rgb_std must be a positive standard deviation; got 0"):
        function(image, probs, bi_rgb_std=0)
    with pytest.raises(ValueError, match="pos_w must be a finite kernel weight; got nan"):
        function(image, probs, pos_w=float("nan"))


def test_exact_refuses_large_images():
    image = np.zeros((70, 70, 3), np.uint8)
    with pytest.raises(ValueError, match=r"at most 4096 pixels; image \(70, 70, 3\) has 4900: use dense_crf"):
        crf.dense_crf_exact(image, np.ones((1, 70, 70), np.float32))


def test_reference_without_pydensecrf(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        crf.dense_crf_reference(np.zeros((2, 2, 3), np.uint8), np.ones((1, 2, 2), np.float32))


_SIGNATURES_AFTER = """
import sys, numba, numpy as np
from minidl import crf
from minidl.kernels.cpu import crf as crf_kernels
from minidl.train import crf_options_for
if sys.argv[1] == "compile_kernels":
    crf.compile_kernels()
else:  # as the evaluation calls it: a float32 score map, a uint8 image, crf_options_for's options
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), (23, 19)).transpose(2, 0, 1).astype(np.float32)
    crf.dense_crf(rng.integers(0, 256, (23, 19, 3), dtype=np.uint8), probs, **crf_options_for(23, 19))
print(sorted((name, str(sorted(map(str, f.signatures)))) for name, f in vars(crf_kernels).items()
             if isinstance(f, numba.core.registry.CPUDispatcher) and f.signatures))
"""


def test_compile_kernels_compiles_every_signature_the_evaluation_uses():
    """``minidl run`` compiles the CRF's kernels in a second process with ``crf.compile_kernels``; that only saves
    time if its tiny call gives Numba the signatures of the evaluation's calls, so that the evaluation finds all of
    them in the cache. Each in a fresh process, where nothing else has compiled them."""
    def signatures(call):
        done = subprocess.run([sys.executable, "-c", _SIGNATURES_AFTER, call], capture_output=True, text=True,
                              check=True)
        return done.stdout.strip().splitlines()[-1]

    compiled = signatures("compile_kernels")
    assert compiled == signatures("evaluation")
    for kernel in ("_splat_positions", "_neighbours", "_filter", "_softmax_rows"):  # the rest compile into these
        assert f"'{kernel}'" in compiled
