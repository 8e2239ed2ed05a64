"""The optimizer's arithmetic and the array placement helpers, on the host: the reference every backend matches.

SGD with momentum ``mu`` and weight decay ``wd``, in place, for one parameter ``p`` with gradient ``g``
and velocity ``v``::

    d = g + wd * p                 (the caller passes wd = 0 for parameters that are not decayed)
    v = mu * v + d                 (mu = 0: no velocity, p = p - lr * d)
    p = p - lr * v                 or, Nesterov, p = p - lr * (d + mu * v)

Global gradient norm ``sqrt(sum_p ||g_p||^2)``, accumulated in float64, and the in-place scale
``g *= s`` that clipping applies with it.

Placement: on the host backends an array already lives where the ops want it, so :func:`to_device`
and :func:`to_host` pass arrays through (the cuda backend copies); :func:`zeros_like` allocates
beside its argument.

>>> p, g, v = np.ones(2, np.float32), np.full(2, 0.5, np.float32), np.zeros(2, np.float32)
>>> sgd_update(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False)
>>> p.tolist(), v.tolist()
([0.949999988079071, 0.949999988079071], [0.5, 0.5])
>>> global_norm([np.array([3.0, 4.0], np.float32)])
5.0
"""
from __future__ import annotations

import math

import numpy as np


def sgd_update(p, g, v, *, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> None:
    """Update ``p`` (and the velocity ``v``, None when ``momentum`` is 0) in place from the gradient ``g``."""
    d = g.astype(p.dtype, copy=True)                 # d = g (+ wd * p)
    if weight_decay:
        d += weight_decay * p
    if momentum == 0:
        p -= lr * d
        return
    v *= momentum                                    # v = mu * v + d
    v += d
    p -= lr * (d + momentum * v) if nesterov else lr * v


def global_norm(grads) -> float:
    """``sqrt(sum_p ||g_p||^2)`` over a list of arrays, each squared norm summed in float64."""
    return math.sqrt(sum(float(np.dot(g.ravel().astype(np.float64), g.ravel().astype(np.float64)))
                         for g in grads))


def scale_(g, s) -> None:
    """In place ``g *= s`` (``s`` cast to ``g``'s dtype first)."""
    g *= g.dtype.type(s)


def to_device(a):
    """The array where this backend's ops want it: on the host, ``a`` itself."""
    return a


def to_host(a):
    """A host NumPy array: on the host backends, ``a`` itself (None passes through)."""
    return a


def is_device_array(a) -> bool:
    """Whether ``a`` lives in an accelerator's memory: never, on the host backends."""
    return False


def zeros_like(a):
    """Zeros with the shape and dtype of ``a``, where ``a`` lives."""
    return np.zeros_like(a)
