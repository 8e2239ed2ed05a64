"""The notebook-00 checkers (IoU from a confusion matrix, label PNGs) pass a student's solution and name mistakes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.exercises import ExerciseFailure, check


def student_iou(matrix, *, denominator="union", absent=np.nan, mean="present"):
    tp = np.diag(matrix).astype(float)
    rows, cols = matrix.sum(1), matrix.sum(0)
    den = {"union": rows + cols - tp, "recall": rows, "precision": cols, "double": rows + cols}[denominator]
    iou = np.array([tp[k] / den[k] if den[k] else absent for k in range(len(tp))])
    if denominator == "union":
        iou = np.where(rows + cols - tp == 0, absent, iou)
    shown = iou[~np.isnan(iou)] if mean == "present" else np.nan_to_num(iou)
    return iou, float(shown.mean())


def test_a_solution_passes():
    assert check("iou_from_confusion", student_iou).startswith("iou_from_confusion: passed")


@pytest.mark.parametrize("kwargs, message", [
    (dict(denominator="recall"), "recall"),
    (dict(denominator="precision"), "precision"),
    (dict(denominator="double"), "TP is counted twice"),
    (dict(absent=0.0), "absent classes get IoU 0"),
    (dict(absent=1.0), "absent classes get IoU 1"),
    (dict(mean="all"), "the mean runs over all K classes"),
])
def test_iou_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("iou_from_confusion", lambda m: student_iou(m, **kwargs))


def test_reading_indices_passes_and_conversions_are_named():
    assert check("read_label_png", lambda p: np.array(Image.open(p))).startswith("read_label_png: passed")
    with pytest.raises(ExerciseFailure, match="converted the PNG to RGB"):
        check("read_label_png", lambda p: np.array(Image.open(p).convert("RGB")))
    with pytest.raises(ExerciseFailure, match="luminance"):
        check("read_label_png", lambda p: np.array(Image.open(p).convert("L")))
    with pytest.raises(ExerciseFailure, match="dtype"):
        check("read_label_png", lambda p: np.array(Image.open(p)).astype(np.int64))
