"""The smooth and piecewise-linear activations of the mobile encoder families, as Keras 3 defines them.

All act elementwise on any shape; the cache keeps ``x`` and the backward is ``dx = dy * f'(x)``::

    sigmoid(x)      = 1 / (1 + exp(-x))                  f' = s (1 - s)
    swish(x)        = x * sigmoid(x)   (= SiLU)          f' = s + x s (1 - s)
    hard_sigmoid(x) = relu6(x + 3) / 6                   f' = 1/6 on -3 < x < 3, else 0
    hard_swish(x)   = x * hard_sigmoid(x)                f' = hard_sigmoid(x) + x/6 on -3 < x < 3
    leaky_relu(x)   = x if x >= 0 else a * x             f' = 1 if x >= 0 else a   (Keras default a = 0.2)
    relu6(x)        = min(max(x, 0), 6)                  f' = 1 on 0 < x < 6, else 0  (EfficientNet-lite)

**At the kinks** (where the function has no derivative) the gradient is the one JAX, Keras 3's
reference backend, returns: ``relu6`` passes the gradient only strictly inside ``0 < t < 6`` (``t = x + 3``),
so hard-sigmoid's slope at ``x = -3`` and ``x = 3`` is 0 and hard-swish's is ``hard_sigmoid(x)``: 0 at
-3, 1 at 3. Leaky ReLU's ``where(x >= 0, x, a x)`` gives slope 1 at ``x = 0``. The kink condition is
tested on ``t = x + 3`` as computed in the input's dtype, as JAX does.

**Keras defaults.** ``keras.activations.leaky_relu`` and ``keras.ops.leaky_relu`` default to
``negative_slope=0.2`` (the default here); the *layer* ``keras.layers.LeakyReLU`` defaults to 0.3, so a port
of a layer must pass its slope. ``sigmoid`` is evaluated as ``1 / (1 + e)`` or ``e / (1 + e)`` with
``e = exp(-|x|)``, which never overflows.
"""
from __future__ import annotations

import numpy as np

from .checks import check_array, check_grad_shape, check_negative_slope


