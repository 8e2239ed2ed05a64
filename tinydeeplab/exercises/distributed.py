"""Data-parallel exercises (notebook 14): the big-batch gradient from per-rank ones, SyncBN's statistics.

==========================  ======================================================  ==========================
name                        the student writes                                      reference
==========================  ======================================================  ==========================
weighted_gradient_average   ``fn(grads (N, ...), counts (N,)) -> (...)``: the       ``sum_r W_r g_r / sum_r W_r``
                            gradient of the global mean loss from each rank's
                            gradient of its own mean loss and its valid pixels
syncbn_statistics           ``fn(local (N, 3, C)) -> (mean, var)``: the global      ``batch_stats_from_sums`` of
                            batch's mean and biased variance from each rank's       the summed local sums
                            ``[sum x, sum x^2, count]``
==========================  ======================================================  ==========================

With ``W = sum_r W_r`` valid pixels in all (see :mod:`tinydeeplab.train.distributed`)::

    dL/dtheta = sum_r (W_r / W) dL_r/dtheta          (0 when W = 0: nothing to learn)
    M = sum_r count_r,  mean = sum_r sum_x,r / M,  var = sum_r sum_x2,r / M - mean^2

The first checker names the plain mean of the rank gradients, the counts used without dividing by
``W``, an extra ``1 / N``, and ``0 / 0`` when no rank has a valid pixel; the second the unbiased
variance (``M - 1``), the mean of per-rank means, the mean of per-rank variances, and dividing by the
number of ranks instead of the count.

>>> from tinydeeplab.exercises import check
>>> def average(grads, counts):
...     counts = np.asarray(counts, np.float64)
...     w = counts / counts.sum() if counts.sum() else np.zeros_like(counts)
...     return np.tensordot(w, grads, axes=1)
>>> check("weighted_gradient_average", average)
'weighted_gradient_average: passed (4 cases)'
"""
from __future__ import annotations

import numpy as np

from ..functional.batchnorm import batch_stats_from_sums
from . import exercise
from ._grading import Variant, attempt, compare, fail, unpack


def _gradient_cases(seed: int):
    """``(case, grads, counts)``: unequal counts, a rank with no valid pixel, equal counts, all ignored."""
    rng = np.random.default_rng(seed)
    for shape, counts in (((3, 4, 2), [120, 30, 250]), ((4, 5), [64, 0, 17, 9]), ((2, 3, 3), [50, 50]),
                          ((2, 6), [0, 0])):
        counts = np.array(counts)
        grads = rng.normal(size=shape) * (counts > 0).reshape((-1,) + (1,) * (len(shape) - 1))
        yield {"grads": grads, "counts": counts}, grads, counts


@exercise("weighted_gradient_average", "big-batch gradient from per-rank gradients and valid-pixel counts")
def _check_weighted_gradient_average(fn):
    n = 0
    for case, grads, counts in _gradient_cases(140):
        got = attempt(fn, case, grads.copy(), counts.copy())
        total = counts.sum()
        if total == 0:
            expected = np.zeros(grads.shape[1:])
            if isinstance(got, np.ndarray) and got.dtype.kind == "f" and not np.isfinite(got).all():
                fail("with no valid pixel on any rank the gradient is 0 (nothing to learn), not 0 / 0", case)
        else:
            expected = np.tensordot(counts / total, grads, axes=1)
        variants = [Variant(grads.mean(0), "you took the plain mean of the rank gradients; each rank's loss is a "
                                           "mean over ITS valid pixels, so weight rank r by W_r / sum W")]
        if total:
            variants += [Variant(np.tensordot(counts, grads, axes=1), "you weighted by the counts W_r but did "
                                 "not divide by their sum W = sum_r W_r"),
                         Variant(expected / len(counts), "an extra 1 / N: the weights W_r / W already sum to 1")]
        compare(got, expected, "gradient", case, variants=variants, check_dtype=False, rtol=1e-9, atol=1e-12)
        n += 1
    return f"{n} cases"


def _statistics_cases(seed: int):
    """``(case, local, x_parts)``: ranks with different pixel counts, float32 data, one rank."""
    rng = np.random.default_rng(seed)
    for sizes, c, offset in (((12, 40, 5), 3, 2.0), ((8, 8), 4, -1.0), ((30,), 2, 0.5), ((3, 50, 20, 7), 1, 4.0)):
        parts = [rng.normal(offset, 1.5, (m, c)) + rng.normal(0, 1.0, c) * r for r, m in enumerate(sizes)]
        local = np.stack([np.stack([p.sum(0), (p ** 2).sum(0), np.full(c, float(len(p)))]) for p in parts])
        yield {"local": local, "ranks": len(sizes)}, local, parts


@exercise("syncbn_statistics", "SyncBN: global mean and biased variance from per-rank [sum x, sum x^2, count]")
def _check_syncbn_statistics(fn):
    n = 0
    for case, local, parts in _statistics_cases(141):
        got = unpack(attempt(fn, case, local.copy()), 2, "(mean, var)", case)
        mean, var = batch_stats_from_sums(local.sum(0), np.float64)
        m = local[:, 2].sum(0)
        means = [p.mean(0) for p in parts]
        mean_variants = [Variant(np.mean(means, 0), "you averaged the per-rank means; ranks hold different numbers "
                                                    "of pixels: divide the summed sums by the summed counts"),
                         Variant(local[:, 0].sum(0) / len(parts), "you divided by the number of ranks; divide by "
                                 "the total pixel count M = sum of the counts")]
        compare(got[0], mean, "mean", case, variants=mean_variants, check_dtype=False, rtol=1e-9, atol=1e-12)
        var_variants = [Variant(var * m / (m - 1) if np.all(m > 1) else var + 1.0,
                                "you returned the unbiased variance (M - 1); batch norm uses the biased one, / M"),
                        Variant(np.mean([p.var(0) for p in parts], 0), "you averaged the per-rank variances: that "
                                "misses the spread between the ranks' means (law of total variance)"),
                        Variant(local[:, 1].sum(0) / len(parts) - mean ** 2, "you divided the sum of squares by the "
                                "number of ranks; divide by the total pixel count M")]
        compare(got[1], var, "var", case, variants=var_variants, check_dtype=False, rtol=1e-9, atol=1e-12)
        n += 1
    return f"{n} cases"
