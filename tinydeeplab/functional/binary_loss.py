"""Losses of a one-class (binary) segmenter: sigmoid binary cross-entropy, soft Dice and sigmoid focal loss.

A binary head has one logit per pixel, ``z = logits[n, h, w, 0]``, the foreground's; ``p = sigmoid(z)`` is
the foreground probability and the prediction is ``z > 0``. A softmax over one class is the constant 1,
its cross-entropy is 0 whatever the logit and its gradient is exactly zero: a one-class softmax learns
nothing, which is why these losses exist. Labels are ``y`` in ``{0, 1}``; a pixel labelled
``ignore_label`` is invalid and contributes nothing, to any sum (``V`` = the valid pixels, ``|V|`` their
count). With ``softplus(t) = log(1 + exp(t))`` (evaluated as ``logaddexp(0, t)``: stable for any ``t``)::

    bce   = sum_V [ w+ y softplus(-z) + (1 - y) softplus(z) ] / |V|        (= -w+ y log p - (1 - y) log(1 - p))
    dice  = 1 - (2 sum_V p y + s) / (sum_V p + sum_V y + s)                (soft Dice, smoothing s)
    focal = sum_V alpha_t (1 - p_t)^gamma softplus(-z_t) / |V|             (= -alpha_t (1 - p_t)^gamma log p_t)

where ``w+`` is ``pos_weight``, ``z_t = z`` if ``y = 1`` else ``-z`` (so ``p_t = sigmoid(z_t)`` is the
probability of the true class) and ``alpha_t = alpha`` if ``y = 1`` else ``1 - alpha`` (1 when
``alpha=None``). Each loss is 0.0 with a zero gradient when no pixel is valid. Backward::

    dbce/dz   = [ w+ y (p - 1) + (1 - y) p ] / |V|
    ddice/dz  = -(2 y - D) / (sum_V p + sum_V y + s) * p (1 - p)          D = 1 - dice
    dfocal/dz = -(2 y - 1) alpha_t q^gamma [ gamma p_t softplus(-z_t) + q ] / |V|      q = 1 - p_t

each times ``dloss`` and exactly 0 on ignored pixels. With ``gamma = 0`` the focal loss is the
alpha-weighted cross-entropy, ``(1 - alpha) * bce`` with ``w+ = alpha / (1 - alpha)``.
"""
from __future__ import annotations

import numpy as np

from .checks import check_binary_loss_args, check_dloss, check_loss_option
from .elementwise import _logistic

ONE_CLASS_SOFTMAX = ("num_classes=1 with a softmax cross-entropy learns nothing: a softmax over one class is "
                     "the constant 1, so the loss is 0 and its gradient is zero; use a sigmoid head (binary "
                     "cross-entropy, Dice or focal loss on the foreground logit)")
"""Why a one-class softmax is refused (by the trainer's loss and the segmenter's ``activation``)."""


def _binary_inputs(logits, labels, ignore_label):
    """Validated ``(z (N, H, W), y (N, H, W) 0/1 in z's dtype, valid (N, H, W) bool, count of valid)``."""
    check_binary_loss_args(logits, labels, ignore_label)
    valid = np.ones(labels.shape, bool) if ignore_label is None else labels != ignore_label   # (N, H, W)
    z = logits[..., 0]                                                                        # (N, H, W)
    y = ((labels == 1) & valid).astype(logits.dtype)                                          # (N, H, W)
    return z, y, valid, int(valid.sum())


def _softplus(t):
    """``log(1 + exp(t))`` without overflow."""
    return np.logaddexp(t.dtype.type(0), t)


def _mean_valid(per_pixel, valid, count) -> float:
    """``sum_V per_pixel / |V|`` in float64 (0.0 when nothing is valid)."""
    return float(per_pixel[valid].sum(dtype=np.float64)) / count if count else 0.0