def _logistic(x):
    """``1 / (1 + exp(-x))`` without overflow: ``e = exp(-|x|)``, then ``1/(1+e)`` (x >= 0) or ``e/(1+e)``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _hard_sigmoid(x):
    """``relu6(x + 3) / 6`` and the mask ``0 < x + 3 < 6`` where its slope is 1/6."""
    t = x + x.dtype.type(3)
    return np.minimum(np.maximum(t, 0), 6) / x.dtype.type(6), (t > 0) & (t < 6)


def _checked_dy(dy, cache):
    x = cache["x"]
    check_grad_shape(dy, x.shape)
    return x, dy


def sigmoid_forward(x):
    """``y = 1 / (1 + exp(-x))`` elementwise (any shape); returns ``(y, cache)``.

    >>> y, cache = sigmoid_forward(np.array([-1000.0, 0.0, 1000.0]))       # no overflow
    >>> y.tolist()
    [0.0, 0.5, 1.0]
    """
    check_array(x, "x")
    return _logistic(x), {"x": x}


def sigmoid_backward(dy, cache):
    """``dx = dy * s * (1 - s)``, ``s = sigmoid(x)``.

    >>> y, cache = sigmoid_forward(np.array([0.0]))
    >>> sigmoid_backward(np.array([2.0]), cache).tolist()
    [0.5]
    """
    x, dy = _checked_dy(dy, cache)
    s = _logistic(x)
    return dy * (s * (1 - s))


def swish_forward(x):
    """Swish / SiLU ``y = x * sigmoid(x)`` (``keras.activations.silu``); returns ``(y, cache)``.

    >>> y, cache = swish_forward(np.array([-1000.0, 0.0, 2.0]))
    >>> np.round(y, 6).tolist()
    [-0.0, 0.0, 1.761594]
    """
    check_array(x, "x")
    return x * _logistic(x), {"x": x}


def swish_backward(dy, cache):
    """``dx = dy * (s + x * s * (1 - s))``, ``s = sigmoid(x)``.

    >>> y, cache = swish_forward(np.array([0.0]))
    >>> swish_backward(np.array([1.0]), cache).tolist()                    # slope 1/2 at 0
    [0.5]
    """
    x, dy = _checked_dy(dy, cache)
    s = _logistic(x)
    return dy * (s + x * s * (1 - s))


def hard_sigmoid_forward(x):
    """Keras 3 hard sigmoid ``y = relu6(x + 3) / 6`` elementwise; returns ``(y, cache)``.

    >>> y, cache = hard_sigmoid_forward(np.array([-4.0, -3.0, 0.0, 1.5, 3.0, 4.0]))
    >>> y.tolist()
    [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]
    """
    check_array(x, "x")
    return _hard_sigmoid(x)[0], {"x": x}


def hard_sigmoid_backward(dy, cache):
    """``dx = dy / 6`` where ``0 < x + 3 < 6``, else 0 (0 at the kinks ``x = -3`` and ``x = 3``, as JAX).

    >>> y, cache = hard_sigmoid_forward(np.array([-3.0, 0.0, 3.0]))
    >>> hard_sigmoid_backward(np.array([6.0, 6.0, 6.0]), cache).tolist()
    [0.0, 1.0, 0.0]
    """
    x, dy = _checked_dy(dy, cache)
    _, inside = _hard_sigmoid(x)
    return np.where(inside, dy / dy.dtype.type(6), 0).astype(dy.dtype, copy=False)


def hard_swish_forward(x):
    """Keras 3 hard swish / hard SiLU ``y = x * relu6(x + 3) / 6`` elementwise; returns ``(y, cache)``.

    >>> y, cache = hard_swish_forward(np.array([-4.0, -1.5, 0.0, 3.0, 4.0]))
    >>> y.tolist()
    [-0.0, -0.375, 0.0, 3.0, 4.0]
    """
    check_array(x, "x")
    return x * _hard_sigmoid(x)[0], {"x": x}


def hard_swish_backward(dy, cache):
    """``dx = dy * (hard_sigmoid(x) + x / 6 * [0 < x + 3 < 6])``: slope 0 at ``x = -3``, 1 at ``x = 3`` (as JAX).

    >>> y, cache = hard_swish_forward(np.array([-3.0, 0.0, 3.0]))
    >>> hard_swish_backward(np.array([1.0, 1.0, 1.0]), cache).tolist()
    [0.0, 0.5, 1.0]
    """
    x, dy = _checked_dy(dy, cache)
    hs, inside = _hard_sigmoid(x)
    return dy * (hs + np.where(inside, x / x.dtype.type(6), 0).astype(x.dtype, copy=False))


def relu6_forward(x):
    """``y = min(max(x, 0), 6)`` elementwise (Keras 3's ``relu6``); returns ``(y, cache)``.

    >>> y, cache = relu6_forward(np.array([-1.0, 0.0, 2.5, 6.0, 7.0]))
    >>> y.tolist()
    [0.0, 0.0, 2.5, 6.0, 6.0]
    """
    check_array(x, "x")
    return np.minimum(np.maximum(x, 0), 6).astype(x.dtype, copy=False), {"x": x}


def relu6_backward(dy, cache):
    """``dx = dy`` where ``0 < x < 6``, else 0 (0 at both kinks, as JAX's ``relu6``).

    >>> y, cache = relu6_forward(np.array([-1.0, 0.0, 3.0, 6.0]))
    >>> relu6_backward(np.array([1.0, 1.0, 1.0, 1.0]), cache).tolist()
    [0.0, 0.0, 1.0, 0.0]
    """
    x, dy = _checked_dy(dy, cache)
    return np.where((x > 0) & (x < 6), dy, 0).astype(dy.dtype, copy=False)


def leaky_relu_forward(x, *, negative_slope=0.2):
    """``y = x`` where ``x >= 0``, else ``negative_slope * x`` (Keras 3's ``leaky_relu``, default 0.2).

    >>> y, cache = leaky_relu_forward(np.array([-2.0, 0.0, 3.0]))
    >>> y.tolist()
    [-0.4, 0.0, 3.0]
    """
    check_array(x, "x")
    a = x.dtype.type(check_negative_slope(negative_slope))
    return np.where(x >= 0, x, a * x), {"x": x, "negative_slope": a}


def leaky_relu_backward(dy, cache):
    """``dx = dy`` where ``x >= 0`` (the slope at 0 is 1, as JAX), else ``negative_slope * dy``.

    >>> y, cache = leaky_relu_forward(np.array([-2.0, 0.0, 3.0]), negative_slope=0.5)
    >>> leaky_relu_backward(np.array([1.0, 1.0, 1.0]), cache).tolist()
    [0.5, 1.0, 1.0]
    """
    x, dy = _checked_dy(dy, cache)
    return np.where(x >= 0, dy, dy.dtype.type(cache["negative_slope"]) * dy)
