"""The exercise checkers (``tinydeeplab.exercises``): each passes the reference, says "not implemented"
for a stub, and names each characteristic mistake it claims to recognise.

The wrong solutions below are written the way a student would write them (not derived from the
checkers' own variants), so a test passes only if the checker's diagnosis really points at the bug.
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from tinydeeplab import functional as F
from tinydeeplab.errors import OptionError
from tinydeeplab.exercises import ExerciseFailure, check, describe, names
from tinydeeplab.exercises.aspp import live_tap_fraction
from tinydeeplab.functional.geometry import same_padding_1d

AXES = (0, 1, 2)


# --- conv -------------------------------------------------------------------------------------------------------

def im2col_conv(x, w, b=None, *, stride=1, dilation=1, flip=False, order="ijc", use_bias=True, use_stride=True,
                use_dilation=True):
    """A student's im2col convolution with switchable mistakes."""
    s, d = (stride if use_stride else 1), (dilation if use_dilation else 1)
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    ho, wo = (h - (kh - 1) * d - 1) // s + 1, (wd - (kw - 1) * d - 1) // s + 1
    taps = [x[:, i * d:i * d + (ho - 1) * s + 1:s, j * d:j * d + (wo - 1) * s + 1:s, :]
            for i in range(kh) for j in range(kw)]
    cols = np.stack(taps, axis=3 if order == "ijc" else 4).reshape(n * ho * wo, -1)
    kernel = w[::-1, ::-1] if flip else w
    y = (cols @ kernel.reshape(-1, f)).reshape(n, ho, wo, f)
    return y + b if (b is not None and use_bias) else y


def conv_backward(dy, x, w, *, stride=1, dilation=1, first_image_only=False, flip=False, db_all=False,
                  negate_dx=False, db_first_image=False):
    """A student's valid-convolution backward with switchable mistakes."""
    kh, kw = w.shape[:2]
    _, ho, wo, _ = dy.shape
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    kernel = w[::-1, ::-1] if flip else w
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilation, i * dilation + (ho - 1) * stride + 1, stride)
            cols = slice(j * dilation, j * dilation + (wo - 1) * stride + 1, stride)
            window = x[:, rows, cols, :]
            if first_image_only:
                g = np.tensordot(window[:1], dy[:1], axes=([0, 1, 2], [0, 1, 2]))
            else:
                g = np.tensordot(window, dy, axes=([0, 1, 2], [0, 1, 2]))
            dw[i, j] = g
            dx[:, rows, cols, :] += dy @ kernel[i, j].T
    db = dy.sum() if db_all else dy[:1].sum(axis=AXES) if db_first_image else dy.sum(axis=AXES)
    return (-dx if negate_dx else dx), dw, db


def conv_backward_transposed_dw(dy, x, w, *, stride=1, dilation=1):
    dx, dw, db = conv_backward(dy, x, w, stride=stride, dilation=dilation)
    return dx, dw.transpose(0, 1, 3, 2), db


def keras_same(size, k, s, d, mistake=None):
    k_eff = (k - 1) * (1 if mistake == "no dilation" else d) + 1
    out = size // s if mistake == "floor" else -(-size // s)
    total = (out - 1) * s + k_eff - size
    if mistake != "no clamp":
        total = max(total, 0)
    if mistake == "symmetric":
        return (k_eff - 1) // 2, (k_eff - 1) // 2
    before = total - total // 2 if mistake == "before" else total // 2
    return before, total - before


def reference(name):
    """The reference solution of each exercise, written against tinydeeplab's ops."""
    return {
        "conv2d_im2col": lambda x, w, b=None, *, stride=1, dilation=1: F.conv2d_forward(
            x, w, b, stride=stride, dilation=dilation, padding="valid")[0],
        "conv2d_backward": conv_backward,
        "keras_same_padding": same_padding_1d,
        "batchnorm_backward": lambda dy, x, gamma, eps: bn_backward(dy, x, gamma, eps),
        "moving_statistics": lambda mm, mv, x, m: moving_stats(mm, mv, x, m),
        "live_tap_fraction": live_tap_fraction,
        "image_pooling_branch": lambda *args: pooling_branch(*args),
    }[name]


