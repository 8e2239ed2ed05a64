"""CPU-kernel exercises (notebook 15): a fused batch-norm + ReLU forward, the live-tap plan of an atrous conv.

=============  ==============================================================  =================================
name           the student writes                                              reference
=============  ==============================================================  =================================
fused_bn_relu  ``fn(x, gamma, beta, mean, var, eps) -> y``: inference-mode     ``batchnorm_forward`` (inference)
               BN and ReLU in one pass, ``x (N, H, W, C)``, parameters ``(C,)``  then ``relu_forward``
live_tap_plan  ``fn(h, w, rate) -> [(i, j, (r0, r1), (c0, c1)), ...]``: the    ``conv2d_plan(...).taps``
               live taps of a 3x3 conv at this dilation, stride 1, "same"
               padding, on an ``h x w`` map, with the output rows ``[r0, r1)``
               and columns ``[c0, c1)`` where each reads real pixels
=============  ==============================================================  =================================

The fused forward, per channel ``c``::

    y = max(gamma_c * (x - mean_c) / sqrt(var_c + eps) + beta_c, 0)

A wrong answer is diagnosed channel by channel: the checker names the first channel that differs, its
``gamma`` and ``beta``, and the mistake that explains it ("you applied ReLU before the scale").

The live-tap plan: with "same" padding a 3x3 kernel at rate ``d`` is padded by ``d`` on every side, and tap
``i`` of output row ``o`` reads input row ``o + (i - 1) d``; it reads a real pixel for
``0 <= o + (i - 1) d < h``, i.e. for ``o`` in ``[max(0, (1 - i) d), min(h, h - (i - 1) d))``. The same
along the columns for ``j``; a tap is live if both ranges are non-empty.

>>> from tinydeeplab.exercises import check
>>> def fused(x, gamma, beta, mean, var, eps):        # ReLU on xhat, then scale and shift
...     return gamma * np.maximum((x - mean) / np.sqrt(var + eps), 0) + beta
>>> check("fused_bn_relu", fused)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: fused_bn_relu: wrong at channel ...: you applied ReLU before the scale ...
>>> print(check("live_tap_plan", reference_live_tap_plan))
live_tap_plan: passed (41 cases)
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.conv import conv2d_plan
from . import exercise
from ._grading import attempt, compare, fail, judge_cases

# --- fused_bn_relu --------------------------------------------------------------------------------------------

_BN_CASES = [((2, 5, 6, 8), np.float32, 1e-3), ((1, 7, 3, 5), np.float64, 1e-1), ((3, 4, 4, 6), np.float32, 1e-5),
             ((1, 1, 1, 4), np.float64, 1e-3)]


def reference_bn_relu(x, gamma, beta, mean, var, eps):
    """The two passes of the package: inference-mode batch norm, then ReLU (``tinydeeplab.functional``).

    >>> x = np.array([-1.0, 1.0, 3.0]).reshape(1, 1, 3, 1); one, zero = np.ones(1), np.zeros(1)
    >>> reference_bn_relu(x, 2 * one, zero, one, one, 0.0).ravel().tolist()     # max(2 (x - 1), 0)
    [0.0, 0.0, 4.0]
    """
    y, _ = F.batchnorm_forward(x, gamma, beta, mean, var, training=False, eps=eps)
    return F.relu_forward(y)[0]


def _bn_variants(x, gamma, beta, mean, var, eps):
    """Known wrong answers (float64, per element) with the mistake behind each."""
    x = x.astype(np.float64)
    xhat = (x - mean) / np.sqrt(var + eps)
    relu = lambda v: np.maximum(v, 0)                                     # noqa: E731
    batch_mean, batch_var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return [
        (gamma * relu(xhat) + beta, "you applied ReLU before the scale (gamma) and the shift (beta): the ReLU "
                                    "comes last, on gamma * xhat + beta"),
        (relu(gamma * xhat) + beta, "you added beta after the ReLU: the ReLU comes last, on gamma * xhat + beta"),
        (gamma * xhat + beta, "the ReLU is missing: negative values must become 0"),
        (relu(gamma * (x - mean) / np.sqrt(var) + beta), "eps is missing: divide by sqrt(var + eps)"),
        (relu(gamma * (x - mean) / (np.sqrt(var) + eps) + beta), "eps goes inside the square root: "
                                                                 "sqrt(var + eps), not sqrt(var) + eps"),
        (relu(gamma * (x - mean) / (var + eps) + beta), "you divided by var + eps: divide by its square root "
                                                        "(the standard deviation)"),
        (relu(gamma * (x - mean) * np.sqrt(var + eps) + beta), "you multiplied by sqrt(var + eps): divide by it"),
        (relu(gamma * x / np.sqrt(var + eps) + beta), "the mean is not subtracted: xhat = (x - mean) / sqrt(var + eps)"),
        (relu(beta * xhat + gamma), "gamma and beta are swapped: gamma scales, beta shifts"),
        (relu(gamma * (x - batch_mean) / np.sqrt(batch_var + eps) + beta),
         "you normalised with the statistics of this batch: in inference mode BN uses the moving mean and "
         "variance it is given"),
    ]


def _first_wrong_channel(got, expected, variants, gamma, beta, rtol, atol, case):
    """Fail naming the first channel that differs and, if one explains it, the mistake made there."""
    differ = ~np.isclose(got, expected, rtol=rtol, atol=atol)             # (N, H, W, C)
    wrong = np.flatnonzero(differ.any(axis=(0, 1, 2)))
    if wrong.size == 0:
        return
    c = int(wrong[0])
    others = f" (and {wrong.size - 1} other channels)" if wrong.size > 1 else ""
    where = f"wrong at channel {c}{others}, gamma {gamma[c]:.3g}, beta {beta[c]:.3g}"
    for value, message in variants:
        if np.allclose(got[..., wrong], value[..., wrong], rtol=rtol, atol=atol):
            fail(f"{where}: {message}", case)
    idx = tuple(int(i) for i in np.argwhere(differ[..., c])[0]) + (c,)
    fail(f"{where}: {int(differ[..., c].sum())} of {differ[..., c].size} values differ, first at {list(idx)}: "
         f"got {float(got[idx]):.6g}, expected {float(expected[idx]):.6g}", case)


@exercise("fused_bn_relu", "inference-mode batch norm + ReLU in one pass, max(gamma (x - mean) / sqrt(var + eps) + beta, 0)")
def _check_fused_bn_relu(fn):
    rng = np.random.default_rng(15)
    for shape, dtype, eps in _BN_CASES:
        c = shape[3]
        x = rng.normal(0.5, 2.0, shape).astype(dtype)
        gamma = rng.choice([-1.0, 1.0], c) * rng.uniform(0.3, 2.0, c)    # some negative: order of ops shows
        gamma[0] = abs(gamma[0])
        beta = rng.normal(0.0, 1.0, c)
        beta[0] = 0.0                                                     # channel 0 hides "ReLU before the scale"
        mean, var = rng.normal(0.0, 1.0, c), rng.uniform(0.005, 3.0, c)
        gamma, beta, mean, var = (v.astype(dtype) for v in (gamma, beta, mean, var))
        case = {"x": x, "gamma": gamma, "beta": beta, "mean": mean, "var": var, "eps": eps}
        x_before = x.copy()
        got = attempt(fn, case, x, gamma, beta, mean, var, eps)
        if not np.array_equal(x, x_before):
            fail("your function modified x: write the result into a new array (np.empty_like(x))", case)
        expected = reference_bn_relu(x, gamma, beta, mean, var, eps)
        rtol, atol = (1e-5, 1e-5) if dtype == np.float32 else (1e-10, 1e-12)
        if isinstance(got, np.ndarray) and got.shape == expected.shape and np.isfinite(got).all():
            _first_wrong_channel(got.astype(np.float64), expected.astype(np.float64),
                                 _bn_variants(x, gamma, beta, mean, var, eps), gamma, beta, rtol, atol, case)
        compare(got, expected, "y", case, rtol=rtol, atol=atol)           # type, shape, dtype, NaN
    return f"{len(_BN_CASES)} cases, float32 and float64"


# --- live_tap_plan --------------------------------------------------------------------------------------------

def reference_live_tap_plan(h, w, rate):
    """The package's plan for a 3x3 conv at ``rate``, stride 1, "same" padding, on an ``h x w`` map, as
    ``[(i, j, (r0, r1), (c0, c1)), ...]`` (plain ints, row-major).

    >>> reference_live_tap_plan(16, 16, 18)                     # ASPP rate 18 on a 16 x 16 map: the centre
    [(1, 1, (0, 16), (0, 16))]
    >>> [t[:2] for t in reference_live_tap_plan(16, 4, 6)]        # rows: all three live; columns: only j = 1
    [(0, 1), (1, 1), (2, 1)]
    """
    plan = conv2d_plan((1, h, w, 1), (3, 3, 1, 1), (1, 1), (rate, rate), "same")
    return [(int(i), int(j), (int(r0), int(r1)), (int(c0), int(c1))) for i, j, (r0, r1), (c0, c1) in plan.taps]


def _axis_ranges(size, rate, *, swapped=False, long_end=False, inclusive=False):
    """``{k: (o0, o1)}`` for the taps ``k`` of one axis, with one switchable mistake."""
    out = {}
    for k in range(3):
        offset = (1 - k if swapped else k - 1) * rate
        o0, o1 = max(0, -offset), min(size, size - offset + (1 if long_end and offset > 0 else 0))
        if o1 > o0:
            out[k] = (o0, max(o0, o1) - (1 if inclusive else 0))
    return out


def _plan(h, w, rate, *, shift=0, **mistake):
    rows, cols = _axis_ranges(h, rate, **mistake), _axis_ranges(w, rate, **mistake)
    return sorted((i + shift, j + shift, rows[i], cols[j]) for i in rows for j in cols)


def _plan_variants(h, w, rate):
    return [
            (_plan(h, w, rate, long_end=True), "the ranges of the taps after the centre are one too long: tap "
             "i = 2 reads row o + rate, real only while o + rate <= size - 1, so its range ends at size - rate"),
            (_plan(h, w, rate, swapped=True), "you swapped the ranges of the taps before and after the centre: tap "
             "i = 0 reads row o - rate, so it is live for o >= rate (the range (rate, size))"),
            (_plan(w, h, rate), "you swapped height and width: i and the row range go with h, j and the column "
             "range with w"),
            (_plan(h, w, rate, inclusive=True), "give each range as (first, end) with the end excluded, like "
             "range() and slices: the centre tap's rows are (0, h)"),
            (_plan(h, w, rate, shift=-1), "i and j are kernel indices 0, 1, 2 (the centre tap is (1, 1)), not "
             "offsets -1, 0, 1")]


def _normalised(plan, case):
    """The student's plan as a sorted list of ``(i, j, (r0, r1), (c0, c1))`` of ints, or a failure."""
    if not isinstance(plan, (list, tuple)):
        fail(f"expected a list of taps (i, j, (r0, r1), (c0, c1)), got {type(plan).__name__}", case)
    out = []
    for entry in plan:
        if isinstance(entry, (tuple, list)) and len(entry) == 2:
            fail("you returned only the taps (i, j): each entry also needs the output rows (r0, r1) and columns "
                 "(c0, c1) where the tap reads real pixels", case)
        try:
            i, j, (r0, r1), (c0, c1) = entry
            out.append((int(i), int(j), (int(r0), int(r1)), (int(c0), int(c1))))
        except (TypeError, ValueError):
            fail(f"each entry should be (i, j, (r0, r1), (c0, c1)), got {entry!r}", case)
    if len(set(out)) != len(out):
        fail(f"a tap is listed twice in {out}", case)
    return sorted(out)


