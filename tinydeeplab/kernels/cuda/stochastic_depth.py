"""Stochastic depth on the GPU (elementwise, grid-stride): ``y[n] = x[n] / (1 - rate)`` for kept samples, else 0.

The per-sample keep mask is drawn on the host by the reference's
:func:`~tinydeeplab.functional.stochastic_depth.stochastic_depth_keep` from the caller's generator (so every
backend drops the same samples) and copied up as ``N`` bytes: with dropout's mask, the only host-to-device
copies inside a forward pass, and only while training. At inference the op is a device copy.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ...functional.checks import check_grad_shape, check_stochastic_depth_args
from ...functional.stochastic_depth import stochastic_depth_keep
from .device import copy, empty, flat, launch_1d, require_device, spec, to_device


@cuda.jit
def _drop_samples(x, keep, keep_prob, per_sample, y):
    """``y[i] = x[i] / keep_prob`` where the sample ``i // per_sample`` is kept, else 0."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] / keep_prob if keep[i // per_sample] else 0


def stochastic_depth_forward(x, *, rate, rng, training=True):
    """Per-sample drop of a residual branch (Keras ``Dropout(noise_shape=(None, 1, 1, 1))``); returns ``(y, cache)``."""
    check_stochastic_depth_args(spec(x), rate, training)
    require_device(x, "x")
    if not training:
        return copy(x), {"keep": None, "keep_prob": 1.0, "shape": tuple(x.shape)}
    keep = to_device(stochastic_depth_keep(x.shape[0], rate, rng).astype(np.uint8))   # (N,), host draws
    keep_prob = x.dtype.type(1.0 - rate)
    y = empty(x.shape, x.dtype)
    launch_1d(_drop_samples, x.size, flat(x), keep, keep_prob, max(1, x.size // max(1, x.shape[0])), flat(y))
    return y, {"keep": keep, "keep_prob": keep_prob, "shape": tuple(x.shape)}


def stochastic_depth_backward(dy, cache):
    """``dx[n] = dy[n] / (1 - rate)`` for kept samples, else 0 (a copy of ``dy`` at inference)."""
    check_grad_shape(spec(dy), cache["shape"])
    require_device(dy, "dy")
    if cache["keep"] is None:
        return copy(dy)
    dx = empty(dy.shape, dy.dtype)
    launch_1d(_drop_samples, dy.size, flat(dy), cache["keep"], dy.dtype.type(cache["keep_prob"]),
              max(1, dy.size // max(1, dy.shape[0])), flat(dx))
    return dx
