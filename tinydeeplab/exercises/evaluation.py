"""Evaluation exercises (notebook 12): IoU with absent classes, dataset vs per-image mIoU, TTA averaging.

=======================  ==========================================================  ===============================
name                     the student writes                                          reference
=======================  ==========================================================  ===============================
iou_with_absent_classes  ``fn(matrix (K, K)) -> (K,)``: per-class IoU from a          ``ConfusionMatrix.iou``
                         confusion matrix, NaN for a class that is absent
dataset_vs_image_miou    ``fn(preds, labels, num_classes, ignore_label)``             :func:`dataset_vs_image_miou`
                         ``-> (dataset mIoU, mean of per-image mIoUs)``
tta_average              ``fn(forward, x, scales, flip) -> (N, H, W, K)``:            ``predict_logits`` (softmax of)
                         the mean softmax probability over the views
=======================  ==========================================================  ===============================

A class is *present* (in an image, or in a dataset) when it occurs in the labels or in the predictions:
``TP + FP + FN > 0``. An absent class has IoU ``0 / 0``: NaN, left out of the mean. A class that is
predicted but not labelled is present, with IoU 0.

>>> from tinydeeplab.exercises import check
>>> check("iou_with_absent_classes", lambda m: np.diag(m) / np.maximum(m.sum(0) + m.sum(1) - np.diag(m), 1))
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: iou_with_absent_classes: IoU is wrong: an absent class (no pixel labelled or predicted) must be NaN, not 0: 0 / 0 is undefined, and a 0 would pull the mean down on case matrix (4, 4) int64
"""
from __future__ import annotations

import warnings

import numpy as np

from ..train.evaluate import predict_logits, softmax
from ..train.metrics import ConfusionMatrix
from . import exercise
from ._grading import Variant, attempt, compare, fail, judge_cases, unpack


def _iou(matrix) -> np.ndarray:
    cm = ConfusionMatrix(len(matrix), ignore_label=None)
    cm.matrix[...] = matrix
    return cm.iou()


def _nanmean(values) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def dataset_vs_image_miou(preds, labels, num_classes: int, ignore_label=255) -> tuple[float, float]:
    """``(dataset mIoU, per-image mIoU)`` of label maps ``preds`` and ``labels`` (N, H, W).

    Dataset mIoU: one confusion matrix summed over all images, then the mean IoU over the classes present
    in the dataset. Per-image mIoU: each image's own mean IoU (over the classes present in *that* image),
    averaged over the images (an image without valid pixels is skipped).

    >>> labels = np.array([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])       # image 1 has no class 1
    >>> preds = np.array([[[0, 0, 1, 1]], [[0, 0, 0, 1]]])        # ... but predicts it once
    >>> [round(v, 4) for v in dataset_vs_image_miou(preds, labels, 2)]   # (5/6 + 2/3) / 2; (1 + 3/8) / 2
    [0.75, 0.6875]
    """
    total = ConfusionMatrix(num_classes, ignore_label)
    per_image = []
    for pred, label in zip(preds, labels):
        cm = ConfusionMatrix(num_classes, ignore_label)
        cm.update(np.asarray(pred), np.asarray(label))
        total.merge(cm)
        per_image.append(cm.miou())
    return total.miou(), _nanmean(per_image)


class _Forward:
    """Wraps a ``forward(x) -> logits`` function as a model for ``predict_logits``."""

    def __init__(self, forward):
        self.forward = forward


def tta_probabilities(forward, x, scales, flip) -> np.ndarray:
    """The reference: ``softmax(predict_logits(...))`` = the mean over the views of their softmax probabilities."""
    return softmax(predict_logits(_Forward(forward), x, scales=tuple(scales), flip=flip))


# --- checkers ---------------------------------------------------------------------------------------------------

def _confusion_cases(rng):
    """Confusion matrices with: all classes present; one absent; one only labelled; one only predicted."""
    cases = []
    for k, kind in ((3, "all present"), (4, "absent"), (5, "labelled only"), (4, "predicted only"),
                    (6, "mixed")):
        m = rng.integers(0, 30, (k, k)).astype(np.int64)
        m[np.arange(k), np.arange(k)] += 50
        if kind in ("absent", "mixed"):
            m[1, :] = 0; m[:, 1] = 0                          # class 1: nowhere
        if kind in ("labelled only", "mixed"):
            m[:, 2] = 0; m[2, 0] = 7                          # class 2: labelled, never predicted: IoU 0
        if kind in ("predicted only", "mixed"):
            m[3, :] = 0; m[0, 3] = 5                          # class 3: predicted, never labelled: IoU 0
        cases.append(m)
    return cases


