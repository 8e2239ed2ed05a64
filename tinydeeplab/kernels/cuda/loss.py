"""Pixel-wise softmax cross-entropy on the GPU (sparse labels, ignore label, class weights).

Same maths as :mod:`tinydeeplab.functional.loss`. One thread per pixel ``p`` with logits ``z`` (K classes)
and label ``y``::

    m        = max_k z_k
    log_p[k] = z_k - m - log(sum_k exp(z_k - m))          (stored: the backward needs softmax = exp(log_p))
    w_pix    = w[y] if y != ignore_label else 0
    wnll[p]  = w_pix * (-log_p[y])

then two deterministic float64 vector sums (:mod:`.reduce`), and a single copy of two numbers to the
host: ``loss = sum wnll / sum w_pix`` is returned as a Python float, as in the reference.

Backward, one thread per logit: ``dlogits[p, k] = dloss * w_pix[p] / total * (exp(log_p[p, k]) - [k == y])``.

Labels are host arrays in the training loop; they are validated on the host with the shared checks
(every label in ``[0, K)`` or the ignore label) and copied to the device with the images. A device
array of labels is copied back once for that check.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ...functional.checks import check_dloss, loss_class_weights
from .device import empty, is_device_array, launch_1d, require_device, spec, to_device, to_host, zeros
from .reduce import vector_sum


@cuda.jit
def _ce_pixels(z2, labels, weights, ignore_label, has_ignore, log_p, w_pix, wnll):
    """Per pixel of ``z2 (P, K)``: ``log_p`` (P, K), ``w_pix`` (P,) and ``wnll`` (P,)."""
    p_n, k_n = z2.shape
    for p in range(cuda.grid(1), p_n, cuda.gridsize(1)):
        m = z2[p, 0]
        for k in range(1, k_n):
            m = max(m, z2[p, k])
        s = 0.0
        for k in range(k_n):
            s += math.exp(z2[p, k] - m)
        log_s = math.log(s)
        for k in range(k_n):
            log_p[p, k] = (z2[p, k] - m) - log_s
        y = labels[p]
        if has_ignore and y == ignore_label:
            w_pix[p] = 0
            wnll[p] = 0
        else:
            w_pix[p] = weights[y]
            wnll[p] = weights[y] * -log_p[p, y]


@cuda.jit
def _ce_grad(log_p, labels, w_pix, scale, ignore_label, has_ignore, grad):
    """``grad[p, k] = scale * w_pix[p] * (exp(log_p[p, k]) - [k == y_p])``; 0 on ignored pixels."""
    k_n = log_p.shape[1]
    for i in range(cuda.grid(1), log_p.size, cuda.gridsize(1)):
        p, k = i // k_n, i % k_n
        y = labels[p]
        if has_ignore and y == ignore_label:
            grad[p, k] = 0
        else:
            g = math.exp(log_p[p, k])
            if k == y:
                g -= 1.0
            grad[p, k] = scale * w_pix[p] * g


def softmax_cross_entropy_forward(logits, labels, *, ignore_label=255, class_weights=None):
    """Weighted mean cross-entropy over the valid pixels; returns ``(loss, cache)``, ``loss`` a Python float.

    ``logits``: (N, H, W, K) device array; ``labels``: (N, H, W) integers (host or device);
    ``class_weights``: (K,) or None. ``loss = sum_valid w[y] (logsumexp(z) - z_y) / sum_valid w[y]``.
    """
    require_device(logits, "logits")
    host_labels = to_host(labels)
    host_weights = to_host(class_weights)
    weights = loss_class_weights(spec(logits), host_labels, ignore_label, host_weights)   # (K,), validated
    n, h, w, k = logits.shape
    p_n = n * h * w
    labels_d = labels if is_device_array(labels) else to_device(host_labels)
    labels_d = labels_d.reshape(p_n)                                                       # (P,)
    has_ignore = ignore_label is not None
    z2 = logits.reshape(p_n, k)                                                            # (P, K)
    log_p, w_pix, wnll = empty((p_n, k), logits.dtype), empty((p_n,), logits.dtype), empty((p_n,), logits.dtype)
    launch_1d(_ce_pixels, p_n, z2, labels_d, to_device(weights), int(ignore_label) if has_ignore else 0,
              has_ignore, log_p, w_pix, wnll)
    sums = empty((2,), np.float64)
    vector_sum(wnll, out=sums, index=0)
    vector_sum(w_pix, out=sums, index=1)
    weighted, total = (float(v) for v in sums.copy_to_host())                              # the one host copy
    loss = weighted / total if total > 0 else 0.0
    cache = {"log_p": log_p, "labels": labels_d, "w_pix": w_pix, "total": total, "shape": tuple(logits.shape),
             "ignore_label": int(ignore_label) if has_ignore else 0, "has_ignore": has_ignore}
    return loss, cache


def softmax_cross_entropy_backward(dloss, cache):
    """``dlogits = dloss * w[y] * (softmax(z) - onehot(y)) / sum_valid w[y]``; exactly 0 on ignored pixels."""
    dloss = check_dloss(dloss)
    log_p, total = cache["log_p"], cache["total"]
    if total == 0:
        return zeros(cache["shape"], log_p.dtype)                   # no valid pixel: the loss is the constant 0
    grad = empty(log_p.shape, log_p.dtype)                          # (P, K)
    launch_1d(_ce_grad, log_p.size, log_p, cache["labels"], cache["w_pix"], float(dloss) / total,
              cache["ignore_label"], cache["has_ignore"], grad)
    return grad.reshape(*cache["shape"])                            # (N, H, W, K)

