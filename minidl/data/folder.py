"""A user's own segmentation data: a folder of images and PNG masks of class indices.

::

    root/
      images/<name>.jpg (or .jpeg, .png)   the photos
      masks/<name>.png                     one mask per image, same size: each pixel's class index
                                           (0 .. num_classes - 1), 255 where no class is given (ignored)
      train.txt, val.txt                   optional: one name per line (without extension)

A split is read from ``<split>.txt`` when that list exists. Without it, ``train`` is every image that
``val.txt`` does not list, and ``val`` every image that ``train.txt`` does not list; with neither list, every
tenth image in name order (the first, the eleventh, ...) is ``val`` and the rest ``train``.

``FolderSegmentation(root, split, num_classes=...)`` pairs the files when it is made and names every image
without a mask, mask without an image, and listed name without files; reading an item names a mask whose
size differs from its image's, or that holds a class index >= num_classes other than 255.
"""
import os

from minidl.data.voc import PairedFolder, _listed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_VAL_EVERY = 10


class FolderSegmentation(PairedFolder):
    """Images and masks in ``root/images`` and ``root/masks`` (see the module docstring for the layout).

    Args:
        root: the folder holding images/ and masks/ (and optionally train.txt, val.txt, <split>.txt).
        split: 'train', 'val', or the name of any list ``root/<split>.txt``.
        transform: optional ``t(image, label, rng)`` (see ``transforms``), applied by ``get``/``[]``.
        num_classes: mask values must be < num_classes or 255.
    """

    def __init__(self, root, split="train", transform=None, num_classes=21):
        self.root, self.split, self.transform = os.fspath(root), split, transform
        self._set_num_classes(num_classes)
        self.classes = tuple(str(k) for k in range(self.num_classes))
        self.image_dir, self.label_dir = os.path.join(self.root, "images"), os.path.join(self.root, "masks")
        self.images = self._pair_files()
        self.ids = self._split_ids(split)
        if not self.ids:
            raise ValueError(f"folder data set {self.root!r}: split {split!r} has no images")

    def image_path(self, name):
        return os.path.join(self.image_dir, self.images[name])

    def label_path(self, name):
        return os.path.join(self.label_dir, f"{name}.png")

    def _pair_files(self):
        """{name: image file name} for the images of images/, each checked to have its mask in masks/."""
        for folder in (self.root, self.image_dir, self.label_dir):
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"folder data set: {folder!r} does not exist (or is not a folder); "
                                        "expected root/images/ and root/masks/")
        images = {}
        for file in sorted(os.listdir(self.image_dir)):
            name, extension = os.path.splitext(file)
            if extension.lower() in IMAGE_EXTENSIONS:
                if name in images:
                    raise ValueError(f"folder data set: two images named {name!r} in {self.image_dir!r}: "
                                     f"{images[name]} and {file}")
                images[name] = file
        masks = {os.path.splitext(f)[0] for f in os.listdir(self.label_dir) if f.lower().endswith(".png")}
        unpaired = [os.path.join(self.image_dir, images[n]) for n in images if n not in masks] + \
                   [os.path.join(self.label_dir, f"{n}.png") for n in sorted(masks - set(images))]
        if unpaired:
            raise FileNotFoundError(
                f"folder data set {self.root!r}: {len(unpaired)} file(s) have no partner (an image needs "
                f"masks/<name>.png, a mask images/<name>.jpg or .png): {_listed(unpaired, len(unpaired))}")
        if not images:
            raise ValueError(f"folder data set: {self.image_dir!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return images

    def _split_ids(self, split):
        listed = self._read_list(split)
        if listed is not None:
            return listed
        if split not in ("train", "val"):
            path = os.path.join(self.root, f"{split}.txt")
            raise FileNotFoundError(f"folder data set: split {split!r} needs the list {path!r}, which does not exist")
        other = self._read_list("val" if split == "train" else "train")
        names = list(self.images)
        if other is None:
            val = set(names[::_VAL_EVERY])
            return [n for n in names if (n in val) == (split == "val")]
        return [n for n in names if n not in set(other)]

    def _read_list(self, split):
        """The names ``root/<split>.txt`` lists (None if there is no such list), each checked to have files."""
        path = os.path.join(self.root, f"{split}.txt")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            names = [os.path.splitext(line.strip())[0] for line in f if line.strip()]
        missing = [n for n in names if n not in self.images]
        if missing:
            raise FileNotFoundError(f"{len(missing)} name(s) listed by {path!r} have no image and mask: "
                                    f"{_listed(missing, len(missing))}")
        return names