def _dlogits(dloss, cache, dz):
    """``dloss * dz`` as the logits' gradient (N, H, W, 1); 0 on ignored pixels and when nothing is valid."""
    dloss = check_dloss(dloss)
    valid = cache["valid"]
    out = np.zeros(valid.shape + (1,), cache["dtype"])                         # (N, H, W, 1)
    if cache["total"]:
        out[..., 0] = np.where(valid, dloss * dz, 0)
    return out


def sigmoid_binary_cross_entropy_forward(logits, labels, *, ignore_label=255, pos_weight=None):
    """Mean binary cross-entropy of the foreground logit over the valid pixels; returns ``(loss, cache)``.

    Args:
        logits: ``(N, H, W, 1)`` float32/float64, the foreground logit ``z``.
        labels: ``(N, H, W)`` integers: 0 background, 1 foreground, or ``ignore_label``.
        ignore_label: label value that contributes nothing (default 255); None: no ignore.
        pos_weight: ``w+ >= 0``, the weight of the foreground term (None: 1).

    ``loss = sum_V [w+ y softplus(-z) + (1 - y) softplus(z)] / |V|``; 0.0 when no pixel is valid.

    >>> logits = np.array([0.0, 0.0, 50.0]).reshape(1, 1, 3, 1)
    >>> loss, cache = sigmoid_binary_cross_entropy_forward(logits, np.array([[[1, 255, 0]]]))
    >>> round(loss, 6) == round(float(np.log(2) + 50) / 2, 6)      # log 2 and softplus(50) ~ 50
    True
    """
    z, y, valid, count = _binary_inputs(logits, labels, ignore_label)
    w_pos = check_loss_option(pos_weight, "pos_weight", optional=True)
    w_pos = 1.0 if w_pos is None else w_pos
    per_pixel = w_pos * y * _softplus(-z) + (1 - y) * _softplus(z)          # (N, H, W)
    cache = {"z": z, "y": y, "valid": valid, "total": count, "pos_weight": w_pos, "dtype": logits.dtype}
    return _mean_valid(per_pixel, valid, count), cache


def sigmoid_binary_cross_entropy_backward(dloss, cache):
    """``dlogits = dloss * [w+ y (p - 1) + (1 - y) p] / |V|``; exactly 0 on ignored pixels.

    >>> loss, cache = sigmoid_binary_cross_entropy_forward(np.zeros((1, 1, 2, 1)), np.array([[[1, 0]]]))
    >>> sigmoid_binary_cross_entropy_backward(1.0, cache).ravel().tolist()   # (0.5 - 1) / 2, 0.5 / 2
    [-0.25, 0.25]
    """
    z, y, w_pos = cache["z"], cache["y"], cache["pos_weight"]
    p = _logistic(z)                                                          # (N, H, W)
    return _dlogits(dloss, cache, (w_pos * y * (p - 1) + (1 - y) * p) / max(cache["total"], 1))


def dice_loss_forward(logits, labels, *, ignore_label=255, smooth=1.0):
    """Soft Dice loss of ``p = sigmoid(z)`` against the foreground over the valid pixels of the whole batch.

    ``loss = 1 - D``, ``D = (2 sum_V p y + s) / (sum_V p + sum_V y + s)``, ``s = smooth >= 0``; in
    ``[0, 1]`` because ``2 p y <= p + y``. 0.0 when no pixel is valid. Returns ``(loss, cache)``.

    >>> logits = np.array([40.0, -40.0, 3.0]).reshape(1, 1, 3, 1)         # p ~ 1, 0; third pixel ignored
    >>> loss, _ = dice_loss_forward(logits, np.array([[[1, 0, 255]]]), smooth=0.0)
    >>> round(loss, 9)
    0.0
    >>> round(dice_loss_forward(logits, np.array([[[0, 1, 255]]]), smooth=0.0)[0], 9)   # all wrong
    1.0
    """
    z, y, valid, count = _binary_inputs(logits, labels, ignore_label)
    s = check_loss_option(smooth, "smooth")
    p = np.where(valid, _logistic(z), 0)                                      # (N, H, W), 0 where ignored
    inter = float((p * y).sum(dtype=np.float64))                              # sum_V p y
    denom = float(p.sum(dtype=np.float64)) + float(y.sum(dtype=np.float64)) + s
    dice = (2 * inter + s) / denom if count and denom > 0 else 1.0
    cache = {"p": p, "y": y, "valid": valid, "total": count, "dice": dice, "denom": denom, "dtype": logits.dtype}
    return 1.0 - dice, cache


