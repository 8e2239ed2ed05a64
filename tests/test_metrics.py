"""ConfusionMatrix against direct per-pixel counting."""
import numpy as np
import pytest

from tinydeeplab.train.metrics import ConfusionMatrix


def direct_counts(pred, label, k, ignore):
    m = np.zeros((k, k), np.int64)
    for p, t in zip(pred.ravel(), label.ravel()):
        if t != ignore:
            m[t, p] += 1
    return m


def test_matches_per_pixel_count_with_ignored_pixels(rng):
    k = 5
    cm = ConfusionMatrix(k, ignore_label=255)
    expected = np.zeros((k, k), np.int64)
    for shape in [(2, 7, 9), (13,), (3, 4)]:                       # any shapes, several updates
        label = rng.integers(0, k, shape)
        label[rng.random(shape) < 0.3] = 255
        pred = rng.integers(0, k, shape)
        cm.update(pred, label.astype(np.uint8))
        expected += direct_counts(pred, label, k, 255)
    assert np.array_equal(cm.matrix, expected)
    assert cm.matrix.sum() == expected.sum() > 0

    # metrics from the definitions, pixel by pixel
    iou = [expected[c, c] / (expected[c].sum() + expected[:, c].sum() - expected[c, c]) for c in range(k)]
    np.testing.assert_allclose(cm.iou(), iou)
    assert cm.miou() == pytest.approx(np.mean(iou))
    assert cm.pixel_accuracy() == pytest.approx(np.trace(expected) / expected.sum())


def test_absent_class_is_nan_and_skipped_by_miou():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 255]))    # classes 2, 3 never appear
    iou = cm.iou()
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert iou[:2].tolist() == [0.5, 0.5]
    assert cm.miou() == 0.5
    assert cm.pixel_accuracy() == pytest.approx(2 / 3)
    assert np.isnan(ConfusionMatrix(3).miou()) and np.isnan(ConfusionMatrix(3).pixel_accuracy())


def test_bad_labels_are_named():
    cm = ConfusionMatrix(3, ignore_label=255)
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        cm.update(np.zeros(4, int), np.array([0, 3, 7, 255]))
    with pytest.raises(ValueError, match=r"\[-1\]"):
        cm.update(np.zeros(2, int), np.array([-1, 1]))
    with pytest.raises(ValueError, match=r"predictions .*\[5\]"):
        cm.update(np.array([5, 0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="same shape"):
        cm.update(np.zeros(3, int), np.zeros(4, int))
    assert cm.matrix.sum() == 0                                       # nothing half-counted


def test_merge_equals_one_update(rng):
    a, b, both = ConfusionMatrix(3), ConfusionMatrix(3), ConfusionMatrix(3)
    p1, l1, p2, l2 = (rng.integers(0, 3, 50) for _ in range(4))
    a.update(p1, l1)
    b.update(p2, l2)
    both.update(np.concatenate([p1, p2]), np.concatenate([l1, l2]))
    assert np.array_equal(a.merge(b).matrix, both.matrix)
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(4))


def test_table_lists_every_class():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2]), np.array([0, 1, 1]))
    text = cm.table(["sky", "road", "car"])
    assert [line.split()[0] for line in text.splitlines()[1:4]] == ["sky", "road", "car"]
    assert "mean IoU" in text
    with pytest.raises(ValueError):
        cm.table(["only one"])
