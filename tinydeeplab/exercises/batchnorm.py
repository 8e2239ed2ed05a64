"""Batch-normalisation exercises (notebook 02): the training-mode backward pass, the moving statistics.

===================  ===========================================================  ==========================
name                 the student writes                                           reference
===================  ===========================================================  ==========================
batchnorm_backward   ``fn(dy, x, gamma, eps) -> (dx, dgamma, dbeta)``, training    ``batchnorm_backward``
moving_statistics    ``fn(moving_mean, moving_var, x, momentum) -> (mean, var)``   ``moving_average``
===================  ===========================================================  ==========================

With ``g = gamma * dy``, ``s = sqrt(var + eps)`` and means over the ``M = N H W`` values of a channel,
``dx = (g - mean(g) - xhat * mean(g * xhat)) / s``. The checker recognises the usual ways to get it
wrong: either subtracted term missing, the inference formula ``g / s``, gamma forgotten, the unbiased
variance, eps left out, the xhat term's sign.

>>> from tinydeeplab import functional as F
>>> from tinydeeplab.exercises import check
>>> def mine(dy, x, gamma, eps):          # the compact formula but without the mean-of-dy term
...     mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
...     xhat, g = (x - mean) / np.sqrt(var + eps), dy * gamma
...     dx = (g - xhat * (g * xhat).mean((0, 1, 2))) / np.sqrt(var + eps)
...     return dx, (dy * xhat).sum((0, 1, 2)), dy.sum((0, 1, 2))
>>> check("batchnorm_backward", mine)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: batchnorm_backward: dx is wrong: your dx lacks the mean-of-dy term ...
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from . import exercise
from ._grading import Variant, attempt, check_backward, compare, unpack

_AXES = (0, 1, 2)
_BACKWARD_CASES = [((4, 3, 3, 2), 1e-3), ((2, 5, 4, 3), 1e-5), ((3, 2, 2, 1), 1e-1)]


def _dx(g, x, eps, *, ddof=0):
    """Training-mode dx with the statistics of ``x`` (variance with ``ddof``) and the gradient ``g``."""
    var = x.var(axis=_AXES, ddof=ddof)
    s = np.sqrt(var + eps)
    xhat = (x - x.mean(axis=_AXES)) / s
    return (g - g.mean(axis=_AXES) - xhat * (g * xhat).mean(axis=_AXES)) / s


def _dx_variants(dy, x, gamma, eps, cache):
    xhat, inv_std = cache["xhat"], cache["inv_std"]
    g = dy * gamma
    g_mean, gx_mean = g.mean(axis=_AXES), (g * xhat).mean(axis=_AXES)
    return [
        Variant(inv_std * (g - xhat * gx_mean),
                "your dx lacks the mean-of-dy term (the path through the batch mean): subtract mean(g), "
                "g = gamma * dy"),
        Variant(inv_std * (g - g_mean),
                "your dx lacks the xhat * mean(g * xhat) term (the path through the batch variance)"),
        Variant(inv_std * g,
                "your dx treats the mean and variance as constants (the inference-mode formula g / s); in "
                "training both depend on every x_i, which adds two terms"),
        Variant(inv_std * (g - g_mean + xhat * gx_mean),
                "the xhat * mean(g * xhat) term has the wrong sign (it is subtracted)"),
        Variant(inv_std * (dy - dy.mean(axis=_AXES) - xhat * (dy * xhat).mean(axis=_AXES)),
                "dx is missing the factor gamma: the gradient reaching xhat is g = gamma * dy"),
        Variant(_dx(g, x, eps, ddof=1),
                "you used the unbiased variance (divide by M - 1); the batch variance of BN is biased "
                "(divide by M = N*H*W)"),
        Variant(_dx(g, x, 0.0), "eps is missing: s = sqrt(var + eps)"),
    ]


@exercise("batchnorm_backward", "batch-norm backward in training mode: dx (three terms), dgamma, dbeta")
def _check_batchnorm_backward(fn):
    rng = np.random.default_rng(2)
    n = 0
    for shape, eps in _BACKWARD_CASES:
        c = shape[3]
        x = rng.normal(1.0, 2.0, shape)
        gamma, beta = rng.normal(1.0, 0.5, c), rng.normal(0.0, 0.5, c)
        y, cache = F.batchnorm_forward(x, gamma, beta, np.zeros(c), np.ones(c), training=True, eps=eps)
        dy = rng.standard_normal(shape)
        case = {"dy": dy, "x": x, "gamma": gamma, "eps": eps}
        dx, dgamma, dbeta = F.batchnorm_backward(dy, cache)
        got = unpack(attempt(fn, case, dy, x, gamma, eps), 3, "(dx, dgamma, dbeta)", case)
        compare(got[0], dx, "dx", case, variants=_dx_variants(dy, x, gamma, eps, cache))
        compare(got[1], dgamma, "dgamma", case, variants=[
            Variant(dbeta, "dgamma and dbeta are swapped: dgamma = sum(dy * xhat), dbeta = sum(dy)"),
            Variant((dy * x).sum(axis=_AXES), "dgamma is sum(dy * xhat), not sum(dy * x)"),
            Variant((dy * gamma * cache["xhat"]).sum(axis=_AXES), "dgamma = sum(dy * xhat): no factor gamma")])
        compare(got[2], dbeta, "dbeta", case, variants=[
            Variant(dgamma, "dgamma and dbeta are swapped: dgamma = sum(dy * xhat), dbeta = sum(dy)")])
        n += 1
    x, gamma, beta = rng.normal(0.5, 1.5, (3, 2, 2, 2)), rng.normal(1.0, 0.3, 2), rng.normal(0.0, 0.3, 2)
    case = {"x": x, "gamma": gamma, "eps": 1e-3}

    def forward(x, gamma, beta):
        y, _ = F.batchnorm_forward(x, gamma, beta, np.zeros(2), np.ones(2), training=True, eps=1e-3)
        return y, (x, gamma)

    summary = check_backward(forward, lambda c, xg: fn(c, xg[0], xg[1], 1e-3), {"x": x, "gamma": gamma, "beta": beta},
                             {}, case, grad_names=("x", "gamma", "beta"))
    return f"{n} cases, {summary}"


@exercise("moving_statistics", "training-mode update of the moving mean and variance (Keras momentum)")
def _check_moving_statistics(fn):
    rng = np.random.default_rng(3)
    n = 0
    for shape, momentum in (((4, 3, 3, 2), 0.9), ((2, 4, 5, 3), 0.99), ((8, 1, 1, 4), 0.5)):
        c = shape[3]
        x = rng.normal(2.0, 1.5, shape).astype(np.float32)
        moving_mean = rng.normal(0.0, 1.0, c).astype(np.float32)
        moving_var = rng.uniform(0.5, 2.0, c).astype(np.float32)
        case = {"moving_mean": moving_mean, "moving_var": moving_var, "x": x, "momentum": momentum}
        _, cache = F.batchnorm_forward(x, np.ones(c, np.float32), np.zeros(c, np.float32), moving_mean, moving_var,
                                       training=True)
        mean, var = cache["mean"], cache["var"]
        m = np.float32(momentum)
        got = unpack(attempt(fn, case, moving_mean.copy(), moving_var.copy(), x, momentum), 2,
                     "(new_moving_mean, new_moving_var)", case)
        tol = dict(rtol=1e-5, atol=1e-6)
        compare(got[0], F.moving_average(moving_mean, mean, momentum), "new moving mean", case, **tol, variants=[
            Variant(moving_mean * (1 - m) + mean * m, "momentum weighs the *old* value in Keras: moving * m + "
                                                      "batch * (1 - m) (you used PyTorch's convention)"),
            Variant(mean, "you returned the batch mean: blend it into the moving mean with the momentum"),
            Variant(moving_mean * m + x.mean(axis=0) * (1 - m),
                    "the statistics are per channel over N, H and W: x.mean(axis=(0, 1, 2))")])
        unbiased = var * (x.size / c) / (x.size / c - 1)
        compare(got[1], F.moving_average(moving_var, var, momentum), "new moving variance", case, **tol, variants=[
            Variant(moving_var * (1 - m) + var * m, "momentum weighs the *old* value in Keras: moving * m + "
                                                    "batch * (1 - m) (you used PyTorch's convention)"),
            Variant(F.moving_average(moving_var, unbiased.astype(np.float32), momentum),
                    "Keras averages the biased batch variance (divide by M = N*H*W, not M - 1)"),
            Variant(F.moving_average(moving_var, np.sqrt(var), momentum),
                    "the moving *variance* is averaged, not the standard deviation"),
            Variant(var, "you returned the batch variance: blend it into the moving variance with the momentum"),
            Variant(moving_var * m + x.var(axis=0) * (1 - m),
                    "the statistics are per channel over N, H and W: x.var(axis=(0, 1, 2))")])
        n += 1
    return f"{n} cases"
