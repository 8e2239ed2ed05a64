"""The training loss of a segmenter, chosen by name: softmax cross-entropy or a binary head's losses.

==========  ===========================================================================================
``ce``      softmax cross-entropy over K >= 2 classes (class weights allowed): the default for K >= 2
``bce``     sigmoid binary cross-entropy of a one-logit head (``num_classes=1``): the default for K = 1
``dice``    soft Dice loss of the foreground probability (smoothing ``smooth``)
``focal``   sigmoid focal loss (``gamma``, ``alpha``)
``bce+dice`` the sum of the two (cross-entropy's per-pixel gradient plus Dice's overlap term)
==========  ===========================================================================================

Each is an op pair of the active backend (:mod:`tinydeeplab.functional` and its backends), so the loss
runs wherever the model does. A one-class softmax is refused: it is the constant 1 and learns nothing.
The cache of every loss holds ``total``, its count of valid pixels, which data-parallel training uses to
weight the ranks' losses (for Dice, a per-rank overlap: the ranks' Dice losses are averaged weighted by
their pixels, not pooled into one global Dice).

>>> loss = SegmentationLoss(None, num_classes=1)               # a binary head: binary cross-entropy
>>> loss.name
'bce'
>>> SegmentationLoss("ce", num_classes=1)                      # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.errors.TrainingError: num_classes=1 with a softmax cross-entropy learns nothing: ...
"""
from __future__ import annotations

from ..backend import ops
from ..errors import TrainingError
from ..functional.binary_loss import ONE_CLASS_SOFTMAX
from ..models.head import is_binary

LOSSES = ("ce", "bce", "dice", "focal", "bce+dice")
"""Names of the training losses (``tinydeeplab train --loss``)."""

_OPS = {"ce": ("softmax_cross_entropy",), "bce": ("sigmoid_binary_cross_entropy",), "dice": ("dice_loss",),
        "focal": ("sigmoid_focal_loss",), "bce+dice": ("sigmoid_binary_cross_entropy", "dice_loss")}


class SegmentationLoss:
    """``loss, cache = forward(logits, labels)`` and ``dlogits = backward(dloss, cache)`` for loss ``name``.

    Args:
        name: one of :data:`LOSSES`, or None: ``"ce"`` for ``num_classes >= 2``, ``"bce"`` for 1.
        num_classes: the head's channels (1: binary, the foreground logit).
        ignore_label: label of pixels that count nowhere.
        class_weights: per-class weights of ``"ce"`` only.
        pos_weight, smooth, gamma, alpha: the binary losses' options (``bce``, ``dice``, ``focal``).
    """

    def __init__(self, name, num_classes: int, *, ignore_label=255, class_weights=None, pos_weight=None,
                 smooth: float = 1.0, gamma: float = 2.0, alpha=0.25):
        binary = is_binary(num_classes)
        name = ("bce" if binary else "ce") if name is None else name
        if name not in LOSSES:
            raise TrainingError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")
        if name == "ce" and binary:
            raise TrainingError(ONE_CLASS_SOFTMAX)
        if name != "ce" and not binary:
            raise TrainingError(f"loss {name} is a binary loss: it needs a one-logit head (num_classes=1, "
                                f"e.g. --binary), the model has {num_classes} classes; use ce")
        if name != "ce" and class_weights is not None:
            raise TrainingError(f"class weights weight the softmax cross-entropy, not loss {name} (a binary "
                                "loss takes pos_weight)")
        self.name, self.ignore_label = name, ignore_label
        self._options = {"softmax_cross_entropy": {"class_weights": class_weights},
                         "sigmoid_binary_cross_entropy": {"pos_weight": pos_weight},
                         "dice_loss": {"smooth": smooth}, "sigmoid_focal_loss": {"gamma": gamma, "alpha": alpha}}

    def forward(self, logits, labels):
        """``(loss, cache)``: the sum of the named terms (a float) and what the backward needs."""
        backend, total, caches = ops(), 0.0, []
        for op in _OPS[self.name]:
            value, cache = getattr(backend, op + "_forward")(logits, labels, ignore_label=self.ignore_label,
                                                             **self._options[op])
            total += value
            caches.append(cache)
        return total, {"terms": caches, "total": caches[0]["total"]}

    def backward(self, dloss, cache):
        """``dlogits`` (N, H, W, K) of ``dloss * loss``, in the backend's arrays (where the logits are)."""
        backend, grad = ops(), None
        for op, term in zip(_OPS[self.name], cache["terms"]):
            g = getattr(backend, op + "_backward")(dloss, term)
            grad = g if grad is None else backend.add_forward(grad, g, inplace=True)[0]   # bce+dice: summed
        return grad
