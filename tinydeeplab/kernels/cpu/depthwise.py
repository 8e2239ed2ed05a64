"""Depthwise 2-D convolution on the CPU: direct Numba loops, no im2col (the op is memory-bound).

Same maths as :mod:`tinydeeplab.functional.depthwise` (NHWC, kernel ``(KH, KW, C, M)``, output channel
``c * M + m``)::

    y[n, oh, ow, c*M + m] = b[c*M + m] + sum_{live (i, j)} x[n, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c] * w[i, j, c, m]

A depthwise conv does ``KH * KW`` multiply-adds per output and no reduction over channels, so an im2col
would copy ``KH * KW`` times more than the arithmetic is worth. Instead each thread owns output rows
``(n, oh)``; per live tap ``(i, j)`` whose row ``h = oh*sh - pt + i*dh`` is inside ``x``, it runs over the
output columns where tap ``j`` reads real pixels (the plan's ranges, so the inner loops test nothing) and
adds one contiguous channel run of ``x`` times one of ``w`` into the pixel's channel run of ``y``
(:func:`outer_add`; ``C`` contiguous floats, vectorised; with ``M = 1`` it is ``y[c] += x[c] * w[c]``). The
padding is never built. (Taps outermost, not pixels: measured 2x faster on 8 x 128 x 128 x 32.)

**Exact savings** (the shared :func:`~tinydeeplab.functional.conv.conv2d_plan`): only the live taps are
visited; a tap that reads only padding costs nothing and its ``dw`` stays 0.

**Backward.** ``dx`` is computed per *input* row (as conv's col2im): the thread owning ``(n, h)`` finds the
output rows ``oh = (h + pt - i*dh) / sh`` that read it and adds their gradients back along the same column
ranges as the forward, into its own row only, so no two threads write the same element.
``dw`` is a sum over all output pixels: the output rows are cut into :data:`DW_CHUNKS` fixed chunks, each
summed into its own slice of a ``(chunks, TH, TW, C*M)`` buffer in parallel, then the slices are added in
order (deterministic, independent of the thread count).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.checks import check_depthwise_conv2d_args, check_grad_shape
from ...functional.conv import conv2d_plan

DW_CHUNKS = 32
"""Chunks of output rows whose weight-gradient partial sums are computed in parallel (then added in order)."""


@njit(inline="always", cache=True, fastmath=False)
def outer_add(out, xrow, vrow, m):
    """``out[c*M + k] += xrow[c] * vrow[c*M + k]``: one pixel's channels times their ``M`` weights (forward:
    ``vrow`` a kernel tap) or gradients (``dw``: ``vrow`` a row of ``dy``). ``M = 1`` is ``out += x * v``, which
    LLVM vectorises."""
    if m == 1:
        for c in range(xrow.shape[0]):
            out[c] += xrow[c] * vrow[c]
    else:
        for c in range(xrow.shape[0]):
            xv = xrow[c]
            for k in range(m):
                out[c * m + k] += xv * vrow[c * m + k]


@njit(parallel=True, cache=True, fastmath=False)
def depthwise_rows(x, w2, b, y, m, tap_h, tap_w, idx_h, idx_w, col0, col1, sh, sw, pt, pl):
    """``y`` (N, H_out, W_out, C*M) from ``x`` (N, H, W, C), ``w2`` (KH, KW, C*M) and ``b`` (C*M,), live taps only.

    ``tap_h[a] = i * dh`` with ``i = idx_h[a]`` (likewise along W); live column tap ``t`` reads real pixels
    for the outputs ``col0[t] <= ow < col1[t]`` (the plan's ranges), so the inner loops test nothing.
    """
    n_img, h_in, _, _ = x.shape
    _, out_h, out_w, cm = y.shape
    for g in prange(n_img * out_h):                     # one output row (n, oh) per iteration
        n = g // out_h
        oh = g - n * out_h
        yr = y[n, oh]                                   # (W_out, C*M)
        for ow in range(out_w):
            for o in range(cm):
                yr[ow, o] = b[o]
        for a in range(tap_h.shape[0]):
            h = oh * sh - pt + tap_h[a]
            if h < 0 or h >= h_in:
                continue
            xr = x[n, h]                                # (W, C): the input row tap row a reads
            for t in range(tap_w.shape[0]):
                wrow = w2[idx_h[a], idx_w[t]]           # (C*M,)
                off = tap_w[t] - pl
                for ow in range(col0[t], col1[t]):
                    outer_add(yr[ow], xr[ow * sw + off], wrow, m)


@njit(inline="always", cache=True, fastmath=False)
def inner_add(out, dyrow, wrow, m):
    """``out[c] += sum_k dyrow[c*M + k] * wrow[c*M + k]``: the adjoint of :func:`outer_add` for ``dx``."""
    if m == 1:
        for c in range(out.shape[0]):
            out[c] += dyrow[c] * wrow[c]
    else:
        for c in range(out.shape[0]):
            acc = out[c]
            for k in range(m):
                acc += dyrow[c * m + k] * wrow[c * m + k]
            out[c] = acc


@njit(parallel=True, cache=True, fastmath=False)
def depthwise_dx_rows(dy, w2, dx, m, tap_h, tap_w, idx_h, idx_w, col0, col1, sh, sw, pt, pl):
    """``dx[n, h, w, c] = sum over the (tap, output) that read (n, h, w) of sum_m dy[.., c*M + m] * w[i, j, c, m]``.

    Race-free: the parallel loop runs over *input* rows ``(n, h)``; for each tap row ``a`` the output row
    that reads ``h`` through it is ``oh = (h + pt - i*dh) / sh`` (when that divides), and the outputs of that
    row send their gradient back along the forward's column ranges, into row ``h`` only."""
    n_img, h_in, _, _ = dx.shape
    _, out_h, _, _ = dy.shape
    for q in prange(n_img * h_in):
        n = q // h_in
        h = q - n * h_in
        dxr = dx[n, h]                                  # (W, C)
        dxr[...] = 0
        for a in range(tap_h.shape[0]):
            u = h + pt - tap_h[a]                       # = oh * sh when tap a of output row oh reads h
            if u < 0 or u % sh != 0 or u // sh >= out_h:
                continue
            dyr = dy[n, u // sh]                        # (W_out, C*M)
            for t in range(tap_w.shape[0]):
                wrow = w2[idx_h[a], idx_w[t]]
                off = tap_w[t] - pl
                for ow in range(col0[t], col1[t]):
                    inner_add(dxr[ow * sw + off], dyr[ow], wrow, m)


@njit(parallel=True, cache=True, fastmath=False)
def depthwise_dw_partials(x, dy, partial, m, tap_h, tap_w, col0, col1, sh, sw, pt, pl):
    """``partial[k, a, t, c*M + m] = sum over the output rows of chunk k of x[.., c] * dy[.., c*M + m]`` for the
    live tap ``(a, t)`` (the loops of :func:`depthwise_rows`); chunk ``k`` holds output rows
    ``[k R / K, (k + 1) R / K)``, ``R = N * H_out``."""
    n_img, h_in, _, _ = x.shape
    _, out_h, _, _ = dy.shape
    n_chunks = partial.shape[0]
    rows = n_img * out_h
    for k in prange(n_chunks):
        part = partial[k]                               # (TH, TW, C*M)
        part[...] = 0
        for g in range(k * rows // n_chunks, (k + 1) * rows // n_chunks):
            n = g // out_h
            oh = g - n * out_h
            dyr = dy[n, oh]                             # (W_out, C*M)
            for a in range(tap_h.shape[0]):
                h = oh * sh - pt + tap_h[a]
                if h < 0 or h >= h_in:
                    continue
                xr = x[n, h]                            # (W, C)
                for t in range(tap_w.shape[0]):
                    off = tap_w[t] - pl
                    for ow in range(col0[t], col1[t]):
                        outer_add(part[a, t], xr[ow * sw + off], dyr[ow], m)


def _live_taps(plan, dilation):
    """Offsets (``i * dh``, ``j * dw``) and indices of the live taps of a plan, and per live column tap the
    output columns ``[col0, col1)`` where it reads real pixels, as int64 arrays."""
    idx_h = np.array(plan.live_h, dtype=np.int64)
    idx_w = np.array(plan.live_w, dtype=np.int64)
    cols = {j: c for _, j, _, c in plan.taps}                          # the column range of tap j
    col0 = np.array([cols.get(j, (0, 0))[0] for j in plan.live_w], dtype=np.int64)
    col1 = np.array([cols.get(j, (0, 0))[1] for j in plan.live_w], dtype=np.int64)
    return {"tap_h": idx_h * dilation[0], "tap_w": idx_w * dilation[1], "idx_h": idx_h, "idx_w": idx_w,
            "col0": col0, "col1": col1}


def _geometry_args(cache):
    (sh, sw), ((pt, _), (pl, _)) = cache["stride"], cache["pads"]
    return sh, sw, pt, pl


def depthwise_conv2d_forward(x, w, b=None, *, stride=1, dilation=1, padding="same"):
    """Depthwise convolution; returns ``(y, cache)``, ``y`` (N, H_out, W_out, C*M). Direct Numba loops.

    Arguments and results as :func:`tinydeeplab.functional.depthwise_conv2d_forward`.

    >>> x = np.ones((1, 5, 5, 3), np.float32); w = np.ones((3, 3, 3, 2), np.float32)
    >>> y, cache = depthwise_conv2d_forward(x, w)
    >>> y.shape, float(y[0, 2, 2, 5]), float(y[0, 0, 0, 0])   # 9 taps inside, 4 at the corner
    ((1, 5, 5, 6), 9.0, 4.0)
    """
    stride, dilation = check_depthwise_conv2d_args(x, w, b, stride, dilation)
    n, _, _, c = x.shape
    kh, kw, _, m = w.shape
    plan = conv2d_plan(x.shape, w.shape, stride, dilation, padding)
    ho, wo = plan.out_hw
    taps = _live_taps(plan, dilation)
    x = np.ascontiguousarray(x)
    w2 = np.ascontiguousarray(w).reshape(kh, kw, c * m)                # (KH, KW, C*M)
    bias = np.zeros(c * m, x.dtype) if b is None else np.ascontiguousarray(b)
    cache = {"x": x, "w2": w2, "w_shape": w.shape, "has_bias": b is not None, "pads": plan.pads,
             "stride": stride, "out_hw": plan.out_hw, "taps": taps}
    y = np.empty((n, ho, wo, c * m), x.dtype)                          # (N, H_out, W_out, C*M)
    depthwise_rows(x, w2, bias, y, m, taps["tap_h"], taps["tap_w"], taps["idx_h"], taps["idx_w"],
                   taps["col0"], taps["col1"], *_geometry_args(cache))
    return y, cache


def depthwise_conv2d_backward(dy, cache):
    """Gradients of :func:`depthwise_conv2d_forward`; returns ``(dx, dw, db)`` (``db`` None without bias).

    >>> x = np.ones((1, 4, 4, 2)); w = np.ones((3, 3, 2, 1))
    >>> y, cache = depthwise_conv2d_forward(x, w, padding="valid")
    >>> dx, dw, db = depthwise_conv2d_backward(np.ones_like(y), cache)
    >>> dx[0, :, :, 0].astype(int).tolist()
    [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    """
    x, w2, taps = cache["x"], cache["w2"], cache["taps"]
    n, _, _, c = x.shape
    kh, kw, _, m = cache["w_shape"]
    ho, wo = cache["out_hw"]
    check_grad_shape(dy, (n, ho, wo, c * m))
    dy = np.ascontiguousarray(dy, dtype=x.dtype)                       # (N, H_out, W_out, C*M)
    args = _geometry_args(cache)

    dx = np.empty_like(x)                                              # (N, H, W, C)
    depthwise_dx_rows(dy, w2, dx, m, taps["tap_h"], taps["tap_w"], taps["idx_h"], taps["idx_w"], taps["col0"],
                      taps["col1"], *args)
    partial = np.empty((max(1, min(DW_CHUNKS, n * ho)), taps["tap_h"].size, taps["tap_w"].size, c * m), x.dtype)
    depthwise_dw_partials(x, dy, partial, m, taps["tap_h"], taps["tap_w"], taps["col0"], taps["col1"], *args)
    dw = np.zeros((kh, kw, c * m), x.dtype)                            # dead taps keep a zero gradient
    dw[np.ix_(taps["idx_h"], taps["idx_w"])] = partial.sum(axis=0)     # chunks added in a fixed order
    db = dy.sum(axis=(0, 1, 2)).astype(x.dtype) if cache["has_bias"] else None
    return dx, dw.reshape(kh, kw, c, m), db
