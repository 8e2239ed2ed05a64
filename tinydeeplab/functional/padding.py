"""Zero padding of the spatial axes (Keras ``ZeroPadding2D``).

Forward: ``y = x`` placed at ``y[:, top : top + H, left : left + W, :]``, zeros elsewhere.
Backward: the adjoint of that embedding is the crop ``dx = dy[:, top : top + H, left : left + W, :]``.
"""
from __future__ import annotations

import numbers

import numpy as np

from .checks import check_grad_shape, check_nhwc, pair


def resolve_zero_padding(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """``padding`` as ``((top, bottom), (left, right))``: an int, ``(ph, pw)`` or explicit pairs, all >= 0.

    >>> resolve_zero_padding(1), resolve_zero_padding((1, 2)), resolve_zero_padding(((0, 1), (2, 3)))
    (((1, 1), (1, 1)), ((1, 1), (2, 2)), ((0, 1), (2, 3)))
    """
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and not all(
            isinstance(p, numbers.Integral) for p in padding):
        if not all(isinstance(p, (tuple, list)) for p in padding):
            raise ValueError(f"padding must be an int, (ph, pw) or ((top, bottom), (left, right)), got {padding!r}")
        return pair(tuple(padding[0]), "padding[0]", minimum=0), pair(tuple(padding[1]), "padding[1]", minimum=0)
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int, (ph, pw) or ((top, bottom), (left, right)), got {padding!r}")
    ph, pw = pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


def zero_pad2d_forward(x, padding):
    """Pad H and W with zeros: ``y[:, t:t+H, l:l+W, :] = x``; returns ``(y, cache)``.

    ``padding``: int, ``(ph, pw)`` or ``((top, bottom), (left, right))``.

    >>> y, cache = zero_pad2d_forward(np.ones((1, 2, 2, 1), np.float32), ((1, 0), (0, 1)))
    >>> y[0, :, :, 0].tolist()
    [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    """
    check_nhwc(x, "x")
    (t, b), (l, r) = pads = resolve_zero_padding(padding)
    y = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))   # (N, H + t + b, W + l + r, C)
    return y, {"pads": pads, "x_shape": x.shape}


def zero_pad2d_backward(dy, cache):
    """Gradient of :func:`zero_pad2d_forward`: crop ``dx = dy[:, t:t+H, l:l+W, :]``.

    >>> y, cache = zero_pad2d_forward(np.ones((1, 2, 2, 1)), 1)
    >>> zero_pad2d_backward(np.arange(16.0).reshape(1, 4, 4, 1), cache)[0, :, :, 0].tolist()
    [[5.0, 6.0], [9.0, 10.0]]
    """
    (t, b), (l, r) = cache["pads"]
    n, h, w, c = cache["x_shape"]
    check_grad_shape(dy, (n, h + t + b, w + l + r, c))
    return dy[:, t:t + h, l:l + w, :].copy()   # (N, H, W, C)
