"""The evaluation checkers (``tinydeeplab.exercises.evaluation``, notebook 12): each passes a solution written
independently of the reference and names each characteristic mistake it claims to recognise.

The wrong solutions are written the way a student would write them, not taken from the checkers' variants.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import tinydeeplab
from tinydeeplab.exercises import ExerciseFailure, check
from tinydeeplab.models.preprocessor import resize


@pytest.fixture(autouse=True)
def numpy_backend():
    previous = tinydeeplab.get_backend()
    tinydeeplab.set_backend("numpy")
    yield
    tinydeeplab.set_backend(previous)


# --- iou_with_absent_classes ------------------------------------------------------------------------------------

def iou(matrix, mistake=None):
    """A student's per-class IoU from a confusion matrix, with switchable mistakes."""
    k = len(matrix)
    out = []
    for c in range(k):
        tp = matrix[c, c]
        fn = matrix[c].sum() - tp
        fp = matrix[:, c].sum() - tp
        denominators = {"recall": tp + fn, "precision": tp + fp, "double union": matrix[c].sum() + matrix[:, c].sum(),
                        "dice": 2 * tp + fp + fn}
        den = denominators.get(mistake, tp + fp + fn)
        num = 2 * tp if mistake == "dice" else tp
        if mistake == "zero for absent":
            out.append(tp / den if den else 0.0)
        elif mistake == "nan if not labelled":
            out.append(tp / den if matrix[c].sum() else np.nan)
        else:
            out.append(num / den if den else np.nan)
    return np.array(out)


def test_iou_with_absent_classes_passes_a_solution():
    assert check("iou_with_absent_classes", iou).startswith("iou_with_absent_classes: passed")


@pytest.mark.parametrize("mistake, said", [
    ("zero for absent", "must be NaN, not 0"),
    ("nan if not labelled", "predicted but never labelled is present"),
    ("recall", "you computed the recall"),
    ("precision", "you computed the precision"),
    ("dice", "you computed the Dice score"),
    ("double union", "the union counts TP twice"),
])
def test_iou_with_absent_classes_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("iou_with_absent_classes", lambda m: iou(m, mistake))


# --- dataset_vs_image_miou --------------------------------------------------------------------------------------

def mious(preds, labels, num_classes, ignore_label, mistake=None):
    """A student's two mIoUs, from masks (no ConfusionMatrix), with switchable mistakes."""
    def class_iou(p, l):
        valid = np.ones(l.shape, bool) if mistake == "ignored count" else l != ignore_label
        out = []
        for c in range(num_classes):
            inter = np.sum((p == c) & (l == c) & valid)
            union = np.sum(((p == c) | (l == c)) & valid)
            out.append(inter / union if union else (0.0 if mistake == "absent zero" else np.nan))
        return np.array(out)

    dataset = np.nanmean(class_iou(preds, labels))
    per_image = float(np.mean([np.nanmean(class_iou(p, l)) for p, l in zip(preds, labels)]))
    if mistake == "swapped":
        return per_image, dataset
    if mistake == "twice":
        return dataset, dataset
    return dataset, per_image


def test_dataset_vs_image_miou_passes_a_solution():
    assert check("dataset_vs_image_miou", mious).startswith("dataset_vs_image_miou: passed")


@pytest.mark.parametrize("mistake, said", [
    ("swapped", "the two values are swapped"),
    ("twice", "both values are the dataset mIoU"),
    ("ignored count", "the pixels with the ignore label (255) must not count"),
    ("absent zero", "absent classes must be left out of the mean (NaN), not counted as 0"),
])
def test_dataset_vs_image_miou_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("dataset_vs_image_miou", lambda p, l, k, ig: mious(p, l, k, ig, mistake))


# --- tta_average ------------------------------------------------------------------------------------------------

def tta(forward, x, scales, flip, mistake=None):
    """A student's TTA average with switchable mistakes."""
    n, h, w, _ = x.shape
    collected = []
    for s in scales:
        size = (int(round(h * s)), int(round(w * s)))
        v = resize(x, size) if size != (h, w) else x
        views = [(v, False)] + ([(v[:, ::-1] if mistake == "up-down" else v[:, :, ::-1], True)] if flip else [])
        for view, mirrored in views:
            z = forward(np.ascontiguousarray(view))
            if mirrored and mistake != "no unflip":
                z = z[:, ::-1] if mistake == "up-down" else z[:, :, ::-1]
            z = np.ascontiguousarray(z)
            if mistake == "resize probabilities":
                p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
                collected.append(resize(p, (h, w)) if p.shape[1:3] != (h, w) else p)
                continue
            if z.shape[1:3] != (h, w):
                z = resize(z, (h, w))
            collected.append(z if mistake == "mean logits" else np.exp(z) / np.exp(z).sum(-1, keepdims=True))
    mean = np.mean(collected, axis=0)
    if mistake == "mean logits":
        return np.exp(mean) / np.exp(mean).sum(-1, keepdims=True)
    return np.log(mean) if mistake == "log" else mean


def test_tta_average_passes_a_solution():
    assert check("tta_average", tta).startswith("tta_average: passed")


@pytest.mark.parametrize("mistake, said", [
    ("mean logits", "you averaged the logits"),
    ("no unflip", "must be flipped back"),
    ("up-down", "the width axis is axis 2"),
    ("log", "you returned log-probabilities"),
    ("resize probabilities", "you resized the probabilities"),
])
def test_tta_average_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("tta_average", lambda f, x, s, fl: tta(f, x, s, fl, mistake))
