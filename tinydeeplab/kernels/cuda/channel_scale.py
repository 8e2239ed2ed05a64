"""The squeeze-and-excitation multiply on the GPU: ``y = x * s``, ``x`` (N, H, W, C), ``s`` (N, 1, 1, C).

Forward and ``dx = dy * s`` are one grid-stride kernel (one thread per element, the scale looked up by
``(n, c)``). ``ds[n, 0, 0, c] = sum_{h, w} dy * x``: one thread per ``(n, c)`` adds its ``H * W`` products in
float64, in a fixed order (deterministic, as the global average pool).
"""
from __future__ import annotations

from numba import cuda

from ...functional.checks import check_channel_scale_args, check_grad_shape
from .device import empty, launch_1d, require_device, spec, unravel_nhwc


@cuda.jit
def _scale(x, s, y):
    """``y[n, h, w, c] = x[n, h, w, c] * s[n, 0, 0, c]``."""
    _, h_n, w_n, c_n = x.shape
    for idx in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_n, w_n, c_n)
        y[n, h, w, c] = x[n, h, w, c] * s[n, 0, 0, c]


@cuda.jit
def _scale_grad(dy, x, ds):
    """``ds[n, 0, 0, c] = sum_{h, w} dy * x`` (float64 accumulator, one thread per (n, c))."""
    _, h_n, w_n, c_n = x.shape
    for idx in range(cuda.grid(1), ds.size, cuda.gridsize(1)):
        n = idx // c_n
        c = idx - n * c_n
        acc = 0.0
        for h in range(h_n):
            for w in range(w_n):
                acc += dy[n, h, w, c] * x[n, h, w, c]
        ds[n, 0, 0, c] = acc


def channel_scale_forward(x, s):
    """``y = x * s`` (``s`` broadcast over H and W) on device arrays; returns ``(y, cache)``."""
    check_channel_scale_args(spec(x), spec(s))
    require_device(x, "x")
    require_device(s, "s")
    y = empty(x.shape, x.dtype)
    launch_1d(_scale, x.size, x, s, y)
    return y, {"x": x, "s": s}


def channel_scale_backward(dy, cache):
    """``dx = dy * s``, ``ds = sum_{h,w} dy * x``; returns ``(dx, ds)``."""
    x, s = cache["x"], cache["s"]
    check_grad_shape(spec(dy), x.shape)
    require_device(dy, "dy")
    dx = empty(dy.shape, dy.dtype)
    launch_1d(_scale, dy.size, dy, s, dx)
    ds = empty(s.shape, s.dtype)                               # (N, 1, 1, C)
    launch_1d(_scale_grad, ds.size, dy, x, ds)
    return dx, ds
