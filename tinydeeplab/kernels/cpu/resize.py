"""Bilinear resizing on the CPU (Numba): half-pixel centres, edge clamp, no antialias.

Same maths as :mod:`tinydeeplab.functional.resize`. Per axis, output ``o`` mixes two inputs
(``i0, i1, t`` from :func:`~tinydeeplab.functional.resize_coeffs.bilinear_coefficients`)::

    y[n, oh, ow, c] = (1-ty) * ((1-tx) * x[n, y0, x0, c] + tx * x[n, y0, x1, c])
                    +    ty  * ((1-tx) * x[n, y1, x0, c] + tx * x[n, y1, x1, c])

Forward: a ``prange`` over output rows, four reads per output element.

Backward (the adjoint). Written as a scatter, ``dx[y0, x0] += ...`` from many outputs at once would
race between threads. Instead each axis's adjoint is turned into a *gather*: for every input index
``i`` a short list ``{(o, weight)}`` of the outputs that read it (a CSR table, built once in NumPy),
and the two axes are done one after the other::

    tmp[n, oh, iw, :] = sum_{(ow, a) in cols[iw]} a * dy[n, oh, ow, :]     # (N, H_out, W, C)
    dx[n, ih, :, :]   = sum_{(oh, a) in rows[ih]} a * tmp[n, oh, :, :]     # (N, H, W, C)

Every output element is written by exactly one loop iteration, so both passes are race-free.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.checks import check_grad_shape, check_nhwc, pair
from ...functional.resize_coeffs import bilinear_coefficients


@njit(parallel=True, cache=True, fastmath=False)
def resize_rows(x, y0, y1, wy0, wy1, x0, x1, wx0, wx1, out):
    """Bilinear forward: ``out (N, H_out, W_out, C)`` from ``x (N, H, W, C)``, output rows in parallel."""
    n_img, _, _, c_n = x.shape
    _, h_out, w_out, _ = out.shape
    for q in prange(n_img * h_out):
        n = q // h_out
        oh = q - n * h_out
        a0, a1, u0, u1 = y0[oh], y1[oh], wy0[oh], wy1[oh]
        for ow in range(w_out):
            b0, b1, v0, v1 = x0[ow], x1[ow], wx0[ow], wx1[ow]
            for c in range(c_n):
                top = v0 * x[n, a0, b0, c] + v1 * x[n, a0, b1, c]
                bottom = v0 * x[n, a1, b0, c] + v1 * x[n, a1, b1, c]
                out[n, oh, ow, c] = u0 * top + u1 * bottom


@njit(parallel=True, cache=True, fastmath=False)
def adjoint_cols(dy, ptr, src, wt, tmp):
    """``tmp[n, oh, iw, :] = sum_e wt[e] * dy[n, oh, src[e], :]`` over ``e in [ptr[iw], ptr[iw+1])``."""
    n_img, h_out, _, c_n = dy.shape
    w_in = tmp.shape[2]
    for q in prange(n_img * h_out):                     # each (n, oh) row of tmp has one owner
        n = q // h_out
        oh = q - n * h_out
        for iw in range(w_in):
            for c in range(c_n):
                tmp[n, oh, iw, c] = 0.0
            for e in range(ptr[iw], ptr[iw + 1]):
                a = wt[e]
                ow = src[e]
                for c in range(c_n):
                    tmp[n, oh, iw, c] += a * dy[n, oh, ow, c]


@njit(parallel=True, cache=True, fastmath=False)
def adjoint_rows(tmp, ptr, src, wt, dx):
    """``dx[n, ih, :, :] = sum_e wt[e] * tmp[n, src[e], :, :]`` over ``e in [ptr[ih], ptr[ih+1])``."""
    n_img, h_in, w_in, c_n = dx.shape
    for q in prange(n_img * h_in):                      # each (n, ih) row of dx has one owner
        n = q // h_in
        ih = q - n * h_in
        for iw in range(w_in):
            for c in range(c_n):
                dx[n, ih, iw, c] = 0.0
        for e in range(ptr[ih], ptr[ih + 1]):
            a = wt[e]
            oh = src[e]
            for iw in range(w_in):
                for c in range(c_n):
                    dx[n, ih, iw, c] += a * tmp[n, oh, iw, c]


def _axis_coefficients(n_in: int, n_out: int, dtype):
    """``(i0, i1, w0, w1)`` of one axis: neighbour indices and their weights ``1 - t`` and ``t``."""
    i0, i1, t = bilinear_coefficients(n_in, n_out)
    return i0, i1, (1.0 - t).astype(dtype), t.astype(dtype)


def _adjoint_table(i0, i1, w0, w1, n_in: int):
    """CSR form of the adjoint of one axis: for input ``i``, the entries ``ptr[i]:ptr[i+1]`` of
    ``(src, wt)`` list the outputs ``o`` that read ``i`` and with which weight."""
    n_out = i0.size
    dst = np.concatenate([i0, i1])                              # input index each weight lands on
    src = np.concatenate([np.arange(n_out), np.arange(n_out)])  # output index it comes from
    wt = np.concatenate([w0, w1])
    order = np.argsort(dst, kind="stable")
    ptr = np.zeros(n_in + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n_in), out=ptr[1:])
    return ptr, src[order].astype(np.int64), wt[order]


def bilinear_resize_forward(x, size):
    """Resize ``x (N, H, W, C)`` to ``size = (H_out, W_out)``; returns ``(y, cache)``.

    Same results as :func:`tinydeeplab.functional.bilinear_resize_forward`.

    >>> x = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32).reshape(1, 2, 2, 1)
    >>> y, cache = bilinear_resize_forward(x, (4, 4))
    >>> y[0, 0, :, 0].tolist()
    [0.0, 1.0, 3.0, 4.0]
    """
    check_nhwc(x, "x")
    h_out, w_out = pair(size, "size")
    n, h, w, c = x.shape
    rows = _axis_coefficients(h, h_out, x.dtype)             # each (H_out,)
    cols = _axis_coefficients(w, w_out, x.dtype)             # each (W_out,)
    y = np.empty((n, h_out, w_out, c), dtype=x.dtype)        # (N, H_out, W_out, C)
    resize_rows(np.ascontiguousarray(x), *rows, *cols, y)
    return y, {"rows": rows, "cols": cols, "x_shape": x.shape, "dtype": x.dtype}


def bilinear_resize_backward(dy, cache):
    """Adjoint of :func:`bilinear_resize_forward` (race-free gathers, W then H).

    >>> y, cache = bilinear_resize_forward(np.zeros((1, 2, 2, 1)), (4, 4))
    >>> bilinear_resize_backward(np.ones((1, 4, 4, 1)), cache)[0, :, :, 0].tolist()   # 16 split over 4
    [[4.0, 4.0], [4.0, 4.0]]
    """
    n, h, w, c = cache["x_shape"]
    dtype = cache["dtype"]
    h_out, w_out = cache["rows"][0].size, cache["cols"][0].size
    check_grad_shape(dy, (n, h_out, w_out, c))
    dy = np.ascontiguousarray(dy, dtype=dtype)
    tmp = np.empty((n, h_out, w, c), dtype=dtype)            # (N, H_out, W, C)
    adjoint_cols(dy, *_adjoint_table(*cache["cols"], w), tmp)
    dx = np.empty((n, h, w, c), dtype=dtype)                 # (N, H, W, C)
    adjoint_rows(tmp, *_adjoint_table(*cache["rows"], h), dx)
    return dx


def upsample_bilinear_forward(x, factor):
    """Bilinear upsampling by an integer ``factor`` (int or ``(fh, fw)``): resize to ``(H*fh, W*fw)``.

    >>> upsample_bilinear_forward(np.zeros((1, 3, 5, 2), np.float32), (2, 4))[0].shape
    (1, 6, 20, 2)
    """
    check_nhwc(x, "x")
    fh, fw = pair(factor, "factor")
    return bilinear_resize_forward(x, (x.shape[1] * fh, x.shape[2] * fw))


def upsample_bilinear_backward(dy, cache):
    """Gradient of :func:`upsample_bilinear_forward` (the adjoint of the resize)."""
    return bilinear_resize_backward(dy, cache)