@exercise("iou_with_absent_classes", "per-class IoU from a confusion matrix, NaN for absent classes")
def _check_iou_with_absent_classes(fn):
    rng = np.random.default_rng(12)
    for m in _confusion_cases(rng):
        case = {"matrix": m}
        got = attempt(fn, case, m.copy())
        expected = _iou(m)
        tp, rows, cols = np.diag(m).astype(np.float64), m.sum(1), m.sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            variants = [
                Variant(np.nan_to_num(expected, nan=0.0), "an absent class (no pixel labelled or predicted) must be "
                        "NaN, not 0: 0 / 0 is undefined, and a 0 would pull the mean down"),
                Variant(np.where(rows > 0, expected, np.nan), "a class that is predicted but never labelled is "
                        "present: its IoU is 0 (all false positives), not NaN; NaN only when TP + FP + FN = 0"),
                Variant(np.where(cols > 0, expected, np.nan), "a class that is labelled but never predicted is "
                        "present: its IoU is 0 (all false negatives), not NaN; NaN only when TP + FP + FN = 0"),
                Variant(np.where(rows > 0, tp / rows, np.nan), "you computed the recall TP / (TP + FN) (a row "
                        "sum): the IoU divides by the union TP + FP + FN"),
                Variant(np.where(cols > 0, tp / cols, np.nan), "you computed the precision TP / (TP + FP) (a "
                        "column sum): the IoU divides by the union TP + FP + FN"),
                Variant(np.where(rows + cols > 0, 2 * tp / (rows + cols), np.nan), "you computed the Dice score "
                        "2 TP / (2 TP + FP + FN): the IoU is TP / (TP + FP + FN)"),
                Variant(np.where(rows + cols > 0, tp / (rows + cols), np.nan), "the union counts TP twice: row sum "
                        "+ column sum - TP"),
            ]
        _compare_with_nan(got, expected, "IoU", case, variants)
    return "5 cases"


def _compare_with_nan(got, expected, what, case, variants):
    """``compare`` for results where NaN is a legitimate value: the NaN entries must be the same, then
    the rest is compared (NaN drawn as -1, which no IoU takes)."""
    if isinstance(got, (np.ndarray, list, tuple)) and np.shape(got) == expected.shape:
        try:
            values = np.asarray(got, np.float64)
        except (TypeError, ValueError):
            values = None
        if values is not None and not np.array_equal(np.isnan(values), np.isnan(expected)):
            for v in variants:
                if np.allclose(values, v.value, rtol=1e-9, atol=1e-12, equal_nan=True):
                    fail(f"{what} is wrong: {v.message}", case)
            fail(f"{what} is NaN for classes {np.flatnonzero(np.isnan(values)).tolist()}, expected NaN exactly for "
                 f"{np.flatnonzero(np.isnan(expected)).tolist()} (the classes with TP + FP + FN = 0)", case)
        if values is not None:
            got = np.nan_to_num(values, nan=-1.0)
    compare(got, np.nan_to_num(expected, nan=-1.0), what, case, check_dtype=False, rtol=1e-9, atol=1e-12,
            variants=[Variant(np.nan_to_num(v.value, nan=-1.0), v.message) for v in variants])


def _label_maps(rng, n, h, w, k):
    """Labels with a few blobs per image (some classes absent from some images), an ignore border, and
    predictions that are right except for a few misplaced blobs."""
    labels = np.zeros((n, h, w), np.int64)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        for _ in range(int(rng.integers(1, 3))):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 5)
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(1, k)
    preds = labels.copy()
    noise = rng.random(labels.shape) < 0.08
    preds[noise] = rng.integers(0, k, int(noise.sum()))
    preds[0, 1:3, :3] = k - 1                                   # a false positive of the last class
    labels[:, 0, :] = 255                                       # an ignored row: predictions there do not count
    return preds, labels


@exercise("dataset_vs_image_miou", "dataset mIoU (one confusion matrix) and mean per-image mIoU")
def _check_dataset_vs_image_miou(fn):
    rng = np.random.default_rng(21)
    cases, got, expected, variants = [], [], [], []
    for n, h, w, used, k in ((4, 10, 12, 4, 4), (3, 8, 8, 3, 4), (5, 12, 9, 5, 5), (2, 16, 16, 4, 6)):
        preds, labels = _label_maps(rng, n, h, w, used)       # classes >= used occur nowhere: absent
        case = dict(preds=preds, labels=labels, num_classes=k, ignore_label=255)
        value = unpack(attempt(fn, case, preds.copy(), labels.copy(), k, 255), 2,
                       "(dataset mIoU, per-image mIoU)", case)
        if not all(isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, bool) for v in value):
            fail(f"expected two numbers, got {tuple(type(v).__name__ for v in value)}", case)
        got.append(tuple(float(v) for v in value))
        dataset, image = dataset_vs_image_miou(preds, labels, k)
        expected.append((dataset, image))
        per_image_zero = [float(np.mean(np.nan_to_num(_iou(_confusion(p, l, k)), nan=0.0)))
                          for p, l in zip(preds, labels)]
        with_ignored = np.where(labels == 255, k, labels)       # the ignored pixels as an extra class
        pooled = _iou(_confusion(preds, with_ignored, k + 1))[:k]
        images_ignored = [_nanmean(_iou(_confusion(p, l, k + 1))[:k]) for p, l in zip(preds, with_ignored)]
        variants.append([
            ((image, dataset), "the two values are swapped: first the dataset mIoU, then the per-image mean"),
            ((dataset, float(np.mean(per_image_zero))), "per image, a class absent from the image (not labelled, "
             "not predicted) must be left out of its mean (NaN), not counted as IoU 0"),
            ((float(np.mean(np.nan_to_num(_iou(_confusion(preds, labels, k)), nan=0.0))), image),
             "in the dataset mIoU a class absent from the whole dataset must be left out of the mean, not "
             "counted as 0"),
            ((_nanmean(pooled), _nanmean(images_ignored)), "the pixels with the ignore label (255) must not "
             "count: you turned the predictions there into false positives"),
            ((float(np.mean(np.nan_to_num(_iou(_confusion(preds, labels, k)), nan=0.0))),
              float(np.mean(per_image_zero))), "absent classes must be left out of the mean (NaN), not counted "
             "as 0: per image (a class the image does not contain) and in the dataset"),
            ((image, image), "both values are the per-image mean: the dataset mIoU sums one confusion matrix "
             "over all images first"),
            ((dataset, dataset), "both values are the dataset mIoU: the per-image mIoU is the mean of each "
             "image's own mIoU"),
        ])
        cases.append(case)
    judge_cases(cases, got, expected, variants,
                same=lambda a, b: bool(np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)),
                show=lambda v: f"({v[0]:.6g}, {v[1]:.6g})")
    return f"{len(cases)} cases"


