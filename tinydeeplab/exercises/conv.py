"""Convolution exercises (notebook 01): im2col forward, the backward pass, Keras "same" padding.

===================  =========================================================  ======================
name                 the student writes                                         reference
===================  =========================================================  ======================
conv2d_im2col        ``fn(x, w, b, *, stride, dilation) -> y`` ("valid")         ``conv2d_forward``
conv2d_backward      ``fn(dy, x, w, *, stride, dilation) -> (dx, dw, db)``       ``conv2d_backward``
keras_same_padding   ``fn(size, k, s, d) -> (before, after)``                    ``same_padding_1d``
===================  =========================================================  ======================

Padding is left out of the first two on purpose: KerasHub's strided convolutions pad explicitly
(``ZeroPadding2D``) and then run a "valid" convolution, and so do these exercises.

>>> from tinydeeplab import functional as F
>>> from tinydeeplab.exercises import check
>>> def reference(x, w, b=None, *, stride=1, dilation=1):
...     return F.conv2d_forward(x, w, b, stride=stride, dilation=dilation, padding="valid")[0]
>>> check("conv2d_im2col", reference)
'conv2d_im2col: passed (6 cases)'
"""
from __future__ import annotations

import itertools

import numpy as np

from .. import functional as F
from ..functional.geometry import same_padding_1d
from . import exercise
from ._grading import Variant, attempt, check_backward, compare, fail, judge_cases, unpack

# (x shape, kernel (KH, KW, F), stride, dilation, bias, dtype): simple first, so a basic bug shows on a simple case
_CASES = [((1, 5, 5, 1), (3, 3, 2), 1, 1, False, np.float64),
          ((2, 6, 7, 3), (3, 3, 4), 1, 1, True, np.float64),
          ((2, 7, 6, 2), (3, 2, 3), 2, 1, True, np.float64),
          ((1, 9, 8, 2), (3, 3, 2), 1, 2, False, np.float64),
          ((2, 9, 10, 3), (3, 3, 2), 2, 2, True, np.float64),
          ((1, 6, 6, 2), (3, 3, 3), 2, 1, True, np.float32)]


def _draw(seed: int):
    """The cases as ``(case, x, w, b, stride, dilation)``, from a seeded generator."""
    rng = np.random.default_rng(seed)
    for xs, (kh, kw, f), s, d, with_bias, dtype in _CASES:
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal((kh, kw, xs[3], f)).astype(dtype)
        b = rng.standard_normal(f).astype(dtype) if with_bias else None
        case = {"x": x, "w": w, "b": b, "stride": s, "dilation": d}
        yield case, x, w, b, s, d


def _valid(x, w, b=None, *, stride=1, dilation=1):
    return F.conv2d_forward(x, w, b, stride=stride, dilation=dilation, padding="valid")[0]


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-7, atol=1e-9)


@exercise("conv2d_im2col", 'conv2d forward ("valid") as im2col + one matrix product')
def _check_conv2d_im2col(fn):
    n = 0
    for case, x, w, b, s, d in _draw(0):
        got = attempt(fn, case, x, w, b, stride=s, dilation=d)
        kh, kw, c, f = w.shape
        cij = w.reshape(-1, f).reshape(c, kh, kw, f).transpose(1, 2, 0, 3)   # rows read in (c, i, j) order
        variants = [
            Variant(_valid(x, w[::-1, ::-1], b, stride=s, dilation=d),
                    "you flipped the kernel (a textbook convolution); deep learning's convolution is a "
                    "cross-correlation: tap (i, j) reads x[oh*s + i*d, ow*s + j*d]"),
            Variant(_valid(x, cij, b, stride=s, dilation=d),
                    "the columns of your im2col matrix are not in the kernel's (i, j, c) order: flatten each "
                    "window as window.reshape(-1), matching w.reshape(-1, F) for an HWIO kernel"),
            Variant(_valid(x, w, None, stride=s, dilation=d) if b is not None else None,
                    "the bias b is missing (add it to every output pixel)"),
            Variant(_valid(x, w, b, stride=1, dilation=d), "the stride is ignored (move windows by s pixels)"),
            Variant(_valid(x, w, b, stride=s, dilation=1),
                    "the dilation is ignored (tap (i, j) reads i*d, j*d pixels from the window's corner)"),
        ]
        compare(got, _valid(x, w, b, stride=s, dilation=d), "y", case,
                variants=[v for v in variants if v.value is not None], **_tol(x.dtype))
        n += 1
    return f"{n} cases"


