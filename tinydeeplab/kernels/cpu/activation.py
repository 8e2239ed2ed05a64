"""ReLU on the CPU (Numba): ``y = max(x, 0)``; ``dx = dy * [x > 0]`` (gradient 0 at exactly 0).

Elementwise, so the kernels just run a ``prange`` over the flattened array; any shape works.
The cache keeps ``y``: ``y > 0`` exactly where ``x > 0``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.checks import check_array, check_grad_shape


@njit(parallel=True, cache=True, fastmath=False)
def relu_flat(x, y):
    """``y[i] = max(x[i], 0)`` (NaN stays NaN, as ``np.maximum``)."""
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = v if (v > 0 or v != v) else 0.0


@njit(parallel=True, cache=True, fastmath=False)
def relu_grad_flat(y, dy, dx):
    """``dx[i] = dy[i]`` where ``y[i] > 0``, else 0."""
    for i in prange(y.shape[0]):
        dx[i] = dy[i] if y[i] > 0 else 0.0


def relu_forward(x, *, inplace=False):
    """``y = max(x, 0)`` elementwise (any shape); returns ``(y, cache)``. ``inplace=True`` writes
    ``y`` over ``x`` (see :func:`tinydeeplab.functional.relu_forward`).

    >>> y, cache = relu_forward(np.array([-1.0, 0.0, 2.0]))
    >>> y.tolist()
    [0.0, 0.0, 2.0]
    """
    check_array(x, "x")
    xf = np.ascontiguousarray(x).reshape(-1)
    y = xf if inplace else np.empty_like(xf)
    relu_flat(xf, y)
    y = y.reshape(x.shape)
    return y, {"y": y}


def relu_backward(dy, cache):
    """``dx = dy * [x > 0]``.

    >>> y, cache = relu_forward(np.array([-1.0, 0.0, 2.0]))
    >>> relu_backward(np.array([5.0, 5.0, 5.0]), cache).tolist()
    [0.0, 0.0, 5.0]
    """
    y = cache["y"]
    check_grad_shape(dy, y.shape)
    dyf = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(dyf)
    relu_grad_flat(y.reshape(-1), dyf, dx)
    return dx.reshape(y.shape)
