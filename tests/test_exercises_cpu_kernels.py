"""The CPU-kernel checkers (notebook 15): ``fused_bn_relu`` and ``live_tap_plan``.

The references are checked against something independent (a per-element Python formula; the
all-ones convolution whose output counts the taps reading real pixels), and each named mistake is
written the way a student would write it (a Numba kernel for the fused forward).
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

from tinydeeplab import functional as F
from tinydeeplab.exercises import ExerciseFailure, check
from tinydeeplab.exercises.cpu_kernels import reference_bn_relu, reference_live_tap_plan


# --- fused_bn_relu ----------------------------------------------------------------------------------------------

def test_reference_bn_relu_is_the_formula():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2, 4))
    gamma, beta, mean, var = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4), rng.random(4)
    y = reference_bn_relu(x, gamma, beta, mean, var, 1e-3)
    for idx in np.ndindex(x.shape):
        c = idx[3]
        v = gamma[c] * (x[idx] - mean[c]) / np.sqrt(var[c] + 1e-3) + beta[c]
        assert y[idx] == pytest.approx(max(v, 0.0), rel=1e-12, abs=1e-12)


@njit(parallel=True)
def _bn_relu_kernel(x2, scale, shift, y2, mistake):
    """A student's fused kernel on the (M, C) view; ``mistake`` 0 = none."""
    for m in prange(x2.shape[0]):
        for c in range(x2.shape[1]):
            if mistake == 1:                                        # ReLU on xhat, then scale and shift
                xhat = (x2[m, c] - shift[c]) * scale[c]
                y2[m, c] = max(xhat, 0.0)
            else:
                v = x2[m, c] * scale[c] + shift[c]
                y2[m, c] = v if v > 0 else 0.0


def student_bn_relu(x, gamma, beta, mean, var, eps, mistake=None):
    """A student's wrapper: fold the BN into one scale and shift per channel, then one fused pass."""
    c = x.shape[3]
    x2 = np.ascontiguousarray(x).reshape(-1, c)
    if mistake == "relu_first":
        inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
        y2 = np.empty_like(x2)
        _bn_relu_kernel(x2, inv_std, mean.astype(x.dtype), y2, 1)
        return (gamma * y2 + beta).astype(x.dtype).reshape(x.shape)
    denom = {"no_eps": np.sqrt(var), "eps_outside": np.sqrt(var) + eps, "no_sqrt": var + eps}.get(mistake,
                                                                                                np.sqrt(var + eps))
    scale = (gamma / denom).astype(x.dtype)
    shift = (beta - mean * scale).astype(x.dtype)
    if mistake == "swap":
        scale = (beta / denom).astype(x.dtype)
        shift = (gamma - mean * scale).astype(x.dtype)
    if mistake == "batch_stats":
        batch_mean, batch_var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        scale = (gamma / np.sqrt(batch_var + eps)).astype(x.dtype)
        shift = (beta - batch_mean * scale).astype(x.dtype)
    y2 = x2 if mistake == "in_place" else np.empty_like(x2)
    _bn_relu_kernel(x2, scale, shift, y2, 0)
    y = y2.reshape(x.shape)
    if mistake == "no_relu":
        return (x * scale + shift).astype(x.dtype)
    if mistake == "float64":
        return y.astype(np.float64)
    return y


def test_fused_bn_relu_reference_and_a_numba_solution_pass():
    assert check("fused_bn_relu", reference_bn_relu).startswith("fused_bn_relu: passed")
    assert check("fused_bn_relu", student_bn_relu).startswith("fused_bn_relu: passed")


@pytest.mark.parametrize("mistake, said", [
    ("relu_first", "you applied ReLU before the scale"),
    ("no_relu", "the ReLU is missing"),
    ("no_eps", "eps is missing"),
    ("eps_outside", "eps goes inside the square root"),
    ("no_sqrt", "you divided by var + eps"),
    ("swap", "gamma and beta are swapped"),
    ("batch_stats", "statistics of this batch"),
])
def test_fused_bn_relu_names_the_channel_and_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=r"fused_bn_relu: wrong at channel \d+.*gamma .*beta ") as err:
        check("fused_bn_relu", lambda *args: student_bn_relu(*args, mistake=mistake))
    assert said in str(err.value)


def test_relu_before_the_scale_is_caught_where_it_matters():
    """Channel 0 has gamma > 0 and beta = 0, where ReLU-first happens to be right: the first wrong one is later."""
    with pytest.raises(ExerciseFailure, match=r"wrong at channel [1-9]") as err:
        check("fused_bn_relu", lambda *args: student_bn_relu(*args, mistake="relu_first"))
    assert "ReLU before the scale" in str(err.value)


