"""2-D convolution on the CPU: a Numba ``im2col`` kernel feeding one BLAS matrix product.

Same maths as :mod:`tinydeeplab.functional.conv` (NHWC activations, HWIO kernels)::

    y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, f]

**im2col.** Each output pixel ``(n, oh, ow)`` becomes one row of a matrix ``col`` that holds the
``T = KH*KW`` input patches it reads, flattened in the kernel's HWIO order ``(i, j, c)``::

    col[(n, oh, ow), (i, j, c)] = xpad[n, oh*sh + i*dh, ow*sw + j*dw, c]     # (P, T*C), P = N*H_out*W_out
    y = col @ w.reshape(T*C, F)                                              # (P, F): one GEMM

The copy is cheap (memory bound, Numba ``prange`` over output rows) and the GEMM runs at BLAS speed.
To bound memory, ``col`` is built for a *chunk* of output rows at a time, at most
:data:`IM2COL_MAX_BYTES` large, in one scratch buffer that is reused for every chunk and kept between
calls (:func:`scratch`), so a forward/backward pass through a network allocates it once, not per layer.

**Backward**, per chunk (``dy`` rows of the chunk ``dy_c``, ``col_c`` recomputed instead of cached)::

    dw   += col_c^T @ dy_c                         # (T*C, F)
    dcol  = dy_c @ w.reshape(T*C, F)^T             # (rows, T*C)
    dx   += col2im(dcol)                           # the adjoint of im2col
    db    = sum_P dy                               # (F,)

``col2im`` adds each ``dcol`` entry back to the input pixel it was copied from. Several output pixels
read the same input pixel, so a scatter in parallel would race; instead each thread *owns* rows of ``dx``
and gathers every contribution to them (a parallel loop over input rows), so no two threads ever write
the same element.

**Exact savings.** A kernel tap whose rows (or columns) all fall in the zero padding reads only zeros:
it is dropped from ``col`` and from ``w`` (ASPP with rate 18 on a 16 x 16 map keeps only the centre tap).
A 1x1 convolution with stride 1 and no padding (or a conv that collapses to one such tap) needs no
im2col at all: ``y = x.reshape(P, C) @ w.reshape(C, F)``. Which taps are live, and where, is the shared
plan of every backend (:func:`tinydeeplab.functional.conv.conv2d_plan`).

**Taps (atrous convolution on small maps).** Skipping whole taps is not enough for ASPP: with rate 12
on a 16 x 16 map every tap reads real pixels for *some* outputs, yet 75 % of the products in ``col``
are with padding zeros. A convolution is also a sum over taps of shifted 1x1 convolutions, and tap
``(i, j)`` reads real pixels for one rectangle of outputs only (rows ``R_i``, columns ``C_j``)::

    y[:, R_i, C_j] += x[:, R_i*sh - pt + i*dh, C_j*sw - pl + j*dw] @ w[i, j]      # (.., C) @ (C, F)

so a conv with more than :data:`TAPWISE_MIN_DEAD_FRACTION` of its products in the padding runs tap
by tap: no zero is multiplied and no im2col is built. Same sum, same terms, only the order of the
additions differs.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange

from ...functional.checks import check_conv2d_args, check_conv_epilogue, check_grad_shape
from ...functional.conv import conv2d_plan
from .activation import relu_backward

TAPWISE_MIN_DEAD_FRACTION = 0.4
"""Run tap by tap when more than this fraction of the im2col products would read padding (below it,
the one big GEMM of im2col is faster than several smaller ones)."""

IM2COL_MAX_BYTES = 16 * 2**20
"""Upper bound on the im2col buffer (bytes). A chunk always holds at least one output row, so a single
row wider than this still runs (with a buffer of one row). Tests shrink it to check the chunking."""


# ---------------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------------

@njit(parallel=True, cache=True, fastmath=False)
def im2col_rows(x, col, g0, g1, out_h, out_w, tap_h, tap_w, sh, sw, pt, pl):
    """Fill ``col`` with the patches of output rows ``g in [g0, g1)``, ``g = n * H_out + oh``.

    ``col[(g - g0) * W_out + ow, (a * len(tap_w) + b) * C + c] = x[n, oh*sh - pt + tap_h[a],
    ow*sw - pl + tap_w[b], c]`` or 0 where that pixel lies in the padding.
    ``tap_h``/``tap_w`` hold the offsets ``i * dh`` / ``j * dw`` of the live taps.

    Without dilation along W the taps of one kernel row read adjacent pixels, i.e. one contiguous
    run of ``len(tap_w) * C`` numbers of ``x`` (a 7x7 stem on RGB copies 21 floats at once, not 3).
    """
    n_img, h_in, w_in, c_in = x.shape                   # x: (N, H, W, C)
    x_rows = x.reshape(n_img, h_in, w_in * c_in)        # (N, H, W*C): a pixel row is one run
    nth = tap_h.shape[0]
    ntw = tap_w.shape[0]
    run = ntw * c_in                                    # numbers per kernel row in col
    adjacent = tap_w[ntw - 1] - tap_w[0] == ntw - 1     # taps along W read neighbouring pixels
    for g in prange(g0, g1):                            # one output row per iteration
        n = g // out_h
        oh = g - n * out_h
        for ow in range(out_w):
            r = (g - g0) * out_w + ow                   # row of col
            w_first = ow * sw - pl + tap_w[0]
            for a in range(nth):
                h = oh * sh - pt + tap_h[a]
                base = a * run
                if h < 0 or h >= h_in:                  # the whole kernel row is padding
                    for k in range(run):
                        col[r, base + k] = 0.0
                elif adjacent and w_first >= 0 and w_first + ntw <= w_in:
                    start = w_first * c_in              # one contiguous copy
                    for k in range(run):
                        col[r, base + k] = x_rows[n, h, start + k]
                else:                                   # tap by tap, zeros in the padding
                    for b in range(ntw):
                        w = ow * sw - pl + tap_w[b]
                        pos = base + b * c_in
                        if 0 <= w < w_in:
                            for c in range(c_in):
                                col[r, pos + c] = x[n, h, w, c]
                        else:
                            for c in range(c_in):
                                col[r, pos + c] = 0.0


@njit(parallel=True, cache=True, fastmath=False)
def col2im_rows(dcol, dx, g0, g1, out_h, out_w, tap_h, tap_w, sh, sw, pt, pl):
    """Adjoint of :func:`im2col_rows`: ``dx[n, h, w, :] += dcol[row, tap]`` for every (row, tap) of
    output rows ``[g0, g1)`` that was copied from ``(n, h, w)``.

    Race-free gather: the parallel loop runs over *input* rows ``(n, h)``; the thread that owns a row
    looks up which output rows ``oh = (h + pt - i*dh) / sh`` read it, so it alone writes that row.
    """
    n_img, h_in, w_in, c_in = dx.shape                  # dx: (N, H, W, C)
    dx_rows = dx.reshape(n_img, h_in, w_in * c_in)      # (N, H, W*C), a view
    nth = tap_h.shape[0]
    ntw = tap_w.shape[0]
    run = ntw * c_in
    adjacent = tap_w[ntw - 1] - tap_w[0] == ntw - 1
    n0 = g0 // out_h
    n1 = (g1 - 1) // out_h + 1                          # images touched by this chunk: [n0, n1)
    for q in prange((n1 - n0) * h_in):                  # one input row (n, h) per iteration
        n = n0 + q // h_in
        h = q - (q // h_in) * h_in
        for a in range(nth):
            t = h + pt - tap_h[a]                       # = oh * sh when tap a of output row oh reads h
            if t < 0 or t % sh != 0:
                continue
            oh = t // sh
            g = n * out_h + oh
            if oh >= out_h or g < g0 or g >= g1:
                continue
            r0 = (g - g0) * out_w
            base = a * run
            for ow in range(out_w):
                w_first = ow * sw - pl + tap_w[0]
                if adjacent and w_first >= 0 and w_first + ntw <= w_in:
                    start = w_first * c_in              # one contiguous run of dx
                    for k in range(run):
                        dx_rows[n, h, start + k] += dcol[r0 + ow, base + k]
                else:
                    for b in range(ntw):
                        w = ow * sw - pl + tap_w[b]
                        if 0 <= w < w_in:
                            pos = base + b * c_in
                            for c in range(c_in):
                                dx[n, h, w, c] += dcol[r0 + ow, pos + c]


# ---------------------------------------------------------------------------------------------------
# The im2col buffer, reused across calls
# ---------------------------------------------------------------------------------------------------

_SCRATCH = threading.local()  # one buffer per thread and dtype: two threads never share a buffer


def scratch(shape, dtype) -> np.ndarray:
    """A C-contiguous ``(rows, cols)`` array of ``dtype`` over a per-thread buffer kept between calls.

    The buffer only grows (up to one chunk, :data:`IM2COL_MAX_BYTES`), so after the largest layer of
    the first pass no convolution allocates its im2col matrix again. The contents are garbage: every
    caller overwrites what it uses. Valid until the next call of ``scratch`` in the same thread.

    >>> a = scratch((4, 8), np.float32); b = scratch((2, 3), np.float32)
    >>> np.shares_memory(a, b)                      # the same memory, handed out again
    True
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get(dtype)
    if buf is None or buf.size < size:
        buf = buffers[dtype] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


