"""What a segmenter's logits mean: per-pixel probabilities and the predicted label, multi-class or binary.

A head of K >= 2 channels is read through a softmax over the classes; a *binary* head has one channel,
the foreground logit, read through a sigmoid (a softmax over one class would be the constant 1)::

    K >= 2:  p = softmax(z)          label = argmax_k z_k          logit map of p: log p
    K  = 1:  p = sigmoid(z)          label = [z > 0] = [p > 1/2]    logit map of p: log(p / (1 - p))

A binary head predicts two labels, 0 (background) and 1 (foreground): its dataset, palette and confusion
matrix have ``label_classes(1) = 2`` classes. The functions here are the one place that rule is written:
the segmenter's ``segment``, evaluation (test-time augmentation averages ``probabilities``) and tiled
prediction all call them.

>>> z = np.array([[2.0, -1.0], [-0.5, 3.0]])[..., None]           # (2, 2, 1): a binary head
>>> predicted_labels(z).tolist(), probabilities(z).shape, label_classes(1)
([[1, 0], [0, 1]], (2, 2, 1), 2)
>>> bool(np.allclose(logits_of(probabilities(z)), z))             # the sigmoid's inverse
True
"""
from __future__ import annotations

import numpy as np

from ..functional.elementwise import _logistic


def is_binary(num_classes: int) -> bool:
    """A one-channel head: the foreground logit of a binary (one-class) segmenter."""
    return int(num_classes) == 1


def label_classes(num_classes: int) -> int:
    """How many labels a head of ``num_classes`` channels predicts: 2 for a binary head, else K."""
    return 2 if is_binary(num_classes) else int(num_classes)


def softmax(z):
    """Class probabilities of logits ``z`` (..., K): ``exp(z - max z) / sum exp(z - max z)``.

    >>> softmax(np.array([0.0, np.log(3.0)])).round(3).tolist()
    [0.25, 0.75]
    """
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def probabilities(z):
    """Per-pixel probabilities of logits ``z`` (..., K): the softmax, or for K = 1 the foreground sigmoid."""
    return _logistic(z) if is_binary(z.shape[-1]) else softmax(z)


def logits_of(p):
    """A logit map whose :func:`probabilities` are ``p``: ``log p`` (K >= 2), ``log p - log(1 - p)`` (K = 1).

    Probabilities are clipped to the dtype's smallest normal number first, so 0 and 1 stay finite.
    """
    tiny = np.finfo(p.dtype).tiny
    if is_binary(p.shape[-1]):
        return np.log(np.maximum(p, tiny)) - np.log(np.maximum(1 - p, tiny))
    return np.log(np.maximum(p, tiny))


def predicted_labels(z):
    """Labels of logits ``z`` (..., K) -> (...): ``argmax`` over the classes, or ``z > 0`` for K = 1."""
    if is_binary(z.shape[-1]):
        return (z[..., 0] > 0).astype(np.int64)
    return z.argmax(-1)


def labels_from_probabilities(p):
    """Labels of probabilities ``p`` (..., K) -> (...): ``argmax``, or ``p > 1/2`` for K = 1."""
    if is_binary(p.shape[-1]):
        return (p[..., 0] > 0.5).astype(np.int64)
    return p.argmax(-1)
