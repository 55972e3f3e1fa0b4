"""Segmentation metrics against numbers worked out by hand."""
import numpy as np
import pytest

import minidl
from minidl.metrics import (
    SegmentationMetrics,
    accuracy_per_class,
    boundary_band,
    confusion_matrix,
    iou_per_class,
    mean_accuracy,
    mean_iou,
    pixel_accuracy,
)

# Six pixels, four classes (class 3 appears nowhere), one pixel ignored (255).
TARGET = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [2, 2, 0]])
# (target, pred) pairs: (0,0) (0,1) (1,1) (1,2) (2,2); (255,0) is ignored.
CM = np.array([
    [1, 1, 0, 0],
    [0, 1, 1, 0],
    [0, 0, 1, 0],
    [0, 0, 0, 0],
])
# IoU = tp / (row + column - tp): class 0: 1 / (2 + 1 - 1); class 1: 1 / (2 + 2 - 1); class 2: 1 / (1 + 2 - 1).
IOU = [1 / 2, 1 / 3, 1 / 2, np.nan]
MEAN_IOU = (1 / 2 + 1 / 3 + 1 / 2) / 3  # = 4/9, class 3 skipped
PIXEL_ACCURACY = 3 / 5  # the diagonal over the five counted pixels
ACCURACY = [1 / 2, 1 / 2, 1 / 1, np.nan]  # tp / row
MEAN_ACCURACY = 2 / 3


def test_hand_computed_example():
    cm = confusion_matrix(PRED, TARGET, num_classes=4)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64
    np.testing.assert_allclose(iou_per_class(cm), IOU)
    assert mean_iou(cm) == pytest.approx(4 / 9) == pytest.approx(MEAN_IOU)
    assert pixel_accuracy(cm) == pytest.approx(PIXEL_ACCURACY)
    np.testing.assert_allclose(accuracy_per_class(cm), ACCURACY)
    assert mean_accuracy(cm) == pytest.approx(MEAN_ACCURACY)


def test_tensors_and_any_shape():
    cm = confusion_matrix(minidl.tensor(PRED[None, None]), minidl.tensor(TARGET[None, None]), 4)
    np.testing.assert_array_equal(cm, CM)
    np.testing.assert_array_equal(confusion_matrix(PRED.ravel(), TARGET.ravel().astype(np.uint8), 4), CM)


def test_ignore_index():
    # The ignored pixel's prediction may be anything, even outside the classes
    pred = PRED.copy()
    pred[1, 2] = 255
    np.testing.assert_array_equal(confusion_matrix(pred, TARGET, 4), CM)
    # Another ignore label
    target = np.where(TARGET == 255, 9, TARGET)
    np.testing.assert_array_equal(confusion_matrix(PRED, target, 4, ignore_index=9), CM)
    # No ignore label: 255 is then an error
    with pytest.raises(ValueError, match=r"target holds class ids outside \[0, 4\): \[255\]"):
        confusion_matrix(PRED, TARGET, 4, ignore_index=None)
    # Everything ignored: an empty matrix, and NaN metrics without warnings
    cm = confusion_matrix(PRED, np.full_like(TARGET, 255), 4)
    assert cm.sum() == 0
    with np.testing.assert_no_warnings():
        assert np.isnan(mean_iou(cm)) and np.isnan(pixel_accuracy(cm)) and np.isnan(mean_accuracy(cm))


def test_class_predicted_but_absent_from_ground_truth():
    cm = confusion_matrix(np.array([0, 3]), np.array([0, 0]), 4)
    # class 0: 1 / (2 + 1 - 1); class 3: 0 / (0 + 1 - 0) = 0, not NaN; classes 1 and 2 absent from both
    np.testing.assert_allclose(iou_per_class(cm), [1 / 2, np.nan, np.nan, 0])
    assert mean_iou(cm) == pytest.approx(1 / 4)
    np.testing.assert_allclose(accuracy_per_class(cm), [1 / 2, np.nan, np.nan, np.nan])
    assert mean_accuracy(cm) == pytest.approx(1 / 2)