# --- batch norm ---------------------------------------------------------------------------------------------------

def bn_backward(dy, x, gamma, eps, mistake=None):
    """A student's training-mode BN backward with switchable mistakes."""
    mean = x.mean(axis=AXES)
    var = x.var(axis=AXES, ddof=1 if mistake == "unbiased" else 0)
    s = np.sqrt(var + (0.0 if mistake == "no eps" else eps))
    xhat = (x - mean) / s
    g = dy if mistake == "no gamma" else dy * gamma
    terms = {"no mean term": g - xhat * (g * xhat).mean(axis=AXES),
             "no xhat term": g - g.mean(axis=AXES),
             "inference": g,
             "xhat sign": g - g.mean(axis=AXES) + xhat * (g * xhat).mean(axis=AXES)}
    dx = terms.get(mistake, g - g.mean(axis=AXES) - xhat * (g * xhat).mean(axis=AXES)) / s
    dgamma, dbeta = (dy * xhat).sum(axis=AXES), dy.sum(axis=AXES)
    if mistake == "swapped":
        dgamma, dbeta = dbeta, dgamma
    if mistake == "dgamma with x":
        dgamma = (dy * x).sum(axis=AXES)
    if mistake == "dgamma with gamma":
        dgamma = (g * xhat).sum(axis=AXES)
    if mistake == "half":
        dx = dx / 2
    return dx, dgamma, dbeta


def moving_stats(mm, mv, x, m, mistake=None):
    mean, var = x.mean(axis=AXES), x.var(axis=AXES, ddof=1 if mistake == "unbiased" else 0)
    if mistake == "std":
        var = np.sqrt(var)
    if mistake == "pytorch momentum":
        m = 1 - m
    if mistake == "axis 0":
        mean, var = x.mean(axis=0), x.var(axis=0)
    if mistake == "replace":
        return mean, var
    if mistake == "replace var":
        return mm * m + mean * (1 - m), var
    if mistake == "pytorch momentum for var":
        return mm * m + mean * (1 - m), mv * (1 - m) + var * m
    return mm * m + mean * (1 - m), mv * m + var * (1 - m)


# --- ASPP ---------------------------------------------------------------------------------------------------------

def pooling_branch(x, kernel, gamma, beta, mm, mv, eps, mistake=None):
    n, h, w, _ = x.shape
    if mistake == "max":
        z = x.max(axis=(1, 2), keepdims=True)
    elif mistake == "sum":
        z = x.sum(axis=(1, 2), keepdims=True)
    else:
        z = x.mean(axis=(1, 2), keepdims=True)
    z = z @ kernel[0, 0]
    if mistake == "relu first":
        z = np.maximum(z, 0)
    if mistake == "batch stats":
        z = gamma * (z - z.mean(axis=AXES)) / np.sqrt(z.var(axis=AXES) + eps) + beta
    elif mistake != "no bn":
        z = gamma * (z - mm) / np.sqrt(mv + (0.0 if mistake == "no eps" else eps)) + beta
    if mistake not in ("no relu", "relu first"):
        z = np.maximum(z, 0)
    if mistake == "no resize":
        return z
    out = np.broadcast_to(z, (n, h, w, z.shape[3])).copy()
    return out.astype(np.float64) if mistake == "float64" else out


def tap_fraction(h, w, rate, mistake=None):
    def per_axis(size, shift=0):
        return (1 + 2 * max(size - rate + shift, 0) / size) / 3
    if mistake == "square":
        return per_axis(h) ** 2
    if mistake == "live taps":
        return (1 + 2 * (rate < h)) / 3 * (1 + 2 * (rate < w)) / 3
    if mistake == "off by one":
        return per_axis(h, 1) * per_axis(w, 1)
    if mistake == "off by minus one":
        return per_axis(h, -1) * per_axis(w, -1)
    if mistake == "count":
        return 9 * per_axis(h) * per_axis(w)
    return per_axis(h) * per_axis(w)


# --- the tests ----------------------------------------------------------------------------------------------------

ALL = ["conv2d_im2col", "conv2d_backward", "keras_same_padding", "batchnorm_backward", "moving_statistics",
       "live_tap_fraction", "image_pooling_branch"]


