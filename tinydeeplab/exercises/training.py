"""Training-dynamics exercises (notebook 11): the learning-rate range test and dead atrous taps.

=====================  ============================================================  ===========================
name                   the student writes                                            reference
=====================  ============================================================  ===========================
lr_range_schedule      ``fn(lr_min, lr_max, steps) -> (steps,)``: the learning rates  :func:`lr_range_schedule`
                       of a range test, growing by a constant factor per step
steepest_lr            ``fn(lrs, losses, beta) -> float``: the lr where the smoothed  :func:`steepest_lr`
                       loss falls fastest per unit of ``log lr``
tap_gradient_norms     ``fn(dw (kh, kw, Cin, Cout)) -> (norms (kh, kw), dead)``:      :func:`tap_gradient_norms`
                       the L2 norm of each tap's gradient, and which taps are dead
=====================  ============================================================  ===========================

The range test (Smith 2017) trains for ``K`` steps with ``lr_k = lr_min (lr_max / lr_min)^(k / (K - 1))``
and records the loss of each step. The curve is noisy, so it is smoothed with a bias-corrected
exponential moving average before its slope is taken against ``log lr``.

>>> from tinydeeplab.exercises import check
>>> check("lr_range_schedule", lambda lo, hi, n: np.linspace(lo, hi, n))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: lr_range_schedule: learning rates is wrong: the rates grow linearly...
"""
from __future__ import annotations

import numpy as np

from . import exercise
from ._grading import Variant, attempt, compare, fail, judge_cases, unpack


def lr_range_schedule(lr_min: float, lr_max: float, steps: int) -> np.ndarray:
    """``lr_k = lr_min (lr_max / lr_min)^(k / (steps - 1))`` for ``k = 0 .. steps - 1``: (steps,) float64.

    >>> lr_range_schedule(1e-3, 1.0, 4).round(6).tolist()          # x10 per step
    [0.001, 0.01, 0.1, 1.0]
    """
    k = np.arange(steps, dtype=np.float64)
    return lr_min * (lr_max / lr_min) ** (k / (steps - 1))


