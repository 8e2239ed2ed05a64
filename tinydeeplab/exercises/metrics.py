"""Segmentation basics (notebook 00): IoU and mIoU from a confusion matrix, reading a label PNG as indices.

==================  ==========================================================  ==================================
name                the student writes                                          reference
==================  ==========================================================  ==================================
iou_from_confusion  ``fn(matrix) -> (iou, miou)``: ``matrix[i, j]`` = pixels     :class:`ConfusionMatrix` ``.iou()``,
                    labelled ``i`` predicted ``j``; ``iou`` (K,) float64, NaN    ``.miou()``
                    for a class absent from labels and predictions
read_label_png      ``fn(path) -> (H, W) uint8`` class indices of a palette     ``read_index_png``
                    (VOC) or grey (CamVid) PNG
==================  ==========================================================  ==================================

``IoU_k = TP_k / (TP_k + FP_k + FN_k)`` with ``TP_k = M[k, k]``, ``FP_k`` the rest of column ``k``, ``FN_k``
the rest of row ``k``; ``mIoU`` is the mean over the classes whose IoU is defined. The checker names
recall or precision in place of IoU, Dice, absent classes scored 0 or 1, and a mean over all K classes;
for the PNG, a conversion to RGB or to grey (luminance of the palette colours instead of the indices).

>>> import numpy as np
>>> from tinydeeplab.exercises import check
>>> from tinydeeplab.train.metrics import ConfusionMatrix
>>> def mine(matrix):
...     cm = ConfusionMatrix(len(matrix)); cm.matrix[...] = matrix
...     return cm.iou(), cm.miou()
>>> check("iou_from_confusion", mine)
'iou_from_confusion: passed (5 cases)'
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.base import voc_palette
from ..data.files import read_index_png
from ..train.metrics import ConfusionMatrix
from . import exercise
from ._grading import Variant, attempt, compare, fail, unpack


def _matrices():
    """Seeded confusion matrices: plain, with an absent class, with a class only predicted, larger."""
    rng = np.random.default_rng(60)
    out = [np.array([[5, 1], [2, 4]])]
    m = rng.integers(0, 20, (4, 4)) + np.diag(rng.integers(20, 60, 4))
    m[2, :] = 0
    m[:, 2] = 0                                              # class 2: never labelled, never predicted
    out.append(m)
    m = rng.integers(0, 9, (3, 3)) + np.diag([30, 40, 0])
    m[2, :] = 0                                              # class 2 only predicted (IoU 0, not NaN)
    out.append(m)
    m = rng.integers(0, 30, (6, 6)) + np.diag(rng.integers(50, 200, 6))
    m[[1, 4], :] = 0
    m[:, [1, 4]] = 0
    out.append(m)
    out.append(np.diag([7, 0, 3]) + np.array([[0, 0, 2], [0, 0, 0], [1, 0, 0]]))
    return out


def _quiet_div(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(a, np.float64) / np.asarray(b, np.float64)


def _nanmean(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.float64(np.nanmean(x))


def _compare_with_nan(got, expected, what, case, variants):
    """Like compare, but NaN entries of ``expected`` must be NaN in ``got`` (an undefined IoU)."""
    got = np.asarray(got, np.float64) if isinstance(got, (np.ndarray, list, tuple)) else got
    if isinstance(got, np.ndarray) and got.shape == expected.shape:
        absent = np.isnan(expected)
        for v in variants:
            if np.allclose(got, v.value, equal_nan=True):
                fail(f"{what} is wrong: {v.message}", case)
        wrong = absent & ~np.isnan(got)
        if wrong.any():
            k = int(np.argmax(wrong))
            fail(f"{what}[{k}] is {got[k]:.6g} but class {k} is absent from both labels and predictions: its IoU "
                 f"is 0 / 0, undefined; return NaN so that the mean skips it", case)
        spurious = ~absent & np.isnan(got)
        if spurious.any():
            k = int(np.argmax(spurious))
            fail(f"{what}[{k}] is NaN but class {k} occurs (in the labels or the predictions): its IoU is defined",
                 case)
        got, expected = np.where(absent, 0.0, got), np.where(absent, 0.0, expected)
        variants = []
    compare(got, expected, what, case, variants=variants, check_dtype=False)


@exercise("iou_from_confusion", "per-class IoU (NaN for absent classes) and mIoU from a confusion matrix")
def _check_iou_from_confusion(fn):
    n = 0
    for matrix in _matrices():
        case = {"matrix": matrix}
        iou, miou = unpack(attempt(fn, case, matrix.copy()), 2, "(iou, miou)", case)
        cm = ConfusionMatrix(len(matrix))
        cm.matrix[...] = matrix
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected_iou, expected_miou = cm.iou(), np.float64(cm.miou())
        tp = np.diag(matrix)
        rows, cols = matrix.sum(1), matrix.sum(0)
        union = rows + cols - tp
        absent = union == 0
        iou_variants = [
            Variant(_quiet_div(tp, rows), "this is the recall TP / (TP + FN) (row sums only); IoU divides by "
                                          "the union TP + FP + FN = row sum + column sum - TP"),
            Variant(_quiet_div(tp, cols), "this is the precision TP / (TP + FP) (column sums only); IoU divides "
                                          "by the union TP + FP + FN = row sum + column sum - TP"),
            Variant(_quiet_div(2 * tp, rows + cols), "this is the Dice score 2TP / (2TP + FP + FN), not IoU"),
            Variant(_quiet_div(tp, rows + cols), "TP is counted twice in the union: TP + FP + FN = row sum + "
                                                 "column sum - TP"),
        ]
        if absent.any():
            iou_variants += [Variant(np.where(absent, 0.0, expected_iou),
                                     "absent classes get IoU 0; a class absent from labels and predictions has an "
                                     "undefined IoU (0 / 0): return NaN so the mean skips it"),
                             Variant(np.where(absent, 1.0, expected_iou),
                                     "absent classes get IoU 1; their IoU is undefined (0 / 0): return NaN")]
        _compare_with_nan(iou, expected_iou, "iou", case, iou_variants)
        miou_variants = [Variant(np.float64(np.nan_to_num(expected_iou).mean()),
                                 "the mean runs over all K classes, counting absent ones as 0; average over the "
                                 "classes whose IoU is defined (np.nanmean)")] if absent.any() else []
        miou_variants.append(Variant(_nanmean(_quiet_div(tp, rows)), "this is the mean recall (mean class accuracy)"))
        if isinstance(miou, np.ndarray) and miou.size == 1:
            miou = miou.reshape(())
        compare(miou, expected_miou, "miou", case, variants=miou_variants, check_dtype=False)
        n += 1
    return f"{n} cases"


def _label_files(directory: Path):
    """``(path, indices, kind)``: a VOC-style palette PNG with a 255 border and a CamVid-style grey PNG."""
    rng = np.random.default_rng(61)
    voc = np.zeros((12, 16), np.uint8)
    voc[2:9, 3:10] = 15                                          # a "person"
    voc[5:11, 9:15] = 12                                         # a "dog"
    border = np.zeros_like(voc, bool)
    for axis in (0, 1):
        border |= np.diff(voc, axis=axis, prepend=voc.take([0], axis=axis)) != 0
    voc[border] = 255                                            # VOC's object outline, "ignore"
    im = Image.fromarray(voc, mode="P")
    im.putpalette(voc_palette(256).ravel().tolist())
    im.save(directory / "voc_like.png")
    camvid = rng.integers(0, 12, (10, 14)).astype(np.uint8)     # SegNet CamVid: 0..10 classes, 11 = void
    Image.fromarray(camvid, mode="L").save(directory / "camvid_like.png")
    return [(directory / "voc_like.png", voc, "palette"), (directory / "camvid_like.png", camvid, "grey")]


@exercise("read_label_png", "read a label PNG (palette or grey) as its class indices, (H, W) uint8")
def _check_read_label_png(fn):
    with tempfile.TemporaryDirectory() as tmp:
        files = _label_files(Path(tmp))
        for path, expected, kind in files:
            case = {"path": path.name, "mode": kind}
            got = attempt(fn, case, str(path))
            assert np.array_equal(read_index_png(path), expected)
            with Image.open(path) as im:
                rgb = np.array(im.convert("RGB"))
                grey = np.array(im.convert("L"))
            compare(got, expected, "label", case, variants=[
                Variant(rgb, "you converted the PNG to RGB colours; a label PNG stores class indices: read them "
                             "as they are (np.array(Image.open(path)), no .convert)"),
                Variant(grey, "you converted to grey ('L'): for a palette PNG that is the luminance of each "
                              "class's colour, not its index; read the indices without .convert"),
            ] if kind == "palette" else [Variant(rgb, "you converted the PNG to RGB; read the values as they are")])
    return f"{len(files)} files (palette and grey)"
