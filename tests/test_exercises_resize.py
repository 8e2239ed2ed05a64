"""The bilinear-resize checkers (notebook 04) pass a student's loop solution and name each mistake they claim.

The wrong solutions are written as a student would write them (loops over output pixels), not from
the checker's own variant matrices.
"""
from __future__ import annotations

import numpy as np
import pytest

from tinydeeplab.exercises import ExerciseFailure, check


def taps(n_in, n_out, mode="half"):
    """Per output index: (i0, i1, t), the way a student computes them."""
    out = []
    for o in range(n_out):
        if mode == "half":
            src = (o + 0.5) * n_in / n_out - 0.5
        elif mode == "corners":
            src = o * (n_in - 1) / max(n_out - 1, 1)
        else:                                            # "asymmetric"
            src = o * n_in / n_out
        i0 = int(np.floor(src))
        t = src - i0
        i1 = min(i0 + 1, n_in - 1)
        if mode != "noclamp":
            i0 = max(i0, 0)
        if mode == "noclamp":
            i0 = min(i0, n_in - 1)
        out.append((i0, max(i1, 0), t))
    return out


def student_resize(x, size, mode="half", swap=False):
    n, h, w, c = x.shape
    ho, wo = size
    y = np.zeros((n, ho, wo, c), x.dtype)
    rows = taps(h, ho, "half" if mode == "noclamp_half" else mode)
    cols = taps(w, wo, "half" if mode == "noclamp_half" else mode)
    if mode == "noclamp_half":                          # the student forgot max(i0, 0): i0 = -1 wraps
        rows = [(int(np.floor((o + 0.5) * h / ho - 0.5)), i1, t) for o, (i0, i1, t) in enumerate(rows)]
        cols = [(int(np.floor((o + 0.5) * w / wo - 0.5)), i1, t) for o, (i0, i1, t) in enumerate(cols)]
    for a, (r0, r1, tr) in enumerate(rows):
        for b, (c0, c1, tc) in enumerate(cols):
            if swap:
                tr_, tc_ = 1 - tr, 1 - tc
            else:
                tr_, tc_ = tr, tc
            y[:, a, b] = ((1 - tr_) * (1 - tc_) * x[:, r0, c0] + (1 - tr_) * tc_ * x[:, r0, c1]
                          + tr_ * (1 - tc_) * x[:, r1, c0] + tr_ * tc_ * x[:, r1, c1])
    return y


def student_backward(dy, in_size, mode="half", average=False):
    n, ho, wo, c = dy.shape
    h, w = in_size
    dx = np.zeros((n, h, w, c))
    for a, (r0, r1, tr) in enumerate(taps(h, ho, mode)):
        for b, (c0, c1, tc) in enumerate(taps(w, wo, mode)):
            g = dy[:, a, b]
            dx[:, r0, c0] += (1 - tr) * (1 - tc) * g
            dx[:, r0, c1] += (1 - tr) * tc * g
            dx[:, r1, c0] += tr * (1 - tc) * g
            dx[:, r1, c1] += tr * tc * g
    return dx * (h * w / (ho * wo)) if average else dx


def test_loop_solutions_pass():
    assert check("bilinear_resize", student_resize).startswith("bilinear_resize: passed")
    assert check("bilinear_resize_backward", student_backward).startswith("bilinear_resize_backward: passed")


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="corners"), "align-corners"),
    (dict(mode="asymmetric"), "TensorFlow 1's default"),
    (dict(swap=True), "weights are swapped"),
    (dict(mode="noclamp_half"), "the LAST pixel"),
])
def test_resize_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("bilinear_resize", lambda x, size: student_resize(x, size, **kwargs))


def test_transposed_sizes_are_named():
    def swapped(x, size):                               # read size as (W_out, H_out)
        return student_resize(x, size[::-1])
    with pytest.raises(ExerciseFailure, match=r"y has shape \(1, 4, 4, 1\)|y has shape \(2, 9, 7, 3\), expected \(2, 7, 9, 3\)"):
        check("bilinear_resize", swapped)


def test_interpolating_the_gradient_is_named():
    def interpolate(dy, in_size):                       # "the backward of an upsample is a downsample"
        return student_resize(dy, in_size)
    with pytest.raises(ExerciseFailure, match="not an interpolation but the transpose"):
        check("bilinear_resize_backward", interpolate)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="corners"), "adjoint of align-corners"),
    (dict(mode="asymmetric"), r"adjoint of src = o \* n_in / n_out"),
    (dict(average=True), "averaged instead of summing"),
])
def test_backward_mistakes_are_named(kwargs, message):
    with pytest.raises(ExerciseFailure, match=message):
        check("bilinear_resize_backward", lambda dy, in_size: student_backward(dy, in_size, **kwargs))


def test_a_backward_wrong_only_in_one_entry_fails():
    def off(dy, in_size):
        dx = student_backward(dy, in_size)
        dx[0, 0, 0, 0] += 0.1
        return dx
    with pytest.raises(ExerciseFailure, match="differs from the reference"):
        check("bilinear_resize_backward", off)
