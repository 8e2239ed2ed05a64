"""2-D convolution, NHWC activations and HWIO kernels (Keras layout).

Forward, for output pixel ``(n, oh, ow)`` and filter ``f``::

    y[n, oh, ow, f] = b[f] + sum_{i, j, c} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, f]

where ``xpad`` is ``x`` zero-padded by ``((top, bottom), (left, right))``, ``(sh, sw)`` the stride and
``(dh, dw)`` the dilation (``dilation=1`` is an ordinary convolution, the Keras convention).

The reference loops over the ``KH * KW`` kernel taps. For a fixed tap ``(i, j)`` the pixels it reads
form a strided slice of ``xpad``, and the whole tap is one matrix product::

    y += xpad[:, i*dh : i*dh + (H_out-1)*sh + 1 : sh, j*dw : j*dw + (W_out-1)*sw + 1 : sw, :] @ w[i, j]
         # (N, H_out, W_out, C) @ (C, F) -> (N, H_out, W_out, F)

Backward (the same loop, read in reverse)::

    dw[i, j]  = sum_{n, oh, ow} window_ij^T dy          # (C, F)
    dxpad[window_ij] += dy @ w[i, j]^T                  # scatter into the padded input, then crop
    db        = sum_{n, oh, ow} dy                      # (F,)

A tap whose rows (or columns) all fall in the zero padding reads only zeros: it adds nothing to ``y``,
``dw[i, j]`` stays 0 and nothing reaches ``dx``, so it is skipped. With a dilation larger than the
input (an ASPP rate of 18 on a 16 x 16 map) only the centre tap survives.

**The plan.** Which taps are live, and where each one reads real pixels, depends only on the shapes
and options. :func:`conv2d_plan` works it out once, and every backend (this reference, the Numba CPU
and the CUDA kernels) runs the convolution it describes.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checks import check_conv2d_args, check_conv_epilogue, check_grad_shape
from .geometry import window_geometry


def tap_slices(i: int, j: int, dilation, stride, out_hw) -> tuple[slice, slice, slice, slice]:
    """Index of the pixels of ``xpad`` read by kernel tap ``(i, j)``: a strided window ``(N, H_out, W_out, C)``.

    >>> tap_slices(1, 2, (1, 2), (2, 1), (3, 4))[1:3]       # rows 1, 3, 5; columns 4 .. 7
    (slice(1, 6, 2), slice(4, 8, 1))
    """
    (dh, dw), (sh, sw), (ho, wo) = dilation, stride, out_hw
    r0, c0 = i * dh, j * dw
    return (slice(None), slice(r0, r0 + (ho - 1) * sh + 1, sh), slice(c0, c0 + (wo - 1) * sw + 1, sw), slice(None))


def tap_output_range(offset: int, stride: int, pad_before: int, size: int, n_out: int) -> tuple[int, int]:
    """Outputs ``[o0, o1)`` along one axis whose tap at ``offset`` (``i * d``) reads a real pixel:
    ``0 <= o * stride - pad_before + offset < size``. Empty (``o0 == o1``) for a dead tap.

    >>> tap_output_range(0, 1, 12, 16, 16), tap_output_range(12, 1, 12, 16, 16)   # rate 12 on 16 rows
    ((12, 16), (0, 16))
    """
    o0 = max(0, -(-(pad_before - offset) // stride))                 # ceil((pad_before - offset) / stride)
    o1 = min(n_out, (size - 1 + pad_before - offset) // stride + 1)
    return o0, max(o0, o1)


class ConvPlan(NamedTuple):
    """What :func:`conv2d_plan` works out for a convolution (shapes only, no data).

    ``pads`` ``((top, bottom), (left, right))``, ``out_hw`` ``(H_out, W_out)``; ``live_h`` / ``live_w`` the
    kernel indices ``i`` / ``j`` of the live taps along each axis (usually consecutive, but a stride larger
    than the input can step over it: on one pixel padded by 2, a 3-wide kernel at stride 2 has taps 0 and 2
    live and 1 dead); ``taps`` every live tap as ``(i, j, (o0, o1), (p0, p1))``, the output rows and
    columns where it reads real pixels, row-major; ``gemm_only`` when the one live tap reads ``x`` itself
    (a 1x1 convolution: one GEMM on the reshaped tensor); ``dead_fraction`` the share of an im2col's
    products (outputs x live taps) that would multiply padding.
    """
    pads: tuple
    out_hw: tuple
    live_h: tuple
    live_w: tuple
    taps: tuple
    gemm_only: bool
    dead_fraction: float


def conv2d_plan(x_shape, w_shape, stride, dilation, padding) -> ConvPlan:
    """Padding, output size and live taps of a convolution; ``stride`` and ``dilation`` as pairs.

    A padding spec that is malformed, or leaves the window larger than the padded input, raises
    ``ValueError`` (from :func:`~tinydeeplab.functional.geometry.window_geometry`).

    >>> p = conv2d_plan((1, 16, 16, 4), (3, 3, 4, 8), (1, 1), (18, 18), "same")   # ASPP rate 18 at 16 x 16
    >>> p.live_h, p.live_w, p.gemm_only
    ((1,), (1,), True)
    >>> p = conv2d_plan((1, 16, 16, 4), (3, 3, 4, 8), (1, 1), (12, 12), "same")
    >>> p.live_h, p.taps[0], p.dead_fraction                                       # 24 of 48 reads are real
    ((0, 1, 2), (0, 0, (12, 16), (12, 16)), 0.75)
    """
    kh, kw = w_shape[:2]
    pads, out_hw = window_geometry(x_shape, (kh, kw), stride, dilation, padding, name="x")
    (pt, _), (pl, _) = pads
    rows = [tap_output_range(i * dilation[0], stride[0], pt, x_shape[1], out_hw[0]) for i in range(kh)]
    cols = [tap_output_range(j * dilation[1], stride[1], pl, x_shape[2], out_hw[1]) for j in range(kw)]
    live_h = tuple(i for i in range(kh) if rows[i][1] > rows[i][0])
    live_w = tuple(j for j in range(kw) if cols[j][1] > cols[j][0])
    taps = tuple((i, j, rows[i], cols[j]) for i in live_h for j in live_w)
    gemm_only = (len(live_h) == 1 and len(live_w) == 1 and tuple(stride) == (1, 1)
                 and live_h[0] * dilation[0] == pt and live_w[0] * dilation[1] == pl
                 and tuple(out_hw) == tuple(x_shape[1:3]))
    real = sum((r1 - r0) * (c1 - c0) for _, _, (r0, r1), (c0, c1) in taps)    # products with real pixels
    total = out_hw[0] * out_hw[1] * len(live_h) * len(live_w)                  # products im2col would do
    dead = 1.0 - real / total if total else 1.0
    return ConvPlan(pads, tuple(out_hw), live_h, live_w, taps, gemm_only, dead)


def conv2d_forward(x, w, b=None, *, stride=1, dilation=1, padding="same"):
    """2-D convolution ``y = conv(x, w) + b``; returns ``(y, cache)``.

    ``y[n, oh, ow, f] = b[f] + sum_{i,j,c} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, f]``

    Args:
        x: ``(N, H, W, C)`` float32 or float64.
        w: ``(KH, KW, C, F)`` kernel (HWIO), same dtype as ``x``. Any size, even ones included.
        b: ``(F,)`` bias or None.
        stride, dilation: int or ``(h, w)`` pair, each >= 1.
        padding: ``"same"`` (Keras rule: output ``ceil(H / s)``, extra padding after), ``"valid"``,
            an int, ``(ph, pw)`` or ``((top, bottom), (left, right))``.

    >>> x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    >>> w = np.ones((3, 3, 3, 4), np.float32)
    >>> y, cache = conv2d_forward(x, w, stride=2)
    >>> y.shape                                          # "same": ceil(5 / 2) = 3
    (2, 3, 3, 4)
    >>> conv2d_forward(x, w, padding="valid")[0].shape    # 5 - 3 + 1 = 3
    (2, 3, 3, 4)
    >>> float(conv2d_forward(x, w, padding="valid")[0][0, 0, 0, 0]) == float(x[0, :3, :3].sum())
    True
    """
    stride, dilation = check_conv2d_args(x, w, b, stride, dilation)
    f = w.shape[3]
    n = x.shape[0]
    plan = conv2d_plan(x.shape, w.shape, stride, dilation, padding)
    pads, out_hw = plan.pads, plan.out_hw
    (pt, pb), (pl, pr) = pads
    ho, wo = out_hw

    xpad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))   # (N, H + pt + pb, W + pl + pr, C)
    y = np.zeros((n, ho, wo, f), dtype=x.dtype)              # (N, H_out, W_out, F)
    live_taps = [(i, j) for i, j, _, _ in plan.taps]         # taps that read only padding are skipped
    for i, j in live_taps:
        window = xpad[tap_slices(i, j, dilation, stride, out_hw)]   # (N, H_out, W_out, C)
        y += window @ w[i, j]                                       # (C, F) -> (N, H_out, W_out, F)
    if b is not None:
        y += b
    cache = {"xpad": xpad, "w": w, "has_bias": b is not None, "x_shape": x.shape, "pads": pads,
             "stride": stride, "dilation": dilation, "out_hw": out_hw, "live_taps": live_taps}
    return y, cache


def conv2d_backward(dy, cache):
    """Gradients of :func:`conv2d_forward`; returns ``(dx, dw, db)`` (``db`` is None without bias).

    ``dw[i, j] = sum_{n,oh,ow} window_ij[n, oh, ow, :]^T dy[n, oh, ow, :]``,
    ``dx = crop(sum_{i,j} scatter_ij(dy @ w[i, j]^T))``, ``db = sum_{n,oh,ow} dy``.

    >>> x = np.ones((1, 4, 4, 2)); w = np.ones((3, 3, 2, 1))
    >>> y, cache = conv2d_forward(x, w, padding="valid")
    >>> dx, dw, db = conv2d_backward(np.ones_like(y), cache)
    >>> dx[0, :, :, 0].astype(int).tolist()   # how many output windows cover each input pixel
    [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    >>> dw.shape, db
    ((3, 3, 2, 1), None)
    """
    xpad, w = cache["xpad"], cache["w"]
    n, h, wd, _ = cache["x_shape"]
    (pt, _), (pl, _) = cache["pads"]
    stride, dilation, out_hw = cache["stride"], cache["dilation"], cache["out_hw"]
    check_grad_shape(dy, (n, *out_hw, w.shape[3]))

    dxpad = np.zeros_like(xpad)     # (N, H + pt + pb, W + pl + pr, C)
    dw = np.zeros_like(w)           # (KH, KW, C, F)
    for i, j in cache["live_taps"]:
        idx = tap_slices(i, j, dilation, stride, out_hw)
        window = xpad[idx]                                                  # (N, H_out, W_out, C)
        dw[i, j] = np.tensordot(window, dy, axes=([0, 1, 2], [0, 1, 2]))    # (C, F)
        dxpad[idx] += dy @ w[i, j].T                                        # (N, H_out, W_out, C)
    dx = dxpad[:, pt:pt + h, pl:pl + wd, :].copy()                          # crop the padding away
    db = dy.sum(axis=(0, 1, 2)).astype(w.dtype) if cache["has_bias"] else None
    return dx, dw.astype(w.dtype, copy=False), db


def conv2d_fused_forward(x, w, b=None, residual=None, *, stride=1, dilation=1, padding="same", relu=False):
    """A convolution with its epilogue fused in: ``y = act(conv(x, w) + b + residual)``; returns ``(y, cache)``.

    ``y[n, oh, ow, f] = act(b[f] + sum_{i,j,c} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, f]
    + residual[n, oh, ow, f])`` with ``act`` the ReLU ``max(., 0)`` when ``relu`` else the identity; ``b`` and
    ``residual`` (N, H_out, W_out, F) are optional. The additions happen in that order (conv, + b, + residual),
    as the separate ops conv2d -> add -> relu would do them, so the result equals that chain exactly.

    It is what an inference plan (:mod:`tinydeeplab.nn.inference_plan`) runs for conv -> BN [-> ReLU] with the
    batch norm folded into ``w`` and ``b``, and for a residual block's last conv -> BN -> add -> ReLU: one
    pass over the output instead of three. The kernels apply the epilogue where the output is written (the
    CPU per GEMM chunk, the GPU inside the GEMM's store), this reference after the convolution.

    Backward (``z`` the value before the activation, ``[y > 0] = [z > 0]``)::

        dz = dy * [y > 0]   (relu)   or   dy
        dx, dw, db = conv2d_backward(dz)          dresidual = dz

    >>> x = np.ones((1, 3, 3, 1), np.float32); w = np.ones((1, 1, 1, 2), np.float32)
    >>> y, _ = conv2d_fused_forward(x, w, np.array([-2.0, 1.0], np.float32), relu=True)
    >>> y[0, 0, 0].tolist()                                # max(1 - 2, 0), max(1 + 1, 0)
    [0.0, 2.0]
    """
    y, conv_cache = conv2d_forward(x, w, b, stride=stride, dilation=dilation, padding=padding)
    check_conv_epilogue(residual, y.shape, y.dtype, relu)
    if residual is not None:
        y += residual
    if relu:
        np.maximum(y, 0, out=y)
    return y, {"conv": conv_cache, "y": y if relu else None, "has_residual": residual is not None,
               "y_shape": tuple(y.shape)}


def conv2d_fused_backward(dy, cache):
    """Gradients of :func:`conv2d_fused_forward`; returns ``(dx, dw, db, dresidual)`` (``db`` None without a
    bias, ``dresidual`` None without a residual): ``dz = dy * [y > 0]`` (relu) then the conv backward,
    ``dresidual = dz``."""
    check_grad_shape(dy, cache["y_shape"])
    dz = dy if cache["y"] is None else np.where(cache["y"] > 0, dy, 0).astype(cache["y"].dtype, copy=False)
    dx, dw, db = conv2d_backward(dz, cache["conv"])
    return dx, dw, db, (dz if cache["has_residual"] else None)
