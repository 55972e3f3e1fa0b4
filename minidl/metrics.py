"""Segmentation metrics from a confusion matrix: IoU per class, mean IoU, pixel and mean accuracy.

Everything starts from the confusion matrix ``cm`` of shape (num_classes, num_classes): ``cm[t, p]``
counts the pixels whose ground truth is t and whose prediction is p (rows = ground truth, columns =
prediction), over every pixel whose ground truth is not ``ignore_index`` (255 in Pascal VOC: object
boundaries and "void"). Then, for class c:

    IoU_c      = cm[c, c] / (sum of row c + sum of column c - cm[c, c])   (intersection over union)
    accuracy_c = cm[c, c] / sum of row c                                   (recall of the class)

mean IoU and mean accuracy average these over the classes that have them: a class absent from both
the ground truth and the predictions has no IoU (NaN, skipped by the mean); a class absent from the
ground truth has no accuracy. Pixel accuracy is the trace over the total. As in the DeepLab papers
and the Pascal VOC benchmark, a data set's mIoU is computed from the confusion matrix accumulated
over all its images (``SegmentationMetrics``), not by averaging per-image mIoUs.
"""
import warnings

import numpy as np

from minidl import backend
from minidl.tensor import Tensor


def _as_numpy(x):
    if isinstance(x, Tensor):
        x = x.data
    return backend.to_numpy(x)


def _class_ids(x, name):
    x = _as_numpy(x)
    if x.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer class ids; got dtype {x.dtype} (take argmax of scores first)")
    return x.astype(np.int64, copy=False).ravel()


def _out_of_range(values, num_classes, name, where):
    bad = np.unique(values[(values < 0) | (values >= num_classes)])
    if bad.size:
        raise ValueError(
            f"{name} holds class ids outside [0, {num_classes}){where}: {bad[:10].tolist()}"
            + (" ..." if bad.size > 10 else "")
        )


def confusion_matrix(pred, target, num_classes, ignore_index=255):
    """The (num_classes, num_classes) int64 confusion matrix: rows ground truth, columns prediction.

    pred and target: integer class ids of the same shape, any shape (NumPy, CuPy or minidl Tensors).
    Pixels whose target is ``ignore_index`` are left out (None: none are); every other target and
    the prediction at every counted pixel must lie in [0, num_classes).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    pred_shape, target_shape = tuple(_as_numpy(pred).shape), tuple(_as_numpy(target).shape)
    if pred_shape != target_shape:
        raise ValueError(f"pred and target must have the same shape; got pred {pred_shape} and target {target_shape}")
    p, t = _class_ids(pred, "pred"), _class_ids(target, "target")
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    ignoring = f" (other than ignore_index={ignore_index})" if ignore_index is not None else ""
    _out_of_range(t, num_classes, "target", ignoring)
    _out_of_range(p, num_classes, "pred", " at pixels that are not ignored")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _check_cm(cm):
    cm = np.asarray(_as_numpy(cm))
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (num_classes, num_classes) confusion matrix; got shape {cm.shape}")
    return cm.astype(np.float64)


def _ratio(numerator, denominator):
    """numerator / denominator elementwise, NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _nanmean(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN: the mean is NaN, no warning needed
        return float(np.nanmean(x))


def iou_per_class(cm):
    """Intersection over union of each class (float64); NaN for a class absent from target and pred."""
    cm = _check_cm(cm)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(axis=1) + cm.sum(axis=0) - tp)


def mean_iou(cm):
    """The mean of the per-class IoUs over the classes that have one (NaN if none)."""
    return _nanmean(iou_per_class(cm))


def pixel_accuracy(cm):
    """Correct pixels over counted pixels (NaN if none were counted)."""
    cm = _check_cm(cm)
    return float(_ratio(np.trace(cm), cm.sum()))


def accuracy_per_class(cm):
    """Each class's share of its ground-truth pixels predicted right (NaN if it has none)."""
    cm = _check_cm(cm)
    return _ratio(np.diag(cm), cm.sum(axis=1))


def mean_accuracy(cm):
    """The mean of the per-class accuracies over the classes present in the ground truth (NaN if none)."""
    return _nanmean(accuracy_per_class(cm))


def boundary_band(target, width, ignore_index=255):
    """Pixels within ``width`` pixels (chessboard distance) of a class boundary of ``target`` (H, W).

    The trimap of DeepLab v3+ (Sec. 4.3, Fig. 5): measuring mIoU only inside
    this band around object boundaries shows how sharp the boundaries are,
    which whole-image mIoU (dominated by object interiors) hides. A pixel is on
    a boundary when a 4-neighbour has another class; the band grows it by
    ``width`` - 1 more pixels in every direction (width 1: the boundary itself).
    Ignored pixels are never boundaries, nor in the band. Pass the band as the
    ``mask`` of ``SegmentationMetrics.update``.
    """
    shape = _as_numpy(target).shape
    if len(shape) != 2:
        raise ValueError(f"boundary_band: target must be one label map (H, W), got shape {shape}")
    target = _class_ids(target, "target").reshape(shape)
    if width < 1:
        raise ValueError(f"boundary_band: width must be at least 1 pixel, got {width}")
    valid = target != ignore_index
    edge = np.zeros(target.shape, bool)
    for axis in (0, 1):
        a, b = (slice(None, -1), slice(1, None)) if axis == 0 else (np.s_[:, :-1], np.s_[:, 1:])
        differs = (target[a] != target[b]) & valid[a] & valid[b]
        edge[a] |= differs
        edge[b] |= differs
    band = edge
    for _ in range(width - 1):  # one 3×3 dilation per pixel of width
        grown = band.copy()
        grown[1:] |= band[:-1]
        grown[:-1] |= band[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        band = grown
    return band & valid


class SegmentationMetrics:
    """Accumulates one confusion matrix over batches: ``update(pred, target)`` …, then ``compute()``."""

    def __init__(self, num_classes, ignore_index=255):
        confusion_matrix(np.zeros(0, np.int64), np.zeros(0, np.int64), num_classes)  # validates num_classes
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self):
        self.confusion_matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred, target, mask=None):
        """Add the pixels of pred and target (same shape, integer class ids; any batch shape).

        With ``mask`` (boolean, target's shape) only the pixels where it is true count, e.g. a ``boundary_band``.
        """
        if mask is not None:
            pred, target = _as_numpy(pred), _as_numpy(target)
            mask = np.asarray(_as_numpy(mask), bool)
            if not mask.shape == pred.shape == target.shape:
                raise ValueError(f"update: mask has shape {mask.shape}, pred {pred.shape}, target {target.shape}; "
                                 "all three must match")
            pred, target = pred[mask], target[mask]
        self.confusion_matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        return self

    def compute(self):
        """A dict: pixel_accuracy, mean_accuracy, miou (floats), iou_per_class, confusion_matrix (arrays)."""
        cm = self.confusion_matrix
        return {
            "pixel_accuracy": pixel_accuracy(cm),
            "mean_accuracy": mean_accuracy(cm),
            "miou": mean_iou(cm),
            "iou_per_class": iou_per_class(cm),
            "confusion_matrix": cm.copy(),
        }
