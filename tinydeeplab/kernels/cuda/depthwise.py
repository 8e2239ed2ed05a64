"""Depthwise 2-D convolution on the GPU: direct kernels, one thread per output element (no im2col, no GEMM).

Same maths as :mod:`tinydeeplab.functional.depthwise` (NHWC, kernel ``(KH, KW, C, M)``, output channel
``c * M + m``)::

    y[n, oh, ow, c*M + m] = b[c*M + m] + sum_{i, j} x[n, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c] * w[i, j, c, m]

The op is memory-bound (``KH * KW`` multiply-adds per output), so the fast path is the direct one: thread
``(n, oh, ow, o)`` of a grid-stride loop reads its ``KH * KW`` inputs (neighbouring threads read
neighbouring channels: coalesced) and writes one output; an index in the padding reads nothing. The taps
run from the first to the last live one per axis of the shared
:func:`~tinydeeplab.functional.conv.conv2d_plan` (as the CUDA conv2d), so a dilated tap that reads only
padding is never visited.

Backward:

* ``dx``: a gather, one thread per element of ``dx``: ``(n, h, w, c)`` finds the outputs whose taps read it
  (``oh = (h + pt - i*dh) / sh`` when that divides) and adds ``sum_m dy[.., c*M + m] * w[i, j, c, m]``;
* ``dw``: thread ``(k, a, b, o)`` sums ``x * dy`` of live tap ``(a, b)`` and channel ``o`` over the output rows
  of chunk ``k`` into a float64 ``(chunks, TH * TW * C * M)`` buffer; the column sums of :mod:`.reduce` add
  the chunks (a fixed order: deterministic). The live taps go back into a zero ``dw`` with
  :func:`~.conv.copy_into_taps`;
* ``db``: column sums of ``dy``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ...functional.checks import check_depthwise_conv2d_args, check_grad_shape
from ...functional.conv import conv2d_plan
from .conv import add_bias, copy_into_taps
from .device import SIMULATED, cast, empty, launch_1d, require_device, spec, unravel_nhwc, zeros
from .reduce import column_sums

DW_THREADS_TARGET = 64 if SIMULATED else 1 << 16
"""About how many threads the weight gradient's first stage runs (chunks x live weights)."""


@cuda.jit
def _depthwise(x, w, y, m, i0, n_th, j0, n_tw, sh, sw, dh, dw, pt, pl):
    """``y`` (N, H_out, W_out, C*M) from ``x`` (N, H, W, C) and ``w`` (KH, KW, C, M), taps ``i0 + a``, ``j0 + b``."""
    _, h_in, w_in, _ = x.shape
    _, out_h, out_w, cm = y.shape
    for idx in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, oh, ow, o = unravel_nhwc(idx, out_h, out_w, cm)
        c = o // m
        k = o - c * m
        acc = 0.0
        for a in range(n_th):
            h = oh * sh - pt + (i0 + a) * dh
            if 0 <= h < h_in:
                for b in range(n_tw):
                    wc = ow * sw - pl + (j0 + b) * dw
                    if 0 <= wc < w_in:
                        acc += x[n, h, wc, c] * w[i0 + a, j0 + b, c, k]
        y[n, oh, ow, o] = acc


@cuda.jit
def _depthwise_dx(dy, w, dx, m, i0, n_th, j0, n_tw, sh, sw, dh, dw, pt, pl):
    """``dx[n, h, w, c] = sum over the (tap, output) that read it of sum_k dy[.., c*M + k] * w[i, j, c, k]``."""
    _, h_in, w_in, c_in = dx.shape
    _, out_h, out_w, _ = dy.shape
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, wc, c = unravel_nhwc(idx, h_in, w_in, c_in)
        acc = 0.0
        for a in range(n_th):
            t = h + pt - (i0 + a) * dh                  # = oh * sh if tap row a of output row oh reads h
            if t < 0 or t % sh != 0 or t // sh >= out_h:
                continue
            oh = t // sh
            for b in range(n_tw):
                u = wc + pl - (j0 + b) * dw
                if u < 0 or u % sw != 0 or u // sw >= out_w:
                    continue
                ow = u // sw
                for k in range(m):
                    acc += dy[n, oh, ow, c * m + k] * w[i0 + a, j0 + b, c, k]
        dx[n, h, wc, c] = acc


