"""Sigmoid, swish, hard sigmoid, hard swish, leaky ReLU and ReLU6 on the CPU (Numba), Keras 3 definitions.

Same maths and kink conventions as :mod:`tinydeeplab.functional.elementwise`. Elementwise, so one
``prange`` over the flattened array; the scalar formulas are the shared ones of
:mod:`tinydeeplab.functional.activation_formulas` (the CUDA backend compiles the same code), chosen by a
``kind`` code that is constant through the loop. The cache keeps ``x``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.activation_formulas import KINDS, activation_pairs, activation_slope, activation_value
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
    """Activation ``op`` of ``x``; the slope (leaky ReLU only) validated and rounded to x's dtype, as the reference."""
    check_array(x, "x")
    a = float(x.dtype.type(check_negative_slope(negative_slope)))
    xf = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(xf)
    activation_flat(xf, y, KINDS[op], a)
    return y.reshape(x.shape), {"x": xf, "shape": x.shape, "kind": KINDS[op], "a": a}


def _backward(dy, cache):
    """``dx = dy * f'(x)`` for the activation of ``cache``."""
    check_grad_shape(dy, cache["shape"])
    dyf = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(dyf)
    activation_grad_flat(cache["x"], dyf, dx, cache["kind"], cache["a"])
    return dx.reshape(cache["shape"])


(sigmoid_forward, sigmoid_backward, swish_forward, swish_backward, hard_sigmoid_forward, hard_sigmoid_backward,
 hard_swish_forward, hard_swish_backward, leaky_relu_forward, leaky_relu_backward, relu6_forward,
 relu6_backward) = activation_pairs(_forward, _backward)
"""The public ops: the reference's names, signatures and docstrings around :func:`_forward` / :func:`_backward`."""
