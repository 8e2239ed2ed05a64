"""Sigmoid, swish, hard sigmoid, hard swish, leaky ReLU and ReLU6 on the GPU (elementwise, grid-stride), Keras 3 definitions.

The scalar formulas and kink conventions are those of :mod:`tinydeeplab.functional.activation_formulas`,
compiled here as device functions (the CPU backend compiles the same code with ``njit``); ``kind`` selects
the activation. The cache keeps ``x``; ``dx = dy * f'(x)``.
"""
from __future__ import annotations

from numba import cuda

from ...functional.activation_formulas import KINDS, activation_pairs, activation_slope, activation_value
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
    """Activation ``op`` of device array ``x``; the slope (leaky ReLU only) validated and rounded to x's dtype."""
    check_array(spec(x), "x")
    a = float(x.dtype.type(check_negative_slope(negative_slope)))
    require_device(x, "x")
    y = empty(x.shape, x.dtype)
    launch_1d(_activation, x.size, flat(x), flat(y), KINDS[op], a)
    return y, {"x": x, "kind": KINDS[op], "a": a}


def _backward(dy, cache):
    """``dx = dy * f'(x)`` for the activation of ``cache``."""
    x = cache["x"]
    check_grad_shape(spec(dy), x.shape)
    require_device(dy, "dy")
    dx = empty(dy.shape, dy.dtype)
    launch_1d(_activation_grad, dy.size, flat(x), flat(dy), flat(dx), cache["kind"], cache["a"])
    return dx


(sigmoid_forward, sigmoid_backward, swish_forward, swish_backward, hard_sigmoid_forward, hard_sigmoid_backward,
 hard_swish_forward, hard_swish_backward, leaky_relu_forward, leaky_relu_backward, relu6_forward,
 relu6_backward) = activation_pairs(_forward, _backward)
"""The public ops: the reference's names, signatures and docstrings around :func:`_forward` / :func:`_backward`."""
