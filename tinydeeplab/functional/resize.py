"""Bilinear resizing with half-pixel centres (Keras ``Resizing`` / ``UpSampling2D(interpolation="bilinear")``).

Along one axis resized from ``n_in`` to ``n_out`` samples, output ``o`` mixes two input samples
(coefficients from :func:`~tinydeeplab.functional.resize_coeffs.bilinear_coefficients`)::

    out[o] = (1 - t[o]) * in[i0[o]] + t[o] * in[i1[o]]

That is a linear map ``out = R @ in`` with a sparse ``(n_out, n_in)`` matrix ``R`` holding two
weights per row (added together where the edge clamp makes ``i0 == i1``). Bilinear resizing is
separable: resize along H with ``R_h``, then along W with ``R_w``::

    y[n, :, :, c] = R_h @ x[n, :, :, c] @ R_w^T          # (H_out, H) (H, W) (W, W_out)

The reference builds the two small matrices explicitly. The backward is then simply the adjoint
(the transpose), applied in reverse order::

    dx[n, :, :, c] = R_h^T @ dy[n, :, :, c] @ R_w         # (H, H_out) (H_out, W_out) (W_out, W)

Shrinking uses the same two-tap formula (no antialiasing), like Keras.
"""
from __future__ import annotations

import numpy as np

from .checks import check_grad_shape, check_nhwc, pair
from .resize_coeffs import bilinear_coefficients


def interpolation_matrix(n_in: int, n_out: int, dtype=np.float64) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix ``R`` of 1-D bilinear resizing: ``out = R @ in``. Rows sum to 1.

    >>> interpolation_matrix(2, 4).tolist()        # 2x upsample: 0.75/0.25 mixes, edge rows clamp
    [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    i0, i1, t = bilinear_coefficients(n_in, n_out)
    r = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(r, (rows, i0), 1.0 - t)   # add.at: i0 == i1 at a clamped edge, the weights must add up
    np.add.at(r, (rows, i1), t)
    return r.astype(dtype)


def bilinear_resize_forward(x, size):
    """Resize ``x`` to ``size = (H_out, W_out)``: ``y[n, :, :, c] = R_h @ x[n, :, :, c] @ R_w^T``.

    Half-pixel centres, edge clamp, no antialias; works up and down. Returns ``(y, cache)``.

    >>> x = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32).reshape(1, 2, 2, 1)
    >>> y, cache = bilinear_resize_forward(x, (4, 4))
    >>> y[0, :, :, 0].tolist()
    [[0.0, 1.0, 3.0, 4.0], [2.0, 3.0, 5.0, 6.0], [6.0, 7.0, 9.0, 10.0], [8.0, 9.0, 11.0, 12.0]]
    """
    check_nhwc(x, "x")
    h_out, w_out = pair(size, "size")
    n, h, w, c = x.shape
    r_h = interpolation_matrix(h, h_out, x.dtype)          # (H_out, H)
    r_w = interpolation_matrix(w, w_out, x.dtype)          # (W_out, W)
    y = r_h @ x.reshape(n, h, w * c)                       # along H: (N, H_out, W*C)
    y = r_w @ y.reshape(n * h_out, w, c)                   # along W: (N*H_out, W_out, C)
    y = y.reshape(n, h_out, w_out, c)                      # (N, H_out, W_out, C)
    return y, {"r_h": r_h, "r_w": r_w, "x_shape": x.shape}


def bilinear_resize_backward(dy, cache):
    """Adjoint of :func:`bilinear_resize_forward`: ``dx[n, :, :, c] = R_h^T @ dy[n, :, :, c] @ R_w``.

    >>> y, cache = bilinear_resize_forward(np.zeros((1, 2, 2, 1)), (4, 4))
    >>> bilinear_resize_backward(np.ones((1, 4, 4, 1)), cache)[0, :, :, 0].tolist()   # 16 split over 4
    [[4.0, 4.0], [4.0, 4.0]]
    """
    r_h, r_w = cache["r_h"], cache["r_w"]
    n, h, w, c = cache["x_shape"]
    h_out, w_out = r_h.shape[0], r_w.shape[0]
    check_grad_shape(dy, (n, h_out, w_out, c))
    dx = r_w.T @ dy.reshape(n * h_out, w_out, c)           # along W: (N*H_out, W, C)
    dx = r_h.T @ dx.reshape(n, h_out, w * c)               # along H: (N, H, W*C)
    return dx.reshape(n, h, w, c).astype(r_h.dtype, copy=False)


def upsample_bilinear_forward(x, factor):
    """Bilinear upsampling by an integer ``factor`` (int or ``(fh, fw)``): resize to ``(H*fh, W*fw)``.

    >>> y, cache = upsample_bilinear_forward(np.zeros((1, 3, 5, 2), np.float32), (2, 4))
    >>> y.shape
    (1, 6, 20, 2)
    """
    check_nhwc(x, "x")
    fh, fw = pair(factor, "factor")
    return bilinear_resize_forward(x, (x.shape[1] * fh, x.shape[2] * fw))


def upsample_bilinear_backward(dy, cache):
    """Gradient of :func:`upsample_bilinear_forward` (the adjoint of the resize).

    >>> y, cache = upsample_bilinear_forward(np.zeros((1, 2, 2, 1)), 2)
    >>> upsample_bilinear_backward(np.ones_like(y), cache).shape
    (1, 2, 2, 1)
    """
    return bilinear_resize_backward(dy, cache)
