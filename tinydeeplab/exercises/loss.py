"""Softmax cross-entropy exercises (notebook 05): the loss with an ignore label and class weights, its gradient.

=========================  ======================================================  ==============================
name                       the student writes                                      reference
=========================  ======================================================  ==============================
softmax_cross_entropy      ``fn(logits, labels, class_weights) -> loss`` (a        ``softmax_cross_entropy_forward``
                           float): weighted mean over the pixels whose label is
                           not 255, 0 if there are none
softmax_cross_entropy_grad ``fn(logits, labels, class_weights) -> dlogits``        ``softmax_cross_entropy_backward``
                           (the gradient of that loss, shaped like ``logits``)     + float64 central differences
=========================  ======================================================  ==============================

With ``V`` the valid pixels, ``S = sum_{p in V} w[y_p]`` and ``P = softmax(logits)``::

    loss    = sum_{p in V} w[y_p] (logsumexp(z_p) - z_p[y_p]) / S
    dlogits = w[y_p] (P_p - onehot(y_p)) / S        on valid pixels, exactly 0 on ignored ones

The checker recognises an unstable log-sum-exp (a case has logits near 1000), dividing by the number
of pixels (valid or all) instead of ``S``, forgotten weights, a sum instead of a mean, ``0 / 0`` when
every pixel is ignored, and in the gradient: a nonzero gradient on ignored pixels, the missing
``- onehot`` or ``1 / S``.

>>> from tinydeeplab import functional as F
>>> from tinydeeplab.exercises import check
>>> def loss(logits, labels, class_weights):
...     return F.softmax_cross_entropy_forward(logits, labels, class_weights=class_weights)[0]
>>> check("softmax_cross_entropy", loss)
'softmax_cross_entropy: passed (5 cases)'
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from . import exercise
from ._grading import Variant, attempt, check_backward, compare, fail

IGNORE = 255


def _draw(seed: int):
    """``(case, logits, labels, weights)``: plain, weighted with ignored pixels, huge logits, float32,
    and everything ignored."""
    rng = np.random.default_rng(seed)
    specs = [((1, 2, 3, 3), 0.0, 0.0, False, np.float64),
             ((2, 4, 5, 4), 0.3, 0.0, True, np.float64),
             ((1, 3, 4, 3), 0.2, 1000.0, True, np.float64),       # exp(1000) overflows float64
             ((2, 3, 3, 5), 0.25, 0.0, True, np.float32),
             ((1, 2, 2, 3), 1.0, 0.0, True, np.float64)]           # every pixel ignored
    for shape, ignored, shift, weighted, dtype in specs:
        k = shape[3]
        logits = (rng.normal(0, 2, shape) + shift).astype(dtype)
        labels = rng.integers(0, k, shape[:3])
        labels[rng.random(shape[:3]) < ignored] = IGNORE
        if ignored == 1.0:
            labels[...] = IGNORE
        elif ignored and (labels == IGNORE).all():
            labels.flat[0] = 0
        weights = (rng.uniform(0.2, 3.0, k) if weighted else np.ones(k)).astype(dtype)
        yield {"logits": logits, "labels": labels, "class_weights": weights, "shift": shift}, logits, labels, weights


def _parts(logits, labels, weights):
    """``(nll, w_pix, valid, P)`` in float64: per-pixel loss, per-pixel weight (0 if ignored), mask, softmax."""
    z = logits.astype(np.float64)
    valid = labels != IGNORE
    safe = np.where(valid, labels, 0)
    shifted = z - z.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, safe[..., None], -1)[..., 0]         # (N, H, W)
    w_pix = np.where(valid, weights.astype(np.float64)[safe], 0.0)       # (N, H, W)
    return nll, w_pix, valid, np.exp(log_p)


def _loss_variants(logits, labels, weights):
    nll, w_pix, valid, _ = _parts(logits, labels, weights)
    n_valid = max(int(valid.sum()), 1)
    out = [(np.sum(w_pix * nll) / n_valid,
            "you divided by the number of valid pixels; a weighted mean divides by the sum of the weights "
            "of the valid pixels, S = sum_valid w[y]"),
           (np.sum(w_pix * nll) / valid.size,
            "the ignored pixels are counted in the denominator; average over the valid pixels only, "
            "dividing by S = sum_valid w[y]"),
           (nll[valid].mean() if valid.any() else 0.0,
            "the class weights are missing: pixel p counts w[y_p] times, loss = sum w[y] nll / sum w[y]"),
           (np.sum(w_pix * nll), "you returned the sum; the loss is the weighted MEAN (divide by S = sum_valid w[y])")]
    out.append((F.softmax_cross_entropy_forward(logits, np.where(valid, labels, 0), class_weights=weights)[0],
                "the ignored pixels count as class 0; pixels labelled 255 must not contribute at all"))
    return [Variant(np.float64(v), m) for v, m in out]


@exercise("softmax_cross_entropy", "softmax cross-entropy with the 255 ignore label and class weights (a float)")
def _check_softmax_cross_entropy(fn):
    n = 0
    for case, logits, labels, weights in _draw(50):
        got = attempt(fn, case, logits, labels, weights)
        expected = np.float64(F.softmax_cross_entropy_forward(logits, labels, class_weights=weights)[0])
        if isinstance(got, np.ndarray) and got.size == 1:
            got = got.reshape(())
        try:
            finite = bool(np.isfinite(got))
        except TypeError:
            finite = True                                             # not a number: compare says so
        if not finite and case["shift"]:
            fail("your loss is not finite for logits around 1000: exp(1000) overflows; compute log-sum-exp "
                 "stably as m + log(sum(exp(z - m))) with m = max_k z_k", case)
        if not finite and not (labels != IGNORE).any():
            fail("with every pixel ignored the loss must be 0 (nothing to learn), not 0 / 0", case)
        tol = dict(rtol=1e-5, atol=1e-6) if logits.dtype == np.float32 else dict(rtol=1e-9, atol=1e-12)
        compare(got, expected, "loss", case, check_dtype=False, variants=_loss_variants(logits, labels, weights),
                **tol)
        n += 1
    return f"{n} cases"


def _grad_variants(logits, labels, weights, grad):
    nll, w_pix, valid, p = _parts(logits, labels, weights)
    k = logits.shape[-1]
    safe = np.where(valid, labels, 0)
    onehot = np.eye(k)[safe]
    s = w_pix.sum()
    n_valid = max(int(valid.sum()), 1)
    base = p - onehot                                                  # (N, H, W, K)
    _, as_zero = F.softmax_cross_entropy_forward(logits, safe, class_weights=weights)
    return [Variant(F.softmax_cross_entropy_backward(1.0, as_zero),
                    "ignored pixels get a nonzero gradient (you treated them as class 0); their gradient must "
                    "be exactly 0"),
            Variant(w_pix[..., None] * base, "the factor 1 / S is missing, S = sum_valid w[y] (the loss is a mean)"),
            Variant((w_pix / n_valid)[..., None] * base,
                    "you divided by the number of valid pixels; divide by S = sum_valid w[y]"),
            Variant((valid / n_valid)[..., None] * base,
                    "the class weights are missing: pixel p's gradient is w[y_p] (P - onehot) / S"),
            Variant((w_pix / s)[..., None] * p if s else grad,
                    "the - onehot(y) term is missing: d(-log p_y)/dz_k = p_k - [k = y]")]


@exercise("softmax_cross_entropy_grad", "gradient of the weighted, ignore-aware cross-entropy: w (softmax - onehot) / S")
def _check_softmax_cross_entropy_grad(fn):
    n = 0
    for case, logits, labels, weights in _draw(51):
        if logits.dtype != np.float64:
            continue                                                   # gradients are graded in float64
        _, cache = F.softmax_cross_entropy_forward(logits, labels, class_weights=weights)
        expected = F.softmax_cross_entropy_backward(1.0, cache)
        got = attempt(fn, case, logits, labels, weights)
        if not (labels != IGNORE).any():
            if isinstance(got, np.ndarray) and got.shape == expected.shape and not np.all(np.isfinite(got)):
                fail("with every pixel ignored the loss is the constant 0, so its gradient is 0 (not 0 / 0)", case)
        compare(got, expected, "dlogits", case, variants=_grad_variants(logits, labels, weights, expected))
        n += 1
    # the independent proof: central differences of the reference loss
    rng = np.random.default_rng(52)
    logits = rng.normal(0, 1.5, (1, 3, 3, 4))
    labels = rng.integers(0, 4, (1, 3, 3))
    labels[0, 1, :2] = IGNORE
    weights = np.array([0.5, 1.0, 2.0, 1.5])
    case = {"logits": logits, "labels": labels, "class_weights": weights}

    def forward(logits):
        return F.softmax_cross_entropy_forward(logits, labels, class_weights=weights)[0], logits

    summary = check_backward(forward, lambda c, z: c * attempt(fn, case, z, labels, weights), {"logits": logits},
                             {}, case, grad_names=("logits",))
    return f"{n} cases, {summary}"
