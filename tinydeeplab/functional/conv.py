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
"""
from __future__ import annotations

import numpy as np

from ._checks import check_conv2d_args, check_grad_shape
from .geometry import window_geometry


def _tap_slices(i: int, j: int, dilation, stride, out_hw) -> tuple[slice, slice, slice, slice]:
    """Index of the pixels of ``xpad`` read by kernel tap ``(i, j)``: a strided window ``(N, H_out, W_out, C)``."""
    (dh, dw), (sh, sw), (ho, wo) = dilation, stride, out_hw
    r0, c0 = i * dh, j * dw
    return (slice(None), slice(r0, r0 + (ho - 1) * sh + 1, sh), slice(c0, c0 + (wo - 1) * sw + 1, sw), slice(None))


def _tap_is_live(offset: int, pad_before: int, size: int, stride: int, n_out: int) -> bool:
    """True when some of the rows ``offset, offset + stride, ...`` (``n_out`` of them) lie inside the input,
    i.e. in ``[pad_before, pad_before + size)`` of the padded axis."""
    rows = offset + stride * np.arange(n_out)
    return bool(np.any((rows >= pad_before) & (rows < pad_before + size)))


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
    kh, kw, c, f = w.shape
    n, h, wd, _ = x.shape
    pads, out_hw = window_geometry(x.shape, (kh, kw), stride, dilation, padding, name="x")
    (pt, pb), (pl, pr) = pads
    ho, wo = out_hw

    xpad = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))   # (N, H + pt + pb, W + pl + pr, C)
    y = np.zeros((n, ho, wo, f), dtype=x.dtype)              # (N, H_out, W_out, F)
    live_taps = []
    for i in range(kh):
        if not _tap_is_live(i * dilation[0], pt, h, stride[0], ho):
            continue                                         # every row this tap reads is padding
        for j in range(kw):
            if not _tap_is_live(j * dilation[1], pl, wd, stride[1], wo):
                continue
            window = xpad[_tap_slices(i, j, dilation, stride, out_hw)]  # (N, H_out, W_out, C)
            y += window @ w[i, j]                                        # (C, F) -> (N, H_out, W_out, F)
            live_taps.append((i, j))
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
        idx = _tap_slices(i, j, dilation, stride, out_hw)
        window = xpad[idx]                                                  # (N, H_out, W_out, C)
        dw[i, j] = np.tensordot(window, dy, axes=([0, 1, 2], [0, 1, 2]))    # (C, F)
        dxpad[idx] += dy @ w[i, j].T                                        # (N, H_out, W_out, C)
    dx = dxpad[:, pt:pt + h, pl:pl + wd, :].copy()                          # crop the padding away
    db = dy.sum(axis=(0, 1, 2)).astype(w.dtype) if cache["has_bias"] else None
    return dx, dw.astype(w.dtype, copy=False), db
