"""2-D convolution on the GPU: an ``im2col`` kernel feeding the tiled GEMM of :mod:`.gemm`.

Same maths as :mod:`tinydeeplab.functional.conv` (NHWC activations, HWIO kernels)::

    y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, f]

**im2col** (one thread per element of ``col``, grid-stride): output pixel ``(n, oh, ow)`` becomes row
``p`` of ``col``, holding the patches of the live kernel taps in HWIO order ``(a, b, c)``::

    col[p, (a * TW + b) * C + c] = x[n, oh*sh - pt + (i0 + a)*dh, ow*sw - pl + (j0 + b)*dw, c]  or 0
    y = col @ w_live.reshape(TH * TW * C, F)                      # (P, F), P = N * H_out * W_out

The padding is never materialised: an index that falls outside ``x`` reads 0. The kernels run the taps
``i0 <= i < i0 + TH`` per axis, from the first to the last live one (those that read at least one real
pixel, from the shared :func:`~tinydeeplab.functional.conv.conv2d_plan`), so an ASPP branch with a rate
larger than the map runs as a 1x1 convolution. A 1x1 / stride 1 / unpadded conv
needs no im2col: ``y = x.reshape(P, C) @ w.reshape(C, F)``. ``col`` is built for a chunk of output rows
at a time (at most :data:`IM2COL_MAX_BYTES`).

**Backward**, per chunk::

    dw_live += col^T @ dy                  # (T*C, F): the GEMM reads col transposed in place
    dcol     = dy @ w_live^T               # (rows, T*C), written over col
    dx      += col2im(dcol)                # the adjoint of im2col
    db       = column sums of dy           # (F,), deterministic tree reduction

``col2im`` is a *gather*, one thread per element of ``dx``: thread ``(n, h, w, c)`` finds the output pixels
whose taps read it (``oh = (h + pt - i*dh) / sh`` when that divides) and adds their ``dcol`` entries. No
two threads write the same address, so no atomics and a reproducible result.
"""
from __future__ import annotations

from numba import cuda

from ...functional.checks import check_conv2d_args, check_conv_epilogue, check_grad_shape
from ...functional.conv import conv2d_plan
from .activation import relu_backward
from .gemm import matmul
from .device import cast, empty, launch_1d, require_device, spec, unravel_nhwc, zeros
from .reduce import column_sums

IM2COL_MAX_BYTES = 256 * 2**20
"""Upper bound on the im2col buffer (bytes); a chunk holds at least one output row."""


@cuda.jit
def _im2col(x, col, g0, out_h, out_w, i0, n_th, j0, n_tw, sh, sw, dh, dw, pt, pl):
    """Fill ``col`` (rows of output rows ``g >= g0``, ``g = n * H_out + oh``) from ``x`` (N, H, W, C)."""
    n_img, h_in, w_in, c_in = x.shape                       # (N, H, W, C)
    width = n_th * n_tw * c_in                              # T * C
    for idx in range(cuda.grid(1), col.size, cuda.gridsize(1)):
        r = idx // width                                    # row of col (an output pixel of the chunk)
        q = idx - r * width                                 # (a, b, c) flattened
        a = q // (n_tw * c_in)
        b = (q // c_in) % n_tw
        c = q % c_in
        g = g0 + r // out_w                                 # global output row n * H_out + oh
        ow = r % out_w
        n = g // out_h
        oh = g - n * out_h
        h = oh * sh - pt + (i0 + a) * dh
        w = ow * sw - pl + (j0 + b) * dw
        if 0 <= h < h_in and 0 <= w < w_in:
            col[r, q] = x[n, h, w, c]
        else:
            col[r, q] = 0


@cuda.jit
def _col2im(dcol, dx, g0, g1, out_h, out_w, i0, n_th, j0, n_tw, sh, sw, dh, dw, pt, pl):
    """``dx[n, h, w, c] += sum of dcol[row, tap]`` over the (row, tap) of output rows ``[g0, g1)`` that read it."""
    n_img, h_in, w_in, c_in = dx.shape                      # (N, H, W, C)
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_in, w_in, c_in)
        acc = dx[n, h, w, c]
        for a in range(n_th):
            t = h + pt - (i0 + a) * dh                      # = oh * sh if tap row a of output row oh reads h
            if t < 0 or t % sh != 0:
                continue
            oh = t // sh
            g = n * out_h + oh
            if oh >= out_h or g < g0 or g >= g1:
                continue
            for b in range(n_tw):
                u = w + pl - (j0 + b) * dw                  # = ow * sw
                if u < 0 or u % sw != 0:
                    continue
                ow = u // sw
                if ow >= out_w:
                    continue
                acc += dcol[(g - g0) * out_w + ow, (a * n_tw + b) * c_in + c]
        dx[n, h, w, c] = acc


