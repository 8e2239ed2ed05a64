"""The end-to-end exercises (``tinydeeplab.exercises.end_to_end``, notebook 06): the reference passes, and
each characteristic mistake, written as a student would write it, is named."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tinydeeplab.exercises import ExerciseFailure, check


def confusion(pred, label, k, ignore, mistake=None):
    keep = np.ones(label.shape, bool) if ignore is None or mistake == "void as 0" else label != ignore
    lab = np.where(label == ignore, 0, label) if mistake == "void as 0" else label
    m = np.zeros((k, k), np.int64)
    for t, p in zip(lab[keep].ravel(), pred[keep].ravel()):
        if mistake == "transposed":
            m[p, t] += 1
        else:
            m[t, p] += 1
    if mistake == "rates":
        return m / np.maximum(m.sum(1, keepdims=True), 1)
    return m


def miou(m, mistake=None):
    m = np.asarray(m, np.float64)
    tp, rows, cols = np.diag(m), m.sum(1), m.sum(0)
    if mistake == "accuracy":
        return tp.sum() / m.sum()
    den = {"recall": rows, "precision": cols, "double tp": rows + cols}.get(mistake, rows + cols - tp)
    ious = []
    for k in range(len(m)):
        if mistake == "labelled only" and rows[k] == 0:
            continue
        if den[k] == 0:
            if mistake == "all classes":
                ious.append(0.0)
            continue
        ious.append(tp[k] / den[k])
    return float(np.mean(ious))


def test_the_references_pass():
    assert check("confusion_counts", lambda p, l, k, i: confusion(p, l, k, i)).startswith("confusion_counts: passed")
    assert check("miou_present_classes", miou).startswith("miou_present_classes: passed (10 cases")


@pytest.mark.parametrize("mistake, said", [
    ("transposed", "rows and columns are swapped"),
    ("rates", "return the counts, not rates"),
    ("void as 0", "pixels labelled ignore_label must not be counted"),
])
def test_confusion_counts_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("confusion_counts", lambda p, l, k, i: confusion(p, l, k, i, mistake))


@pytest.mark.parametrize("mistake, said", [
    ("all classes", "you averaged over all K classes"),
    ("labelled only", "you left out the classes absent from the labels but predicted"),
    ("recall", "mean recall"),
    ("precision", "mean precision"),
    ("double tp", "TP is counted twice"),
    ("accuracy", "pixel accuracy"),
])
def test_miou_present_classes_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("miou_present_classes", lambda m: miou(m, mistake))
