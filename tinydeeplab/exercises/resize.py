"""Bilinear-resize exercises (notebook 04): the forward pass with half-pixel centres, and its adjoint.

=========================  ===================================================  ===============================
name                       the student writes                                   reference
=========================  ===================================================  ===============================
bilinear_resize            ``fn(x, size) -> y``, ``x`` (N, H, W, C), ``size``    ``bilinear_resize_forward``
                           ``(H_out, W_out)``: half-pixel centres, edge clamp
bilinear_resize_backward   ``fn(dy, in_size) -> dx``: the adjoint, ``in_size``   ``bilinear_resize_backward``
                           ``(H, W)``                                           + float64 central differences
=========================  ===================================================  ===============================

Along an axis resized from ``n_in`` to ``n_out`` samples, output ``o`` reads the input coordinate
``src = (o + 1/2) n_in / n_out - 1/2`` (pixel ``k`` has its centre at ``k`` in these coordinates, i.e. at
``k + 1/2`` on an axis where pixel ``k`` covers ``[k, k + 1)``), and mixes ``i0 = floor(src)`` and
``i1 = i0 + 1`` (both clamped to ``[0, n_in - 1]``) with weights ``1 - t`` and ``t``, ``t = src - floor(src)``.
The checker recognises align-corners, the "asymmetric" ``src = o n_in / n_out`` (TensorFlow 1's
default), swapped weights and a missing clamp of ``i0`` (NumPy's index -1 wraps to the last pixel); for
the backward, interpolating ``dy`` down to the input size instead of applying the transpose.

>>> from tinydeeplab import functional as F
>>> from tinydeeplab.exercises import check
>>> check("bilinear_resize", lambda x, size: F.bilinear_resize_forward(x, size)[0])
'bilinear_resize: passed (6 cases)'
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from . import exercise
from ._grading import Variant, attempt, check_backward, compare

# (x shape (N, H, W, C), output size, dtype): simple first
_CASES = [((1, 2, 2, 1), (4, 4), np.float64),
          ((2, 4, 5, 3), (7, 9), np.float64),
          ((1, 8, 6, 2), (16, 12), np.float64),
          ((1, 7, 9, 2), (3, 4), np.float64),            # shrinking: the same two-tap formula
          ((2, 3, 5, 1), (5, 4), np.float64),             # up along H, down along W
          ((1, 4, 4, 2), (8, 8), np.float32)]


def matrix_from_src(src, n_in: int, clamp_low: bool = True, swap: bool = False) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix mixing ``floor(src)`` and ``floor(src) + 1`` (clamped; ``clamp_low``
    False leaves ``i0 = -1`` to NumPy's wrap-around, ``swap`` exchanges the two weights).

    >>> matrix_from_src(np.array([-0.25, 0.25, 0.75, 1.25]), 2).tolist()
    [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    src = np.asarray(src, np.float64)
    r = np.zeros((len(src), n_in))
    i0 = np.floor(src).astype(int)
    t = src - i0
    low = np.clip(i0, 0, n_in - 1) if clamp_low else np.minimum(i0, n_in - 1) % n_in
    high = np.clip(i0 + 1, 0, n_in - 1)
    w0, w1 = (t, 1 - t) if swap else (1 - t, t)
    np.add.at(r, (np.arange(len(src)), low), w0)
    np.add.at(r, (np.arange(len(src)), high), w1)
    return r


def _src(n_in: int, n_out: int, convention: str) -> np.ndarray:
    o = np.arange(n_out, dtype=np.float64)
    if convention == "half_pixel":
        return (o + 0.5) * n_in / n_out - 0.5
    if convention == "align_corners":
        return o * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(1)
    return o * n_in / n_out                                           # "asymmetric"


def _resize_with(x, size, convention="half_pixel", **kwargs):
    """Separable resize ``R_h X R_w^T`` with the matrices of a (possibly wrong) convention, float64."""
    n, h, w, c = x.shape
    r_h = matrix_from_src(_src(h, size[0], convention), h, **kwargs)
    r_w = matrix_from_src(_src(w, size[1], convention), w, **kwargs)
    return np.einsum("ah,nhwc,bw->nabc", r_h, x.astype(np.float64), r_w).astype(x.dtype)


def _adjoint_with(dy, in_size, convention="half_pixel"):
    h, w = in_size
    r_h = matrix_from_src(_src(h, dy.shape[1], convention), h)
    r_w = matrix_from_src(_src(w, dy.shape[2], convention), w)
    return np.einsum("ah,nabc,bw->nhwc", r_h, dy, r_w)


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-7, atol=1e-9)


@exercise("bilinear_resize", "bilinear resize forward, half-pixel centres and edge clamp (Keras / TF2)")
def _check_bilinear_resize(fn):
    rng = np.random.default_rng(40)
    n = 0
    for shape, size, dtype in _CASES:
        x = rng.standard_normal(shape).astype(dtype)
        case = {"x": x, "size": size}
        got = attempt(fn, case, x, size)
        expected = F.bilinear_resize_forward(x, size)[0]
        compare(got, expected, "y", case, **_tol(dtype), variants=[
            Variant(_resize_with(x, size, "align_corners"),
                    "you used align-corners, src = o (n_in - 1) / (n_out - 1); half-pixel centres map output "
                    "centre o + 1/2 to (o + 1/2) n_in / n_out: src = (o + 0.5) * n_in / n_out - 0.5"),
            Variant(_resize_with(x, size, "asymmetric"),
                    "you used src = o * n_in / n_out (TensorFlow 1's default, which shifts the image by half an "
                    "input pixel minus half an output pixel); use src = (o + 0.5) * n_in / n_out - 0.5"),
            Variant(_resize_with(x, size, swap=True),
                    "the two weights are swapped: floor(src) gets 1 - t and floor(src) + 1 gets t, "
                    "t = src - floor(src)"),
            Variant(_resize_with(x, size, clamp_low=False),
                    "i0 = floor(src) is -1 left of the first pixel centre and NumPy reads x[-1], the LAST pixel: "
                    "clamp i0 (and i1) to [0, n_in - 1]"),
        ])
        n += 1
    return f"{n} cases"


@exercise("bilinear_resize_backward", "the adjoint of bilinear resizing: dx = R_h^T dy R_w")
def _check_bilinear_resize_backward(fn):
    rng = np.random.default_rng(41)
    n = 0
    for shape, size, dtype in _CASES:
        if dtype != np.float64:
            continue                                               # gradients are graded in float64
        x = rng.standard_normal(shape)
        y, cache = F.bilinear_resize_forward(x, size)
        dy = rng.standard_normal(y.shape)
        in_size = shape[1:3]
        case = {"dy": dy, "in_size": in_size}
        got = attempt(fn, case, dy, in_size)
        compare(got, F.bilinear_resize_backward(dy, cache), "dx", case, variants=[
            Variant(F.bilinear_resize_forward(dy, in_size)[0],
                    "you resized dy back to the input size; the backward is not an interpolation but the "
                    "transpose: every output pixel gives its dy to the (up to 4) input pixels it read, with "
                    "the same bilinear weights (dx = R_h^T dy R_w)"),
            Variant(_adjoint_with(dy, in_size, "align_corners"),
                    "this is the adjoint of align-corners resizing; use half-pixel centres "
                    "src = (o + 0.5) * n_in / n_out - 0.5"),
            Variant(_adjoint_with(dy, in_size, "asymmetric"),
                    "this is the adjoint of src = o * n_in / n_out; use half-pixel centres"),
            Variant(_adjoint_with(dy, in_size) * (in_size[0] * in_size[1]) / (size[0] * size[1]),
                    "you averaged instead of summing: each input pixel receives the SUM of the weighted dy of "
                    "all outputs that read it (no division by the scale)"),
        ])
        n += 1
    # the independent proof: central differences of the reference forward
    x = rng.standard_normal((1, 3, 4, 2))
    size = (5, 7)
    case = {"x": x, "size": size}

    def forward(x):
        return F.bilinear_resize_forward(x, size)[0], x.shape[1:3]

    summary = check_backward(forward, lambda c, in_size: fn(c, in_size), {"x": x}, {}, case, grad_names=("x",))
    return f"{n} cases, {summary}"
