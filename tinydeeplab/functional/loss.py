"""Pixel-wise softmax cross-entropy with sparse integer labels, an ignore label and class weights.

For logits ``z = logits[n, h, w, :]`` (K classes) and label ``y``::

    nll   = logsumexp(z) - z_y
          = log(sum_k exp(z_k - m)) - (z_y - m)        with m = max_k z_k (stable for huge logits)
    loss  = sum_valid w[y] * nll / sum_valid w[y]      (w = 1 without class weights; 0 if nothing is valid)

A pixel is valid when ``y != ignore_label``. Backward (``p = softmax(z)``)::

    dlogits = dloss * w[y] * (p - onehot(y)) / sum_valid w[y]       and exactly 0 on ignored pixels
"""
from __future__ import annotations

import numpy as np

from .checks import check_dloss, loss_class_weights


def softmax_cross_entropy_forward(logits, labels, *, ignore_label=255, class_weights=None):
    """Weighted mean cross-entropy over the valid pixels; returns ``(loss, cache)``, ``loss`` a Python float.

    Args:
        logits: ``(N, H, W, K)`` float32/float64.
        labels: ``(N, H, W)`` integer class ids in ``[0, K)``, or ``ignore_label``.
        ignore_label: label value that contributes nothing (default 255, VOC's border); None: no ignore.
        class_weights: ``(K,)`` non-negative float weights or None (all 1); cast to the logits dtype.

    ``loss = sum_valid w[y] (logsumexp(z) - z_y) / sum_valid w[y]``, 0.0 when no pixel is valid.

    >>> logits = np.zeros((1, 1, 2, 4), np.float32)            # uniform over 4 classes
    >>> labels = np.array([[[1, 255]]])                         # second pixel ignored
    >>> loss, cache = softmax_cross_entropy_forward(logits, labels)
    >>> round(loss, 6) == round(float(np.log(4)), 6)
    True
    >>> softmax_cross_entropy_forward(logits, np.full((1, 1, 2), 255))[0]   # nothing valid
    0.0
    """
    weights = loss_class_weights(logits, labels, ignore_label, class_weights)   # (K,)

    valid = np.ones(labels.shape, bool) if ignore_label is None else labels != ignore_label   # (N, H, W)
    safe = np.where(valid, labels, 0).astype(np.int64)        # (N, H, W) ignored pixels read class 0 ...
    w_pix = np.where(valid, weights[safe], 0).astype(logits.dtype)   # ... and get weight 0

    shifted = logits - logits.max(axis=3, keepdims=True)       # (N, H, W, K), max 0: exp cannot overflow
    sum_exp = np.exp(shifted).sum(axis=3, keepdims=True)       # (N, H, W, 1), >= 1
    log_p = shifted - np.log(sum_exp)                          # (N, H, W, K) log-softmax
    nll = -np.take_along_axis(log_p, safe[..., None], axis=3)[..., 0]   # (N, H, W)

    total = float(w_pix.sum(dtype=np.float64))                 # sum_valid w[y]
    loss = float((w_pix * nll).sum(dtype=np.float64)) / total if total > 0 else 0.0
    cache = {"log_p": log_p, "labels": safe, "w_pix": w_pix, "total": total}
    return loss, cache


def softmax_cross_entropy_backward(dloss, cache):
    """``dlogits = dloss * w[y] * (softmax(z) - onehot(y)) / sum_valid w[y]``; exactly 0 on ignored pixels.

    >>> logits = np.zeros((1, 1, 1, 2))
    >>> loss, cache = softmax_cross_entropy_forward(logits, np.array([[[0]]]))
    >>> softmax_cross_entropy_backward(1.0, cache).ravel().tolist()     # p - onehot = [0.5 - 1, 0.5]
    [-0.5, 0.5]
    """
    dloss = check_dloss(dloss)
    log_p, w_pix, total = cache["log_p"], cache["w_pix"], cache["total"]
    if total == 0:
        return np.zeros_like(log_p)                            # no valid pixel: the loss is the constant 0
    grad = np.exp(log_p)                                       # (N, H, W, K) softmax
    np.put_along_axis(grad, cache["labels"][..., None],
                      np.take_along_axis(grad, cache["labels"][..., None], axis=3) - 1, axis=3)  # p - onehot
    scale = (dloss / total) * w_pix                            # (N, H, W), 0 on ignored pixels
    return (grad * scale[..., None]).astype(log_p.dtype, copy=False)
