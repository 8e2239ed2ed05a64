"""ReLU on the GPU (elementwise, grid-stride): ``y = max(x, 0)``; ``dx = dy * [x > 0]``.

The cache keeps ``y`` itself: ``y > 0`` exactly where ``x > 0``, so no separate mask is stored.
"""
from __future__ import annotations

from numba import cuda

from ...functional.checks import check_array, check_grad_shape
from .device import empty, flat, launch_1d, require_device, spec


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
