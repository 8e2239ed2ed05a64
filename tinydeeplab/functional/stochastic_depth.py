"""Stochastic depth (drop-connect, drop-path) as Keras applies it to a residual branch in training.

KerasHub's EfficientNet blocks end their residual branch with ``Dropout(rate, noise_shape=(None, 1, 1, 1))``:
one Bernoulli draw per *sample*, the whole branch of a dropped sample zeroed, the kept ones divided by
the keep probability::

    keep[n] ~ Bernoulli(1 - rate)            drawn on the host: keep = rng.random(N) >= rate
    y[n, ...]  = x[n, ...] / (1 - rate)  if keep[n]  else 0
    dx[n, ...] = dy[n, ...] / (1 - rate) if keep[n]  else 0

At inference (``training=False``) it is the identity and draws nothing. As for dropout, the mask comes
from the caller's NumPy generator (a layer owns it, a checkpoint stores its state) and every backend
draws it the same way on the host, so all backends drop the same samples. The division (not a multiply by
``1 / (1 - rate)``) is the arithmetic of Keras's ``inputs / keep_prob``.
"""
from __future__ import annotations

import numpy as np

from .checks import check_grad_shape, check_stochastic_depth_args


def stochastic_depth_keep(n: int, rate, rng) -> np.ndarray:
    """The per-sample keep mask ``rng.random(n) >= rate`` (bool, shape ``(N,)``): the one draw of every backend.

    >>> stochastic_depth_keep(4, 0.0, np.random.default_rng(0)).tolist()
    [True, True, True, True]
    """
    return rng.random(n) >= rate


def stochastic_depth_forward(x, *, rate, rng, training=True):
    """``y[n] = x[n] / (1 - rate)`` for kept samples, 0 for dropped ones; the identity (a copy) when not training.

    ``x`` has the batch axis first (any shape ``(N, ...)``); returns ``(y, cache)``.

    >>> x = np.ones((4, 1, 1, 2), np.float32)
    >>> y, cache = stochastic_depth_forward(x, rate=0.5, rng=np.random.default_rng(1))
    >>> y[:, 0, 0, 0].tolist(), cache["keep"].tolist()          # whole samples dropped, the rest doubled
    ([2.0, 2.0, 0.0, 2.0], [True, True, False, True])
    >>> stochastic_depth_forward(x, rate=0.5, rng=None, training=False)[0][:, 0, 0, 0].tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    check_stochastic_depth_args(x, rate, training)
    if not training:
        return x.copy(), {"keep": np.ones(x.shape[0], bool), "keep_prob": 1.0, "shape": x.shape}
    keep = stochastic_depth_keep(x.shape[0], rate, rng)             # (N,)
    keep_prob = x.dtype.type(1.0 - rate)
    mask = keep.reshape((-1,) + (1,) * (x.ndim - 1))                # (N, 1, 1, 1)
    return np.where(mask, x / keep_prob, 0).astype(x.dtype, copy=False), {"keep": keep, "keep_prob": keep_prob,
                                                                          "shape": x.shape}


def stochastic_depth_backward(dy, cache):
    """``dx[n] = dy[n] / (1 - rate)`` for kept samples, else 0 (``dx = dy`` at inference).

    >>> y, cache = stochastic_depth_forward(np.ones((4, 2)), rate=0.5, rng=np.random.default_rng(1))
    >>> stochastic_depth_backward(np.ones((4, 2)), cache)[:, 0].tolist()
    [2.0, 2.0, 0.0, 2.0]
    """
    keep = cache["keep"]
    check_grad_shape(dy, cache["shape"])
    mask = keep.reshape((-1,) + (1,) * (dy.ndim - 1))
    return np.where(mask, dy / dy.dtype.type(cache["keep_prob"]), 0).astype(dy.dtype, copy=False)
