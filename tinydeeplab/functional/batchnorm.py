"""Batch normalisation per channel over N, H, W (Keras ``BatchNormalization``, NHWC).

Forward::

    xhat = (x - mean) / sqrt(var + eps)
    y    = gamma * xhat + beta

* training: ``mean``, ``var`` are the batch statistics over the ``M = N*H*W`` pixels of each channel,
  ``var`` *biased* (divided by M, as Keras does);
* inference: ``mean``, ``var`` are the moving statistics, constants.

The moving statistics are updated outside the op, by :func:`moving_average`
(``moving = moving * momentum + batch * (1 - momentum)``), from the ``"mean"`` and ``"var"``
entries of the training cache.

Backward, with ``g = dy * gamma`` (the gradient reaching ``xhat``)::

    dbeta  = sum dy                    dgamma = sum dy * xhat           (sums over N, H, W)
    training:   dx = (1 / sqrt(var + eps)) * (g - mean(g) - xhat * mean(g * xhat))
    inference:  dx = g / sqrt(var + eps)

The two subtracted terms of the training ``dx`` are the paths through the batch mean and variance.

**Synchronized batch norm** (``reduce=``, e.g. over MPI ranks). The batch statistics only need three
per-channel sums, so the op is split into *local sums* and a *finish with global sums*, and the
reduction between them is injected: ``reduce(local (k, C) float64) -> global (k, C)`` (the sum over
every rank's copy; the identity for one process). Forward, on each rank ``r`` with its pixels ``x_r``::

    s = reduce([sum x_r, sum x_r^2, M_r])            one fused reduction, (3, C)
    M = s[2],  mean = s[0] / M,  var = s[1] / M - mean^2       (biased, over the global batch)

Backward. The global loss depends on ``x_r`` directly and through ``mean``, ``var``, which every rank's
pixels share. With ``g = dy * gamma`` and ``xhat = (x - mean) * inv_std``::

    dL/dmean = -inv_std * sum_all g                  dL/dvar = -inv_std / (2 (var + eps)) * sum_all g * xhat
    dmean/dx = 1 / M                                 dvar/dx = 2 (x - mean) / M
    dx_r = inv_std * g_r + dL/dmean / M + dL/dvar * 2 (x_r - mean) / M
         = inv_std * (g_r - gamma * S1 / M - xhat_r * gamma * S2 / M)

where ``[S1, S2] = reduce([sum dy_r, sum dy_r * xhat_r])`` is the second (and last) reduction, and
``sum_all`` runs over the pixels of every rank. ``dgamma``, ``dbeta`` stay the *local* sums: they are
parameter gradients, which data parallelism adds up over the ranks with the rest of the gradients.
With ``reduce`` the identity this is the ordinary op (up to the one-pass variance's round-off).
"""
from __future__ import annotations

import numpy as np

from .checks import check_batchnorm_args, check_grad_shape, check_moving_average_args


def batch_stats_from_sums(sums, dtype):
    """Finish the statistics from (global) sums ``[sum x, sum x^2, count]`` (3, C) -> ``(mean, var)`` in ``dtype``.

    >>> batch_stats_from_sums(np.array([[16.0], [84.0], [4.0]]), np.float32)      # x = 1, 3, 5, 7
    (array([4.], dtype=float32), array([5.], dtype=float32))
    """
    sums = np.asarray(sums, np.float64)
    count = sums[2]
    mean = sums[0] / count
    var = np.maximum(sums[1] / count - mean * mean, 0.0)     # one-pass, in float64; >= 0 despite round-off
    return mean.astype(dtype), var.astype(dtype)


