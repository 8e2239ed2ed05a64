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
"""
from __future__ import annotations

import numpy as np

from .checks import check_batchnorm_args, check_grad_shape, check_moving_average_args


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, *, training, eps=1e-3):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel; returns ``(y, cache)``.

    Args:
        x: ``(N, H, W, C)``; gamma, beta, moving_mean, moving_var: ``(C,)``, same dtype as ``x``.
        training: True uses the biased batch statistics (stored in ``cache["mean"]``, ``cache["var"]``),
            False the moving statistics.
        eps: added to the variance (Keras default 1e-3; the ResNet backbone uses 1e-5).

    >>> x = np.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 1, 2, 1)
    >>> ones, zeros = np.ones(1), np.zeros(1)
    >>> y, cache = batchnorm_forward(x, ones, zeros, zeros, ones, training=True, eps=0.0)
    >>> cache["mean"].tolist(), cache["var"].tolist()          # biased variance: 20 / 4
    ([4.0], [5.0])
    >>> y.ravel().round(4).tolist()
    [-1.3416, -0.4472, 0.4472, 1.3416]
    >>> batchnorm_forward(x, ones, zeros, zeros, ones, training=False, eps=0.0)[0].ravel().tolist()
    [1.0, 3.0, 5.0, 7.0]
    """
    check_batchnorm_args(x, gamma, beta, moving_mean, moving_var, training, eps)
    if training:
        mean = x.mean(axis=(0, 1, 2))                       # (C,)
        var = ((x - mean) ** 2).mean(axis=(0, 1, 2))        # (C,) biased: divided by N*H*W
    else:
        mean, var = moving_mean, moving_var
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)   # (C,)
    xhat = (x - mean) * inv_std                             # (N, H, W, C)
    y = gamma * xhat + beta                                 # (N, H, W, C)
    cache = {"mean": mean, "var": var, "xhat": xhat, "inv_std": inv_std, "gamma": gamma,
             "training": bool(training)}
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
    if cache["training"]:
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
