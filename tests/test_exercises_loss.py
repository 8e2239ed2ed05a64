"""The softmax cross-entropy checkers (notebook 05) pass a student's solution and name each mistake they claim.

The student solutions are written from the formulas with switchable mistakes, not from the checker's
variants.
"""
from __future__ import annotations

import numpy as np
import pytest

from tinydeeplab.exercises import ExerciseFailure, check


def student_loss(logits, labels, class_weights, *, stable=True, denominator="weights", weighted=True,
                 ignore_as_zero=False, mean=True):
    valid = np.ones(labels.shape, bool) if ignore_as_zero else labels != 255
    y = np.where(labels != 255, labels, 0)
    z = logits.astype(np.float64)
    m = z.max(-1, keepdims=True) if stable else 0.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        lse = m[..., 0] + np.log(np.exp(z - m).sum(-1)) if stable else np.log(np.exp(z).sum(-1))
        nll = lse - np.take_along_axis(z, y[..., None], -1)[..., 0]
        w = class_weights[y] if weighted else np.ones(labels.shape)
        num = (w * nll)[valid].sum()
        den = {"weights": w[valid].sum(), "valid": valid.sum(), "all": labels.size}[denominator]
        if not mean:
            return float(num)
        return float(num / den) if den else 0.0


def student_grad(logits, labels, class_weights, *, zero_ignored=True, normalise="weights", weighted=True,
                 onehot=True, sign=1.0):
    valid = labels != 255
    y = np.where(valid, labels, 0)
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    g = p - np.eye(logits.shape[-1])[y] if onehot else p
    w = class_weights[y] if weighted else np.ones(labels.shape)
    if zero_ignored:
        w = w * valid
    den = {"weights": w.sum(), "valid": valid.sum(), "none": 1.0}[normalise]
    if den == 0:
        return np.zeros_like(logits)
    return sign * g * (w / den)[..., None]


def test_reference_solutions_pass():
    assert check("softmax_cross_entropy", student_loss).startswith("softmax_cross_entropy: passed")
    assert check("softmax_cross_entropy_grad", student_grad).startswith("softmax_cross_entropy_grad: passed")


@pytest.mark.parametrize("kwargs, message", [
    (dict(stable=False), "exp\\(1000\\) overflows"),
    (dict(denominator="valid"), "divided by the number of valid pixels"),
    (dict(denominator="all"), "ignored pixels are counted in the denominator"),
    (dict(weighted=False), "class weights are missing"),
    (dict(ignore_as_zero=True), "ignored pixels count as class 0"),
    (dict(mean=False), "you returned the sum"),
])
def test_loss_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("softmax_cross_entropy", lambda z, y, w: student_loss(z, y, w, **kwargs))


def test_zero_over_zero_is_named():
    def no_guard(logits, labels, class_weights):
        valid = labels != 255
        y = np.where(valid, labels, 0)
        z = logits - logits.max(-1, keepdims=True)
        nll = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, y[..., None], -1)[..., 0]
        w = class_weights[y] * valid
        with np.errstate(invalid="ignore"):
            return float((w * nll).sum() / w.sum())
    with pytest.raises(ExerciseFailure, match="not 0 / 0"):
        check("softmax_cross_entropy", no_guard)


@pytest.mark.parametrize("kwargs, message", [
    (dict(zero_ignored=False), "ignored pixels get a nonzero gradient"),
    (dict(normalise="none"), "factor 1 / S is missing"),
    (dict(normalise="valid"), "divided by the number of valid pixels"),
    (dict(weighted=False, normalise="valid"), "class weights are missing"),
    (dict(onehot=False), "- onehot\\(y\\) term is missing"),
    (dict(sign=-1.0), "wrong sign"),
])
def test_gradient_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("softmax_cross_entropy_grad", lambda z, y, w: student_grad(z, y, w, **kwargs))