def dice_loss_backward(dloss, cache):
    """``dlogits = -dloss * (2 y - D) / (sum_V p + sum_V y + s) * p (1 - p)``; exactly 0 on ignored pixels.

    >>> loss, cache = dice_loss_forward(np.zeros((1, 1, 1, 1)), np.array([[[1]]]), smooth=0.0)   # D = 2/3
    >>> round(float(dice_loss_backward(1.0, cache)[0, 0, 0, 0]), 6)       # -(2 - 2/3) / 1.5 * 0.25
    -0.222222
    """
    p, y = cache["p"], cache["y"]
    if cache["denom"] <= 0:
        return _dlogits(dloss, {**cache, "total": 0}, 0)
    return _dlogits(dloss, cache, -(2 * y - cache["dice"]) / cache["denom"] * p * (1 - p))


def sigmoid_focal_loss_forward(logits, labels, *, ignore_label=255, gamma=2.0, alpha=0.25):
    """Mean sigmoid focal loss (Lin et al., RetinaNet) over the valid pixels; returns ``(loss, cache)``.

    ``loss = sum_V alpha_t (1 - p_t)^gamma softplus(-z_t) / |V|`` with ``z_t = +-z`` (the true class's
    logit), ``p_t = sigmoid(z_t)``, ``alpha_t = alpha`` on foreground and ``1 - alpha`` on background
    (``alpha=None``: 1). ``gamma >= 0`` down-weights the pixels already right; ``gamma = 0`` is the
    alpha-weighted cross-entropy. 0.0 when no pixel is valid.

    >>> logits = np.array([0.0, 0.0]).reshape(1, 1, 2, 1)                  # p_t = 1/2 on both pixels
    >>> loss, _ = sigmoid_focal_loss_forward(logits, np.array([[[1, 0]]]), gamma=2.0, alpha=0.25)
    >>> round(loss, 6) == round((0.25 + 0.75) * 0.25 * float(np.log(2)) / 2, 6)
    True
    """
    z, y, valid, count = _binary_inputs(logits, labels, ignore_label)
    g = check_loss_option(gamma, "gamma")
    a = check_loss_option(alpha, "alpha", high=1.0, optional=True)
    sign = 2 * y - 1                                                          # (N, H, W) +1 fg, -1 bg
    z_t = sign * z                                                            # the true class's logit
    q = _logistic(-z_t)                                                       # 1 - p_t
    nll = _softplus(-z_t)                                                     # -log p_t
    alpha_t = np.ones_like(z) if a is None else np.where(y == 1, a, 1 - a).astype(z.dtype)
    per_pixel = alpha_t * q ** g * nll                                        # (N, H, W)
    cache = {"sign": sign, "q": q, "nll": nll, "alpha_t": alpha_t, "gamma": g, "valid": valid,
             "total": count, "dtype": logits.dtype}
    return _mean_valid(per_pixel, valid, count), cache


def sigmoid_focal_loss_backward(dloss, cache):
    """``dlogits = -dloss (2 y - 1) alpha_t q^gamma [gamma p_t softplus(-z_t) + q] / |V|``, ``q = 1 - p_t``.

    >>> loss, cache = sigmoid_focal_loss_forward(np.zeros((1, 1, 1, 1)), np.array([[[1]]]), gamma=0.0, alpha=None)
    >>> float(sigmoid_focal_loss_backward(1.0, cache)[0, 0, 0, 0])            # gamma 0: p - 1
    -0.5
    """
    q, g = cache["q"], cache["gamma"]
    dz_t = -cache["alpha_t"] * q ** g * (g * (1 - q) * cache["nll"] + q)      # d focal / d z_t
    return _dlogits(dloss, cache, cache["sign"] * dz_t / max(cache["total"], 1))
