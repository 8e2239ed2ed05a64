"""End-to-end exercises (notebook 06): score a segmentation, from label maps to the mean IoU.

======================  =========================================================  ===================================
name                    the student writes                                         reference
======================  =========================================================  ===================================
confusion_counts        ``fn(pred, label, num_classes, ignore_label) -> (K, K)``    ``train.ConfusionMatrix.update``
                        int64 counts, rows = true class, columns = prediction,
                        pixels labelled ``ignore_label`` skipped
miou_present_classes    ``fn(confusion) -> float``: the mean of                     ``train.ConfusionMatrix.miou``
                        ``IoU_k = TP / (TP + FP + FN)`` over the classes present
                        (in the labels or the predictions: ``TP + FP + FN > 0``)
======================  =========================================================  ===================================

>>> from tinydeeplab.exercises import check
>>> def all_classes(m):                     # absent classes counted as IoU 0
...     tp = np.diag(m)
...     return float(np.mean(tp / np.maximum(m.sum(0) + m.sum(1) - tp, 1)))
>>> check("miou_present_classes", all_classes)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: miou_present_classes: wrong in ... you averaged over all K classes...
"""
from __future__ import annotations

import numpy as np

from ..train.metrics import ConfusionMatrix
from . import exercise
from ._grading import Variant, attempt, compare, fail, judge_cases


def _reference_confusion(pred, label, k, ignore_label):
    cm = ConfusionMatrix(k, ignore_label)
    cm.update(pred, label)
    return cm.matrix


@exercise("confusion_counts", "confusion matrix of label maps: rows = true class, columns = prediction, ignore skipped")
def _check_confusion_counts(fn):
    rng = np.random.default_rng(6)
    n = 0
    for shape, k, ignore in (((2, 6, 7), 4, 255), ((3, 5, 5), 3, 255), ((1, 9, 4), 5, None)):
        label = rng.integers(0, k, shape)
        pred = np.where(rng.random(shape) < 0.6, label, rng.integers(0, k, shape))   # mostly right
        if ignore is not None:
            label = np.where(rng.random(shape) < 0.2, ignore, label)                 # some void pixels
        case = {"pred": pred, "label": label, "num_classes": k, "ignore_label": ignore}
        want = _reference_confusion(pred, label, k, ignore)
        got = attempt(fn, case, pred.copy(), label.copy(), k, ignore)
        valid = np.ones(label.shape, bool) if ignore is None else label != ignore
        variants = [Variant(want.T, "rows and columns are swapped: M[i, j] counts pixels whose *label* is i and "
                                    "*prediction* is j"),
                    Variant(want / np.maximum(want.sum(1, keepdims=True), 1),
                            "return the counts, not rates normalised per row")]
        if ignore is not None:
            counted = want.copy()
            np.add.at(counted, (np.zeros(int((~valid).sum()), int), pred[~valid]), 1)
            variants.append(Variant(counted, "pixels labelled ignore_label must not be counted (you counted "
                                             "them as class 0)"))
        compare(got, want, "the confusion matrix", case, variants=variants, check_dtype=False)
        if np.asarray(got).dtype.kind not in "iu":
            fail(f"the confusion matrix holds counts: return an integer array (int64), got {np.asarray(got).dtype}",
                 case)
        n += 1
    return f"{n} cases"


# --- the mean IoU --------------------------------------------------------------------------------------------------

def miou_present_classes(m) -> float:
    """The reference: mean of TP / (TP + FP + FN) over the classes with TP + FP + FN > 0."""
    tp = np.diag(m).astype(np.float64)
    union = m.sum(0) + m.sum(1) - tp
    present = union > 0
    return float(np.mean(tp[present] / union[present]))


def _library_miou(m) -> float:
    """``ConfusionMatrix.miou`` of the counts ``m`` (what ``evaluate`` reports)."""
    cm = ConfusionMatrix(len(m))
    cm.matrix[...] = m
    return cm.miou()


def _miou_variants(m):
    tp = np.diag(m).astype(np.float64)
    rows, cols = m.sum(1).astype(np.float64), m.sum(0).astype(np.float64)
    union = rows + cols - tp

    def mean(num, den, mask):
        return float(np.mean(num[mask] / den[mask])) if mask.any() else float("nan")

    return [(float(np.mean(tp / np.maximum(union, 1))),
             "you averaged over all K classes: a class that is absent from both labels and predictions has "
             "IoU 0/0, undefined, and must be left out of the mean (not counted as 0)"),
            (mean(tp, union, rows > 0),
             "you left out the classes absent from the labels but predicted: their IoU is 0 (all false "
             "positives), and it counts; only classes with TP + FP + FN = 0 are left out"),
            (mean(tp, rows, rows > 0), "you computed the mean recall TP / (TP + FN): the IoU's denominator also "
                                       "has the false positives FP (column sum minus TP)"),
            (mean(tp, cols, cols > 0), "you computed the mean precision TP / (TP + FP): the IoU's denominator "
                                       "also has the false negatives FN (row sum minus TP)"),
            (mean(tp, rows + cols, union > 0), "TP is counted twice in your union: row sum + column sum already "
                                               "holds TP twice, so subtract it once"),
            (float(tp.sum() / m.sum()), "you returned the pixel accuracy (trace / total), not the mean IoU")]


def _miou_cases():
    rng = np.random.default_rng(8)
    cases = []
    for k in range(10):
        size = int(rng.integers(3, 7))
        m = rng.integers(0, 30, (size, size)) + np.diag(rng.integers(20, 200, size))
        if k % 2 == 0:                                   # a class absent from labels and predictions
            j = int(rng.integers(size))
            m[j, :] = m[:, j] = 0
        if k % 3 == 0:                                   # a class predicted but never labelled
            j = (int(rng.integers(size)) + 1) % size
            m[j, :] = 0
            m[(j + 1) % size, j] += 5
        cases.append(m.astype(np.int64))
    return cases


@exercise("miou_present_classes", "mean IoU from a confusion matrix, over the classes present (TP + FP + FN > 0)")
def _check_miou_present_classes(fn):
    cases = _miou_cases()
    got = []
    for m in cases:
        case = {"confusion": m}
        value = attempt(fn, case, m.copy())
        try:
            value = float(value)
        except (TypeError, ValueError):
            fail(f"expected a float, got {type(value).__name__}", case)
        got.append(value)
    expected = [_library_miou(m) for m in cases]
    judge_cases([{"confusion": m} for m in cases], got, expected, [_miou_variants(m) for m in cases],
                lambda a, b: bool(np.isclose(a, b, rtol=1e-9, atol=1e-12)), show=lambda v: f"{v:.6g}")
    return f"{len(cases)} cases"
