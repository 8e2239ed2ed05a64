"""The data-parallel checkers (notebook 14) pass a student's solution and name each mistake they claim.

The student solutions are written from the formulas with switchable mistakes, not from the checker's variants.
"""
from __future__ import annotations

import numpy as np
import pytest

from tinydeeplab.exercises import ExerciseFailure, check


def student_average(grads, counts, *, mistake=None):
    grads, counts = np.asarray(grads, np.float64), np.asarray(counts, np.float64)
    if mistake == "plain mean":
        return grads.mean(axis=0)
    total = counts.sum()
    if mistake == "no division":
        total = 1.0
    if total == 0 and mistake != "zero over zero":
        return np.zeros(grads.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = sum(c / total * g for c, g in zip(counts, grads))
    return out / len(counts) if mistake == "extra 1/N" else out


def student_statistics(local, *, mistake=None):
    local = np.asarray(local, np.float64)                 # (N, 3, C)
    s, s2, m = local[:, 0], local[:, 1], local[:, 2]
    count = s.shape[0] if mistake == "ranks as count" else m.sum(0)
    if mistake == "mean of means":
        mean = (s / m).mean(0)
    else:
        mean = s.sum(0) / count
    if mistake == "mean of variances":
        return mean, (s2 / m - (s / m) ** 2).mean(0)
    var = s2.sum(0) / count - mean ** 2
    if mistake == "unbiased":
        var = var * count / (count - 1)
    return mean, var


def test_reference_solutions_pass():
    assert check("weighted_gradient_average", student_average).startswith("weighted_gradient_average: passed")
    assert check("syncbn_statistics", student_statistics).startswith("syncbn_statistics: passed")


@pytest.mark.parametrize("mistake, message", [
    ("plain mean", "plain mean of the rank gradients"),
    ("no division", "did not divide by their sum"),
    ("extra 1/N", "an extra 1 / N"),
    ("zero over zero", "not 0 / 0"),
])
def test_gradient_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("weighted_gradient_average", lambda g, c: student_average(g, c, mistake=mistake))


@pytest.mark.parametrize("mistake, message", [
    ("unbiased", "unbiased variance"),
    ("mean of means", "averaged the per-rank means"),
    ("mean of variances", "averaged the per-rank variances"),
    ("ranks as count", "divided by the number of ranks"),
])
def test_statistics_mistakes_are_named(mistake, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("syncbn_statistics", lambda local: student_statistics(local, mistake=mistake))
