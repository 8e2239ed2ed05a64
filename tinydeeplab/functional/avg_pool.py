"""Average pooling, NHWC, as Keras ``AveragePooling2D`` computes it.

Window ``(KH, KW)``, stride ``(sh, sw)``; ``"valid"`` or ``"same"`` padding (the Keras rule of
``geometry.py``). The sum runs over the window's *real* pixels and is divided by how many there are::

    y[n, oh, ow, c] = (1 / count[oh, ow]) sum_{i, j : pixel inside x} x[n, oh*sh - pt + i, ow*sw - pl + j, c]
    count[oh, ow]   = rows[oh] * cols[ow]       (real rows and columns of the window)

so with ``"same"`` padding a border window averages fewer pixels: Keras's JAX backend divides the
zero-padded window sum by the same window sum of ones (``window_counts``), TensorFlow's ``avg_pool``
excludes the padding too. With ``"valid"`` every count is ``KH * KW``.

Backward, each output's gradient spread evenly over the pixels it averaged::

    dx[n, h, w, c] = sum over windows (oh, ow) that contain (h, w) of dy[n, oh, ow, c] / count[oh, ow]

The counts depend only on the shapes and options: :func:`avg_pool2d_geometry` works them out once for
every backend.
"""
from __future__ import annotations

import numpy as np

from .checks import check_grad_shape, check_nhwc, check_pool_padding
from .conv import tap_slices
from .pooling import max_pool2d_geometry


def window_counts_1d(size: int, k: int, s: int, pad_before: int, n_out: int) -> np.ndarray:
    """Real pixels of each window along one axis: ``min(o*s - p + k, size) - max(o*s - p, 0)``.

    >>> window_counts_1d(5, 3, 2, 1, 3).tolist()        # "same", 5 -> 3: the first and last windows lose one
    [2, 3, 2]
    """
    start = np.arange(n_out) * s - pad_before
    return np.minimum(start + k, size) - np.maximum(start, 0)


def avg_pool2d_geometry(x_shape, pool_size, stride, padding):
    """Validate an average pool's options and lay out its windows, for every backend.

    ``stride=None`` means ``pool_size`` (Keras). Returns ``(pool, stride, pads, out_hw, counts)`` with
    ``counts`` the ``(H_out, W_out)`` float64 number of real pixels per window.

    >>> pool, stride, pads, out_hw, counts = avg_pool2d_geometry((1, 5, 5, 1), 3, 2, "same")
    >>> pads, out_hw, counts.astype(int).tolist()
    (((1, 1), (1, 1)), (3, 3), [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    """
    padding = check_pool_padding(padding)
    pool, stride, pads, out_hw = max_pool2d_geometry(x_shape, pool_size, pool_size if stride is None else stride,
                                                     padding)
    rows = window_counts_1d(x_shape[1], pool[0], stride[0], pads[0][0], out_hw[0])
    cols = window_counts_1d(x_shape[2], pool[1], stride[1], pads[1][0], out_hw[1])
    return pool, stride, pads, out_hw, np.outer(rows, cols).astype(np.float64)   # (H_out, W_out)


def avg_pool2d_forward(x, *, pool_size=2, stride=None, padding="valid"):
    """Mean over the real pixels of ``pool_size`` windows moved by ``stride`` (default: ``pool_size``, as Keras).

    ``y[n, oh, ow, c] = sum_{window, inside x} x / count[oh, ow]``; returns ``(y, cache)``.

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> y, cache = avg_pool2d_forward(x)
    >>> y[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    >>> y, _ = avg_pool2d_forward(np.ones((1, 5, 5, 1)), pool_size=3, stride=2, padding="same")
    >>> y[0, :, :, 0].tolist()                             # padding is not averaged in
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    check_nhwc(x, "x")
    pool, stride, pads, out_hw, counts = avg_pool2d_geometry(x.shape, pool_size, stride, padding)
    (pt, pb), (pl, pr) = pads
    xpad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))        # (N, Hp, Wp, C), zeros add nothing
    total = np.zeros((x.shape[0], *out_hw, x.shape[3]), x.dtype)   # (N, H_out, W_out, C)
    for i in range(pool[0]):
        for j in range(pool[1]):
            total += xpad[tap_slices(i, j, (1, 1), stride, out_hw)]
    count = counts.astype(x.dtype)[None, :, :, None]               # (1, H_out, W_out, 1)
    cache = {"count": count, "x_shape": x.shape, "xpad_shape": xpad.shape, "pads": pads, "pool": pool,
             "stride": stride, "out_hw": out_hw}
    return total / count, cache


def avg_pool2d_backward(dy, cache):
    """Gradient of :func:`avg_pool2d_forward`: ``dx[window] += dy / count`` (overlapping windows add up).

    >>> y, cache = avg_pool2d_forward(np.zeros((1, 3, 3, 1)), pool_size=2, stride=1)
    >>> avg_pool2d_backward(np.ones_like(y), cache)[0, :, :, 0].tolist()
    [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]
    """
    pool, stride, out_hw = cache["pool"], cache["stride"], cache["out_hw"]
    n, h, w, c = cache["x_shape"]
    (pt, _), (pl, _) = cache["pads"]
    check_grad_shape(dy, (n, *out_hw, c))
    share = dy / cache["count"]                                     # (N, H_out, W_out, C)
    dxpad = np.zeros(cache["xpad_shape"], dtype=cache["count"].dtype)  # (N, Hp, Wp, C), x's dtype
    for i in range(pool[0]):
        for j in range(pool[1]):
            dxpad[tap_slices(i, j, (1, 1), stride, out_hw)] += share
    return dxpad[:, pt:pt + h, pl:pl + w, :].copy()                 # (N, H, W, C)
