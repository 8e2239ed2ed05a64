"""Inverted dropout on the GPU (elementwise, grid-stride): ``y = x * keep / (1 - rate)``.

The keep mask is drawn on the host from the layer's NumPy generator (the same draws as the reference,
so every backend drops the same units and a checkpoint's generator state reproduces a run) and copied to
the device as one byte per element: the only host-to-device copy inside a forward pass, and only while
training with ``rate > 0``. Backward: ``dx = dy * keep / (1 - rate)`` with the same mask.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ...functional.checks import check_array, check_dropout_rate, check_grad_shape
from .device import empty, flat, launch_1d, require_device, spec, to_device


@cuda.jit
def _scale_by_mask(x, keep, scale, y):
    """``y = x * scale`` where ``keep``, else 0."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] * scale if keep[i] else 0


def dropout_forward(x, *, rate, rng):
    """Inverted dropout ``y = x * keep / (1 - rate)``, ``keep = rng.random(x.shape) >= rate``; returns ``(y, cache)``."""
    check_array(spec(x), "x")
    require_device(x, "x")
    check_dropout_rate(rate)
    keep = to_device((rng.random(tuple(x.shape)) >= rate).astype(np.uint8))   # host draws, one byte each
    scale = x.dtype.type(1.0 / (1.0 - rate))
    y = empty(x.shape, x.dtype)
    launch_1d(_scale_by_mask, x.size, flat(x), flat(keep), scale, flat(y))
    return y, {"keep": keep, "scale": scale}


def dropout_backward(dy, cache):
    """``dx = dy * keep / (1 - rate)`` with the forward's mask."""
    keep = cache["keep"]
    check_grad_shape(spec(dy), keep.shape)
    require_device(dy, "dy")
    dx = empty(dy.shape, dy.dtype)
    launch_1d(_scale_by_mask, dy.size, flat(dy), flat(keep), dy.dtype.type(cache["scale"]), flat(dx))
    return dx
