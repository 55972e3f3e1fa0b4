"""Pascal VOC-format segmentation folders, and VOC's colour palette.

A folder in VOC's layout::

    root/
      JPEGImages/<id>.jpg                    the photos
      SegmentationClass/<id>.png             palette ('P') PNGs: the pixel *indices* are class ids,
                                             0 background, 1..20 the classes, 255 the boundary/ignore band
      ImageSets/Segmentation/<split>.txt     one id per line (train.txt, val.txt, trainval.txt, ...)

``VOCSegmentation(root, split)`` checks the folder when it is made (the folder, the list, and that every
listed id has both files, naming up to a few missing ones) and each item when it is read (an unreadable
image, a label whose size differs from its image, a class id >= num_classes other than 255), always naming
the file. Items are ``(image float32 (3, H, W) in [0, 1], label int64 (H, W))``, as the synthetic set's,
so the same transforms and loader take either. The ``*_aug`` splits (``train_aug``, the 10,582 images of VOC
2012 train plus the SBD annotations that the DeepLab papers train on) read their labels from
``SegmentationClassAug/`` (grayscale PNGs of class ids) instead::

      SegmentationClassAug/<id>.png          the SBD-augmented labels
      ImageSets/Segmentation/train_aug.txt   their ids
"""
import os

import numpy as np

from minidl.data.transforms import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, TransformedItems

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

_MAX_LISTED = 5


def palette(n=256):
    """VOC's colour map: an (n, 3) uint8 array where class k gets the colour of k's bits spread over the
    high bits of R, G and B (0 black, 1 (128, 0, 0), 2 (0, 128, 0), ..., 255 (224, 224, 192))."""
    ids = np.arange(n)
    colours = np.zeros((n, 3), dtype=np.int64)
    c = ids.copy()
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((c >> channel) & 1) << (7 - bit)
        c >>= 3
    return colours.astype(np.uint8)


def colorize(label, colours=None):
    """An RGB uint8 picture (..., H, W, 3) of a label map of class ids in 0..255 (VOC's palette by default)."""
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"colorize: label must hold integer class ids, got dtype {label.dtype}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"colorize: class ids must be in 0..255, got {label.min()}..{label.max()}")
    colours = palette() if colours is None else np.asarray(colours, dtype=np.uint8)
    return colours[label]


def _listed(names, total):
    shown = ", ".join(names[:_MAX_LISTED])
    more = f" and {total - _MAX_LISTED} more" if total > _MAX_LISTED else ""
    return shown + more


class PairedFolder(TransformedItems):
    """What a folder of image files and label PNGs shares (VOC's layout and ``FolderSegmentation``'s):
    ``ids``, ``image_path(id)``, ``label_path(id)`` and ``num_classes`` are set by the subclass; items are
    read and checked here, naming the file at fault."""

    MEAN = IMAGENET_MEAN
    STD = IMAGENET_STD
    ignore_index = IGNORE_INDEX
    palette = staticmethod(palette)
    colorize = staticmethod(colorize)

    def _set_num_classes(self, num_classes):
        self.num_classes = int(num_classes)
        if not 1 <= self.num_classes <= 255:
            raise ValueError(f"{type(self).__name__}: num_classes must be in 1..255, got {num_classes}")

    def __len__(self):
        return len(self.ids)

    def _index(self, index):
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices are ints, got {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += len(self.ids)
        if not 0 <= i < len(self.ids):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {len(self.ids)} items")
        return i

    def load(self, index):
        """The untransformed ``(image float32 (3, H, W) in [0, 1], label int64 (H, W))`` of item ``index``."""
        image_id = self.ids[self._index(index)]
        return read_pair(self.image_path(image_id), self.label_path(image_id), self.num_classes)

    def __repr__(self):
        return f"{type(self).__name__}({self.root!r}, split={self.split!r}, {len(self)} items)"


def read_pair(image_path, label_path, num_classes):
    """An image file and its label PNG of class ids as ``(image float32 (3, H, W) in [0, 1], label int64
    (H, W))``; a clear error, naming the file, for an unreadable file, a label that is not a palette or
    grayscale PNG, sizes that differ, or a class id >= num_classes other than 255 (ignore)."""
    from PIL import Image

    try:
        with Image.open(image_path) as im:
            image = np.asarray(im.convert("RGB"))
    except Exception as e:
        raise ValueError(f"cannot read image {image_path!r}: {e}") from e
    try:
        with Image.open(label_path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(
                    f"label {label_path!r} is a {im.mode!r} image; expected a palette ('P') or grayscale "
                    f"('L') PNG whose pixel values are class ids"
                )
            label = np.asarray(im)  # for 'P' images: the palette indices, not the colours
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"cannot read label {label_path!r}: {e}") from e
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"label {label_path!r} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
            f"{image_path!r} is {image.shape[1]}x{image.shape[0]}"
        )
    label = label.astype(np.int64)
    bad = ((label >= num_classes) & (label != IGNORE_INDEX)) | (label < 0)
    if bad.any():
        values = np.unique(label[bad])
        raise ValueError(
            f"label {label_path!r} holds class ids {values[:10].tolist()} outside 0..{num_classes - 1} "
            f"(and {IGNORE_INDEX}, ignore) in {int(bad.sum())} pixels"
        )
    image = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
    return image, label


