"""Sigmoid, swish, hard sigmoid, hard swish and leaky ReLU on the CPU (Numba), Keras 3 definitions.

Same maths and kink conventions as :mod:`tinydeeplab.functional.elementwise`. Elementwise, so one
``prange`` over the flattened array; the scalar formulas are the shared ones of
:mod:`tinydeeplab.functional.activation_formulas` (the CUDA backend compiles the same code), chosen by a
``kind`` code that is constant through the loop. The cache keeps ``x``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.activation_formulas import KINDS, activation_slope, activation_value
from ...functional.checks import check_array, check_grad_shape, check_negative_slope

_value = njit(inline="always", cache=True)(activation_value)
_slope = njit(inline="always", cache=True)(activation_slope)


@njit(parallel=True, cache=True, fastmath=False)
def activation_flat(x, y, kind, a):
    """``y[i] = f_kind(x[i])``."""
    for i in prange(x.shape[0]):
        y[i] = _value(kind, x[i], a)


@njit(parallel=True, cache=True, fastmath=False)
def activation_grad_flat(x, dy, dx, kind, a):
    """``dx[i] = dy[i] * f_kind'(x[i])``."""
    for i in prange(x.shape[0]):
        dx[i] = dy[i] * _slope(kind, x[i], a)


def _forward(x, op, negative_slope=0.0):
    check_array(x, "x")
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(xf)
    activation_flat(xf, y, KINDS[op], float(negative_slope))
    return y.reshape(x.shape), {"x": xf, "shape": x.shape, "kind": KINDS[op], "a": float(negative_slope)}


def _backward(dy, cache):
    check_grad_shape(dy, cache["shape"])
    dyf = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(dyf)
    activation_grad_flat(cache["x"], dyf, dx, cache["kind"], cache["a"])
    return dx.reshape(cache["shape"])


def sigmoid_forward(x):
    """``y = 1 / (1 + exp(-x))``; returns ``(y, cache)`` (see :func:`tinydeeplab.functional.sigmoid_forward`).

    >>> sigmoid_forward(np.array([0.0]))[0].tolist()
    [0.5]
    """
    return _forward(x, "sigmoid")


def sigmoid_backward(dy, cache):
    """``dx = dy * s * (1 - s)``."""
    return _backward(dy, cache)


def swish_forward(x):
    """Swish / SiLU ``y = x * sigmoid(x)``; returns ``(y, cache)``."""
    return _forward(x, "swish")


def swish_backward(dy, cache):
    """``dx = dy * (s + x s (1 - s))``."""
    return _backward(dy, cache)


def hard_sigmoid_forward(x):
    """``y = relu6(x + 3) / 6``; returns ``(y, cache)``."""
    return _forward(x, "hard_sigmoid")


def hard_sigmoid_backward(dy, cache):
    """``dx = dy / 6`` on ``0 < x + 3 < 6``, else 0."""
    return _backward(dy, cache)


def hard_swish_forward(x):
    """``y = x * relu6(x + 3) / 6``; returns ``(y, cache)``."""
    return _forward(x, "hard_swish")


def hard_swish_backward(dy, cache):
    """``dx = dy * (hard_sigmoid(x) + x / 6 * [0 < x + 3 < 6])``."""
    return _backward(dy, cache)


def leaky_relu_forward(x, *, negative_slope=0.2):
    """``y = x`` where ``x >= 0``, else ``negative_slope * x``; returns ``(y, cache)``.

    >>> leaky_relu_forward(np.array([-2.0, 3.0]))[0].tolist()
    [-0.4, 3.0]
    """
    check_array(x, "x")
    return _forward(x, "leaky_relu", x.dtype.type(check_negative_slope(negative_slope)))


def leaky_relu_backward(dy, cache):
    """``dx = dy`` where ``x >= 0``, else ``negative_slope * dy``."""
    return _backward(dy, cache)