def _confusion(pred, label, k):
    cm = ConfusionMatrix(k, 255)
    cm.update(np.asarray(pred), np.asarray(label))
    return cm.matrix


def _toy_forward(seed, k):
    """A deterministic stand-in for a network: a 3x3 conv (not mirror-symmetric) plus a term in the
    column position, so flipping and rescaling both change its logits."""
    from .. import functional as F

    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.6, (3, 3, 3, k)).astype(np.float32)
    ramp = rng.normal(0.0, 1.0, k).astype(np.float32)

    def forward(x):
        z = F.conv2d_forward(x, w, padding="same")[0]                       # (N, h, w, K)
        cols = np.linspace(-1, 1, x.shape[2], dtype=np.float32)[None, None, :, None]
        return (z + cols * ramp).astype(np.float32)
    return forward


@exercise("tta_average", "test-time augmentation: the mean softmax probability over scaled and flipped views")
def _check_tta_average(fn):
    from ..models.preprocessor import resize

    rng = np.random.default_rng(31)
    n = 0
    for shape, k, scales, flip in (((1, 12, 16, 3), 3, (1.0,), True), ((2, 10, 10, 3), 4, (0.5, 1.0, 1.5), False),
                                   ((1, 9, 13, 3), 3, (0.75, 1.25), True), ((1, 8, 8, 3), 2, (1.0,), False)):
        x = rng.normal(0.0, 1.0, shape).astype(np.float32)
        forward = _toy_forward(n, k)
        case = dict(x=x, scales=scales, flip=flip)
        got = attempt(fn, case, forward, x.copy(), scales, flip)
        expected = tta_probabilities(forward, x, scales, flip)
        H, W = shape[1:3]

        def views(mode):
            out = []
            for s in scales:
                size = (max(int(round(H * s)), 1), max(int(round(W * s)), 1))
                xs = x if size == (H, W) else resize(x, size)
                for flipped in ((False, True) if flip else (False,)):
                    v = np.ascontiguousarray(xs[:, :, ::-1]) if flipped else xs
                    if mode == "updown" and flipped:
                        v = np.ascontiguousarray(xs[:, ::-1])
                    z = forward(v)
                    if flipped and mode != "no unflip":
                        z = z[:, ::-1] if mode == "updown" else z[:, :, ::-1]
                    z = np.ascontiguousarray(z)
                    if mode == "resize probs":
                        p = softmax(z)
                        out.append(p if p.shape[1:3] == (H, W) else resize(p, (H, W)))
                    else:
                        out.append(z if z.shape[1:3] == (H, W) else resize(z, (H, W)))
            return out

        variants = [Variant(softmax(sum(views("logits")) / len(views("logits"))),
                            "you averaged the logits and then took the softmax: average the *probabilities* "
                            "(softmax of each view, then the mean)"),
                    Variant(np.log(expected), "you returned log-probabilities: return the mean probabilities"),
                    Variant(sum(softmax(z) for z in views("no unflip")) / len(views("no unflip")),
                            "the flipped view's output must be flipped back (z[:, :, ::-1]) before averaging"),
                    Variant(sum(softmax(z) for z in views("updown")) / len(views("updown")),
                            "flip left-right: the width axis is axis 2 of (N, H, W, C), not axis 1"),
                    Variant(sum(views("resize probs")) / len(views("resize probs")),
                            "you resized the probabilities back to (H, W): resize each view's logits, then take "
                            "the softmax (predict_logits's order)")]
        compare(got, expected, "TTA probabilities", case, variants=variants, check_dtype=False, rtol=1e-4,
                atol=1e-6)
        n += 1
    return f"{n} cases"
