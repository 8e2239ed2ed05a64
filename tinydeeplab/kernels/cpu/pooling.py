"""Max pooling on the CPU (Numba). Same maths as :mod:`tinydeeplab.functional.pooling`::

    y[n, oh, ow, c] = max_{i<KH, j<KW} x[n, oh*sh - pt + i, ow*sw - pl + j, c]     (padded cells skipped)

Forward: ``prange`` over output rows; each window is scanned in row-major order and a value replaces
the running maximum only when strictly larger, so ties go to the *first* maximum. The winner's flat
input index ``h * W + w`` is kept in ``argmax`` (int32, ``(N, H_out, W_out, C)``).

Backward: ``dx[n, h, w, c] = sum of dy[n, oh, ow, c] over the windows whose argmax is (h, w)``.
Overlapping windows (3x3 stride 2) make a parallel scatter racy, so it is a gather: a ``prange`` over
input rows ``(n, h)``, each visiting only the windows that contain row ``h``; one thread owns each row
of ``dx``.

Global average pooling has no kernel: it is re-exported from the reference (one NumPy mean).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.checks import check_grad_shape, check_nhwc
from ...functional.pooling import max_pool2d_geometry


@njit(parallel=True, cache=True, fastmath=False)
def max_pool_rows(x, kh, kw, sh, sw, pt, pl, y, argmax):
    """Fill ``y`` and ``argmax`` (both ``(N, H_out, W_out, C)``) from ``x (N, H, W, C)``."""
    n_img, h_in, w_in, c_n = x.shape
    _, h_out, w_out, _ = y.shape
    for q in prange(n_img * h_out):
        n = q // h_out
        oh = q - n * h_out
        for ow in range(w_out):
            first = True
            for i in range(kh):
                h = oh * sh - pt + i
                if h < 0 or h >= h_in:
                    continue                            # padded cells never win
                for j in range(kw):
                    w = ow * sw - pl + j
                    if w < 0 or w >= w_in:
                        continue
                    idx = h * w_in + w
                    if first:                           # first real cell of the window
                        for c in range(c_n):
                            y[n, oh, ow, c] = x[n, h, w, c]
                            argmax[n, oh, ow, c] = idx
                        first = False
                    else:
                        for c in range(c_n):
                            v = x[n, h, w, c]
                            if v > y[n, oh, ow, c]:     # strict: ties keep the earlier cell
                                y[n, oh, ow, c] = v
                                argmax[n, oh, ow, c] = idx


@njit(parallel=True, cache=True, fastmath=False)
def max_pool_grad_rows(dy, argmax, kh, kw, sh, sw, pt, pl, dx):
    """``dx[n, h, w, c] = sum_{windows (oh, ow) with argmax == h*W + w} dy[n, oh, ow, c]`` (gather)."""
    n_img, h_in, w_in, c_n = dx.shape
    _, h_out, w_out, _ = dy.shape
    for q in prange(n_img * h_in):                      # one input row (n, h) per iteration
        n = q // h_in
        h = q - n * h_in
        for w in range(w_in):
            for c in range(c_n):
                dx[n, h, w, c] = 0.0
        # windows oh with oh*sh - pt <= h <= oh*sh - pt + kh - 1
        lo = h + pt - kh + 1
        oh_lo = (lo + sh - 1) // sh if lo > 0 else 0    # ceil(lo / sh), at least 0
        oh_hi = min(h_out - 1, (h + pt) // sh)
        for oh in range(oh_lo, oh_hi + 1):
            for ow in range(w_out):
                for j in range(kw):
                    w = ow * sw - pl + j
                    if w < 0 or w >= w_in:
                        continue
                    idx = h * w_in + w
                    for c in range(c_n):
                        if argmax[n, oh, ow, c] == idx:
                            dx[n, h, w, c] += dy[n, oh, ow, c]


def max_pool2d_forward(x, *, pool_size=3, stride=2, padding="valid"):
    """Max over ``pool_size`` windows moved by ``stride``; returns ``(y, cache)``.

    Arguments as :func:`tinydeeplab.functional.max_pool2d_forward`.

    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> max_pool2d_forward(x, pool_size=2, stride=2)[0][0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    check_nhwc(x, "x")
    pool, stride, pads, out_hw = max_pool2d_geometry(x.shape, pool_size, stride, padding)
    (pt, _), (pl, _) = pads
    n, _, _, c = x.shape
    y = np.empty((n, *out_hw, c), dtype=x.dtype)                 # (N, H_out, W_out, C)
    argmax = np.empty((n, *out_hw, c), dtype=np.int32)           # flat input index h * W + w
    max_pool_rows(np.ascontiguousarray(x), pool[0], pool[1], stride[0], stride[1], pt, pl, y, argmax)
    cache = {"argmax": argmax, "x_shape": x.shape, "pads": pads, "pool": pool, "stride": stride,
             "dtype": x.dtype}
    return y, cache


def max_pool2d_backward(dy, cache):
    """Gradient of :func:`max_pool2d_forward`: each ``dy`` goes to the first maximum of its window.

    >>> x = np.array([[1., 3.], [3., 0.]]).reshape(1, 2, 2, 1)       # a tie: 3 twice
    >>> y, cache = max_pool2d_forward(x, pool_size=2, stride=1)
    >>> max_pool2d_backward(np.ones_like(y), cache)[0, :, :, 0].tolist()
    [[0.0, 1.0], [0.0, 0.0]]
    """
    argmax, pool, stride = cache["argmax"], cache["pool"], cache["stride"]
    (pt, _), (pl, _) = cache["pads"]
    check_grad_shape(dy, argmax.shape)
    dx = np.empty(cache["x_shape"], dtype=cache["dtype"])        # (N, H, W, C)
    max_pool_grad_rows(np.ascontiguousarray(dy, dtype=cache["dtype"]), argmax, pool[0], pool[1],
                       stride[0], stride[1], pt, pl, dx)
    return dx