# ---------------------------------------------------------------------------------------------------
# The shared plan (tinydeeplab.functional.conv2d_plan) in the form the kernels take
# ---------------------------------------------------------------------------------------------------

def _kernel_plan(geometry, dilation):
    """The live taps of ``geometry`` (a :class:`~tinydeeplab.functional.conv.ConvPlan`) as the kernels take
    them: offsets ``tap_h = i * dh`` / ``tap_w = j * dw`` and indices ``idx_h`` / ``idx_w`` (int64 arrays),
    ``gemm_only``, and ``taps`` (the live taps with their output ranges) when the conv runs tap by tap."""
    idx_h = np.array(geometry.live_h, dtype=np.int64)   # kernel indices i of the live taps
    idx_w = np.array(geometry.live_w, dtype=np.int64)
    tapwise = (not geometry.gemm_only and len(geometry.taps) > 0
               and geometry.dead_fraction > TAPWISE_MIN_DEAD_FRACTION)
    return {"tap_h": idx_h * dilation[0], "tap_w": idx_w * dilation[1], "idx_h": idx_h, "idx_w": idx_w,
            "gemm_only": geometry.gemm_only, "taps": list(geometry.taps) if tapwise else None,
            "dead_fraction": geometry.dead_fraction}


def _live_weights(w, plan) -> np.ndarray:
    """The kernel restricted to its live taps, as the GEMM matrix ``(T_live * C, F)``."""
    kh, kw, c, f = w.shape
    if plan["idx_h"].size == kh and plan["idx_w"].size == kw:
        return w.reshape(kh * kw * c, f)                # all taps live: a view, no copy
    wl = w[plan["idx_h"]][:, plan["idx_w"]]             # (KH_live, KW_live, C, F)
    return np.ascontiguousarray(wl).reshape(-1, f)


