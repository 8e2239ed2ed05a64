"""Channel concat / split and the residual add: the places where a gradient is copied or split.

* ``concat``: ``y = [x_0 | x_1 | ...]`` along C; backward slices ``dy`` back into per-input pieces.
* ``split``: the inverse of concat; backward concatenates the pieces' gradients.
* ``add``: ``y = a + b``; backward copies ``dy`` to both branches (``da = db = dy``).
"""
from __future__ import annotations

import numpy as np

from .checks import check_add_args, check_grad_shape, check_nhwc, check_nhwc_list, check_split_grads, check_split_sizes


def concat_forward(xs):
    """Concatenate NHWC arrays with equal N, H, W along channels: ``y = [x_0 | x_1 | ...]``.

    >>> y, cache = concat_forward([np.zeros((1, 2, 2, 3)), np.ones((1, 2, 2, 1))])
    >>> y.shape, y[0, 0, 0].tolist()
    ((1, 2, 2, 4), [0.0, 0.0, 0.0, 1.0])
    """
    xs = check_nhwc_list(xs, "xs")
    y = np.concatenate(xs, axis=3)                      # (N, H, W, C_0 + C_1 + ...)
    return y, {"sizes": [x.shape[3] for x in xs], "y_shape": y.shape}


def concat_backward(dy, cache):
    """Gradient of :func:`concat_forward`: ``dx_k = dy[..., offset_k : offset_k + C_k]``; returns a list.

    >>> y, cache = concat_forward([np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 1))])
    >>> [d.ravel().tolist() for d in concat_backward(np.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3), cache)]
    [[1.0, 2.0], [3.0]]
    """
    check_grad_shape(dy, cache["y_shape"])
    offsets = np.cumsum(cache["sizes"])[:-1]
    return [part.copy() for part in np.split(dy, offsets, axis=3)]   # each (N, H, W, C_k)


def split_forward(x, sizes):
    """Split ``x`` along channels into pieces of ``sizes`` channels (they must add up to C); returns a list.

    >>> ys, cache = split_forward(np.arange(5.0).reshape(1, 1, 1, 5), [2, 3])
    >>> [y.ravel().tolist() for y in ys]
    [[0.0, 1.0], [2.0, 3.0, 4.0]]
    """
    check_nhwc(x, "x")
    sizes = check_split_sizes(sizes, x.shape)
    offsets = np.cumsum(sizes)[:-1]
    ys = [part.copy() for part in np.split(x, offsets, axis=3)]       # each (N, H, W, sizes[k])
    return ys, {"x_shape": x.shape, "sizes": sizes}


def split_backward(dys, cache):
    """Gradient of :func:`split_forward`: ``dx = [dy_0 | dy_1 | ...]`` along channels.

    >>> ys, cache = split_forward(np.zeros((1, 1, 1, 3)), [1, 2])
    >>> split_backward([np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 2))], cache).ravel().tolist()
    [1.0, 0.0, 0.0]
    """
    check_split_grads(dys, cache["x_shape"], cache["sizes"])
    return np.concatenate(dys, axis=3)                   # (N, H, W, C)


def add_forward(a, b, *, inplace=False):
    """Residual add ``y = a + b`` (same shape and dtype); returns ``(y, cache)``.

    ``inplace=True`` writes the sum over ``a`` (for an ``a`` nothing else reads afterwards, e.g. a
    layer's fresh output or gradient); the values are the same either way.

    >>> a = np.ones((1, 1, 1, 2))
    >>> y, cache = add_forward(a, np.ones((1, 1, 1, 2)))
    >>> y.ravel().tolist(), a.ravel().tolist()
    ([2.0, 2.0], [1.0, 1.0])
    >>> y, cache = add_forward(a, np.ones((1, 1, 1, 2)), inplace=True)
    >>> y is a, a.ravel().tolist()
    (True, [2.0, 2.0])
    """
    check_add_args(a, b)
    return np.add(a, b, out=a if inplace else None), {"shape": a.shape}


def add_backward(dy, cache):
    """Gradient of :func:`add_forward`: ``da = dy``, ``db = dy`` (two independent copies).

    >>> da, db = add_backward(np.full((1, 1, 1, 2), 3.0), {"shape": (1, 1, 1, 2)})
    >>> da.ravel().tolist(), db.ravel().tolist()
    ([3.0, 3.0], [3.0, 3.0])
    """
    check_grad_shape(dy, cache["shape"])
    return dy.copy(), dy.copy()
