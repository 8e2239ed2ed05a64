"""ASPP exercises (notebook 03): how many atrous taps touch the map, and the image-pooling branch.

=====================  =============================================================  ==========================
name                   the student writes                                             reference
=====================  =============================================================  ==========================
live_tap_fraction      ``fn(h, w, rate) -> float``: mean fraction of a 3x3 filter's    conv of ones with ones
                       9 taps that read real pixels ("same" padding, stride 1)
image_pooling_branch   ``fn(x, kernel, gamma, beta, moving_mean, moving_var, eps)``    GAP, conv, BN, ReLU, resize
                       ``-> (N, h, w, F)``, inference mode
=====================  =============================================================  ==========================

>>> from tinydeeplab.exercises import check
>>> check("live_tap_fraction", lambda h, w, rate: 1.0)          # "every tap is live"  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: live_tap_fraction: wrong in 120 of 120 cases, first: got 1, expected 0.382353 on case ...
"""
from __future__ import annotations

import itertools

import numpy as np

from .. import functional as F
from . import exercise
from ._grading import Variant, attempt, compare, fail, judge_cases


def live_tap_fraction(h: int, w: int, rate: int) -> float:
    """The reference: convolve an all-ones map with an all-ones 3x3 kernel; each output counts its valid taps.

    >>> round(live_tap_fraction(33, 33, 6), 4), round(live_tap_fraction(16, 16, 18), 4)  # rate >= side: centre only
    (0.7723, 0.1111)
    """
    counts, _ = F.conv2d_forward(np.ones((1, h, w, 1)), np.ones((3, 3, 1, 1)), dilation=rate, padding="same")
    return float(counts.mean() / 9)


def _per_axis(size, rate, shift=0):
    return (1 + 2 * max(size - rate + shift, 0) / size) / 3


def _tap_variants(h, w, rate):
    """Known wrong answers for one case, each with the mistake behind it."""
    return [(live_tap_fraction(h, h, rate), "you used h for both axes: the map is h x w, count each axis on its own"),
            (((1 + 2 * (rate < h)) / 3) * ((1 + 2 * (rate < w)) / 3),
             "you counted the taps that touch the map somewhere (conv2d_forward's live_taps); the fraction "
             "averages over output positions: along an axis of length S a +-r tap is inside at max(S - r, 0) "
             "of the S positions"),
            (_per_axis(h, rate, 1) * _per_axis(w, rate, 1),
             "off by one: a +-r tap is inside at max(S - r, 0) positions, not max(S - r + 1, 0)"),
            (_per_axis(h, rate, -1) * _per_axis(w, rate, -1),
             "off by one: a +-r tap is inside at max(S - r, 0) positions, not max(S - r - 1, 0)"),
            (9 * live_tap_fraction(h, w, rate), "you returned the mean number of valid taps: divide by 9")]


@exercise("live_tap_fraction", "fraction of a dilated 3x3 filter's taps that read real pixels on an h x w map")
def _check_live_tap_fraction(fn):
    cases = [dict(h=h, w=w, rate=r) for h, w, r in itertools.product((8, 1, 3, 16, 33), (17, 2, 8, 65),
                                                                        (6, 1, 2, 12, 18, 36))]
    got = []
    for case in cases:
        value = attempt(fn, case, case["h"], case["w"], case["rate"])
        if not isinstance(value, (float, int, np.floating, np.integer)) or isinstance(value, bool):
            fail(f"expected a number (the fraction), got {type(value).__name__}", case)
        got.append(float(value))
    judge_cases(cases, got, [live_tap_fraction(**case) for case in cases],
                [_tap_variants(**case) for case in cases],
                same=lambda a, b: bool(np.isclose(a, b, rtol=1e-9, atol=1e-12)), show=lambda v: f"{v:.6g}")
    return f"{len(cases)} cases"


def _branch(x, kernel, gamma, beta, mean, var, eps, *, pool="mean", bn="moving", relu=True, relu_first=False):
    """The image-pooling branch and its known wrong variants (which step is swapped or left out)."""
    n, h, w, _ = x.shape
    if pool == "mean":
        z = F.global_avg_pool_forward(x)[0]                                  # (N, 1, 1, C)
    elif pool == "max":
        z = x.max(axis=(1, 2), keepdims=True)
    else:
        z = x.sum(axis=(1, 2), keepdims=True)
    z = F.conv2d_forward(z, kernel)[0]                                       # (N, 1, 1, F)
    if relu_first:
        z = np.maximum(z, 0)
    if bn == "moving":
        z = F.batchnorm_forward(z, gamma, beta, mean, var, training=False, eps=eps)[0]
    elif bn == "batch":
        z = F.batchnorm_forward(z, gamma, beta, mean, var, training=True, eps=eps)[0]
    if relu and not relu_first:
        z = F.relu_forward(z)[0]
    return F.bilinear_resize_forward(z, (h, w))[0]                           # (N, h, w, F)


@exercise("image_pooling_branch", "ASPP image pooling: GAP -> 1x1 conv -> BN (inference) -> ReLU -> resize back")
def _check_image_pooling_branch(fn):
    rng = np.random.default_rng(4)
    n = 0
    for shape, f, eps in (((2, 5, 7, 3), 4, 1e-3), ((1, 9, 6, 2), 5, 1e-3), ((3, 4, 4, 3), 6, 1e-1)):
        c = shape[3]
        x = rng.normal(0.3, 1.0, shape).astype(np.float32)
        kernel = rng.normal(0.0, 1.0, (1, 1, c, f)).astype(np.float32)
        gamma = rng.normal(1.0, 0.3, f).astype(np.float32)
        beta = rng.normal(0.0, 1.0, f).astype(np.float32)
        mean = rng.normal(0.0, 0.5, f).astype(np.float32)
        var = rng.uniform(0.5, 2.0, f).astype(np.float32)
        args = (x, kernel, gamma, beta, mean, var, eps)
        case = dict(zip(("x", "kernel", "gamma", "beta", "moving_mean", "moving_var", "eps"), args))
        got = attempt(fn, case, *args)
        variants = [Variant(_branch(*args)[:, :1, :1], "you returned the pooled 1 x 1 map: resize it back to "
                                                       "h x w (bilinear from one pixel = a broadcast)"),
                    Variant(_branch(*args, relu=False), "the ReLU after BN is missing"),
                    Variant(_branch(*args, bn=None), "the BN step is missing: gamma (z - moving_mean) / "
                                                     "sqrt(moving_var + eps) + beta"),
                    Variant(_branch(*args, bn="batch"), "BN must use the moving statistics (inference mode), "
                                                        "not the statistics of the batch"),
                    Variant(_branch(*args, pool="max"), "global *average* pooling: the mean over H and W, not "
                                                        "the max"),
                    Variant(_branch(*args, pool="sum"), "global average pooling: the mean over H and W, not "
                                                        "the sum"),
                    Variant(_branch(*args, relu_first=True), "the order is conv -> BN -> ReLU (you applied the "
                                                             "ReLU before BN)"),
                    Variant(_branch(x, kernel, gamma, beta, mean, var, 0.0), "eps is missing: "
                                                                            "sqrt(moving_var + eps)")]
        compare(got, _branch(*args), "pooling branch output", case, variants=variants, rtol=1e-5, atol=1e-6)
        n += 1
    return f"{n} cases"
