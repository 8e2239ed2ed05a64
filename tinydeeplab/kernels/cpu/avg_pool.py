"""Average pooling on the CPU (Numba), Keras ``AveragePooling2D``: the mean over each window's real pixels.

Same maths as :mod:`tinydeeplab.functional.avg_pool`; the windows and their pixel counts come from the
shared :func:`~tinydeeplab.functional.avg_pool.avg_pool2d_geometry`. Forward: each thread owns output
rows ``(n, oh)`` and adds the window's real rows and columns (the loops are clipped to the input, so the
padding is never built or read), one contiguous channel run at a time, then divides by the count.
Backward: a gather over input rows ``(n, h)``: the windows that contain ``(h, w)`` are
``oh in [ceil((h + pt - KH + 1) / sh), floor((h + pt) / sh)]`` (likewise ``ow``), and each sends
``dy / count``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.avg_pool import avg_pool2d_geometry
from ...functional.checks import check_grad_shape, check_nhwc


@njit(parallel=True, cache=True, fastmath=False)
def avg_pool_rows(x, y, count, kh, kw, sh, sw, pt, pl):
    """``y[n, oh, ow, :] = sum of the window's real pixels / count[oh, ow]``."""
    n_img, h_in, w_in, c_in = x.shape
    _, out_h, out_w, _ = y.shape
    for g in prange(n_img * out_h):
        n = g // out_h
        oh = g - n * out_h
        h0 = max(oh * sh - pt, 0)
        h1 = min(oh * sh - pt + kh, h_in)
        for ow in range(out_w):
            w0 = max(ow * sw - pl, 0)
            w1 = min(ow * sw - pl + kw, w_in)
            yrow = y[n, oh, ow]                     # (C,)
            for c in range(c_in):
                yrow[c] = 0
            for h in range(h0, h1):
                for wc in range(w0, w1):
                    xrow = x[n, h, wc]
                    for c in range(c_in):
                        yrow[c] += xrow[c]
            cnt = count[oh, ow]
            for c in range(c_in):
                yrow[c] /= cnt


@njit(parallel=True, cache=True, fastmath=False)
def avg_pool_grad_rows(dy, dx, count, kh, kw, sh, sw, pt, pl):
    """``dx[n, h, w, :] = sum over the windows (oh, ow) containing (h, w) of dy[n, oh, ow, :] / count[oh, ow]``."""
    n_img, h_in, w_in, c_in = dx.shape
    _, out_h, out_w, _ = dy.shape
    for q in prange(n_img * h_in):
        n = q // h_in
        h = q - n * h_in
        oh0 = max(0, -(-(h + pt - kh + 1) // sh))   # ceil
        oh1 = min(out_h, (h + pt) // sh + 1)
        for wc in range(w_in):
            ow0 = max(0, -(-(wc + pl - kw + 1) // sw))
            ow1 = min(out_w, (wc + pl) // sw + 1)
            dxrow = dx[n, h, wc]
            for c in range(c_in):
                dxrow[c] = 0
            for oh in range(oh0, oh1):
                for ow in range(ow0, ow1):
                    dyrow = dy[n, oh, ow]
                    cnt = count[oh, ow]
                    for c in range(c_in):
                        dxrow[c] += dyrow[c] / cnt


def avg_pool2d_forward(x, *, pool_size=2, stride=None, padding="valid"):
    """Mean over the real pixels of each window; returns ``(y, cache)``. As
    :func:`tinydeeplab.functional.avg_pool2d_forward`.

    >>> y, cache = avg_pool2d_forward(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1))
    >>> y[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    check_nhwc(x, "x")
    pool, stride, pads, out_hw, counts = avg_pool2d_geometry(x.shape, pool_size, stride, padding)
    x = np.ascontiguousarray(x)
    count = counts.astype(x.dtype)                              # (H_out, W_out)
    y = np.empty((x.shape[0], *out_hw, x.shape[3]), x.dtype)    # (N, H_out, W_out, C)
    args = (pool[0], pool[1], stride[0], stride[1], pads[0][0], pads[1][0])
    avg_pool_rows(x, y, count, *args)
    return y, {"count": count, "x_shape": x.shape, "out_hw": out_hw, "args": args}


def avg_pool2d_backward(dy, cache):
    """``dx[window] += dy / count`` (a gather, no races)."""
    n, h, w, c = cache["x_shape"]
    check_grad_shape(dy, (n, *cache["out_hw"], c))
    count = cache["count"]
    dx = np.empty(cache["x_shape"], count.dtype)                # (N, H, W, C)
    avg_pool_grad_rows(np.ascontiguousarray(dy, dtype=count.dtype), dx, count, *cache["args"])
    return dx