def test_topic_modules_are_discovered_without_being_imported():
    code = "import tinydeeplab.exercises as e, sys; print(sorted(e.names())); " \
           "print('tinydeeplab.exercises.conv' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert set(ALL) <= set(eval(out[0])) and out[1] == "True"      # noqa: S307 - our own printed list


@pytest.mark.parametrize("name", ALL)
def test_the_reference_passes(name):
    message = check(name, reference(name))
    assert message.startswith(f"{name}: passed (") and "cases" in message


@pytest.mark.parametrize("name", names())        # every registered checker, also those of later topic modules
def test_a_stub_is_not_implemented(name):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"exercise: {name}")

    with pytest.raises(ExerciseFailure, match=rf"^{name}: not implemented yet"):
        check(name, stub)


def test_a_failure_is_an_assertion_error_with_the_case_attached():
    with pytest.raises(AssertionError) as info:
        check("conv2d_im2col", lambda x, w, b=None, **kw: reference("conv2d_im2col")(x, w, b, **kw) * 0.5 + 1)
    assert isinstance(info.value, ExerciseFailure)
    assert set(info.value.case) == {"x", "w", "b", "stride", "dilation"}
    assert "differs from the reference in" in str(info.value) and "first: [0, 0, 0, 0] got" in str(info.value)


def test_unknown_exercise_and_non_function():
    with pytest.raises(OptionError, match="unknown exercise 'conv3d'.*conv2d_backward"):
        check("conv3d", print)
    with pytest.raises(ExerciseFailure, match="expected a function, got int"):
        check("conv2d_im2col", 3)
    assert "conv2d_backward" in describe("conv2d_backward") and "exercises.conv" in describe("conv2d_backward")


def test_an_exception_in_the_students_code_is_named_with_its_case():
    def broken(x, w, b=None, *, stride=1, dilation=1):
        return x @ w                                   # a shape error inside numpy

    with pytest.raises(ExerciseFailure, match=r"your function raised ValueError: .*on case x \(1, 5, 5, 1\)"):
        check("conv2d_im2col", broken)