def test_matches_a_loop_on_random_labels():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, size=(3, 17, 11))
    target[rng.random(target.shape) < 0.1] = 255
    pred = rng.integers(0, 6, size=target.shape)
    expected = np.zeros((6, 6), np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, target, 6), expected)


def test_errors():
    with pytest.raises(ValueError, match=r"same shape; got pred \(2, 3\) and target \(3, 2\)"):
        confusion_matrix(PRED, TARGET.T, 4)
    message = r"target holds class ids outside \[0, 2\) \(other than ignore_index=255\): \[2\]"
    with pytest.raises(ValueError, match=message):
        confusion_matrix(np.zeros_like(TARGET), TARGET, 2)
    message = r"pred holds class ids outside \[0, 4\) at pixels that are not ignored: \[-1, 7\]"
    with pytest.raises(ValueError, match=message):
        confusion_matrix(np.array([-1, 7, 0]), np.array([0, 1, 2]), 4)
    with pytest.raises(ValueError, match="pred must hold integer class ids; got dtype float32"):
        confusion_matrix(PRED.astype(np.float32), TARGET, 4)
    with pytest.raises(ValueError, match="num_classes must be a positive integer; got 0"):
        confusion_matrix(PRED, TARGET, 0)
    with pytest.raises(ValueError, match=r"square .* got shape \(2, 3\)"):
        mean_iou(np.zeros((2, 3)))


def test_accumulating_metrics():
    metrics = SegmentationMetrics(4)
    metrics.update(PRED[:1], TARGET[:1]).update(minidl.tensor(PRED[1:]), minidl.tensor(TARGET[1:]))
    result = metrics.compute()
    np.testing.assert_array_equal(result["confusion_matrix"], CM)
    np.testing.assert_allclose(result["iou_per_class"], IOU)
    assert result["miou"] == pytest.approx(MEAN_IOU)
    assert result["pixel_accuracy"] == pytest.approx(PIXEL_ACCURACY)
    assert result["mean_accuracy"] == pytest.approx(MEAN_ACCURACY)
    # compute() hands out a copy; reset() starts over
    result["confusion_matrix"][0, 0] = 100
    assert metrics.confusion_matrix[0, 0] == 1
    metrics.reset()
    assert metrics.confusion_matrix.sum() == 0
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        SegmentationMetrics(0)


def test_boundary_band_by_hand():
    target = np.zeros((6, 7), np.int64)
    target[2:4, 2:5] = 1  # a 2×3 object
    target[0, 6] = 255
    band = boundary_band(target, 1)
    expected = np.zeros((6, 7), bool)
    expected[1:5, 2:5] = True  # above, inside and below the object's top and bottom edges
    expected[2:4, 1:6] = True  # left and right of it
    np.testing.assert_array_equal(band, expected)
    wide = boundary_band(target, 2)
    assert wide[0, 1] and wide[5, 5] and not wide[0, 6]  # grown by a pixel diagonally too; ignore stays out
    assert not boundary_band(target, 5)[0, 6]
    assert boundary_band(target, 5).sum() == 6 * 7 - 1


def test_metrics_inside_a_mask_count_only_its_pixels():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[1, 0, 1, 0]])
    mask = np.array([[False, True, True, False]])
    cm = SegmentationMetrics(2).update(pred, target, mask=mask).confusion_matrix
    np.testing.assert_array_equal(cm, [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"mask has shape \(4,\)"):
        SegmentationMetrics(2).update(pred, target, mask=np.ones(4, bool))
    with pytest.raises(ValueError, match=r"pred \(1, 3\), target \(1, 4\)"):
        SegmentationMetrics(2).update(pred[:, :3], target, mask=mask)


def test_boundary_band_errors():
    with pytest.raises(ValueError, match="one label map"):
        boundary_band(np.zeros((2, 3, 3), np.int64), 1)
    with pytest.raises(ValueError, match="width must be at least 1"):
        boundary_band(np.zeros((3, 3), np.int64), 0)
