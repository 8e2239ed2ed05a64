"""Pixel-wise softmax cross-entropy on the CPU (Numba). Same maths as :mod:`tinydeeplab.functional.loss`::

    lse   = m + log(sum_k exp(z_k - m)),   m = max_k z_k       # stable log-sum-exp, per pixel
    loss  = sum_valid w[y] * (lse - z_y) / sum_valid w[y]       # 0 when nothing is valid
    dlogits = dloss * w[y] * (exp(z - lse) - onehot(y)) / sum_valid w[y],   exactly 0 on ignored pixels

Every pixel is independent, so the kernels are a ``prange`` over the ``P = N*H*W`` pixels. The forward
writes per-pixel ``w[y]`` and ``w[y] * nll`` (float64) and NumPy adds them up (no shared accumulator);
the cache keeps ``lse`` per pixel, so the backward recomputes the softmax ``exp(z - lse)`` instead of
storing a second ``(N, H, W, K)`` array.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...functional.checks import check_dloss, loss_class_weights


@njit(parallel=True, cache=True, fastmath=False)
def ce_pixels(z, labels, weights, ignore, has_ignore, lse, w_pix, loss_pix):
    """Per pixel ``p`` of ``z (P, K)``: ``lse[p]``, ``w_pix[p] = w[y]`` (0 if ignored), ``loss_pix = w[y]*nll``."""
    n_pix, k_n = z.shape
    for p in prange(n_pix):
        m = z[p, 0]
        for k in range(1, k_n):
            if z[p, k] > m:
                m = z[p, k]
        s = 0.0                                         # float64 accumulator
        for k in range(k_n):
            s += np.exp(np.float64(z[p, k]) - m)
        lse[p] = m + np.log(s)
        y = labels[p]
        if has_ignore and y == ignore:
            w_pix[p] = 0.0
            loss_pix[p] = 0.0
        else:
            w_pix[p] = weights[y]
            loss_pix[p] = weights[y] * (lse[p] - z[p, y])


@njit(parallel=True, cache=True, fastmath=False)
def ce_grad_pixels(z, labels, lse, w_pix, scale, dz):
    """``dz[p] = scale * w_pix[p] * (softmax(z[p]) - onehot(labels[p]))``; rows with weight 0 are 0."""
    n_pix, k_n = z.shape
    for p in prange(n_pix):
        f = scale * w_pix[p]
        if f == 0.0:
            for k in range(k_n):
                dz[p, k] = 0.0
            continue
        for k in range(k_n):
            dz[p, k] = f * np.exp(z[p, k] - lse[p])
        dz[p, labels[p]] -= f


def softmax_cross_entropy_forward(logits, labels, *, ignore_label=255, class_weights=None):
    """Weighted mean cross-entropy over the valid pixels; returns ``(loss, cache)``, ``loss`` a Python float.

    Arguments as :func:`tinydeeplab.functional.softmax_cross_entropy_forward`.

    >>> logits = np.zeros((1, 1, 2, 4), np.float32)            # uniform over 4 classes
    >>> loss, cache = softmax_cross_entropy_forward(logits, np.array([[[1, 255]]]))
    >>> round(loss, 6) == round(float(np.log(4)), 6)
    True
    """
    weights = loss_class_weights(logits, labels, ignore_label, class_weights)   # (K,)
    k = logits.shape[3]

    z = np.ascontiguousarray(logits).reshape(-1, k)                      # (P, K)
    lab = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)       # (P,)
    n_pix = z.shape[0]
    lse = np.empty(n_pix)                                                # (P,) float64
    w_pix = np.empty(n_pix)
    loss_pix = np.empty(n_pix)
    has_ignore = ignore_label is not None
    ce_pixels(z, lab, weights, int(ignore_label) if has_ignore else 0, has_ignore, lse, w_pix, loss_pix)
    total = float(w_pix.sum())                                           # sum_valid w[y]
    loss = float(loss_pix.sum()) / total if total > 0 else 0.0
    cache = {"z": z, "labels": lab, "lse": lse, "w_pix": w_pix, "total": total, "shape": logits.shape}
    return loss, cache


def softmax_cross_entropy_backward(dloss, cache):
    """``dlogits = dloss * w[y] * (softmax(z) - onehot(y)) / sum_valid w[y]``; exactly 0 on ignored pixels.

    >>> loss, cache = softmax_cross_entropy_forward(np.zeros((1, 1, 1, 2)), np.array([[[0]]]))
    >>> softmax_cross_entropy_backward(1.0, cache).ravel().tolist()
    [-0.5, 0.5]
    """
    dloss = check_dloss(dloss)
    z, total = cache["z"], cache["total"]
    dz = np.empty_like(z)                                                # (P, K)
    if total == 0:
        dz[...] = 0                                                      # nothing valid: loss is constant
    else:
        ce_grad_pixels(z, cache["labels"], cache["lse"], cache["w_pix"], float(dloss) / total, dz)
    return dz.reshape(cache["shape"])                                    # (N, H, W, K)