@pytest.mark.parametrize("kwargs, said", [
    (dict(flip=True), "you flipped the kernel"),
    (dict(order="cij"), "not in the kernel's (i, j, c) order"),
    (dict(use_bias=False), "the bias b is missing"),
    (dict(use_stride=False), "the stride is ignored"),
    (dict(use_dilation=False), "the dilation is ignored"),
])
def test_conv2d_im2col_names_the_mistake(kwargs, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("conv2d_im2col", lambda x, w, b=None, **kw: im2col_conv(x, w, b, **kw, **kwargs))


def test_conv2d_im2col_wrong_dtype_and_none():
    with pytest.raises(ExerciseFailure, match=r"y has dtype float64, expected float32"):
        check("conv2d_im2col", lambda x, w, b=None, **kw: im2col_conv(x, w, b, **kw).astype(np.float64))
    with pytest.raises(ExerciseFailure, match=r"returned None"):
        check("conv2d_im2col", lambda x, w, b=None, **kw: None)


@pytest.mark.parametrize("kwargs, said", [
    (dict(flip=True), "dx uses the kernel flipped"),
    (dict(first_image_only=True), "dw uses only the first image"),
    (dict(db_all=True), "db must have one entry per filter"),
    (dict(db_first_image=True), "db uses only the first image"),
    (dict(negate_dx=True), "dx has the wrong sign everywhere"),
])
def test_conv2d_backward_names_the_mistake(kwargs, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("conv2d_backward", lambda dy, x, w, **kw: conv_backward(dy, x, w, **kw, **kwargs))


def test_conv2d_backward_transposed_dw_and_wrong_arity():
    with pytest.raises(ExerciseFailure, match=re.escape("yours is its transpose")):
        check("conv2d_backward", conv_backward_transposed_dw)
    with pytest.raises(ExerciseFailure, match=re.escape("expected 3 results (dx, dw, db), got 2 values")):
        check("conv2d_backward", lambda dy, x, w, **kw: conv_backward(dy, x, w, **kw)[:2])


def test_conv2d_backward_gradient_check_catches_what_the_comparison_cannot_see():
    # a backward that matches the reference on the graded cases but not elsewhere is caught by the float64
    # central differences on a separate case (here: wrong only for the gradient-check shape)
    def sly(dy, x, w, *, stride=1, dilation=1):
        dx, dw, db = conv_backward(dy, x, w, stride=stride, dilation=dilation)
        if x.shape == (2, 5, 6, 2):
            dw = dw * 1.01
        return dx, dw, db

    with pytest.raises(ExerciseFailure, match="float64 gradient check against central differences failed.*worst "
                                              "entry w"):
        check("conv2d_backward", sly)


@pytest.mark.parametrize("mistake, said", [
    ("before", "the extra padding goes after (bottom/right)"),
    ("no dilation", "effective kernel size k_eff = (k - 1) * d + 1"),
    ("no clamp", "clamp it, total = max(..., 0)"),
    ("symmetric", "PyTorch's padding"),
    ("floor", "ceil(size / s), not floor(size / s)"),
])
def test_keras_same_padding_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("keras_same_padding", lambda size, k, s, d: keras_same(size, k, s, d, mistake))


def test_keras_same_padding_wants_a_pair_of_ints():
    with pytest.raises(ExerciseFailure, match=r"expected a pair of ints \(before, after\), got \[0.0, 0.0\]"):
        check("keras_same_padding", lambda size, k, s, d: [0.0, 0.0])


@pytest.mark.parametrize("mistake, said", [
    ("no mean term", "your dx lacks the mean-of-dy term"),
    ("no xhat term", "your dx lacks the xhat * mean(g * xhat) term"),
    ("inference", "the inference-mode formula"),
    ("xhat sign", "the xhat * mean(g * xhat) term has the wrong sign"),
    ("no gamma", "dx is missing the factor gamma"),
    ("unbiased", "you used the unbiased variance"),
    ("no eps", "eps is missing"),
    ("swapped", "dgamma and dbeta are swapped"),
    ("dgamma with x", "dgamma is sum(dy * xhat), not sum(dy * x)"),
    ("dgamma with gamma", "dgamma = sum(dy * xhat): no factor gamma"),
    ("half", "dx is off by a constant factor: yours = 0.5 x the reference"),
])
def test_batchnorm_backward_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("batchnorm_backward", lambda dy, x, gamma, eps: bn_backward(dy, x, gamma, eps, mistake))


@pytest.mark.parametrize("mistake, said", [
    ("pytorch momentum", "you used PyTorch's convention"),
    ("unbiased", "Keras averages the biased batch variance"),
    ("std", "not the standard deviation"),
    ("replace", "you returned the batch mean"),
    ("replace var", "you returned the batch variance"),
    ("pytorch momentum for var", "new moving variance is wrong: momentum weighs the *old* value"),
    ("axis 0", "has shape (3, 3, 2), expected (2,): the statistics are per channel"),
])
def test_moving_statistics_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("moving_statistics", lambda mm, mv, x, m: moving_stats(mm, mv, x, m, mistake))


@pytest.mark.parametrize("mistake, said", [
    ("square", "you used h for both axes"),
    ("live taps", "you counted the taps that touch the map somewhere"),
    ("off by one", "not max(S - r + 1, 0)"),
    ("off by minus one", "not max(S - r - 1, 0)"),
    ("count", "divide by 9"),
])
def test_live_tap_fraction_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("live_tap_fraction", lambda h, w, rate: tap_fraction(h, w, rate, mistake))


@pytest.mark.parametrize("mistake, said", [
    ("no resize", "has shape (2, 1, 1, 4), expected (2, 5, 7, 4): you returned the pooled 1 x 1 map"),
    ("no relu", "the ReLU after BN is missing"),
    ("no bn", "the BN step is missing"),
    ("max", "not the max"),
    ("sum", "not the sum"),
    ("batch stats", "BN must use the moving statistics"),
    ("no eps", "eps is missing: sqrt(moving_var + eps)"),
    ("relu first", "you applied the ReLU before BN"),
    ("float64", "has dtype float64, expected float32"),
])
def test_image_pooling_branch_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("image_pooling_branch", lambda *args: pooling_branch(*args, mistake=mistake))



