"""Inverted dropout: ``y = x * keep / (1 - rate)`` with ``keep ~ Bernoulli(1 - rate)``; ``dx = dy * keep / (1 - rate)``.

The mask comes from a NumPy generator handed in by the caller (the ``Dropout`` layer owns it, and a
training checkpoint stores its state), drawn as ``rng.random(x.shape) >= rate``. Every backend draws it
the same way on the host, so all backends drop the same units.
"""
from __future__ import annotations

import numpy as np

from .checks import check_array, check_dropout_rate, check_grad_shape


def dropout_forward(x, *, rate, rng):
    """``y = x * keep / (1 - rate)``, ``keep = rng.random(x.shape) >= rate``; returns ``(y, cache)``.

    >>> y, cache = dropout_forward(np.ones((1, 1, 2, 2), np.float32), rate=0.5, rng=np.random.default_rng(0))
    >>> sorted(set(y.ravel().tolist()) - {0.0})             # kept units are scaled by 1 / (1 - rate)
    [2.0]
    """
    check_array(x, "x")
    check_dropout_rate(rate)
    keep = rng.random(x.shape) >= rate
    scale = (keep / (1.0 - rate)).astype(x.dtype)          # (same shape as x): 0 or 1 / (1 - rate)
    return x * scale, {"scale": scale}


def dropout_backward(dy, cache):
    """``dx = dy * keep / (1 - rate)`` with the forward's mask.

    >>> y, cache = dropout_forward(np.ones((1, 1, 1, 4)), rate=0.0, rng=np.random.default_rng(0))
    >>> dropout_backward(np.full((1, 1, 1, 4), 3.0), cache).ravel().tolist()
    [3.0, 3.0, 3.0, 3.0]
    """
    scale = cache["scale"]
    check_grad_shape(dy, scale.shape)
    return dy * scale