def test_fused_bn_relu_wants_the_input_dtype_and_x_untouched():
    with pytest.raises(ExerciseFailure, match="dtype float64, expected float32"):
        check("fused_bn_relu", lambda *args: student_bn_relu(*args, mistake="float64"))
    with pytest.raises(ExerciseFailure, match="modified x"):
        check("fused_bn_relu", lambda *args: student_bn_relu(*args, mistake="in_place"))


def test_fused_bn_relu_lists_an_unknown_mistake():
    def off_by_a_bit(*args):
        y = reference_bn_relu(*args)
        y[0, 0, 0, 2] += 1.0
        return y

    with pytest.raises(ExerciseFailure, match=r"wrong at channel 2, gamma .*: 1 of \d+ values differ, first at "
                                              r"\[0, 0, 0, 2\]"):
        check("fused_bn_relu", off_by_a_bit)


# --- live_tap_plan ----------------------------------------------------------------------------------------------

def counted_live_taps(h, w, rate):
    """Taps (i, j) whose one-hot kernel gives a non-zero conv of an all-ones image, and where (an independent check)."""
    live = []
    for i in range(3):
        for j in range(3):
            k = np.zeros((3, 3, 1, 1))
            k[i, j] = 1.0
            y, _ = F.conv2d_forward(np.ones((1, h, w, 1)), k, dilation=rate, padding="same")
            rows, cols = np.flatnonzero(y[0, :, :, 0].any(axis=1)), np.flatnonzero(y[0, :, :, 0].any(axis=0))
            if rows.size:
                live.append((i, j, (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)))
    return live


@pytest.mark.parametrize("h, w, rate", [(16, 16, 18), (16, 16, 12), (16, 16, 16), (33, 33, 6), (16, 40, 24),
                                        (1, 1, 1), (5, 9, 5)])
def test_reference_plan_matches_the_taps_a_convolution_reads(h, w, rate):
    assert reference_live_tap_plan(h, w, rate) == counted_live_taps(h, w, rate)


def plan_student(h, w, rate, mistake=None):
    """A student's plan: per axis, the outputs where the tap at offset (k - 1) * rate stays inside the map."""
    def ranges(size):
        out = {}
        for k in range(3):
            off = (k - 1) * rate if mistake != "swapped" else (1 - k) * rate
            first = max(0, -off)
            end = min(size, size - off) if mistake != "long" else min(size, size - off + (off > 0))
            if mistake == "le":
                if k == 1 or rate <= size:
                    out[k] = (first, max(first, end))
            elif mistake == "dead" or end > first:
                out[k] = (first, max(first, end)) if mistake != "inclusive" else (first, end - 1)
        return out
    rows, cols = (ranges(w), ranges(h)) if mistake == "hw" else (ranges(h), ranges(w))
    return [(i, j, rows[i], cols[j]) for i in rows for j in cols]


def test_live_tap_plan_reference_and_a_student_pass():
    assert check("live_tap_plan", reference_live_tap_plan).startswith("live_tap_plan: passed")
    assert check("live_tap_plan", plan_student).startswith("live_tap_plan: passed")
    reversed_order = lambda h, w, rate: list(reversed(plan_student(h, w, rate)))          # noqa: E731
    assert check("live_tap_plan", reversed_order).startswith("live_tap_plan: passed")


@pytest.mark.parametrize("mistake, said", [("dead", "never reads a real pixel"),
                                           ("le", "a tap is live only when rate < size")])
def test_live_tap_plan_refuses_a_tap_with_an_empty_range(mistake, said):
    with pytest.raises(ExerciseFailure, match=r"live_tap_plan: you listed tap \(\d, \d\) with the empty range") as err:
        check("live_tap_plan", lambda h, w, rate: plan_student(h, w, rate, mistake))
    assert said in str(err.value)


@pytest.mark.parametrize("mistake, said", [("long", "one too long"),
                                           ("swapped", "before and after the centre"),
                                           ("hw", "swapped height and width"),
                                           ("inclusive", "the end excluded")])
def test_live_tap_plan_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=r"live_tap_plan: wrong in \d+ of \d+ cases") as err:
        check("live_tap_plan", lambda h, w, rate: plan_student(h, w, rate, mistake))
    assert said in str(err.value)


def test_live_tap_plan_wants_the_ranges_and_indices_not_offsets():
    with pytest.raises(ExerciseFailure, match=r"only the taps \(i, j\)"):
        check("live_tap_plan", lambda h, w, rate: [t[:2] for t in plan_student(h, w, rate)])
    offsets = lambda h, w, rate: [(i - 1, j - 1, r, c) for i, j, r, c in plan_student(h, w, rate)]   # noqa: E731
    with pytest.raises(ExerciseFailure, match="not offsets"):
        check("live_tap_plan", offsets)
    with pytest.raises(ExerciseFailure, match="listed twice"):
        check("live_tap_plan", lambda h, w, rate: plan_student(h, w, rate) * 2)
