"""Data: the synthetic data set (the embedded default), Pascal VOC-format folders, transforms, batches.

- ``SyntheticSegmentation``: textured shapes on cluttered backgrounds, made on the fly, deterministic by
  (seed, split, index); 7 classes; items ``(image float32 (3, H, W) in [0, 1], label int64 (H, W))``.
- ``VOCSegmentation``: a folder in VOC's layout (JPEGImages/, SegmentationClass/ palette PNGs,
  ImageSets/Segmentation/<split>.txt), checked up front; the same item format.
- ``FolderSegmentation``: a user's own data, ``images/`` and ``masks/`` (PNGs of class indices, 255 ignored),
  with optional ``train.txt`` / ``val.txt``; checked the same way.
- ``transforms``: ``RandomScale``, ``PadToSize``, ``RandomCrop``, ``RandomHorizontalFlip``, ``Normalize``,
  ``Compose``, ... as callables ``t(image, label, rng)``; ``train_transform``/``eval_transform`` build the
  papers' pipelines.
- ``DataLoader``: batches ``(images (N, 3, H, W) float32, labels (N, H, W) int64)`` whose order and
  augmentation are pure functions of (seed, epoch, index), so ``loader.batches(start_iteration=k)``
  resumes a run exactly; optional worker threads (same results) and progress bar.
- ``palette()`` / ``colorize(label)``: VOC's colour map for pictures of label maps (255 -> (224, 224, 192)).

Example (a CPU training feed)::

    from minidl.data import SyntheticSegmentation, DataLoader, train_transform
    data = SyntheticSegmentation(size=1000, split='train')
    loader = DataLoader(data, batch_size=8, seed=0,
                        transform=train_transform(97, data.MEAN, data.STD, scale=(0.5, 2.0)))
    for iteration, (images, labels) in enumerate(loader.batches(start_iteration=0), 0):
        ...
"""
from minidl.data import transforms  # noqa: F401
from minidl.data.folder import FolderSegmentation  # noqa: F401
from minidl.data.loader import DataLoader  # noqa: F401
from minidl.data.synthetic import CLASSES as SYNTHETIC_CLASSES  # noqa: F401
from minidl.data.synthetic import SyntheticSegmentation  # noqa: F401
from minidl.data.transforms import (  # noqa: F401
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    Normalize,
    PadToSize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    ToArrays,
    eval_transform,
    train_transform,
)
from minidl.data.voc import VOC_CLASSES, VOCSegmentation, colorize, palette  # noqa: F401

__all__ = [
    "DataLoader",
    "SyntheticSegmentation",
    "SYNTHETIC_CLASSES",
    "VOCSegmentation",
    "FolderSegmentation",
    "VOC_CLASSES",
    "palette",
    "colorize",
    "transforms",
] + [name for name in transforms.__all__ if name != "resize_bilinear"]