@cuda.jit
def _add_bias(y2, b):
    """``y2[p, f] += b[f]`` for ``y2`` (P, F)."""
    f_n = y2.shape[1]
    for i in range(cuda.grid(1), y2.size, cuda.gridsize(1)):
        y2[i // f_n, i % f_n] += b[i % f_n]


@cuda.jit
def _tap_copy(w, live, i0, n_th, j0, n_tw, to_taps):
    """Between a full HWIO kernel ``w`` (KH, KW, C, F) and its live taps ``live`` (TH*TW*C, F).

    ``to_taps``: ``live[(a*TW + b)*C + c, f] = w[i0 + a, j0 + b, c, f]``; else the reverse assignment.
    """
    c_n, f_n = w.shape[2], w.shape[3]
    for idx in range(cuda.grid(1), live.size, cuda.gridsize(1)):
        f = idx % f_n
        q = idx // f_n
        c = q % c_n
        b = (q // c_n) % n_tw
        a = q // (c_n * n_tw)
        if to_taps:
            live[q, f] = w[i0 + a, j0 + b, c, f]
        else:
            w[i0 + a, j0 + b, c, f] = live[q, f]


@cuda.jit
def _epilogue(y2, b, res2, has_bias, has_res, relu):
    """``y2[p, f] = act(y2[p, f] + b[f] + res2[p, f])`` in place, each term where its flag is set."""
    f_n = y2.shape[1]
    for i in range(cuda.grid(1), y2.size, cuda.gridsize(1)):
        p, f = i // f_n, i % f_n
        v = y2[p, f]
        if has_bias:
            v += b[f]
        if has_res:
            v += res2[p, f]
        if relu and not (v > 0 or v != v):
            v = 0
        y2[p, f] = v


def add_bias(y2, b):
    """In place ``y2 += b`` broadcast over the rows of ``y2`` (P, F)."""
    launch_1d(_add_bias, y2.size, y2, b)


def copy_into_taps(w, live, i0, n_th, j0, n_tw, *, to_taps):
    """Gather the live taps of ``w`` into ``live`` (``to_taps``) or scatter ``live`` back into ``w``."""
    launch_1d(_tap_copy, live.size, w, live, i0, n_th, j0, n_tw, bool(to_taps))


def _kernel_plan(geometry, w_shape):
    """The live taps of ``geometry`` (a :class:`~tinydeeplab.functional.conv.ConvPlan`) as the kernels take
    them: per axis the range ``(first, count)`` from the first to the last live tap, ``gemm_only`` and
    ``all_live``. A dead tap inside the range (a stride > 1 on a map smaller than the kernel can step over
    the input: taps 0 and 2 live, 1 dead) reads only zeros, so it adds nothing and its gradient stays 0."""
    live_h, live_w = geometry.live_h, geometry.live_w
    i0, n_th = (live_h[0], live_h[-1] - live_h[0] + 1) if live_h else (0, 0)
    j0, n_tw = (live_w[0], live_w[-1] - live_w[0] + 1) if live_w else (0, 0)
    return {"i0": i0, "n_th": n_th, "j0": j0, "n_tw": n_tw, "gemm_only": geometry.gemm_only,
            "all_live": n_th == w_shape[0] and n_tw == w_shape[1]}


def _live_weights(w, plan):
    """The kernel restricted to its live taps, as the GEMM matrix ``(TH * TW * C, F)`` (a view if all live)."""
    kh, kw, c, f = w.shape
    if plan["all_live"]:
        return w.reshape(kh * kw * c, f)
    out = empty((plan["n_th"] * plan["n_tw"] * c, f), w.dtype)
    copy_into_taps(w, out, plan["i0"], plan["n_th"], plan["j0"], plan["n_tw"], to_taps=True)
    return out


def _chunks(n_rows_total, out_w, width, itemsize):
    rows = max(1, IM2COL_MAX_BYTES // max(1, out_w * width * itemsize))
    for g0 in range(0, n_rows_total, rows):
        yield g0, min(g0 + rows, n_rows_total)


def _geometry_args(plan, cache_or_geom):
    (pt, _), (pl, _) = cache_or_geom["pads"]
    (sh, sw), (dh, dw) = cache_or_geom["stride"], cache_or_geom["dilation"]
    return plan["i0"], plan["n_th"], plan["j0"], plan["n_tw"], sh, sw, dh, dw, pt, pl


def conv2d_forward(x, w, b=None, *, stride=1, dilation=1, padding="same"):
    """2-D convolution ``y = conv(x, w) + b`` on device arrays; returns ``(y, cache)``.

    ``y[n, oh, ow, f] = b[f] + sum_{i,j,c} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, f]``

    Arguments and results as :func:`tinydeeplab.functional.conv2d_forward`, as device arrays; the bias is
    added by the GEMM as it stores each output (its epilogue).
    """
    return _forward(x, w, b, None, False, stride, dilation, padding)


def conv2d_backward(dy, cache):
    """Gradients of :func:`conv2d_forward`; returns ``(dx, dw, db)`` device arrays (``db`` None without bias).

    ``dw = col^T @ dy``, ``dx = col2im(dy @ W^T)``, ``db = sum dy``.
    """
    x, w, plan = cache["x"], cache["w"], cache["plan"]
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = cache["out_hw"]
    check_grad_shape(spec(dy), (n, ho, wo, f))
    require_device(dy, "dy")
    if dy.dtype != x.dtype:
        dy = cast(dy, x.dtype)
    dy2 = dy.reshape(n * ho * wo, f)                                   # (P, F)
    wmat = _live_weights(w, plan)                                      # (T_live * C, F)

    if plan["gemm_only"]:
        dw_live = matmul(x.reshape(n * h * wd, c), dy2, trans_a=True)   # (C, P) @ (P, F)
        dx = matmul(dy2, wmat, trans_b=True).reshape(n, h, wd, c)      # (P, F) @ (F, C)
    else:
        dx = zeros(x.shape, x.dtype)                                   # (N, H, W, C)
        dw_live = zeros(wmat.shape, x.dtype)                           # (T_live * C, F)
        width = wmat.shape[0]
        if width > 0:
            args = _geometry_args(plan, cache)
            for g0, g1 in _chunks(n * ho, wo, width, x.dtype.itemsize):
                col = empty(((g1 - g0) * wo, width), x.dtype)
                launch_1d(_im2col, col.size, x, col, g0, ho, wo, *args)
                dy_c = dy2[g0 * wo:g1 * wo]                            # (rows, F)
                matmul(col, dy_c, dw_live, trans_a=True, accumulate=True)   # += col^T @ dy_c
                matmul(dy_c, wmat, col, trans_b=True)                  # dcol = dy_c @ W^T, over col
                launch_1d(_col2im, dx.size, col, dx, g0, g1, ho, wo, *args)
    if plan["all_live"]:
        dw = dw_live.reshape(kh, kw, c, f)
    else:
        dw = zeros(w.shape, w.dtype)                                   # dead taps keep a zero gradient
        copy_into_taps(dw, dw_live, plan["i0"], plan["n_th"], plan["j0"], plan["n_tw"], to_taps=False)
    db = cast(column_sums(dy2), w.dtype) if cache["has_bias"] else None
    return dx, dw, db


def conv2d_fused_forward(x, w, b=None, residual=None, *, stride=1, dilation=1, padding="same", relu=False):
    """``y = act(conv(x, w) + b + residual)`` on device arrays (``act`` ReLU when ``relu``); returns ``(y, cache)``.

    As :func:`tinydeeplab.functional.conv2d_fused_forward`. Bias, residual and ReLU are applied by the GEMM
    itself as it stores each output (:func:`~tinydeeplab.kernels.cuda.gemm.gemm_kernel`'s epilogue): no
    launch and no pass over the output of their own (the plain path launches an add and a ReLU after it).
    """
    return _forward(x, w, b, residual, relu, stride, dilation, padding)


def _forward(x, w, b, residual, relu, stride, dilation, padding):
    """The convolution with its epilogue (``b``, ``residual``, ``relu``) in the GEMM's store."""
    stride, dilation = check_conv2d_args(spec(x), spec(w), spec(b), stride, dilation)
    for a, name in ((x, "x"), (w, "w")) + (((b, "b"),) if b is not None else ()):
        require_device(a, name)
    kh, kw, c, f = w.shape
    n = x.shape[0]
    geometry = conv2d_plan(tuple(x.shape), w.shape, stride, dilation, padding)
    pads, out_hw = geometry.pads, geometry.out_hw
    ho, wo = out_hw
    check_conv_epilogue(spec(residual), (n, ho, wo, f), x.dtype, relu)
    if residual is not None:
        require_device(residual, "residual")
    plan = _kernel_plan(geometry, w.shape)
    geom = {"pads": pads, "stride": stride, "dilation": dilation}
    wmat = _live_weights(w, plan)                                      # (T_live * C, F)
    res2 = None if residual is None else residual.reshape(n * ho * wo, f)   # (P, F)
    relu = bool(relu)

    y2 = empty((n * ho * wo, f), x.dtype)                             # (P, F)
    if plan["gemm_only"]:
        matmul(x.reshape(n * ho * wo, c), wmat, y2, bias=b, residual=res2, relu=relu)
    elif wmat.shape[0] == 0:                                           # every tap reads only padding
        y2 = zeros((n * ho * wo, f), x.dtype)
        if b is not None or res2 is not None or relu:
            launch_1d(_epilogue, y2.size, y2, y2[0] if b is None else b, y2 if res2 is None else res2,
                      b is not None, res2 is not None, relu)
    else:
        width = wmat.shape[0]
        for g0, g1 in _chunks(n * ho, wo, width, x.dtype.itemsize):
            col = empty(((g1 - g0) * wo, width), x.dtype)              # (rows, T*C)
            launch_1d(_im2col, col.size, x, col, g0, ho, wo, *_geometry_args(plan, geom))
            matmul(col, wmat, y2[g0 * wo:g1 * wo], bias=b, relu=relu,
                   residual=None if res2 is None else res2[g0 * wo:g1 * wo])
    y = y2.reshape(n, ho, wo, f)                                       # (N, H_out, W_out, F)
    cache = {"x": x, "w": w, "has_bias": b is not None, "out_hw": out_hw, "plan": plan, **geom,
             "has_residual": residual is not None, "y": y if relu else None, "y_shape": (n, ho, wo, f)}
    return y, cache


def conv2d_fused_backward(dy, cache):
    """Gradients of :func:`conv2d_fused_forward`: ``(dx, dw, db, dresidual)``; ``dz = dy * [y > 0]`` (relu)
    or ``dy``, then :func:`conv2d_backward` of ``dz``, ``dresidual = dz`` (None without a residual)."""
    check_grad_shape(spec(dy), cache["y_shape"])
    dz = dy if cache["y"] is None else relu_backward(dy, {"y": cache["y"]})
    dx, dw, db = conv2d_backward(dz, cache)
    return dx, dw, db, (dz if cache["has_residual"] else None)
