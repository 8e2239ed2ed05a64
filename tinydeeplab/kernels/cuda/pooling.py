"""Max pooling and global average pooling on the GPU, NHWC. Same maths as :mod:`tinydeeplab.functional.pooling`.

Max pool, one thread per output element ``(n, oh, ow, c)``::

    y[n, oh, ow, c] = max_{i, j} xpad[n, oh*sh + i, ow*sw + j, c]      (padding reads -inf)
    argmax          = i * KW + j of the first maximum in row-major window order

Backward, a gather (one thread per element of ``dx``, no atomics): input pixel ``(h, w)`` sits at tap
``(i, j)`` of output ``(oh, ow)`` when ``oh*sh + i = h + pt``; it receives ``dy`` of every such window whose
argmax is that tap.

Global average pool: one thread per ``(n, c)`` adds the ``H*W`` pixels (float64);
backward ``dx = dy / (H * W)`` broadcast (elementwise).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ...functional.checks import check_grad_shape, check_nhwc
from ...functional.pooling import max_pool2d_geometry
from .device import empty, launch_1d, require_device, spec, unravel_nhwc


@cuda.jit
def _max_pool(x, y, argmax, kh, kw, sh, sw, pt, pl):
    """``y`` / ``argmax`` (N, H_out, W_out, C) from ``x`` (N, H, W, C); ties keep the earlier tap."""
    n_img, h_out, w_out, c_n = y.shape
    h_in, w_in = x.shape[1], x.shape[2]
    for idx in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, oh, ow, c = unravel_nhwc(idx, h_out, w_out, c_n)
        best = -math.inf
        arg = 0
        for i in range(kh):
            h = oh * sh - pt + i
            for j in range(kw):
                w = ow * sw - pl + j
                v = x[n, h, w, c] if (0 <= h < h_in and 0 <= w < w_in) else -math.inf
                if (i == 0 and j == 0) or v > best:            # tap (0, 0) starts, then strictly larger
                    best = v
                    arg = i * kw + j
        y[n, oh, ow, c] = best
        argmax[n, oh, ow, c] = arg


@cuda.jit
def _max_pool_grad(dy, argmax, dx, kh, kw, sh, sw, pt, pl):
    """``dx[n, h, w, c] = sum of dy over the windows whose argmax is the tap that reads (h, w)``."""
    n_img, h_in, w_in, c_n = dx.shape
    h_out, w_out = dy.shape[1], dy.shape[2]
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_in, w_in, c_n)
        acc = 0.0
        for i in range(kh):
            t = h + pt - i                                      # = oh * sh for the window of tap row i
            if t < 0 or t % sh != 0 or t // sh >= h_out:
                continue
            oh = t // sh
            for j in range(kw):
                u = w + pl - j
                if u < 0 or u % sw != 0 or u // sw >= w_out:
                    continue
                ow = u // sw
                if argmax[n, oh, ow, c] == i * kw + j:
                    acc += dy[n, oh, ow, c]
        dx[n, h, w, c] = acc


@cuda.jit
def _spatial_mean(x, y):
    """``y[n, 0, 0, c] = mean_{h, w} x[n, h, w, c]``, one thread per (n, c), float64 sum."""
    n_img, h_in, w_in, c_n = x.shape
    for idx in range(cuda.grid(1), n_img * c_n, cuda.gridsize(1)):
        n, c = idx // c_n, idx % c_n
        acc = 0.0
        for h in range(h_in):
            for w in range(w_in):
                acc += x[n, h, w, c]
        y[n, 0, 0, c] = acc / (h_in * w_in)


@cuda.jit
def _spread(dy, dx):
    """``dx[n, h, w, c] = dy[n, 0, 0, c] / (H * W)``."""
    n_img, h_in, w_in, c_n = dx.shape
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_in, w_in, c_n)
        dx[n, h, w, c] = dy[n, 0, 0, c] / (h_in * w_in)


def max_pool2d_forward(x, *, pool_size=3, stride=2, padding="valid"):
    """Max over ``pool_size`` windows moved by ``stride``; returns ``(y, cache)``.

    ``y[n, oh, ow, c] = max_{i<KH, j<KW} xpad[n, oh*sh + i, ow*sw + j, c]``, padding reads -inf.
    """
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    pool, stride, pads, out_hw = max_pool2d_geometry(tuple(x.shape), pool_size, stride, padding)
    (pt, _), (pl, _) = pads
    n, _, _, c = x.shape
    y = empty((n, *out_hw, c), x.dtype)                           # (N, H_out, W_out, C)
    argmax = empty((n, *out_hw, c), np.int32)                     # winning tap i * KW + j
    launch_1d(_max_pool, y.size, x, y, argmax, pool[0], pool[1], stride[0], stride[1], pt, pl)
    cache = {"argmax": argmax, "x_shape": tuple(x.shape), "pads": pads, "pool": pool, "stride": stride,
             "dtype": x.dtype}
    return y, cache


def max_pool2d_backward(dy, cache):
    """Gradient of :func:`max_pool2d_forward`: each ``dy`` goes to the first maximum of its window."""
    argmax, pool, stride = cache["argmax"], cache["pool"], cache["stride"]
    (pt, _), (pl, _) = cache["pads"]
    check_grad_shape(spec(dy), argmax.shape)
    require_device(dy, "dy")
    dx = empty(cache["x_shape"], cache["dtype"])                  # (N, H, W, C)
    launch_1d(_max_pool_grad, dx.size, dy, argmax, dx, pool[0], pool[1], stride[0], stride[1], pt, pl)
    return dx


def global_avg_pool_forward(x):
    """Mean over H and W: ``y[n, 0, 0, c] = (1 / (H W)) sum_{h, w} x[n, h, w, c]``; returns ``(y, cache)``."""
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    n, _, _, c = x.shape
    y = empty((n, 1, 1, c), x.dtype)                              # (N, 1, 1, C)
    launch_1d(_spatial_mean, n * c, x, y)
    return y, {"x_shape": tuple(x.shape), "dtype": x.dtype}


def global_avg_pool_backward(dy, cache):
    """``dx[n, h, w, c] = dy[n, 0, 0, c] / (H W)``."""
    n, h, w, c = cache["x_shape"]
    check_grad_shape(spec(dy), (n, 1, 1, c))
    require_device(dy, "dy")
    dx = empty((n, h, w, c), cache["dtype"])
    launch_1d(_spread, dx.size, dy, dx)
    return dx
