"""Training and evaluation transforms as in the DeepLab papers, on (image, label) NumPy pairs.

Every transform is a small callable ``t(image, label, rng=None) -> (image, label)``:

- ``image`` is float32 ``(3, H, W)`` (values in [0, 1] before ``Normalize``), the layout the models take;
- ``label`` is int64 ``(H, W)`` class indices, with ``IGNORE_INDEX`` (255) where no class is given;
- ``rng`` is a ``numpy.random.Generator``. Random transforms draw from it and nothing else, so the same
  generator state gives the same augmentation: the ``DataLoader`` hands each item its own generator
  derived from ``(seed, epoch, index)``, which makes augmentation reproducible and resumable. Called
  without one, a random transform draws from fresh OS entropy (not reproducible).

The DeepLab training pipeline (v2: scales 0.5–1.5; v3/v3+: 0.5–2.0, crop 513 on VOC, flips)::

    Compose([RandomScale(0.5, 2.0), PadToSize(513), RandomCrop(513), RandomHorizontalFlip(),
             Normalize()])

``train_transform`` and ``eval_transform`` build it. Padding happens before normalisation and fills the
image with the normalisation mean, so padded pixels are zero afterwards (as the papers' code does), and
the label with the ignore index, so padded pixels never count in the loss or the metrics.

Transforms never modify their inputs in place; they return new arrays (or the inputs unchanged).
"""
import numbers

import numpy as np

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Compose",
    "RandomScale",
    "Resize",
    "PadToSize",
    "RandomCrop",
    "CenterCrop",
    "RandomHorizontalFlip",
    "Normalize",
    "ToArrays",
    "train_transform",
    "eval_transform",
    "resize_bilinear",
    "resize_nearest",
    "check_pair",
]


# --------------------------------------------------------------------------- helpers


def check_pair(image, label, where="transform"):
    """Raise a clear error unless ``image`` is (3, H, W) and ``label`` is (H, W) with the same H, W."""
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 3 or not 1 <= image.shape[0] <= 4:
        raise ValueError(
            f"{where}: image must be a (3, H, W) array (channels first), got shape {image.shape}"
        )
    if label.ndim != 2:
        raise ValueError(f"{where}: label must be an (H, W) array of class ids, got shape {label.shape}")
    if image.shape[1:] != label.shape:
        raise ValueError(
            f"{where}: image {image.shape[1:]} and label {label.shape} differ in size (H, W)"
        )
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{where}: label must hold integer class ids, got dtype {label.dtype}")
    return image, label


def _size_pair(size, name):
    if isinstance(size, numbers.Integral):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be a positive int or an (height, width) pair, got {size!r}")
    return size


def _rng(rng):
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    return rng


