"""The optimizer's arithmetic on the GPU: the SGD update and the global gradient norm.

Used by :mod:`tinydeeplab.train.optim` when the parameters are device arrays, so a training step never
copies parameters or gradients to the host. Per parameter ``p`` with gradient ``g`` and velocity ``v``
(elementwise, grid-stride)::

    d = g + wd * p                 (wd = 0 for parameters that are not decayed)
    v = mu * v + d
    p = p - lr * v                 or, Nesterov, p = p - lr * (d + mu * v);   mu = 0: p = p - lr * d

Gradient norm: ``sum_p ||g_p||^2`` is accumulated per parameter into one float64 device vector
(deterministic tree sums, :mod:`.reduce`), added up on the device, and one number goes to the host.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from .device import empty, flat, launch_1d
from .reduce import vector_sum


@cuda.jit
def _sgd(p, g, v, lr, mu, wd, nesterov):
    """In place: ``v = mu * v + (g + wd * p)``; ``p -= lr * v`` (or the Nesterov / mu = 0 forms)."""
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        d = g[i] + wd * p[i]
        if mu == 0:
            p[i] -= lr * d
        else:
            vi = mu * v[i] + d
            v[i] = vi
            p[i] -= lr * (d + mu * vi) if nesterov else lr * vi


@cuda.jit
def _scale(g, s):
    """In place ``g *= s``."""
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        g[i] *= s


def sgd_update(p, g, v, *, lr: float, momentum: float, weight_decay: float, nesterov: bool) -> None:
    """Update device arrays ``p`` and ``v`` in place from gradient ``g`` (``v`` may be None when momentum is 0)."""
    t = p.dtype.type
    launch_1d(_sgd, p.size, flat(p), flat(g), flat(p if v is None else v), t(lr), t(momentum),
              t(weight_decay), bool(nesterov))


def global_norm(grads) -> float:
    """``sqrt(sum_p ||g_p||^2)`` over a list of device arrays, as a Python float (one host copy)."""
    if not grads:
        return 0.0
    squares = empty((len(grads),), np.float64)                      # one slot per gradient
    for k, g in enumerate(grads):
        vector_sum(flat(g), squared=True, out=squares, index=k)
    total = vector_sum(squares)                                     # (1,) float64 on the device
    return float(np.sqrt(total.copy_to_host()[0]))


def scale_(g, s) -> None:
    """In place ``g *= s`` (cast to ``g``'s dtype first, as ``g *= g.dtype.type(s)`` on the host)."""
    launch_1d(_scale, g.size, flat(g), g.dtype.type(s))
