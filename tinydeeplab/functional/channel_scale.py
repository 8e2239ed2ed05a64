"""The broadcast multiply of squeeze-and-excitation: per-sample, per-channel scales of a feature map.

A squeeze-and-excitation block (EfficientNet's MBConv, MobileNetV3) pools ``x`` to ``(N, 1, 1, C)``, runs
two 1x1 convolutions and a gate (sigmoid or hard-sigmoid) and rescales ``x`` channel by channel::

    y[n, h, w, c]  = x[n, h, w, c] * s[n, 0, 0, c]
    dx[n, h, w, c] = dy[n, h, w, c] * s[n, 0, 0, c]
    ds[n, 0, 0, c] = sum_{h, w} dy[n, h, w, c] * x[n, h, w, c]

(Keras: ``layers.Multiply()([x, s])`` with ``s`` of shape ``(N, 1, 1, C)``.)
"""
from __future__ import annotations

import numpy as np

from .checks import check_channel_scale_args, check_grad_shape


def channel_scale_forward(x, s):
    """``y = x * s`` with ``x`` (N, H, W, C) and ``s`` (N, 1, 1, C) broadcast over H and W; returns ``(y, cache)``.

    >>> x = np.ones((1, 2, 2, 3), np.float32); s = np.array([0.0, 0.5, 2.0], np.float32).reshape(1, 1, 1, 3)
    >>> y, cache = channel_scale_forward(x, s)
    >>> y[0, 1, 1].tolist()
    [0.0, 0.5, 2.0]
    """
    check_channel_scale_args(x, s)
    return x * s, {"x": x, "s": s}


def channel_scale_backward(dy, cache):
    """``dx = dy * s``, ``ds[n, 0, 0, c] = sum_{h,w} dy * x``; returns ``(dx, ds)``.

    >>> x = np.full((1, 2, 2, 1), 3.0); s = np.full((1, 1, 1, 1), 2.0)
    >>> y, cache = channel_scale_forward(x, s)
    >>> dx, ds = channel_scale_backward(np.ones_like(y), cache)
    >>> dx[0, :, :, 0].tolist(), ds.ravel().tolist()           # ds adds 4 pixels of 3
    ([[2.0, 2.0], [2.0, 2.0]], [12.0])
    """
    x, s = cache["x"], cache["s"]
    check_grad_shape(dy, x.shape)
    ds = np.sum(dy * x, axis=(1, 2), keepdims=True).astype(s.dtype, copy=False)   # (N, 1, 1, C)
    return dy * s, ds