def _no_empty_ranges(plan, expected, case):
    """Fail if the plan is right but for listed taps whose rows or columns are an empty range (taps that never
    read a real pixel)."""
    empty = [t for t in plan if t[2][1] <= t[2][0] or t[3][1] <= t[3][0]]
    if empty and sorted(t for t in plan if t not in empty) == sorted(expected):
        i, j, (r0, r1), (c0, c1) = empty[0]
        edge = (" At rate == size the outer taps read only padding (rows o - rate and o + rate are outside "
                "0 .. size - 1 for every o): a tap is live only when rate < size."
                if case["rate"] in (case["h"], case["w"]) else "")
        fail(f"you listed tap ({i}, {j}) with the empty range ({r0}, {r1}) x ({c0}, {c1}): it never reads a "
             f"real pixel, and a plan holds the live taps only.{edge}", case)


@exercise("live_tap_plan", "the live taps of a 3x3 atrous conv ('same', stride 1) and the outputs where each reads real pixels")
def _check_live_tap_plan(fn):
    rng = np.random.default_rng(19)
    cases = [dict(h=16, w=16, rate=18), dict(h=16, w=16, rate=12), dict(h=16, w=16, rate=16), dict(h=1, w=1, rate=1),
             dict(h=33, w=33, rate=6), dict(h=16, w=40, rate=24), dict(h=9, w=5, rate=4), dict(h=5, w=9, rate=5),
             dict(h=12, w=7, rate=11)]
    for _ in range(32):
        h, w = (int(v) for v in rng.integers(1, 41, 2))
        cases.append(dict(h=h, w=w, rate=int(rng.choice([1, 2, 3, 6, 12, 18, 24, 36, max(h, w), min(h, w)]))))
    got = [_normalised(attempt(fn, c, c["h"], c["w"], c["rate"]), c) for c in cases]
    expected = [reference_live_tap_plan(**c) for c in cases]
    for case, plan, right in zip(cases, got, expected):
        _no_empty_ranges(plan, right, case)
    judge_cases(cases, got, expected,
                [_plan_variants(c["h"], c["w"], c["rate"]) for c in cases],
                same=lambda a, b: sorted(a) == sorted(b), show=lambda v: str(sorted(v)))
    return f"{len(cases)} cases"
