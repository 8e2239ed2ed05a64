"""Sigmoid, swish, hard sigmoid, hard swish and leaky ReLU on the GPU (elementwise, grid-stride), Keras 3 definitions.

The scalar formulas and kink conventions are those of :mod:`tinydeeplab.functional.activation_formulas`,
compiled here as device functions (the CPU backend compiles the same code with ``njit``); ``kind`` selects
the activation. The cache keeps ``x``; ``dx = dy * f'(x)``.
"""
from __future__ import annotations

from numba import cuda

from ...functional.activation_formulas import KINDS, activation_slope, activation_value
from ...functional.checks import check_array, check_grad_shape, check_negative_slope
from .device import empty, flat, launch_1d, require_device, spec

_value = cuda.jit(device=True)(activation_value)
_slope = cuda.jit(device=True)(activation_slope)


@cuda.jit
def _activation(x, y, kind, a):
    """``y[i] = f_kind(x[i])``."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = _value(kind, x[i], a)


@cuda.jit
def _activation_grad(x, dy, dx, kind, a):
    """``dx[i] = dy[i] * f_kind'(x[i])``."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dy[i] * _slope(kind, x[i], a)


def _forward(x, op, negative_slope=0.0):
    check_array(spec(x), "x")
    require_device(x, "x")
    y = empty(x.shape, x.dtype)
    launch_1d(_activation, x.size, flat(x), flat(y), KINDS[op], float(negative_slope))
    return y, {"x": x, "kind": KINDS[op], "a": float(negative_slope)}


def _backward(dy, cache):
    x = cache["x"]
    check_grad_shape(spec(dy), x.shape)
    require_device(dy, "dy")
    dx = empty(dy.shape, dy.dtype)
    launch_1d(_activation_grad, dy.size, flat(x), flat(dy), flat(dx), cache["kind"], cache["a"])
    return dx


def sigmoid_forward(x):
    """``y = 1 / (1 + exp(-x))`` on a device array; returns ``(y, cache)``."""
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
    """``y = x`` where ``x >= 0``, else ``negative_slope * x``; returns ``(y, cache)``."""
    check_array(spec(x), "x")
    return _forward(x, "leaky_relu", x.dtype.type(check_negative_slope(negative_slope)))


def leaky_relu_backward(dy, cache):
    """``dx = dy`` where ``x >= 0``, else ``negative_slope * dy``."""
    return _backward(dy, cache)