def _chunk_rows(out_w: int, row_width: int, itemsize: int) -> int:
    """How many output rows (of ``W_out`` pixels each) fit in one im2col chunk."""
    return max(1, IM2COL_MAX_BYTES // max(1, out_w * row_width * itemsize))


# ---------------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------------

def conv2d_forward(x, w, b=None, *, stride=1, dilation=1, padding="same"):
    """2-D convolution ``y = conv(x, w) + b``; returns ``(y, cache)``. Numba im2col + BLAS GEMM.

    ``y[n, oh, ow, f] = b[f] + sum_{i,j,c} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, f]``

    Arguments and results as :func:`tinydeeplab.functional.conv2d_forward`.

    >>> x = np.ones((1, 5, 5, 3), np.float32); w = np.ones((3, 3, 3, 4), np.float32)
    >>> y, cache = conv2d_forward(x, w, stride=2)
    >>> y.shape, float(y[0, 1, 1, 0])                   # "same": ceil(5 / 2) = 3; 27 ones in a window
    ((1, 3, 3, 4), 27.0)
    """
    stride, dilation = check_conv2d_args(x, w, b, stride, dilation)
    return _forward(x, w, b, None, False, stride, dilation, padding)


def conv2d_fused_forward(x, w, b=None, residual=None, *, stride=1, dilation=1, padding="same", relu=False):
    """``y = act(conv(x, w) + b + residual)`` (``act`` ReLU when ``relu``); returns ``(y, cache)``.

    As :func:`tinydeeplab.functional.conv2d_fused_forward`. The epilogue (bias, residual, ReLU) is one Numba
    pass over each GEMM chunk's output right after the chunk is computed, while it is still in cache,
    instead of three passes over the whole output; a 1x1 convolution's single GEMM is cut into row chunks
    of about :data:`EPILOGUE_CHUNK_BYTES` of output for that. Same additions in the same order as
    conv2d -> add -> relu, so the same numbers.

    >>> x = np.ones((1, 2, 2, 1), np.float32); w = np.ones((1, 1, 1, 1), np.float32)
    >>> conv2d_fused_forward(x, w, residual=-2 * x, relu=True)[0].ravel().tolist()
    [0.0, 0.0, 0.0, 0.0]
    """
    stride, dilation = check_conv2d_args(x, w, b, stride, dilation)
    return _forward(x, w, b, residual, relu, stride, dilation, padding)


def conv2d_fused_backward(dy, cache):
    """Gradients of :func:`conv2d_fused_forward`: ``(dx, dw, db, dresidual)``, with ``dz = dy * [y > 0]``
    (relu) or ``dy``, then :func:`conv2d_backward` of ``dz`` and ``dresidual = dz`` (None without a residual)."""
    check_grad_shape(dy, cache["y_shape"])
    dz = dy if cache["y"] is None else relu_backward(dy, {"y": cache["y"]})
    dx, dw, db = conv2d_backward(dz, cache)
    return dx, dw, db, (dz if cache["has_residual"] else None)


EPILOGUE_CHUNK_BYTES = 2**20
"""Output bytes per GEMM chunk of a fused 1x1 convolution (the epilogue reads them back from cache)."""


@njit(parallel=True, cache=True, fastmath=False)
def epilogue_rows(y2, b, res2, has_bias, has_res, relu):
    """In place over ``y2`` (P, F): ``y2 = act(y2 + b + res2)``, each term only where its flag is set
    (``b`` (F,), ``res2`` (P, F); unused ones may be empty). NaN stays NaN through the ReLU."""
    for p in prange(y2.shape[0]):
        for f in range(y2.shape[1]):
            v = y2[p, f]
            if has_bias:
                v += b[f]
            if has_res:
                v += res2[p, f]
            if relu and not (v > 0 or v != v):
                v = 0.0
            y2[p, f] = v


def _forward(x, w, b, residual, relu, stride, dilation, padding):
    """The convolution with its epilogue (``b``, ``residual``, ``relu``; plain conv2d: no residual, no relu)."""
    kh, kw, c, f = w.shape
    n = x.shape[0]
    geometry = conv2d_plan(x.shape, w.shape, stride, dilation, padding)
    pads, out_hw = geometry.pads, geometry.out_hw
    ho, wo = out_hw
    check_conv_epilogue(residual, (n, ho, wo, f), x.dtype, relu)
    x = np.ascontiguousarray(x)
    plan = _kernel_plan(geometry, dilation)
    wmat = _live_weights(np.ascontiguousarray(w), plan)          # (T_live * C, F)

    empty = np.empty((0, 0), x.dtype)
    res2 = empty if residual is None else np.ascontiguousarray(residual).reshape(-1, f)   # (P, F)
    flags = (b is not None, residual is not None, bool(relu))
    bias = np.empty(0, x.dtype) if b is None else np.ascontiguousarray(b)

    def epilogue(p0, p1):                                        # rows [p0, p1) of y are final
        if any(flags):
            epilogue_rows(y[p0:p1], bias, res2[p0:p1] if flags[1] else empty, *flags)

    y = np.empty((n * ho * wo, f), dtype=x.dtype)                # (P, F), P = N * H_out * W_out
    if plan["taps"] is not None:
        _tapwise_forward(x, w, plan, y.reshape(n, ho, wo, f), stride, dilation, pads)
        epilogue(0, y.shape[0])
    elif plan["gemm_only"]:
        x2 = x.reshape(-1, c)                                    # (P, C)
        step = y.shape[0] if not (flags[1] or flags[2]) else max(1, EPILOGUE_CHUNK_BYTES // (f * x.itemsize))
        for p0 in range(0, y.shape[0], step):
            p1 = min(p0 + step, y.shape[0])
            np.matmul(x2[p0:p1], wmat, out=y[p0:p1])             # (rows, C) @ (C, F)
            epilogue(p0, p1)
    elif wmat.shape[0] == 0:
        y[...] = 0                                               # every tap reads only padding
        epilogue(0, y.shape[0])
    else:
        for g0, g1, col in _col_chunks(x, plan, stride, pads, out_hw):
            np.matmul(col, wmat, out=y[g0 * wo:g1 * wo])         # (rows, T*C) @ (T*C, F)
            epilogue(g0 * wo, g1 * wo)
    y = y.reshape(n, ho, wo, f)                                  # (N, H_out, W_out, F)
    cache = {"x": x, "w": w, "has_bias": b is not None, "pads": pads, "stride": stride,
             "dilation": dilation, "out_hw": out_hw, "plan": plan,
             "has_residual": residual is not None, "y": y if relu else None, "y_shape": y.shape}
    return y, cache


def _col_chunks(x, plan, stride, pads, out_hw):
    """Yield ``(g0, g1, col)``: the im2col matrix of output rows ``[g0, g1)``, in the reused buffer."""
    n, _, _, c = x.shape
    ho, wo = out_hw
    (pt, _), (pl, _) = pads
    width = plan["tap_h"].size * plan["tap_w"].size * c          # T_live * C
    rows = _chunk_rows(wo, width, x.itemsize)
    total = n * ho
    buf = scratch((min(rows, total) * wo, width), x.dtype)
    for g0 in range(0, total, rows):
        g1 = min(g0 + rows, total)
        col = buf[:(g1 - g0) * wo]                               # (rows * W_out, T*C)
        im2col_rows(x, col, g0, g1, ho, wo, plan["tap_h"], plan["tap_w"],
                    stride[0], stride[1], pt, pl)
        yield g0, g1, col


def _tap_reads(plan, stride, dilation, pads):
    """Yield ``(i, j, outs, reads)`` per live tap: the output rectangle ``outs = (rows, cols)`` where
    tap ``(i, j)`` reads real pixels, and the input rectangle ``reads`` it reads there (slices)."""
    (sh, sw), (dh, dw), ((pt, _), (pl, _)) = stride, dilation, pads
    for i, j, (r0, r1), (c0, c1) in plan["taps"]:
        outs = (slice(r0, r1), slice(c0, c1))
        reads = (slice(r0 * sh - pt + i * dh, (r1 - 1) * sh - pt + i * dh + 1, sh),
                 slice(c0 * sw - pl + j * dw, (c1 - 1) * sw - pl + j * dw + 1, sw))
        yield i, j, outs, reads


def _tapwise_forward(x, w, plan, y, stride, dilation, pads) -> None:
    """``y = sum over live taps (i, j) of  y[outs] += x[reads] @ w[i, j]``, written into ``y``
    (N, H_out, W_out, F) in place; outputs no tap reaches stay 0."""
    n, c, f = x.shape[0], x.shape[3], w.shape[3]
    y[...] = 0
    for i, j, (ro, co), (ri, ci) in _tap_reads(plan, stride, dilation, pads):
        xs = np.ascontiguousarray(x[:, ri, ci])                     # (N, h_t, w_t, C)
        y[:, ro, co] += (xs.reshape(-1, c) @ w[i, j]).reshape(xs.shape[:3] + (f,))


def _tapwise_backward(dy, x, w, plan, stride, dilation, pads):
    """Adjoint of :func:`_tapwise_forward`, per live tap: ``dw[i, j] = x[reads]^T @ dy[outs]`` and
    ``dx[reads] += dy[outs] @ w[i, j]^T``."""
    c, f = x.shape[3], w.shape[3]
    dx, dw = np.zeros_like(x), np.zeros_like(w)                     # (N, H, W, C), (KH, KW, C, F)
    for i, j, (ro, co), (ri, ci) in _tap_reads(plan, stride, dilation, pads):
        dys = np.ascontiguousarray(dy[:, ro, co])                   # (N, h_t, w_t, F)
        xs = np.ascontiguousarray(x[:, ri, ci]).reshape(-1, c)      # (N * h_t * w_t, C)
        dw[i, j] = xs.T @ dys.reshape(-1, f)
        dx[:, ri, ci] += (dys.reshape(-1, f) @ w[i, j].T).reshape(dys.shape[:3] + (c,))
    return dx, dw


def conv2d_backward(dy, cache):
    """Gradients of :func:`conv2d_forward`; returns ``(dx, dw, db)`` (``db`` is None without bias).

    ``dw = col^T @ dy``, ``dx = col2im(dy @ W^T)``, ``db = sum dy`` (chunked as the forward).

    >>> x = np.ones((1, 4, 4, 2)); w = np.ones((3, 3, 2, 1))
    >>> y, cache = conv2d_forward(x, w, padding="valid")
    >>> dx, dw, db = conv2d_backward(np.ones_like(y), cache)
    >>> dx[0, :, :, 0].astype(int).tolist()   # how many output windows cover each input pixel
    [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    """
    x, w, plan = cache["x"], cache["w"], cache["plan"]
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = cache["out_hw"]
    stride, pads = cache["stride"], cache["pads"]
    (pt, _), (pl, _) = pads
    check_grad_shape(dy, (n, ho, wo, f))
    dy2 = np.ascontiguousarray(dy, dtype=x.dtype).reshape(-1, f)   # (P, F)
    wmat = _live_weights(np.ascontiguousarray(w), plan)            # (T_live * C, F)

    if plan["taps"] is not None:
        dx, dw = _tapwise_backward(dy2.reshape(n, ho, wo, f), x, w, plan, stride, cache["dilation"], pads)
        db = dy2.sum(axis=0).astype(w.dtype) if cache["has_bias"] else None
        return dx, dw, db
    dw_live = np.zeros(wmat.shape, dtype=x.dtype)                  # (T_live * C, F)
    if plan["gemm_only"]:
        x2 = x.reshape(-1, c)                                      # (P, C)
        dx = (dy2 @ wmat.T).reshape(n, h, wd, c)
        np.matmul(x2.T, dy2, out=dw_live)
    else:
        dx = np.zeros_like(x)                                      # (N, H, W, C)
        if wmat.shape[0] > 0:
            tmp = None
            for g0, g1, col in _col_chunks(x, plan, stride, pads, cache["out_hw"]):
                dy_c = dy2[g0 * wo:g1 * wo]                        # (rows, F)
                if tmp is None and g1 == n * ho:
                    np.matmul(col.T, dy_c, out=dw_live)            # single chunk: write directly
                else:
                    tmp = np.matmul(col.T, dy_c, out=tmp)          # (T*C, F)
                    dw_live += tmp
                dcol = np.matmul(dy_c, wmat.T, out=col)            # (rows, T*C), reusing col's buffer
                col2im_rows(dcol, dx, g0, g1, ho, wo, plan["tap_h"], plan["tap_w"],
                            stride[0], stride[1], pt, pl)
    dw = np.zeros_like(w)                                          # dead taps keep a zero gradient
    dw[np.ix_(plan["idx_h"], plan["idx_w"])] = dw_live.reshape(
        plan["idx_h"].size, plan["idx_w"].size, c, f)
    db = dy2.sum(axis=0).astype(w.dtype) if cache["has_bias"] else None
    return dx, dw, db