def smoothed_loss(losses, beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average: ``a_k = beta a_{k-1} + (1 - beta) L_k`` (``a_{-1} = 0``),
    ``s_k = a_k / (1 - beta^(k + 1))``; (K,) float64.

    >>> smoothed_loss([2.0, 2.0, 2.0], 0.9).round(12).tolist()      # no bias towards the zero start
    [2.0, 2.0, 2.0]
    """
    losses = np.asarray(losses, np.float64)
    out, a = np.empty_like(losses), 0.0
    for k, value in enumerate(losses):
        a = beta * a + (1 - beta) * value
        out[k] = a / (1 - beta ** (k + 1))
    return out


def steepest_lr(lrs, losses, beta: float = 0.9) -> float:
    """The lr of the steepest descent: ``lrs[argmin_k ds/d(log lr)]`` of the smoothed loss ``s``
    (:func:`smoothed_loss`; the slope by ``np.gradient``: central differences, one-sided at the ends).

    >>> lrs = lr_range_schedule(1e-4, 1.0, 9)
    >>> steepest_lr(lrs, [2.0, 2.0, 1.9, 1.2, 0.6, 0.5, 0.5, 0.9, 3.0], beta=0.0) == float(lrs[3])
    True
    """
    lrs = np.asarray(lrs, np.float64)
    slope = np.gradient(smoothed_loss(losses, beta), np.log(lrs))
    return float(lrs[int(np.argmin(slope))])


def tap_gradient_norms(dw):
    """Per-tap L2 norms of a kernel gradient ``dw`` (kh, kw, Cin, Cout) and the dead taps.

    ``norms[i, j] = sqrt(sum_{c, f} dw[i, j, c, f]^2)`` (kh, kw) float64; ``dead = norms == 0`` (kh, kw) bool:
    a tap is dead when its gradient is *exactly* zero (it read only padding), not merely small.

    >>> dw = np.zeros((3, 3, 2, 2)); dw[1, 1] = 1.0
    >>> norms, dead = tap_gradient_norms(dw)
    >>> float(norms[1, 1]), int(dead.sum())
    (2.0, 8)
    """
    norms = np.sqrt((np.asarray(dw, np.float64) ** 2).sum(axis=(2, 3)))   # (kh, kw)
    return norms, norms == 0


# --- checkers ---------------------------------------------------------------------------------------------------

@exercise("lr_range_schedule", "learning rates of an LR range test: lr_min to lr_max by a constant factor per step")
def _check_lr_range_schedule(fn):
    cases = [dict(lr_min=1e-4, lr_max=10.0, steps=6), dict(lr_min=1e-3, lr_max=1.0, steps=31),
             dict(lr_min=0.05, lr_max=0.8, steps=2), dict(lr_min=2e-5, lr_max=3.0, steps=100)]
    for case in cases:
        lo, hi, n = case["lr_min"], case["lr_max"], case["steps"]
        got = attempt(fn, case, lo, hi, n)
        k = np.arange(n, dtype=np.float64)
        ratio = hi / lo
        variants = [Variant(np.linspace(lo, hi, n), "the rates grow linearly: they must grow by the same *factor* "
                                                    "each step (equal steps in log lr)"),
                    Variant(np.logspace(lo, hi, n), "np.logspace takes exponents: np.logspace(a, b) runs from 10**a "
                                                    "to 10**b; use np.geomspace or log10 of the bounds"),
                    Variant(lo * ratio ** (k / n), "the exponent is k / steps: the last rate must be lr_max, so "
                                                   "divide by steps - 1"),
                    Variant(lo * ratio ** ((k + 1) / n), "the first rate must be lr_min (k starts at 0)"),
                    Variant(hi * (lo / hi) ** (k / (n - 1)), "the rates decrease: a range test starts at lr_min "
                                                             "and grows"),
                    Variant(lo * 10.0 ** (k / (n - 1)), "the factor per step must take lr_min to lr_max: "
                                                        "(lr_max / lr_min) ** (k / (steps - 1)), not 10 ** ...")]
        compare(got, lr_range_schedule(lo, hi, n), "learning rates", case, variants=variants, rtol=1e-9,
                atol=0.0, check_dtype=False)
    return f"{len(cases)} cases"


def _range_test_curve(rng, steps):
    """A synthetic range-test loss curve: a plateau, a descent, a floor, a blow-up, plus noise."""
    lrs = lr_range_schedule(10 ** rng.uniform(-5, -3), 10 ** rng.uniform(0, 1.5), steps)
    t = np.log10(lrs)
    centre, width = rng.uniform(t[0] + 1, t[-1] - 2), rng.uniform(0.3, 0.8)
    loss = 2.0 - 1.4 / (1 + np.exp(-(t - centre) / width)) + 0.3 * np.exp(2.5 * (t - t[-1]) + 1.5)
    return lrs, loss + rng.normal(0, 0.06, steps)


@exercise("steepest_lr", "the LR range test's pick: steepest descent of the smoothed loss against log lr")
def _check_steepest_lr(fn):
    rng = np.random.default_rng(11)
    cases, got, expected, variants = [], [], [], []
    for k in range(10):
        lrs, losses = _range_test_curve(rng, int(rng.integers(40, 120)))
        beta = (0.9, 0.8, 0.95)[k % 3]
        case = dict(lrs=lrs, losses=losses, beta=beta)
        value = attempt(fn, case, lrs.copy(), losses.copy(), beta)
        if not isinstance(value, (float, int, np.floating, np.integer)) or isinstance(value, bool):
            fail(f"expected a number (the learning rate), got {type(value).__name__}", case)
        got.append(float(value))
        expected.append(steepest_lr(lrs, losses, beta))
        s = smoothed_loss(losses, beta)
        a = np.empty_like(s)                                    # the moving average without the bias correction
        acc = 0.0
        for i, v in enumerate(losses):
            acc = beta * acc + (1 - beta) * v
            a[i] = acc
        pick = lambda curve, x: float(lrs[int(np.argmin(np.gradient(curve, x)))])  # noqa: E731
        variants.append([
            (pick(losses, np.log(lrs)), "you took the slope of the raw losses: smooth them first (the noise "
                                        "makes the steepest single step a matter of luck)"),
            (pick(a, np.log(lrs)), "the moving average is not bias-corrected: divide a_k by 1 - beta^(k+1), "
                                   "else the first values are pulled towards 0 and look like a steep descent"),
            (pick(s, lrs), "you took the slope against lr: take it against log lr (the rates are spaced "
                           "evenly in log lr, so d/dlr favours the small rates)"),
            (float(lrs[int(np.argmin(s))]), "you returned the lr of the lowest loss: that is where the loss stops "
                                            "falling, typically too large; the pick is the steepest descent"),
            (float(lrs[int(np.argmin(s))]) / 10, "you returned a tenth of the lr of the lowest loss (another "
                                                 "rule of thumb); this exercise asks for the steepest descent"),
            (float(lrs[int(np.argmax(np.gradient(s, np.log(lrs))))]), "you took the steepest *ascent* "
                                                                       "(argmax): the loss must fall"),
            (float(np.argmin(np.gradient(s, np.log(lrs)))), "you returned the index of the step: return lrs[k]"),
        ])
        cases.append(case)
    judge_cases(cases, got, expected, variants, same=lambda a, b: bool(np.isclose(a, b, rtol=1e-9, atol=0)),
                show=lambda v: f"{v:.6g}")
    return f"{len(cases)} cases"


@exercise("tap_gradient_norms", "per-tap L2 norms of a (kh, kw, Cin, Cout) kernel gradient and its dead taps")
def _check_tap_gradient_norms(fn):
    rng = np.random.default_rng(5)
    n = 0
    for shape, kind in (((3, 3, 4, 5), "centre only"), ((3, 3, 2, 3), "all live"), ((3, 3, 3, 2), "one row"),
                        ((3, 3, 2, 2), "tiny and cancelling"), ((1, 3, 2, 4), "1x3")):
        dw = rng.standard_normal(shape).astype(np.float32)
        if kind == "centre only":
            dw[[0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 0, 2, 0, 1, 2]] = 0
        elif kind == "one row":
            dw[0] = 0
            dw[:, 0] *= 3
        elif kind == "tiny and cancelling":
            dw[0, 0] *= 1e-9                                 # small but live
            dw[2, 1] = 0
            dw[0, 2] = 0.5
            dw[0, 2, 0] = -0.5                               # sums to zero, norm 1
            dw[1, 0] = 0
        case = {"dw": dw}
        got = unpack(attempt(fn, case, dw.copy()), 2, "(norms, dead)", case)
        norms, dead = tap_gradient_norms(dw)
        d64 = dw.astype(np.float64)
        compare(got[0], norms, "norms", case, check_dtype=False, rtol=1e-5, atol=0.0, variants=[
            Variant((d64 ** 2).sum((2, 3)), "you returned the squared norms: take the square root"),
            Variant(np.abs(d64).sum((2, 3)), "you returned the L1 norm (sum of |dw|): the L2 norm is "
                                             "sqrt(sum dw^2)"),
            Variant(np.abs(d64).max((2, 3)), "you returned the largest |dw| per tap: the L2 norm is "
                                             "sqrt(sum dw^2)"),
            Variant(np.sqrt((d64 ** 2).mean((2, 3))), "you returned the root-mean-square: sum over Cin and Cout, "
                                                      "do not average"),
            Variant(np.sqrt((d64 ** 2).sum((0, 1))), "you summed over the taps (axes 0, 1): a tap is (i, j), sum "
                                                     "over the channels (axes 2, 3)"),
            Variant(norms.T, "the norms are transposed: norms[i, j] belongs to dw[i, j]")])
        got_dead = np.asarray(got[1])
        if got_dead.shape != dead.shape:
            fail(f"dead has shape {got_dead.shape}, expected {dead.shape} (one flag per tap)", case)
        if got_dead.dtype != bool:
            fail(f"dead must be a boolean array (True for a dead tap), got dtype {got_dead.dtype}", case)
        if not np.array_equal(got_dead, dead):
            signed = d64.sum((2, 3)) == 0
            if np.array_equal(got_dead, ~dead):
                fail("dead is inverted: you flagged the live taps", case)
            if np.array_equal(got_dead, signed):
                fail("you tested the *sum* of the tap's gradient for zero: entries of both signs can cancel; "
                     "a tap is dead when its norm is 0", case)
            if np.array_equal(got_dead, norms < 1e-6 * max(norms.max(), 1e-300)) or (got_dead & ~dead).any():
                fail("a tap with a small but nonzero gradient is live: dead means exactly zero (the tap read "
                     "only padding), so compare with == 0, not with a tolerance", case)
            where = [[int(i) for i in idx] for idx in np.argwhere(got_dead != dead)[:3]]
            fail(f"dead differs from norms == 0 at taps {where}", case)
        n += 1
    return f"{n} cases"
