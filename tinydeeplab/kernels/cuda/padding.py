"""Zero padding of the spatial axes on the GPU (Keras ``ZeroPadding2D``), elementwise, grid-stride.

Forward ``y[n, h, w, c] = x[n, h - t, w - l, c]`` inside, 0 in the border; backward the crop
``dx = dy[:, t:t+H, l:l+W, :]`` (the adjoint of the embedding).
"""
from __future__ import annotations

from numba import cuda

from ...functional.checks import check_grad_shape, check_nhwc
from ...functional.padding import resolve_zero_padding
from .device import empty, launch_1d, require_device, spec, unravel_nhwc


@cuda.jit
def _pad(x, y, top, left):
    """``y[n, h, w, c] = x[n, h - top, w - left, c]`` where that is inside ``x``, else 0."""
    n_img, h_out, w_out, c_n = y.shape
    for idx in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_out, w_out, c_n)
        hs, ws = h - top, w - left
        if 0 <= hs < x.shape[1] and 0 <= ws < x.shape[2]:
            y[n, h, w, c] = x[n, hs, ws, c]
        else:
            y[n, h, w, c] = 0


@cuda.jit
def _crop(dy, dx, top, left):
    """``dx[n, h, w, c] = dy[n, h + top, w + left, c]``."""
    n_img, h_in, w_in, c_n = dx.shape
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_in, w_in, c_n)
        dx[n, h, w, c] = dy[n, h + top, w + left, c]


def zero_pad2d_forward(x, padding):
    """Pad H and W with zeros: ``y[:, t:t+H, l:l+W, :] = x``; returns ``(y, cache)``."""
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    (t, b), (l, r) = pads = resolve_zero_padding(padding)
    n, h, w, c = x.shape
    y = empty((n, h + t + b, w + l + r, c), x.dtype)                    # (N, H + t + b, W + l + r, C)
    launch_1d(_pad, y.size, x, y, t, l)
    return y, {"pads": pads, "x_shape": tuple(x.shape)}


def zero_pad2d_backward(dy, cache):
    """Gradient of :func:`zero_pad2d_forward`: the crop ``dx = dy[:, t:t+H, l:l+W, :]``."""
    (t, b), (l, r) = cache["pads"]
    n, h, w, c = cache["x_shape"]
    check_grad_shape(spec(dy), (n, h + t + b, w + l + r, c))
    require_device(dy, "dy")
    dx = empty((n, h, w, c), dy.dtype)
    launch_1d(_crop, dx.size, dy, dx, t, l)
    return dx
