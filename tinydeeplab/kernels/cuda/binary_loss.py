"""The binary losses of a one-logit head on the CUDA backend: the NumPy reference on a host copy.

A binary segmenter's logits have one channel, ``(N, H, W, 1)``: N*H*W numbers (2 MB for a batch of
8 at 256x256), against the ~100 MB of activations a training step keeps on the device. Each loss is a
few elementwise NumPy expressions and two sums, so the forward copies the logits (and device labels)
to the host once, runs :mod:`tinydeeplab.functional.binary_loss` there, and the backward copies the
gradient up once: two small copies per step, one copy of the maths. Validation is the reference's (the
shared checks run on a shape-only stand-in first, so a host array is refused like by every other op).
"""
from __future__ import annotations

from ...functional import binary_loss as ref
from ...functional.checks import check_binary_loss_args
from .device import require_device, spec, to_device, to_host


def _on_host(forward, logits, labels, ignore_label, **options):
    """``forward`` of the reference on host copies of device ``logits`` (and ``labels``)."""
    host_labels = to_host(labels)
    check_binary_loss_args(spec(logits), host_labels, ignore_label)
    require_device(logits, "logits")
    return forward(to_host(logits), host_labels, ignore_label=ignore_label, **options)


def sigmoid_binary_cross_entropy_forward(logits, labels, *, ignore_label=255, pos_weight=None):
    """:func:`tinydeeplab.functional.sigmoid_binary_cross_entropy_forward` of device ``logits`` (N, H, W, 1)."""
    return _on_host(ref.sigmoid_binary_cross_entropy_forward, logits, labels, ignore_label, pos_weight=pos_weight)


def sigmoid_binary_cross_entropy_backward(dloss, cache):
    """The gradient of the logits, on the device (N, H, W, 1)."""
    return to_device(ref.sigmoid_binary_cross_entropy_backward(dloss, cache))


def dice_loss_forward(logits, labels, *, ignore_label=255, smooth=1.0):
    """:func:`tinydeeplab.functional.dice_loss_forward` of device ``logits`` (N, H, W, 1)."""
    return _on_host(ref.dice_loss_forward, logits, labels, ignore_label, smooth=smooth)


def dice_loss_backward(dloss, cache):
    """The gradient of the logits, on the device (N, H, W, 1)."""
    return to_device(ref.dice_loss_backward(dloss, cache))


def sigmoid_focal_loss_forward(logits, labels, *, ignore_label=255, gamma=2.0, alpha=0.25):
    """:func:`tinydeeplab.functional.sigmoid_focal_loss_forward` of device ``logits`` (N, H, W, 1)."""
    return _on_host(ref.sigmoid_focal_loss_forward, logits, labels, ignore_label, gamma=gamma, alpha=alpha)


def sigmoid_focal_loss_backward(dloss, cache):
    """The gradient of the logits, on the device (N, H, W, 1)."""
    return to_device(ref.sigmoid_focal_loss_backward(dloss, cache))
