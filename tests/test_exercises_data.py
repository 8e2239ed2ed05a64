"""The notebook-10 checkers (joint random crop, median-frequency weights) pass solutions and name mistakes."""
from __future__ import annotations

import numpy as np
import pytest

from tinydeeplab.exercises import ExerciseFailure, check


def student_crop(image, label, size, rng, *, pad_label=255, independent=False, exclusive=False, fixed=False):
    h, w = size
    ph, pw = max(h - image.shape[0], 0), max(w - image.shape[1], 0)
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=pad_label)
    H, W = label.shape
    extra = 0 if exclusive else 1

    def offset():
        if fixed:
            return 0, 0
        return int(rng.integers(0, max(H - h + extra, 1))), int(rng.integers(0, max(W - w + extra, 1)))

    top, left = offset()
    ltop, lleft = offset() if independent else (top, left)
    return image[top:top + h, left:left + w], label[ltop:ltop + h, lleft:lleft + w]


def test_a_solution_passes():
    assert check("joint_random_crop", student_crop).startswith("joint_random_crop: passed")


@pytest.mark.parametrize("kwargs, message", [
    (dict(pad_label=0), "pad labels with 255"),
    (dict(independent=True), "not aligned"),
    (dict(exclusive=True), "excludes high"),
    (dict(fixed=True), "never changes"),
])
def test_crop_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("joint_random_crop", lambda i, l, s, r: student_crop(i, l, s, r, **kwargs))


def test_swapped_size_is_named():
    with pytest.raises(ExerciseFailure, match="height and width swapped"):
        check("joint_random_crop", lambda i, l, s, r: student_crop(i, l, s[::-1], r))


def student_weights(counts, *, per_image=True, centre=np.median, inverted=False, over_present=True):
    counts = np.asarray(counts, float)
    k = counts.shape[1]
    f = np.zeros(k)
    for c in range(k):
        images = counts[:, c] > 0
        if images.any():
            f[c] = counts[:, c].sum() / (counts[images].sum() if per_image else counts.sum())
    present = f > 0
    m = centre(f[present] if over_present else f)
    w = np.zeros(k)
    w[present] = f[present] / m if inverted else m / f[present]
    return w


def test_weights_solution_passes():
    assert check("median_frequency_weights", student_weights).startswith("median_frequency_weights: passed")


@pytest.mark.parametrize("kwargs, message", [
    (dict(per_image=False), "CONTAIN class c"),
    (dict(inverted=True), "inverted"),
    (dict(centre=np.mean), "not their mean"),
    (dict(over_present=False), "classes that occur"),
])
def test_weight_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("median_frequency_weights", lambda c: student_weights(c, **kwargs))
