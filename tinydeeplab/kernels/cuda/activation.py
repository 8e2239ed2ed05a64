"""ReLU and dropout on the GPU (elementwise, grid-stride).

ReLU: ``y = max(x, 0)``; ``dx = dy * [x > 0]``. The cache keeps ``y`` itself: ``y > 0`` exactly where
``x > 0``, so no separate mask is stored.

Dropout: ``y = x * keep / (1 - rate)``. The keep mask is drawn on the host from the layer's NumPy
generator (the same draws as the reference, so every backend drops the same units and a checkpoint's
generator state reproduces a run) and copied to the device as one byte per element: the only
host-to-device copy inside a forward pass, and only while training with ``rate > 0``.
"""
from __future__ import annotations

import numbers

import numpy as np
from numba import cuda

from ...functional._checks import check_array, check_grad_shape
from .memory import empty, flat, launch_1d, require_device, spec, to_device


@cuda.jit
def _relu(x, y):
    """``y = max(x, 0)`` (NaN stays NaN, as ``np.maximum``)."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = 0 if v < 0 else v


@cuda.jit
def _relu_grad(dy, y, dx):
    """``dx = dy`` where ``y > 0`` (i.e. ``x > 0``), else 0."""
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        dx[i] = dy[i] if y[i] > 0 else 0


@cuda.jit
def _scale_by_mask(x, keep, scale, y):
    """``y = x * scale`` where ``keep``, else 0."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] * scale if keep[i] else 0


def relu_forward(x, *, inplace=False):
    """``y = max(x, 0)`` elementwise (any shape); returns ``(y, cache)``; ``inplace=True`` writes over ``x``."""
    check_array(spec(x), "x")
    require_device(x, "x")
    y = x if inplace else empty(x.shape, x.dtype)
    launch_1d(_relu, x.size, flat(x), flat(y))
    return y, {"y": y}


def relu_backward(dy, cache):
    """``dx = dy * [x > 0]``."""
    y = cache["y"]
    check_grad_shape(spec(dy), y.shape)
    require_device(dy, "dy")
    dx = empty(dy.shape, dy.dtype)
    launch_1d(_relu_grad, dy.size, flat(dy), flat(y), flat(dx))
    return dx


def dropout_forward(x, *, rate, rng):
    """Inverted dropout ``y = x * keep / (1 - rate)``, ``keep = rng.random(x.shape) >= rate``; returns ``(y, cache)``."""
    check_array(spec(x), "x")
    require_device(x, "x")
    if not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
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