def synced_sums(reduce, *local):
    """``reduce`` applied to the per-channel sums ``local`` stacked as one (k, C) float64 array: one message.

    >>> synced_sums(lambda s: 2 * s, np.ones(2), np.zeros(2)).tolist()      # e.g. two identical ranks
    [[2.0, 2.0], [0.0, 0.0]]
    """
    out = np.asarray(reduce(np.stack([np.asarray(v, np.float64) for v in local])), np.float64)
    if out.shape != (len(local), np.shape(local[0])[0]):
        raise ValueError(f"batchnorm reduce must return the shape it was given, {(len(local), len(local[0]))}, "
                         f"got {out.shape}")
    return out


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, *, training, eps=1e-3, reduce=None):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel; returns ``(y, cache)``.

    Args:
        x: ``(N, H, W, C)``; gamma, beta, moving_mean, moving_var: ``(C,)``, same dtype as ``x``.
        training: True uses the biased batch statistics (stored in ``cache["mean"]``, ``cache["var"]``),
            False the moving statistics.
        eps: added to the variance (Keras default 1e-3; the ResNet backbone uses 1e-5).
        reduce: None (the batch is ``x``), or, in training, the sum over the ranks of per-channel sums
            (synchronized batch norm, see the module docstring): the statistics are the global batch's.

    >>> x = np.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 1, 2, 1)
    >>> ones, zeros = np.ones(1), np.zeros(1)
    >>> y, cache = batchnorm_forward(x, ones, zeros, zeros, ones, training=True, eps=0.0)
    >>> cache["mean"].tolist(), cache["var"].tolist()          # biased variance: 20 / 4
    ([4.0], [5.0])
    >>> y.ravel().round(4).tolist()
    [-1.3416, -0.4472, 0.4472, 1.3416]
    >>> batchnorm_forward(x, ones, zeros, zeros, ones, training=False, eps=0.0)[0].ravel().tolist()
    [1.0, 3.0, 5.0, 7.0]

    Two "ranks" holding half the batch each, reduced by hand, see the whole batch's statistics:

    >>> halves = [x[:1], x[1:]]
    >>> def reduce(local):                                  # what an allreduce over the ranks returns
    ...     return sum(synced_sums(lambda s: s, h.sum((0, 1, 2)), (h ** 2).sum((0, 1, 2)), [h[..., 0].size])
    ...                for h in halves)
    >>> batchnorm_forward(halves[0], ones, zeros, zeros, ones, training=True, eps=0.0, reduce=reduce)[1]["var"]
    array([5.])
    """
    check_batchnorm_args(x, gamma, beta, moving_mean, moving_var, training, eps)
    count = x.size // x.shape[3]
    if training and reduce is not None:                     # synchronized: one fused reduction
        sums = synced_sums(reduce, x.sum(axis=(0, 1, 2), dtype=np.float64),
                           (x.astype(np.float64) ** 2).sum(axis=(0, 1, 2)), np.full(x.shape[3], count))
        mean, var = batch_stats_from_sums(sums, x.dtype)    # (C,) each, of the global batch
        count = sums[2]
    elif training:
        mean = x.mean(axis=(0, 1, 2))                       # (C,)
        var = ((x - mean) ** 2).mean(axis=(0, 1, 2))        # (C,) biased: divided by N*H*W
    else:
        mean, var = moving_mean, moving_var
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)   # (C,)
    xhat = (x - mean) * inv_std                             # (N, H, W, C)
    y = gamma * xhat + beta                                 # (N, H, W, C)
    cache = {"mean": mean, "var": var, "xhat": xhat, "inv_std": inv_std, "gamma": gamma,
             "training": bool(training)}
    if training and reduce is not None:
        cache.update(reduce=reduce, count=count)            # the backward reduces too, over M = count pixels
    return y, cache


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward`; returns ``(dx, dgamma, dbeta)``.

    ``dbeta = sum dy``, ``dgamma = sum dy * xhat`` (over N, H, W); with ``g = dy * gamma``:
    training ``dx = inv_std * (g - mean(g) - xhat * mean(g * xhat))``, inference ``dx = g * inv_std``.

    >>> x = np.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 1, 2, 1)
    >>> ones, zeros = np.ones(1), np.zeros(1)
    >>> y, cache = batchnorm_forward(x, ones, zeros, zeros, ones, training=True, eps=0.0)
    >>> dx, dgamma, dbeta = batchnorm_backward(np.ones_like(y), cache)
    >>> bool(np.abs(dx).max() < 1e-12), dbeta.tolist()     # a constant dy is absorbed by the batch mean
    (True, [4.0])
    """
    xhat, inv_std, gamma = cache["xhat"], cache["inv_std"], cache["gamma"]
    check_grad_shape(dy, xhat.shape)
    dbeta = dy.sum(axis=(0, 1, 2))                          # (C,)
    dgamma = (dy * xhat).sum(axis=(0, 1, 2))                # (C,)
    g = dy * gamma                                          # (N, H, W, C) gradient w.r.t. xhat
    if cache.get("reduce") is not None:                     # synchronized: the global sums, one reduction
        s1, s2 = synced_sums(cache["reduce"], dbeta, dgamma) / cache["count"]      # (C,) each
        shift, slope = (gamma * s1).astype(xhat.dtype), (gamma * s2).astype(xhat.dtype)
        dx = inv_std * (g - shift - xhat * slope)
    elif cache["training"]:
        dx = inv_std * (g - g.mean(axis=(0, 1, 2)) - xhat * (g * xhat).mean(axis=(0, 1, 2)))
    else:
        dx = g * inv_std
    dtype = xhat.dtype
    return dx.astype(dtype, copy=False), dgamma.astype(dtype, copy=False), dbeta.astype(dtype, copy=False)


def moving_average(moving, batch_value, momentum):
    """Keras moving-statistic update ``moving * momentum + batch_value * (1 - momentum)``; returns a new array.

    >>> moving_average(np.array([0.0, 1.0]), np.array([1.0, 3.0]), 0.9).round(6).tolist()
    [0.1, 1.2]
    """
    check_moving_average_args(moving, batch_value, momentum)
    return (moving * momentum + batch_value * (1.0 - momentum)).astype(moving.dtype, copy=False)