def _source_coords(out_size, in_size):
    """Source coordinates of output pixel centres (half-pixel convention, PyTorch align_corners=False)."""
    scale = in_size / out_size
    return (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5


def resize_bilinear(image, size):
    """Bilinear resize of a (C, H, W) array to ``size`` = (h, w), as ``F.interpolate(mode='bilinear',
    align_corners=False)`` without antialiasing. Returns float32."""
    image = np.asarray(image, dtype=np.float32)
    h, w = size
    H, W = image.shape[-2:]
    if (h, w) == (H, W):
        return image.copy()
    out = image
    if h != H:
        y = np.clip(_source_coords(h, H), 0, H - 1)
        y0 = np.floor(y).astype(np.intp)
        y1 = np.minimum(y0 + 1, H - 1)
        wy = (y - y0).astype(np.float32)[:, None]
        out = out[..., y0, :] * (1 - wy) + out[..., y1, :] * wy
    if w != W:
        x = np.clip(_source_coords(w, W), 0, W - 1)
        x0 = np.floor(x).astype(np.intp)
        x1 = np.minimum(x0 + 1, W - 1)
        wx = (x - x0).astype(np.float32)
        out = out[..., x0] * (1 - wx) + out[..., x1] * wx
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_nearest(label, size):
    """Nearest-neighbour resize of an (H, W) label map (pixel-centre convention, as PIL's NEAREST and
    PyTorch's 'nearest-exact'). Values, the ignore index included, are copied, never mixed."""
    label = np.asarray(label)
    h, w = size
    H, W = label.shape[-2:]
    ys = np.minimum(np.floor((np.arange(h) + 0.5) * (H / h)).astype(np.intp), H - 1)
    xs = np.minimum(np.floor((np.arange(w) + 0.5) * (W / w)).astype(np.intp), W - 1)
    return np.ascontiguousarray(label[..., ys[:, None], xs[None, :]])


# --------------------------------------------------------------------------- transforms


class TransformedItems:
    """What a data set shares: ``load(index)`` gives the raw item, ``get``/``[]`` pass it through ``transform``."""

    def get(self, index, rng=None):
        """Item ``index`` with ``transform`` applied using ``rng`` (what the ``DataLoader`` calls)."""
        image, label = self.load(index)
        if self.transform is not None:
            image, label = self.transform(image, label, rng if rng is not None else np.random.default_rng())
        return image, label

    def __getitem__(self, index):
        return self.get(index)


class Compose:
    """Apply transforms in order, passing the same generator to each (so one seed fixes them all)."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")

    def __call__(self, image, label, rng=None):
        if rng is None and any(getattr(t, "random", True) for t in self.transforms):
            rng = np.random.default_rng()
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label

    def __repr__(self):
        inner = ",\n    ".join(repr(t) for t in self.transforms)
        return f"Compose([\n    {inner}\n])"


class RandomScale:
    """Rescale by a factor drawn uniformly from [min_scale, max_scale] (or from the grid
    min_scale, min_scale + step, ..., max_scale when ``step`` is given, as DeepLab's TF code does).
    The image is resampled bilinearly, the label by nearest neighbour, to the same rounded size."""

    random = True

    def __init__(self, min_scale=0.5, max_scale=2.0, step=None):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"RandomScale needs 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        if step is not None and step <= 0:
            raise ValueError(f"RandomScale: step must be positive, got {step}")
        self.min_scale, self.max_scale, self.step = float(min_scale), float(max_scale), step

    def sample(self, rng):
        if self.step is None:
            return float(rng.uniform(self.min_scale, self.max_scale))
        count = int(np.floor((self.max_scale - self.min_scale) / self.step + 1e-9)) + 1
        return self.min_scale + self.step * int(rng.integers(count))

    def __call__(self, image, label, rng=None):
        image, label = check_pair(image, label, "RandomScale")
        scale = self.sample(_rng(rng))
        H, W = label.shape
        size = (max(1, int(round(H * scale))), max(1, int(round(W * scale))))
        return resize_bilinear(image, size), resize_nearest(label, size)

    def __repr__(self):
        step = "" if self.step is None else f", step={self.step}"
        return f"RandomScale({self.min_scale}, {self.max_scale}{step})"


class Resize:
    """Resize to a fixed (height, width): image bilinear, label nearest."""

    random = False

    def __init__(self, size):
        self.size = _size_pair(size, "Resize size")

    def __call__(self, image, label, rng=None):
        image, label = check_pair(image, label, "Resize")
        return resize_bilinear(image, self.size), resize_nearest(label, self.size)

    def __repr__(self):
        return f"Resize({self.size})"


class PadToSize:
    """Pad on the bottom and right up to at least ``size`` (int or (h, w)); larger sides are kept.

    The image is filled with ``image_fill`` (per-channel values, default the ImageNet mean, so that
    after ``Normalize`` with the same mean the pad is zero), the label with ``label_fill`` (the ignore
    index), so padded pixels never count.
    """

    random = False

    def __init__(self, size, image_fill=IMAGENET_MEAN, label_fill=IGNORE_INDEX):
        self.size = _size_pair(size, "PadToSize size")
        self.image_fill = np.asarray(image_fill, dtype=np.float32).reshape(-1)
        if self.image_fill.size not in (1, 3):
            raise ValueError(f"PadToSize: image_fill must be a number or 3 values, got {image_fill!r}")
        self.label_fill = int(label_fill)

    def __call__(self, image, label, rng=None):
        image, label = check_pair(image, label, "PadToSize")
        H, W = label.shape
        h, w = max(H, self.size[0]), max(W, self.size[1])
        if (h, w) == (H, W):
            return image, label
        if self.image_fill.size not in (1, image.shape[0]):
            raise ValueError(
                f"PadToSize: image_fill has {self.image_fill.size} values but the image {image.shape[0]} channels"
            )
        fill = np.broadcast_to(self.image_fill, (image.shape[0],)).astype(np.float32)
        out_image = np.empty((image.shape[0], h, w), dtype=np.float32)
        out_image[...] = fill[:, None, None]
        out_image[:, :H, :W] = image
        out_label = np.full((h, w), self.label_fill, dtype=label.dtype)
        out_label[:H, :W] = label
        return out_image, out_label

    def __repr__(self):
        return f"PadToSize({self.size}, image_fill={self.image_fill.tolist()}, label_fill={self.label_fill})"


class RandomCrop:
    """Crop a ``size`` window at a uniformly random position. The input must be at least that large
    (put ``PadToSize(size)`` before it)."""

    random = True

    def __init__(self, size):
        self.size = _size_pair(size, "RandomCrop size")

    def __call__(self, image, label, rng=None):
        image, label = check_pair(image, label, "RandomCrop")
        H, W = label.shape
        h, w = self.size
        if H < h or W < w:
            raise ValueError(
                f"RandomCrop: input {H}x{W} is smaller than the crop {h}x{w}; put PadToSize({h, w}) first"
            )
        rng = _rng(rng)
        top = int(rng.integers(H - h + 1))
        left = int(rng.integers(W - w + 1))
        return (
            np.ascontiguousarray(image[:, top : top + h, left : left + w]),
            np.ascontiguousarray(label[top : top + h, left : left + w]),
        )

    def __repr__(self):
        return f"RandomCrop({self.size})"


class CenterCrop:
    """Crop a ``size`` window from the centre (pads with ``PadToSize``'s defaults where too small)."""

    random = False

    def __init__(self, size, image_fill=IMAGENET_MEAN, label_fill=IGNORE_INDEX):
        self.size = _size_pair(size, "CenterCrop size")
        self.pad = PadToSize(self.size, image_fill, label_fill)

    def __call__(self, image, label, rng=None):
        image, label = self.pad(*check_pair(image, label, "CenterCrop"))
        H, W = label.shape
        h, w = self.size
        top, left = (H - h) // 2, (W - w) // 2
        return (
            np.ascontiguousarray(image[:, top : top + h, left : left + w]),
            np.ascontiguousarray(label[top : top + h, left : left + w]),
        )

    def __repr__(self):
        return f"CenterCrop({self.size})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    random = True

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image, label, rng=None):
        image, label = check_pair(image, label, "RandomHorizontalFlip")
        if _rng(rng).random() < self.p:
            return np.ascontiguousarray(image[:, :, ::-1]), np.ascontiguousarray(label[:, ::-1])
        return image, label

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """``(image - mean) / std`` per channel (ImageNet's statistics by default, for [0, 1] images)."""

    random = False

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if self.mean.shape[0] not in (1, 3) or self.std.shape[0] not in (1, 3):
            raise ValueError(f"Normalize: mean and std must have 1 or 3 values, got {mean!r}, {std!r}")
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {std!r}")

    def __call__(self, image, label, rng=None):
        image, label = check_pair(image, label, "Normalize")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values.shape[0] not in (1, image.shape[0]):
                raise ValueError(
                    f"Normalize: {name} has {values.shape[0]} values but the image {image.shape[0]} channels"
                )
        return ((np.asarray(image, dtype=np.float32) - self.mean) / self.std).astype(np.float32), label

    def __repr__(self):
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


class ToArrays:
    """Contiguous float32 image and int64 label (what the loader stacks into a batch)."""

    random = False

    def __call__(self, image, label, rng=None):
        image, label = check_pair(image, label, "ToArrays")
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label, dtype=np.int64)

    def __repr__(self):
        return "ToArrays()"


def train_transform(crop_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=(0.5, 2.0), flip=True):
    """The papers' training augmentation: random scale, pad (image with ``mean``, label with 255),
    random crop, random horizontal flip, normalise. ``scale=None`` leaves out the rescaling."""
    steps = []
    if scale is not None:
        steps.append(RandomScale(*scale))
    steps += [PadToSize(crop_size, image_fill=mean), RandomCrop(crop_size)]
    if flip:
        steps.append(RandomHorizontalFlip())
    steps += [Normalize(mean, std), ToArrays()]
    return Compose(steps)


def eval_transform(mean=IMAGENET_MEAN, std=IMAGENET_STD, size=None):
    """Evaluation: normalise only, or pad to ``size`` first (so that images of different sizes can share
    a batch; the padded pixels are ignored in the metrics)."""
    steps = [] if size is None else [PadToSize(size, image_fill=mean)]
    return Compose(steps + [Normalize(mean, std), ToArrays()])
