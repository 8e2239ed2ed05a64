"""The training-dynamics checkers (``tinydeeplab.exercises.training``, notebook 11): each passes a solution
written independently of the reference and names each characteristic mistake it claims to recognise.

The wrong solutions are written the way a student would write them, not taken from the checkers' variants.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from tinydeeplab.exercises import ExerciseFailure, check


# --- lr_range_schedule ------------------------------------------------------------------------------------------

def schedule(lr_min, lr_max, steps, mistake=None):
    """A student's range-test schedule with switchable mistakes."""
    if mistake == "linspace":
        return np.linspace(lr_min, lr_max, steps)
    if mistake == "logspace":
        return np.logspace(lr_min, lr_max, steps)
    if mistake == "decreasing":
        return np.geomspace(lr_max, lr_min, steps)
    if mistake == "k / steps":
        return np.array([lr_min * (lr_max / lr_min) ** (k / steps) for k in range(steps)])
    if mistake == "powers of ten":
        return np.array([lr_min * 10 ** (k / (steps - 1)) for k in range(steps)])
    return np.geomspace(lr_min, lr_max, steps)


def test_lr_range_schedule_passes_a_solution():
    assert check("lr_range_schedule", schedule).startswith("lr_range_schedule: passed")


@pytest.mark.parametrize("mistake, said", [
    ("linspace", "the rates grow linearly"),
    ("logspace", "np.logspace takes exponents"),
    ("decreasing", "the rates decrease"),
    ("k / steps", "divide by steps - 1"),
    ("powers of ten", "not 10 ** ..."),
])
def test_lr_range_schedule_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("lr_range_schedule", lambda lo, hi, n: schedule(lo, hi, n, mistake))


# --- steepest_lr ------------------------------------------------------------------------------------------------

def steepest(lrs, losses, beta, mistake=None):
    """A student's steepest-descent pick with switchable mistakes."""
    lrs, losses = np.asarray(lrs), np.asarray(losses)
    smooth, avg = np.zeros(len(losses)), 0.0
    for k in range(len(losses)):
        avg = beta * avg + (1 - beta) * losses[k]
        smooth[k] = avg if mistake == "no debias" else avg / (1 - beta ** (k + 1))
    if mistake == "raw":
        smooth = losses
    x = lrs if mistake == "against lr" else np.log(lrs)
    slope = np.gradient(smooth, x)
    if mistake == "lowest":
        return float(lrs[np.argmin(smooth)])
    if mistake == "ascent":
        return float(lrs[np.argmax(slope)])
    if mistake == "index":
        return int(np.argmin(slope))
    return float(lrs[np.argmin(slope)])


def test_steepest_lr_passes_a_solution():
    assert check("steepest_lr", steepest).startswith("steepest_lr: passed")


@pytest.mark.parametrize("mistake, said", [
    ("raw", "smooth them first"),
    ("no debias", "not bias-corrected"),
    ("against lr", "take it against log lr"),
    ("lowest", "you returned the lr of the lowest loss"),
    ("ascent", "steepest *ascent*"),
    ("index", "you returned the index of the step"),
])
def test_steepest_lr_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("steepest_lr", lambda lrs, losses, beta: steepest(lrs, losses, beta, mistake))


# --- tap_gradient_norms -----------------------------------------------------------------------------------------

def taps(dw, mistake=None):
    """A student's per-tap norms with switchable mistakes."""
    kh, kw = dw.shape[:2]
    norms = np.zeros((kh, kw))
    for i in range(kh):
        for j in range(kw):
            tap = dw[i, j].astype(np.float64)
            if mistake == "squared":
                norms[i, j] = np.sum(tap ** 2)
            elif mistake == "l1":
                norms[i, j] = np.sum(np.abs(tap))
            elif mistake == "rms":
                norms[i, j] = np.sqrt(np.mean(tap ** 2))
            else:
                norms[i, j] = np.linalg.norm(tap)
    if mistake == "transposed":
        norms = np.ascontiguousarray(norms.T)
    if mistake == "wrong axes":
        norms = np.sqrt((dw.astype(np.float64) ** 2).sum(axis=(0, 1)))
    dead = norms == 0
    if mistake == "tolerance":
        dead = norms < 1e-6
    if mistake == "signed sum":
        dead = dw.sum(axis=(2, 3)) == 0
    if mistake == "inverted":
        dead = norms != 0
    return norms, dead


def test_tap_gradient_norms_passes_a_solution():
    assert check("tap_gradient_norms", taps).startswith("tap_gradient_norms: passed")


@pytest.mark.parametrize("mistake, said", [
    ("squared", "take the square root"),
    ("l1", "you returned the L1 norm"),
    ("rms", "you returned the root-mean-square"),
    ("transposed", "the norms are transposed"),
    ("wrong axes", "sum over the channels (axes 2, 3)"),
    ("tolerance", "not with a tolerance"),
    ("signed sum", "entries of both signs can cancel"),
    ("inverted", "you flagged the live taps"),
])
def test_tap_gradient_norms_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("tap_gradient_norms", lambda dw: taps(dw, mistake))


def test_a_real_backward_through_aspp_gives_exactly_eight_dead_taps_when_the_rate_exceeds_the_map():
    """What notebook 11 shows, independently of its cells: rate 6 on a 4x4 map, rate 2 on the same map."""
    from tinydeeplab.exercises.training import tap_gradient_norms
    from tinydeeplab.models.aspp import ASPP

    aspp = ASPP(3, [2, 6], num_channels=4, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    out = aspp.forward(x, training=True)
    aspp.backward(np.random.default_rng(1).normal(size=out.shape).astype(np.float32))
    modules = dict(aspp.modules())
    _, dead2 = tap_gradient_norms(modules["branch1.conv"].grads["kernel"])
    _, dead6 = tap_gradient_norms(modules["branch2.conv"].grads["kernel"])
    assert not dead2.any()
    assert dead6.sum() == 8 and not dead6[1, 1]
