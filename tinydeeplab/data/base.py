"""The base class of the dataset readers and the colour palette used for label overlays."""
from __future__ import annotations

import numpy as np

from .errors import DatasetError

IGNORE_LABEL = 255


def voc_palette(num_classes: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: class ``c`` gets colour bits from the bits of ``c``.

    Returns ``(num_classes, 3)`` uint8.  Class 0 is black; consecutive classes get distinct colours.

    >>> voc_palette(3).tolist()
    [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    """
    palette = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        r = g = b = 0
        cid = c
        for j in range(8):
            r |= ((cid >> 0) & 1) << (7 - j)
            g |= ((cid >> 1) & 1) << (7 - j)
            b |= ((cid >> 2) & 1) << (7 - j)
            cid >>= 3
        palette[c] = (r, g, b)
    return palette


class SegmentationDataset:
    """Base class implementing the dataset protocol of :mod:`tinydeeplab.data`.

    Subclasses set ``num_classes``, ``class_names``, ``palette`` and ``names`` and implement
    ``_load(i) -> (image (H, W, 3) uint8, label (H, W) uint8)`` for ``0 <= i < len(self)``.
    """

    num_classes: int
    class_names: list[str]
    palette: np.ndarray                                  # (num_classes, 3) uint8
    names: list[str]
    ignore_label: int = IGNORE_LABEL

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index) -> tuple[np.ndarray, np.ndarray]:
        """``ds[i] -> (image (H, W, 3) uint8 RGB, label (H, W) uint8 with 255 = ignore)``."""
        n = len(self)
        try:
            i = int(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__} indices must be integers, got {type(index).__name__}") from None
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} with {n} items")
        return self._load(i)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, {self.num_classes} classes)"


def check_class_names(class_names, num_classes: int) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise DatasetError(f"{len(names)} class names given for {num_classes} classes")
    return names
