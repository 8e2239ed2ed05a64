"""Depthwise 2-D convolution, NHWC activations and a Keras ``DepthwiseConv2D`` kernel ``(KH, KW, C, M)``.

Every input channel ``c`` is convolved with its own ``M`` filters (``M`` = the depth multiplier); output
channel ``c * M + m`` (Keras's order) is::

    y[n, oh, ow, c*M + m] = b[c*M + m] + sum_{i, j} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, m]

with ``xpad``, stride, dilation and the padding rules exactly as :mod:`tinydeeplab.functional.conv`
(``"same"`` is the Keras rule of ``geometry.py``). There is no sum over channels: the op is a handful of
multiply-adds per element it reads, so it is memory-bound, not a matrix product.

As for conv2d the reference loops over the kernel taps; tap ``(i, j)`` reads a strided window of ``xpad``
and multiplies it by ``w[i, j]`` channel by channel (a broadcast, not a GEMM)::

    y5 += window_ij[..., :, None] * w[i, j]                     # (N, H_out, W_out, C, M)

Backward, the same loop read in reverse::

    dw[i, j]          = sum_{n, oh, ow} window_ij[..., :, None] * dy5      # (C, M)
    dxpad[window_ij] += sum_m dy5 * w[i, j]                                # (N, H_out, W_out, C)
    db                = sum_{n, oh, ow} dy                                 # (C * M,)

**The same exact savings as conv2d.** The live taps come from the shared plan
(:func:`~tinydeeplab.functional.conv.conv2d_plan`, which reads only the kernel's spatial size): a tap whose
rows or columns all fall in the zero padding adds nothing and is skipped by every backend, and its
``dw`` stays 0 (a rate-18 depthwise 3x3 on a 16 x 16 map runs its centre tap only).
"""
from __future__ import annotations

import numpy as np

from .checks import check_depthwise_conv2d_args, check_grad_shape
from .conv import conv2d_plan, tap_slices


def depthwise_conv2d_forward(x, w, b=None, *, stride=1, dilation=1, padding="same"):
    """Depthwise convolution (Keras ``DepthwiseConv2D``); returns ``(y, cache)`` with ``y`` (N, H_out, W_out, C*M).

    ``y[n, oh, ow, c*M + m] = b[c*M + m] + sum_{i,j} xpad[n, oh*sh + i*dh, ow*sw + j*dw, c] * w[i, j, c, m]``

    Args:
        x: ``(N, H, W, C)`` float32 or float64.
        w: ``(KH, KW, C, M)`` depthwise kernel (Keras layout), same dtype; any size, even ones included.
        b: ``(C * M,)`` bias or None.
        stride, dilation, padding: as :func:`~tinydeeplab.functional.conv2d_forward`.

    >>> x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    >>> w = np.ones((3, 3, 3, 2), np.float32)                      # depth multiplier 2
    >>> y, cache = depthwise_conv2d_forward(x, w, stride=2)
    >>> y.shape                                                    # "same": ceil(5 / 2) = 3; 3 * 2 channels
    (2, 3, 3, 6)
    >>> y, _ = depthwise_conv2d_forward(x, w, padding="valid")
    >>> float(y[0, 0, 0, 2]) == float(x[0, :3, :3, 1].sum())      # output channel 2 = input channel 1, m = 0
    True
    """
    stride, dilation = check_depthwise_conv2d_args(x, w, b, stride, dilation)
    n, _, _, c = x.shape
    m = w.shape[3]
    plan = conv2d_plan(x.shape, w.shape, stride, dilation, padding)
    (pt, pb), (pl, pr) = plan.pads
    ho, wo = plan.out_hw

    xpad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))        # (N, H + pt + pb, W + pl + pr, C)
    y5 = np.zeros((n, ho, wo, c, m), dtype=x.dtype)               # (N, H_out, W_out, C, M)
    live_taps = [(i, j) for i, j, _, _ in plan.taps]              # taps that read only padding are skipped
    for i, j in live_taps:
        window = xpad[tap_slices(i, j, dilation, stride, plan.out_hw)]   # (N, H_out, W_out, C)
        y5 += window[..., None] * w[i, j]                                # (C, M) broadcast
    y = y5.reshape(n, ho, wo, c * m)                                     # channel c * M + m
    if b is not None:
        y += b
    cache = {"xpad": xpad, "w": w, "has_bias": b is not None, "x_shape": x.shape, "pads": plan.pads,
             "stride": stride, "dilation": dilation, "out_hw": plan.out_hw, "live_taps": live_taps}
    return y, cache


def depthwise_conv2d_backward(dy, cache):
    """Gradients of :func:`depthwise_conv2d_forward`; returns ``(dx, dw, db)`` (``db`` None without bias).

    ``dw[i, j, c, m] = sum_{n,oh,ow} window_ij[n, oh, ow, c] dy[n, oh, ow, c*M + m]``,
    ``dx = crop(sum_{i,j} scatter_ij(sum_m dy[..., c*M + m] w[i, j, c, m]))``, ``db = sum_{n,oh,ow} dy``.

    >>> x = np.ones((1, 4, 4, 2)); w = np.ones((3, 3, 2, 1))
    >>> y, cache = depthwise_conv2d_forward(x, w, padding="valid")
    >>> dx, dw, db = depthwise_conv2d_backward(np.ones_like(y), cache)
    >>> dx[0, :, :, 1].astype(int).tolist()   # how many output windows cover each input pixel
    [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    >>> dw[:, :, 0, 0].tolist(), db            # each tap reads 4 ones
    ([[4.0, 4.0, 4.0], [4.0, 4.0, 4.0], [4.0, 4.0, 4.0]], None)
    """
    xpad, w = cache["xpad"], cache["w"]
    n, h, wd, c = cache["x_shape"]
    m = w.shape[3]
    (pt, _), (pl, _) = cache["pads"]
    stride, dilation, out_hw = cache["stride"], cache["dilation"], cache["out_hw"]
    check_grad_shape(dy, (n, *out_hw, c * m))

    dy5 = dy.reshape(n, *out_hw, c, m)               # (N, H_out, W_out, C, M)
    dxpad = np.zeros_like(xpad)                      # (N, H + pt + pb, W + pl + pr, C)
    dw = np.zeros_like(w)                            # (KH, KW, C, M)
    for i, j in cache["live_taps"]:
        idx = tap_slices(i, j, dilation, stride, out_hw)
        window = xpad[idx]                                                  # (N, H_out, W_out, C)
        dw[i, j] = np.einsum("nhwc,nhwcm->cm", window, dy5)                 # (C, M)
        dxpad[idx] += np.einsum("nhwcm,cm->nhwc", dy5, w[i, j])             # (N, H_out, W_out, C)
    dx = dxpad[:, pt:pt + h, pl:pl + wd, :].copy()                          # crop the padding away
    db = dy.sum(axis=(0, 1, 2)).astype(w.dtype) if cache["has_bias"] else None
    return dx, dw.astype(w.dtype, copy=False), db
