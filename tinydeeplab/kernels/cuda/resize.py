"""Bilinear resizing on the GPU (half-pixel centres, edge clamp, no antialias), NHWC.

Along one axis resized from ``n_in`` to ``n_out``, output ``o`` mixes inputs ``i0[o]`` and ``i1[o]``
with weights ``w0[o]`` and ``w1[o]`` (the two non-zero entries of row ``o`` of the reference's matrix
``R``; at a clamped edge ``i0 == i1`` and the whole weight 1 sits in ``w0``). The coefficients come from
:func:`tinydeeplab.functional.resize_coeffs.bilinear_coefficients`, the same code the reference uses; they
are built once per ``(n_in, n_out, dtype)`` and kept on the device.

Forward, one thread per output element (a gather of 4 inputs)::

    y[n, oh, ow, c] = sum_{a, b in {0, 1}} wa_h[oh] * wb_w[ow] * x[n, ia_h[oh], ib_w[ow], c]

Backward, the adjoint ``dx = R_h^T dy R_w``, also as a gather (no atomics): the outputs that read input
``h`` along an axis are a contiguous range ``[lo[h], hi[h])`` (both neighbours grow with ``o``), so::

    dx[n, h, w, c] = sum_{oh in [lo_h[h], hi_h[h])} R_h[oh, h] * sum_{ow in [lo_w[w], hi_w[w])} R_w[ow, w] * dy[n, oh, ow, c]

with ``R[o, i] = w0[o] [i0[o] == i] + w1[o] [i1[o] == i]``.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda

from ...functional.checks import check_grad_shape, check_nhwc, pair
from ...functional.resize_coeffs import bilinear_coefficients
from .device import empty, launch_1d, require_device, spec, to_device, unravel_nhwc


@functools.lru_cache(maxsize=256)
def axis_tables(n_in: int, n_out: int, dtype) -> tuple:
    """Device tables ``(i0, i1, w0, w1, lo, hi)`` of one resized axis (int32 indices, weights in ``dtype``)."""
    i0, i1, t = bilinear_coefficients(n_in, n_out)
    same = i0 == i1
    w0 = np.where(same, 1.0, 1.0 - t).astype(dtype)          # R[o, i0[o]]
    w1 = np.where(same, 0.0, t).astype(dtype)                # R[o, i1[o]]
    lo = np.full(n_in, n_out, np.int32)                      # first output that reads input i
    hi = np.zeros(n_in, np.int32)                            # one past the last
    for o in range(n_out):
        for i in (i0[o], i1[o]):
            lo[i], hi[i] = min(lo[i], o), max(hi[i], o + 1)
    lo = np.minimum(lo, hi)                                  # inputs nobody reads: empty range
    return tuple(to_device(a) for a in (i0.astype(np.int32), i1.astype(np.int32), w0, w1, lo, hi))


@cuda.jit
def _resize(x, y, i0h, i1h, w0h, w1h, i0w, i1w, w0w, w1w):
    """``y (N, H_out, W_out, C)`` = separable 2-tap mix of ``x (N, H, W, C)``."""
    n_img, h_out, w_out, c_n = y.shape
    for idx in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, oh, ow, c = unravel_nhwc(idx, h_out, w_out, c_n)
        top = w0w[ow] * x[n, i0h[oh], i0w[ow], c] + w1w[ow] * x[n, i0h[oh], i1w[ow], c]
        bottom = w0w[ow] * x[n, i1h[oh], i0w[ow], c] + w1w[ow] * x[n, i1h[oh], i1w[ow], c]
        y[n, oh, ow, c] = w0h[oh] * top + w1h[oh] * bottom


@cuda.jit(device=True)
def _weight(o, i, i0, i1, w0, w1):
    """``R[o, i]`` of one axis."""
    r = 0.0
    if i0[o] == i:
        r += w0[o]
    if i1[o] == i:
        r += w1[o]
    return r


@cuda.jit
def _resize_adjoint(dy, dx, i0h, i1h, w0h, w1h, loh, hih, i0w, i1w, w0w, w1w, low, hiw):
    """``dx[n, h, w, c] = sum_{oh, ow} R_h[oh, h] R_w[ow, w] dy[n, oh, ow, c]`` over the outputs that read (h, w)."""
    n_img, h_in, w_in, c_n = dx.shape
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_in, w_in, c_n)
        acc = 0.0
        for oh in range(loh[h], hih[h]):
            rh = _weight(oh, h, i0h, i1h, w0h, w1h)
            row = 0.0
            for ow in range(low[w], hiw[w]):
                row += _weight(ow, w, i0w, i1w, w0w, w1w) * dy[n, oh, ow, c]
            acc += rh * row
        dx[n, h, w, c] = acc


def bilinear_resize_forward(x, size):
    """Resize ``x`` to ``size = (H_out, W_out)``: ``y[n, :, :, c] = R_h @ x[n, :, :, c] @ R_w^T``; returns ``(y, cache)``."""
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    h_out, w_out = pair(size, "size")
    n, h, w, c = x.shape
    th, tw = axis_tables(h, h_out, x.dtype.type), axis_tables(w, w_out, x.dtype.type)
    y = empty((n, h_out, w_out, c), x.dtype)                       # (N, H_out, W_out, C)
    launch_1d(_resize, y.size, x, y, *th[:4], *tw[:4])
    return y, {"th": th, "tw": tw, "x_shape": tuple(x.shape), "dtype": x.dtype}


def bilinear_resize_backward(dy, cache):
    """Adjoint of :func:`bilinear_resize_forward`: ``dx[n, :, :, c] = R_h^T @ dy[n, :, :, c] @ R_w``."""
    th, tw = cache["th"], cache["tw"]
    n, h, w, c = cache["x_shape"]
    check_grad_shape(spec(dy), (n, th[0].size, tw[0].size, c))
    require_device(dy, "dy")
    dx = empty((n, h, w, c), cache["dtype"])                       # (N, H, W, C)
    launch_1d(_resize_adjoint, dx.size, dy, dx, *th, *tw)
    return dx


def upsample_bilinear_forward(x, factor):
    """Bilinear upsampling by an integer ``factor`` (int or ``(fh, fw)``): resize to ``(H*fh, W*fw)``."""
    check_nhwc(spec(x), "x")
    fh, fw = pair(factor, "factor")
    return bilinear_resize_forward(x, (x.shape[1] * fh, x.shape[2] * fw))


def upsample_bilinear_backward(dy, cache):
    """Gradient of :func:`upsample_bilinear_forward` (the adjoint of the resize)."""
    return bilinear_resize_backward(dy, cache)
