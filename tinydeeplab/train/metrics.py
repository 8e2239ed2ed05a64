"""Streaming confusion matrix -> per-class IoU, mean IoU and pixel accuracy.

``M[i, j]`` counts pixels whose label is ``i`` and prediction ``j`` (pixels labelled with the ignore
label are skipped). With ``TP_k = M[k, k]``, ``FN_k = sum_j M[k, j] - TP_k``, ``FP_k = sum_i M[i, k] - TP_k``::

    IoU_k          = TP_k / (TP_k + FP_k + FN_k)      NaN when class k is absent from labels and predictions
    Dice_k         = 2 TP_k / (2 TP_k + FP_k + FN_k)  (= F1; = 2 IoU_k / (1 + IoU_k)), NaN likewise
    mIoU           = nanmean_k IoU_k
    pixel accuracy = sum_k TP_k / sum_ij M[i, j]

One update is a single ``bincount`` of ``K * label + pred`` over the valid pixels.
"""
from __future__ import annotations

import warnings

import numpy as np


class ConfusionMatrix:
    """Accumulates a ``(K, K)`` int64 confusion matrix over batches of any shape.

    >>> cm = ConfusionMatrix(3)
    >>> cm.update(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 255]))   # last pixel ignored
    >>> cm.iou().tolist()                                             # class 2: TP 0, FN 1
    [1.0, 0.5, 0.0]
    >>> round(cm.miou(), 4), round(cm.pixel_accuracy(), 4)
    (0.5, 0.6667)
    """

    def __init__(self, num_classes: int, ignore_label: int | None = 255):
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)   # rows: label, cols: prediction

    def reset(self) -> None:
        self.matrix[...] = 0

    def update(self, pred, label) -> None:
        """Add a batch: ``pred`` and ``label`` integer arrays of the same (any) shape.

        Raises ``ValueError`` naming the offending values when a label is outside ``[0, K)`` and is
        not the ignore label, or a prediction is outside ``[0, K)``.
        """
        pred, label = np.asarray(pred), np.asarray(label)
        if pred.shape != label.shape:
            raise ValueError(f"pred and label must have the same shape, got {pred.shape} and {label.shape}")
        for what, a in (("pred", pred), ("label", label)):
            if a.dtype.kind not in "iub":
                raise ValueError(f"{what} must be an integer array (class ids), got dtype {a.dtype}")
        k = self.num_classes
        label = label.ravel().astype(np.int64)                    # (P,)
        pred = pred.ravel().astype(np.int64)                      # (P,)
        valid = np.ones(label.shape, bool) if self.ignore_label is None else label != self.ignore_label
        bad = valid & ((label < 0) | (label >= k))
        if bad.any():
            values = np.unique(label[bad])
            raise ValueError(f"labels must be in [0, {k}) or the ignore label {self.ignore_label}; "
                             f"found {values[:10].tolist()}{' ...' if len(values) > 10 else ''} "
                             f"({int(bad.sum())} pixels)")
        bad = valid & ((pred < 0) | (pred >= k))
        if bad.any():
            values = np.unique(pred[bad])
            raise ValueError(f"predictions must be in [0, {k}); found {values[:10].tolist()}"
                             f"{' ...' if len(values) > 10 else ''}")
        counts = np.bincount(k * label[valid] + pred[valid], minlength=k * k)   # (K*K,)
        self.matrix += counts.reshape(k, k)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts into this one (e.g. from another worker); returns self."""
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError(f"can only merge a ConfusionMatrix with {self.num_classes} classes, got {other!r}")
        self.matrix += other.matrix
        return self

    # -- metrics ------------------------------------------------------------------------------
    def iou(self) -> np.ndarray:
        """Per-class IoU ``TP / (TP + FP + FN)``, (K,) float64; NaN for classes never seen nor predicted."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp           # TP + FP + FN
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def dice(self) -> np.ndarray:
        """Per-class Dice ``2 TP / (2 TP + FP + FN)``, (K,) float64; NaN for classes never seen nor predicted.

        >>> cm = ConfusionMatrix(2); cm.update(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 1]))
        >>> cm.dice().tolist(), cm.iou().tolist()                      # TP 1, FP 1, FN 1 for both classes
        ([0.5, 0.5], [0.3333333333333333, 0.3333333333333333])
        """
        tp = np.diag(self.matrix).astype(np.float64)
        both = self.matrix.sum(0) + self.matrix.sum(1)                 # 2 TP + FP + FN
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(both > 0, 2 * tp / np.maximum(both, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes that occur (NaN before any valid pixel)."""
        iou = self.iou()
        if np.isnan(iou).all():
            return float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(iou))

    def pixel_accuracy(self) -> float:
        """Fraction of valid pixels predicted correctly (NaN before any valid pixel)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall ``TP / (TP + FN)``; NaN for classes absent from the labels."""
        support = self.matrix.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(support > 0, np.diag(self.matrix) / np.maximum(support, 1), np.nan)

    def table(self, class_names=None) -> str:
        """A printable table: class, IoU, accuracy (recall), labelled pixels; then mIoU and pixel accuracy.

        >>> cm = ConfusionMatrix(2); cm.update(np.array([0, 1]), np.array([0, 0]))
        >>> print(cm.table(["sky", "road"]))
        class     IoU     acc  pixels
        sky    50.00%  50.00%       2
        road    0.00%       -       0
        mean IoU 25.00%  pixel accuracy 50.00%
        """
        names = [str(i) for i in range(self.num_classes)] if class_names is None else [str(n) for n in class_names]
        if len(names) != self.num_classes:
            raise ValueError(f"got {len(names)} class names for {self.num_classes} classes")
        pct = lambda v: "      -" if np.isnan(v) else f"{100 * v:6.2f}%"  # noqa: E731
        w = max(5, *(len(n) for n in names))
        lines = [f"{'class':{w}s} {'IoU':>7s} {'acc':>7s} {'pixels':>7s}"]
        for name, iou, acc, n in zip(names, self.iou(), self.class_accuracy(), self.matrix.sum(1)):
            lines.append(f"{name:{w}s} {pct(iou)} {pct(acc)} {n:7d}")
        lines.append(f"mean IoU {pct(self.miou()).strip()}  pixel accuracy {pct(self.pixel_accuracy()).strip()}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, pixels={int(self.matrix.sum())}, "
                f"miou={self.miou():.4f})")
