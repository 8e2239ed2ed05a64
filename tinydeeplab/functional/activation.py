"""ReLU: ``y = max(x, 0)``; ``dx = dy * [x > 0]`` (the gradient at exactly 0 is taken as 0)."""
from __future__ import annotations

import numpy as np

from ._checks import check_array, check_grad_shape


def relu_forward(x):
    """``y = max(x, 0)`` elementwise (any shape); returns ``(y, cache)``.

    >>> y, cache = relu_forward(np.array([-1.0, 0.0, 2.0]))
    >>> y.tolist()
    [0.0, 0.0, 2.0]
    """
    check_array(x, "x")
    y = np.maximum(x, 0)                   # same shape and dtype as x; NaN stays NaN
    return y, {"mask": x > 0}


def relu_backward(dy, cache):
    """``dx = dy * [x > 0]``.

    >>> y, cache = relu_forward(np.array([-1.0, 0.0, 2.0]))
    >>> relu_backward(np.array([5.0, 5.0, 5.0]), cache).tolist()
    [0.0, 0.0, 5.0]
    """
    mask = cache["mask"]
    check_grad_shape(dy, mask.shape)
    return np.where(mask, dy, 0).astype(dy.dtype, copy=False)
