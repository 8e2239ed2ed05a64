"""Max pooling and global average pooling, NHWC.

Max pool, window ``(KH, KW)``, stride ``(sh, sw)``::

    y[n, oh, ow, c] = max_{i, j} xpad[n, oh*sh + i, ow*sw + j, c]

with ``xpad`` padded by ``-inf`` so a padded cell never wins. As in conv, the reference loops over the
window taps ``(i, j)`` (each a strided slice of ``xpad``) and keeps a running maximum plus the index
of the winning tap. A tap only replaces the running max when it is strictly larger, so ties go to the
*first* maximum in row-major window order, and the backward sends ``dy`` there alone::

    dxpad[window_ij] += dy * [argmax == (i, j)]        then crop the padding

Global average pool: ``y[n, 0, 0, c] = mean_{h, w} x[n, h, w, c]``; ``dx = dy / (H * W)`` broadcast.
"""
from __future__ import annotations

import numpy as np

from .checks import check_grad_shape, check_nhwc, pair
from .conv import tap_slices
from .geometry import window_geometry


def check_windows_touch_input(x_shape, pool, stride, pads, out_hw) -> None:
    """Every window must cover at least one real pixel (else its max would be -inf)."""
    for axis, name in ((0, "height"), (1, "width")):
        k, s, (before, _), n_out, size = pool[axis], stride[axis], pads[axis], out_hw[axis], x_shape[1 + axis]
        if k <= before or (n_out - 1) * s >= before + size:
            raise ValueError(f"padding {pads} leaves a pooling window entirely in the padding along the {name} "
                             f"of x (shape {tuple(x_shape)}, pool_size {pool}, stride {stride})")


def max_pool2d_geometry(x_shape, pool_size, stride, padding):
    """Validate a max pool's options and lay out its windows, for every backend.

    Returns ``(pool, stride, pads, out_hw)``: ``pool`` and ``stride`` as pairs, ``pads`` as
    ``((top, bottom), (left, right))`` and ``out_hw = (H_out, W_out)``. Raises ``ValueError`` for a bad
    option, a window larger than the padded input, or a window that lies entirely in the padding.

    >>> max_pool2d_geometry((1, 5, 5, 1), 3, 2, "same")
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (3, 3))
    """
    pool = pair(pool_size, "pool_size")
    stride = pair(stride, "stride")
    pads, out_hw = window_geometry(x_shape, pool, stride, (1, 1), padding, name="x")
    check_windows_touch_input(x_shape, pool, stride, pads, out_hw)
    return pool, stride, pads, out_hw


def max_pool2d_forward(x, *, pool_size=3, stride=2, padding="valid"):
    """Max over ``pool_size`` windows moved by ``stride``; returns ``(y, cache)``.

    ``y[n, oh, ow, c] = max_{i<KH, j<KW} xpad[n, oh*sh + i, ow*sw + j, c]``, ``xpad`` padded with -inf.
    ``padding`` takes the same forms as in :func:`conv2d_forward` ("same", "valid", int, pairs).

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> y, cache = max_pool2d_forward(x, pool_size=2, stride=2)
    >>> y[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    >>> max_pool2d_forward(x, pool_size=3, stride=2, padding="same")[0].shape   # ceil(4 / 2) = 2
    (1, 2, 2, 1)
    """
    check_nhwc(x, "x")
    pool, stride, pads, out_hw = max_pool2d_geometry(x.shape, pool_size, stride, padding)
    dilation = (1, 1)
    (pt, pb), (pl, pr) = pads

    xpad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)  # (N, Hp, Wp, C)
    y = xpad[tap_slices(0, 0, dilation, stride, out_hw)].copy()   # (N, H_out, W_out, C): tap (0, 0)
    argmax = np.zeros(y.shape, dtype=np.int64)                     # winning tap, i * KW + j
    for i in range(pool[0]):
        for j in range(pool[1]):
            window = xpad[tap_slices(i, j, dilation, stride, out_hw)]
            better = window > y                                    # strict: ties keep the earlier tap
            y = np.where(better, window, y)
            argmax[better] = i * pool[1] + j
    cache = {"argmax": argmax, "x_shape": x.shape, "xpad_shape": xpad.shape, "pads": pads,
             "pool": pool, "stride": stride, "out_hw": out_hw, "dtype": x.dtype}
    return y, cache


def max_pool2d_backward(dy, cache):
    """Gradient of :func:`max_pool2d_forward`: each ``dy`` goes to the first maximum of its window.

    ``dx[window_ij] += dy * [argmax == (i, j)]`` (overlapping windows add up).

    >>> x = np.array([[1., 3.], [3., 0.]]).reshape(1, 2, 2, 1)       # a tie: 3 twice
    >>> y, cache = max_pool2d_forward(x, pool_size=2, stride=1)
    >>> max_pool2d_backward(np.ones_like(y), cache)[0, :, :, 0].tolist()   # first in row-major order
    [[0.0, 1.0], [0.0, 0.0]]
    """
    argmax, pool, stride, out_hw = cache["argmax"], cache["pool"], cache["stride"], cache["out_hw"]
    n, h, w, c = cache["x_shape"]
    (pt, _), (pl, _) = cache["pads"]
    check_grad_shape(dy, argmax.shape)
    dxpad = np.zeros(cache["xpad_shape"], dtype=cache["dtype"])     # (N, Hp, Wp, C)
    for i in range(pool[0]):
        for j in range(pool[1]):
            won = argmax == i * pool[1] + j                         # (N, H_out, W_out, C)
            dxpad[tap_slices(i, j, (1, 1), stride, out_hw)] += np.where(won, dy, 0)
    return dxpad[:, pt:pt + h, pl:pl + w, :].copy()                 # (N, H, W, C)


def global_avg_pool_forward(x):
    """Mean over H and W: ``y[n, 0, 0, c] = (1 / (H W)) sum_{h, w} x[n, h, w, c]``; returns ``(y, cache)``.

    >>> y, cache = global_avg_pool_forward(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    >>> y.shape, y.ravel().tolist()
    ((1, 1, 1, 2), [3.0, 4.0])
    """
    check_nhwc(x, "x")
    return x.mean(axis=(1, 2), keepdims=True), {"x_shape": x.shape, "dtype": x.dtype}   # (N, 1, 1, C)


def global_avg_pool_backward(dy, cache):
    """``dx[n, h, w, c] = dy[n, 0, 0, c] / (H W)``.

    >>> y, cache = global_avg_pool_forward(np.zeros((1, 2, 2, 1)))
    >>> global_avg_pool_backward(np.ones((1, 1, 1, 1)), cache)[0, :, :, 0].tolist()
    [[0.25, 0.25], [0.25, 0.25]]
    """
    n, h, w, c = cache["x_shape"]
    check_grad_shape(dy, (n, 1, 1, c))
    dx = np.broadcast_to(dy / (h * w), (n, h, w, c))
    return dx.astype(cache["dtype"])                                # (N, H, W, C), a fresh array