def label_folder(split):
    """VOC's label folder for a split: ``SegmentationClassAug`` (the SBD-augmented labels) for the
    ``*_aug`` lists DeepLab trains on (``train_aug``: 10,582 images), ``SegmentationClass`` otherwise."""
    return "SegmentationClassAug" if split.endswith("_aug") else "SegmentationClass"


class VOCSegmentation(PairedFolder):
    """A Pascal VOC-format segmentation folder (see the module docstring for the layout).

    Args:
        root: the folder holding JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/.
        split: the list to read, ImageSets/Segmentation/<split>.txt ('train', 'val', 'trainval', ...).
        transform: optional ``t(image, label, rng)`` (see ``transforms``), applied by ``get``/``[]``.
        num_classes: class ids must be < num_classes or 255 (default 21, VOC's).
        image_dir, label_dir, list_dir: the sub-folder names, if they differ from VOC's (``label_dir`` defaults
            to ``label_folder(split)``: ``SegmentationClassAug`` for the ``*_aug`` splits).
    """

    CLASSES = VOC_CLASSES

    def __init__(self, root, split="train", transform=None, num_classes=21, image_dir="JPEGImages",
                 label_dir=None, list_dir=os.path.join("ImageSets", "Segmentation")):
        self.root = os.fspath(root)
        self.split = split
        self.transform = transform
        self._set_num_classes(num_classes)
        self.classes = VOC_CLASSES if self.num_classes == 21 else tuple(str(k) for k in range(self.num_classes))
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"VOC folder {self.root!r} does not exist (or is not a folder)")
        self.image_dir = os.path.join(self.root, image_dir)
        self.label_dir = os.path.join(self.root, label_dir or label_folder(split))
        list_folder = os.path.join(self.root, list_dir)
        self.list_file = os.path.join(list_folder, f"{split}.txt")
        if not os.path.isfile(self.list_file):
            found = sorted(f[:-4] for f in os.listdir(list_folder) if f.endswith(".txt")) \
                if os.path.isdir(list_folder) else []
            hint = f"; splits there: {', '.join(found)}" if found else f"; {list_folder!r} has no split lists"
            raise FileNotFoundError(f"VOC split list {self.list_file!r} does not exist{hint}")
        with open(self.list_file, encoding="utf-8") as f:
            # VOC's lists hold one id a line; some variants add columns ("<id> <flag>"): take the first.
            self.ids = [line.split()[0] for line in f if line.strip()]
        if not self.ids:
            raise ValueError(f"VOC split list {self.list_file!r} lists no ids")
        for folder, what in ((self.image_dir, "image"), (self.label_dir, "label")):
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"VOC {what} folder {folder!r} does not exist (listed in {self.list_file!r})")
        missing = [p for i in self.ids for p in (self.image_path(i), self.label_path(i)) if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} file(s) listed by {self.list_file!r} are missing: {_listed(missing, len(missing))}"
            )

    def image_path(self, image_id):
        return os.path.join(self.image_dir, f"{image_id}.jpg")

    def label_path(self, image_id):
        return os.path.join(self.label_dir, f"{image_id}.png")