@exercise("conv2d_backward", 'conv2d backward ("valid"): dx, dw, db for a random upstream gradient dy')
def _check_conv2d_backward(fn):
    rng = np.random.default_rng(1)
    n = 0
    for case, x, w, b, s, d in _draw(1):
        if x.dtype != np.float64:
            continue                                       # gradients are graded in float64
        y, cache = F.conv2d_forward(x, w, b, stride=s, dilation=d, padding="valid")
        dy = rng.standard_normal(y.shape)
        case = dict(case, dy=dy)
        del case["b"]
        dx, dw, db = F.conv2d_backward(dy, cache)
        db = dy.sum(axis=(0, 1, 2))                        # the student always returns db
        got = unpack(attempt(fn, case, dy, x, w, stride=s, dilation=d), 3, "(dx, dw, db)", case)
        _, cache_flip = F.conv2d_forward(x, w[::-1, ::-1], stride=s, dilation=d, padding="valid")
        compare(got[0], dx, "dx", case, variants=[
            Variant(F.conv2d_backward(dy, cache_flip)[0],
                    "dx uses the kernel flipped: scatter dy @ w[i, j].T back to the pixels tap (i, j) read")])
        dw_variants = [Variant(dw.transpose(0, 1, 3, 2),
                               "dw[i, j] must be window_ij^T dy, shape (C, F): yours is its transpose")]
        db_variants = [Variant(dy.sum(), "db must have one entry per filter: sum dy over n, o_h, o_w only")]
        if x.shape[0] > 1:                                 # mistakes only a batch can show
            _, cache_first = F.conv2d_forward(x[:1], w, stride=s, dilation=d, padding="valid")
            dw_variants.append(Variant(F.conv2d_backward(dy[:1], cache_first)[1],
                                       "dw uses only the first image: sum over the batch n as well as o_h, o_w"))
            db_variants.append(Variant(dy[0].sum(axis=(0, 1)), "db uses only the first image: sum over n too"))
        compare(got[1], dw, "dw", case, variants=dw_variants)
        compare(got[2], db, "db", case, variants=db_variants)
        n += 1
    # the independent proof: central differences of the reference forward, in float64
    x, w = rng.standard_normal((2, 5, 6, 2)), rng.standard_normal((3, 3, 2, 3))
    b = rng.standard_normal(3)
    case = {"x": x, "w": w, "b": b, "stride": 2, "dilation": 1}

    def forward(x, w, b):
        return _valid(x, w, b, stride=2), (x, w)

    summary = check_backward(forward, lambda c, xw: fn(c, xw[0], xw[1], stride=2, dilation=1),
                             {"x": x, "w": w, "b": b}, {}, case, grad_names=("x", "w", "b"))
    return f"{n} cases, {summary}"


def _same_variants(size, k, s, d):
    """Known wrong answers for Keras "same" padding, each with what it gets wrong."""
    k_eff = (k - 1) * d + 1
    total = (-(-size // s) - 1) * s + k_eff - size
    floor_total = max((size // s - 1) * s + k_eff - size, 0)
    before, after = same_padding_1d(size, k, s, d)
    return [((after, before), "the extra padding goes after (bottom/right) in Keras, not before: "
                              "before = total // 2, after = total - before"),
            (same_padding_1d(size, k, s, 1), "use the effective kernel size k_eff = (k - 1) * d + 1"),
            ((total // 2, total - total // 2), "the total padding can be negative (when s > k_eff): "
                                               "clamp it, total = max(..., 0)"),
            (((k_eff - 1) // 2, (k_eff - 1) // 2), "symmetric (k_eff - 1) / 2 on both sides is PyTorch's "
                                                   "padding, not Keras \"same\" (output size ceil(size / s))"),
            ((floor_total // 2, floor_total - floor_total // 2),
             "the output size of \"same\" is ceil(size / s), not floor(size / s)")]


@exercise("keras_same_padding", 'Keras "same" padding (before, after) along one axis')
def _check_keras_same_padding(fn):
    cases = [dict(size=size, k=k, s=s, d=d)
             for size, k, s, d in itertools.product(range(1, 21), (1, 2, 3, 5), (1, 2, 3, 4), (1, 2, 3, 4))]
    got = []
    for case in cases:
        value = attempt(fn, case, case["size"], case["k"], case["s"], case["d"])
        if not (isinstance(value, (tuple, list)) and len(value) == 2
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
            fail(f"expected a pair of ints (before, after), got {value!r}", case)
        got.append((int(value[0]), int(value[1])))
    judge_cases(cases, got, [same_padding_1d(**case) for case in cases],
                [_same_variants(**case) for case in cases], same=lambda a, b: a == b)
    return f"{len(cases)} cases"
