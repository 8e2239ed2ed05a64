"""Average pooling on the CPU (Numba), Keras ``AveragePooling2D``: the mean over each window's real pixels.

Same maths as :mod:`tinydeeplab.functional.avg_pool`; the windows and their pixel counts come from the
shared :func:`~tinydeeplab.functional.avg_pool.avg_pool2d_geometry`. Forward: each thread owns output
rows ``(n, oh)`` and adds the window's real taps (rows ``oh*sh - pt + i*dh`` inside the input; the padding
is never built or read), one contiguous channel run at a time, then divides by the count.
Backward: a gather over input rows ``(n, h)``: tap ``i`` of window ``oh`` reads row ``h`` exactly when
``h + pt - i*dh = oh*sh`` (likewise columns), and each such window sends ``dy / count``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.avg_pool import avg_pool2d_geometry
from ...functional.checks import check_grad_shape, check_nhwc, pair


@njit(parallel=True, cache=True, fastmath=False)
def avg_pool_rows(x, y, count, kh, kw, sh, sw, pt, pl, dh, dw):
    """``y[n, oh, ow, :] = sum of the window's real pixels / count[oh, ow]`` (taps ``dh``, ``dw`` apart)."""
    n_img, h_in, w_in, c_in = x.shape
    _, out_h, out_w, _ = y.shape
    for g in prange(n_img * out_h):
        n = g // out_h
        oh = g - n * out_h
        for ow in range(out_w):
            yrow = y[n, oh, ow]                     # (C,)
            for c in range(c_in):
                yrow[c] = 0
            for i in range(kh):
                h = oh * sh - pt + i * dh
                if h < 0 or h >= h_in:
                    continue                        # a padded row: adds nothing
                for j in range(kw):
                    wc = ow * sw - pl + j * dw
                    if wc < 0 or wc >= w_in:
                        continue
                    xrow = x[n, h, wc]
                    for c in range(c_in):
                        yrow[c] += xrow[c]
            cnt = count[oh, ow]
            for c in range(c_in):
                yrow[c] /= cnt


@njit(parallel=True, cache=True, fastmath=False)
def avg_pool_grad_rows(dy, dx, count, kh, kw, sh, sw, pt, pl, dh, dw):
    """``dx[n, h, w, :] = sum over the windows (oh, ow) containing (h, w) of dy[n, oh, ow, :] / count[oh, ow]``:
    tap ``i`` of window ``oh`` reads row ``h`` when ``h + pt - i*dh = oh*sh``."""
    n_img, h_in, w_in, c_in = dx.shape
    _, out_h, out_w, _ = dy.shape
    for q in prange(n_img * h_in):
        n = q // h_in
        h = q - n * h_in
        for wc in range(w_in):
            dxrow = dx[n, h, wc]
            for c in range(c_in):
                dxrow[c] = 0
            for i in range(kh):
                th = h + pt - i * dh
                if th < 0 or th % sh != 0 or th // sh >= out_h:
                    continue
                oh = th // sh
                for j in range(kw):
                    tw = wc + pl - j * dw
                    if tw < 0 or tw % sw != 0 or tw // sw >= out_w:
                        continue
                    ow = tw // sw
                    dyrow = dy[n, oh, ow]
                    cnt = count[oh, ow]
                    for c in range(c_in):
                        dxrow[c] += dyrow[c] / cnt


def avg_pool2d_forward(x, *, pool_size=2, stride=None, padding="valid", dilation=1):
    """Mean over the real pixels of each window; returns ``(y, cache)``. As
    :func:`tinydeeplab.functional.avg_pool2d_forward`.

    >>> y, cache = avg_pool2d_forward(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1))
    >>> y[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    check_nhwc(x, "x")
    pool, stride, pads, out_hw, counts = avg_pool2d_geometry(x.shape, pool_size, stride, padding, dilation)
    dil = pair(dilation, "dilation")
    x = np.ascontiguousarray(x)
    count = counts.astype(x.dtype)                              # (H_out, W_out)
    y = np.empty((x.shape[0], *out_hw, x.shape[3]), x.dtype)    # (N, H_out, W_out, C)
    args = (pool[0], pool[1], stride[0], stride[1], pads[0][0], pads[1][0], dil[0], dil[1])
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
