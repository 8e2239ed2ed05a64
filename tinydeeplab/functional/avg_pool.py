"""Average pooling, NHWC, as Keras ``AveragePooling2D`` computes it.

Window ``(KH, KW)``, stride ``(sh, sw)``; ``"valid"`` or ``"same"`` padding (the Keras rule of
``geometry.py``). The sum runs over the window's *real* pixels and is divided by how many there are::

    y[n, oh, ow, c] = (1 / count[oh, ow]) sum_{i, j : pixel inside x} x[n, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c]
    count[oh, ow]   = rows[oh] * cols[ow]       (real rows and columns of the window)

so with ``"same"`` padding a border window averages fewer pixels: Keras's JAX backend divides the
zero-padded window sum by the same window sum of ones (``window_counts``), TensorFlow's ``avg_pool``
excludes the padding too. With ``"valid"`` every count is ``KH * KW``.

Beyond Keras (whose pool has neither), a ``dilation`` ``(dh, dw)`` spaces the window's taps and the padding
may be explicit, ``((top, bottom), (left, right))``: an atrous encoder (DenseNet at output stride 8) turns
a 2x2/2 pool on a map of rate ``r`` into a 2x2/1 pool with dilation ``r`` and padding ``(0, r)``, which
reads exactly the pixels the strided pool read. ``dilation=1`` is the ordinary pool.

Backward, each output's gradient spread evenly over the pixels it averaged::

    dx[n, h, w, c] = sum over windows (oh, ow) that contain (h, w) of dy[n, oh, ow, c] / count[oh, ow]

The counts depend only on the shapes and options: :func:`avg_pool2d_geometry` works them out once for
every backend.
"""
from __future__ import annotations

import numpy as np

from .checks import check_grad_shape, check_nhwc, check_pool_padding, pair
from .conv import tap_slices
from .geometry import window_geometry


def window_counts_1d(size: int, k: int, s: int, pad_before: int, n_out: int, d: int = 1) -> np.ndarray:
    """Real pixels of each window along one axis: ``#{i < k : 0 <= o*s - p + i*d < size}``
    (``min(o*s - p + k, size) - max(o*s - p, 0)`` when ``d == 1``).

    >>> window_counts_1d(5, 3, 2, 1, 3).tolist()        # "same", 5 -> 3: the first and last windows lose one
    [2, 3, 2]
    >>> window_counts_1d(4, 2, 1, 0, 4, d=2).tolist()   # taps o and o + 2, padding (0, 2)
    [2, 2, 1, 1]
    """
    taps = np.arange(n_out)[:, None] * s - pad_before + np.arange(k)[None, :] * d     # (n_out, k)
    return ((taps >= 0) & (taps < size)).sum(axis=1)


def avg_pool2d_geometry(x_shape, pool_size, stride, padding, dilation=1):
    """Validate an average pool's options and lay out its windows, for every backend.

    ``stride=None`` means ``pool_size`` (Keras). Returns ``(pool, stride, pads, out_hw, counts)`` with
    ``counts`` the ``(H_out, W_out)`` float64 number of real pixels per window; the dilation is
    checked by the caller's :func:`~tinydeeplab.functional.checks.pair` (``dilation`` here).

    >>> pool, stride, pads, out_hw, counts = avg_pool2d_geometry((1, 5, 5, 1), 3, 2, "same")
    >>> pads, out_hw, counts.astype(int).tolist()
    (((1, 1), (1, 1)), (3, 3), [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    """
    padding = check_pool_padding(padding)
    pool = pair(pool_size, "pool_size")
    stride = pool if stride is None else pair(stride, "stride")
    dil = pair(dilation, "dilation")
    pads, out_hw = window_geometry(x_shape, pool, stride, dil, padding, name="x")
    rows = window_counts_1d(x_shape[1], pool[0], stride[0], pads[0][0], out_hw[0], dil[0])
    cols = window_counts_1d(x_shape[2], pool[1], stride[1], pads[1][0], out_hw[1], dil[1])
    if rows.min(initial=1) == 0 or cols.min(initial=1) == 0:
        raise ValueError(f"padding {pads} leaves a pooling window entirely in the padding of x "
                         f"(shape {tuple(x_shape)}, pool_size {pool}, stride {stride}, dilation {dil})")
    return pool, stride, pads, out_hw, np.outer(rows, cols).astype(np.float64)   # (H_out, W_out)


def avg_pool2d_forward(x, *, pool_size=2, stride=None, padding="valid", dilation=1):
    """Mean over the real pixels of ``pool_size`` windows moved by ``stride`` (default: ``pool_size``, as Keras),
    taps ``dilation`` apart.

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
    pool, stride, pads, out_hw, counts = avg_pool2d_geometry(x.shape, pool_size, stride, padding, dilation)
    dil = pair(dilation, "dilation")
    (pt, pb), (pl, pr) = pads
    xpad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))        # (N, Hp, Wp, C), zeros add nothing
    total = np.zeros((x.shape[0], *out_hw, x.shape[3]), x.dtype)   # (N, H_out, W_out, C)
    for i in range(pool[0]):
        for j in range(pool[1]):
            total += xpad[tap_slices(i, j, dil, stride, out_hw)]
    count = counts.astype(x.dtype)[None, :, :, None]               # (1, H_out, W_out, 1)
    cache = {"count": count, "x_shape": x.shape, "xpad_shape": xpad.shape, "pads": pads, "pool": pool,
             "stride": stride, "dilation": dil, "out_hw": out_hw}
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
            dxpad[tap_slices(i, j, cache["dilation"], stride, out_hw)] += share
    return dxpad[:, pt:pt + h, pl:pl + w, :].copy()                 # (N, H, W, C)
