"""ReLU: ``y = max(x, 0)``; ``dx = dy * [x > 0]`` (the gradient at exactly 0 is taken as 0)."""
from __future__ import annotations

import numpy as np

from .checks import check_array, check_grad_shape


def relu_forward(x, *, inplace=False):
    """``y = max(x, 0)`` elementwise (any shape); returns ``(y, cache)``.

    ``inplace=True`` writes ``y`` over ``x`` (no new buffer): for an ``x`` that nothing else reads
    afterwards, such as a batch norm's or an add's fresh output. The values are the same either way.

    >>> x = np.array([-1.0, 0.0, 2.0])
    >>> y, cache = relu_forward(x)
    >>> y.tolist(), x.tolist()
    ([0.0, 0.0, 2.0], [-1.0, 0.0, 2.0])
    >>> y, cache = relu_forward(x, inplace=True)
    >>> y is x, x.tolist()
    (True, [0.0, 0.0, 2.0])
    """
    check_array(x, "x")
    mask = x > 0
    y = np.maximum(x, 0, out=x if inplace else None)   # same shape and dtype as x; NaN stays NaN
    return y, {"mask": mask}


def relu_backward(dy, cache):
    """``dx = dy * [x > 0]``.

    >>> y, cache = relu_forward(np.array([-1.0, 0.0, 2.0]))
    >>> relu_backward(np.array([5.0, 5.0, 5.0]), cache).tolist()
    [0.0, 0.0, 5.0]
    """
    mask = cache["mask"]
    check_grad_shape(dy, mask.shape)
    return np.where(mask, dy, 0).astype(dy.dtype, copy=False)