@cuda.jit
def _depthwise_dw_partials(x, dy, partial, m, i0, n_th, j0, n_tw, sh, sw, dh, dw, pt, pl):
    """``partial[k, (a*TW + b)*C*M + o] = sum over output rows of chunk k of x[.., o // M] * dy[.., o]``."""
    n_img, h_in, w_in, _ = x.shape
    _, out_h, out_w, cm = dy.shape
    n_chunks, width = partial.shape
    rows = n_img * out_h
    for idx in range(cuda.grid(1), partial.size, cuda.gridsize(1)):
        kchunk = idx // width
        q = idx - kchunk * width
        a = q // (n_tw * cm)
        b = (q // cm) % n_tw
        o = q % cm
        c = o // m
        acc = 0.0
        for g in range(kchunk * rows // n_chunks, (kchunk + 1) * rows // n_chunks):
            n = g // out_h
            oh = g - n * out_h
            h = oh * sh - pt + (i0 + a) * dh
            if h < 0 or h >= h_in:
                continue
            for ow in range(out_w):
                wc = ow * sw - pl + (j0 + b) * dw
                if 0 <= wc < w_in:
                    acc += x[n, h, wc, c] * dy[n, oh, ow, o]
        partial[kchunk, q] = acc


def _tap_range(plan):
    """Per axis ``(first, count)`` from the first to the last live tap of a conv plan (``(0, 0)`` if none)."""
    def span(live):
        return (live[0], live[-1] - live[0] + 1) if live else (0, 0)
    return (*span(plan.live_h), *span(plan.live_w))


def _launch_args(cache):
    (sh, sw), (dh, dw), ((pt, _), (pl, _)) = cache["stride"], cache["dilation"], cache["pads"]
    return (*cache["taps"], sh, sw, dh, dw, pt, pl)


def depthwise_conv2d_forward(x, w, b=None, *, stride=1, dilation=1, padding="same"):
    """Depthwise convolution on device arrays; returns ``(y, cache)``, ``y`` (N, H_out, W_out, C*M).

    Arguments and results as :func:`tinydeeplab.functional.depthwise_conv2d_forward`.
    """
    stride, dilation = check_depthwise_conv2d_args(spec(x), spec(w), spec(b), stride, dilation)
    for a, name in ((x, "x"), (w, "w")) + (((b, "b"),) if b is not None else ()):
        require_device(a, name)
    n, _, _, c = x.shape
    m = w.shape[3]
    plan = conv2d_plan(tuple(x.shape), tuple(w.shape), stride, dilation, padding)
    ho, wo = plan.out_hw
    cache = {"x": x, "w": w, "has_bias": b is not None, "pads": plan.pads, "stride": stride,
             "dilation": dilation, "out_hw": plan.out_hw, "taps": _tap_range(plan)}
    y = empty((n, ho, wo, c * m), x.dtype)                             # (N, H_out, W_out, C*M)
    launch_1d(_depthwise, y.size, x, w, y, m, *_launch_args(cache))
    if b is not None:
        add_bias(y.reshape(n * ho * wo, c * m), b)
    return y, cache


def depthwise_conv2d_backward(dy, cache):
    """Gradients of :func:`depthwise_conv2d_forward`; returns ``(dx, dw, db)`` device arrays (``db`` None without bias)."""
    x, w = cache["x"], cache["w"]
    n, _, _, c = x.shape
    kh, kw, _, m = w.shape
    ho, wo = cache["out_hw"]
    check_grad_shape(spec(dy), (n, ho, wo, c * m))
    require_device(dy, "dy")
    if dy.dtype != x.dtype:
        dy = cast(dy, x.dtype)
    args = _launch_args(cache)
    i0, n_th, j0, n_tw = cache["taps"]

    dx = empty(x.shape, x.dtype)                                       # (N, H, W, C)
    launch_1d(_depthwise_dx, dx.size, dy, w, dx, m, *args)
    width = n_th * n_tw * c * m                                        # live weights
    dw = zeros(w.shape, w.dtype)                                       # dead taps keep a zero gradient
    if width > 0:
        chunks = max(1, min(n * ho, DW_THREADS_TARGET // width))
        partial = empty((chunks, width), np.float64)                   # (chunks, TH*TW*C*M)
        launch_1d(_depthwise_dw_partials, partial.size, x, dy, partial, m, *args)
        live = cast(column_sums(partial), w.dtype).reshape(n_th * n_tw * c, m)   # chunks added in order
        copy_into_taps(dw, live, i0, n_th, j0, n_tw, to_taps=False)
    db = cast(column_sums(dy.reshape(n * ho * wo, c * m)), w.dtype) if cache["has_bias"] else None
    return dx, dw, db
