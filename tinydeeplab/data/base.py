"""The base class of the dataset readers and the colour palette used for label overlays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import check_image_file, check_same_size, read_rgb
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

    Subclasses set ``num_classes``, ``class_names``, ``palette`` and ``names``.  File-backed ones
    implement ``_files(i) -> (image_path, label_path)`` and ``_label(i) -> (H, W) uint8`` (read, range
    checked, mapped to 255 = ignore), for ``0 <= i < len(self)``; the image is then read by
    :func:`~tinydeeplab.data.files.read_rgb` and the sizes compared.  Generated datasets override
    ``_load(i) -> (image (H, W, 3) uint8, label (H, W) uint8)`` and have no files.
    """

    num_classes: int
    class_names: list[str]
    palette: np.ndarray                                  # (num_classes, 3) uint8
    names: list[str]
    ignore_label: int = IGNORE_LABEL

    def __len__(self) -> int:
        return len(self.names)

    def _index(self, index) -> int:
        n = len(self)
        try:
            i = int(index)
        except TypeError:
            raise TypeError(f"{type(self).__name__} indices must be integers, got {type(index).__name__}") from None
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} with {n} items")
        return i

    def __getitem__(self, index) -> tuple[np.ndarray, np.ndarray]:
        """``ds[i] -> (image (H, W, 3) uint8 RGB, label (H, W) uint8 with 255 = ignore)``."""
        return self._load(self._index(index))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def files(self, index) -> tuple[Path, ...]:
        """The files item ``index`` is read from, ``(image_path, label_path)``; ``()`` when generated."""
        return tuple(self._files(self._index(index)))

    def read_label(self, index) -> np.ndarray:
        """Item ``index``'s label alone, as ``ds[index]`` returns it, without decoding the image.  (H, W) uint8."""
        return self._label(self._index(index))

    def _files(self, i: int) -> tuple[Path, ...]:
        return ()

    def read_image_file(self, path) -> np.ndarray:
        """Decode one of this dataset's image files: (H, W, 3) uint8 RGB (:func:`read_rgb`)."""
        return read_rgb(path)

    def check_image_file(self, path) -> tuple[int, int]:
        """(H, W) of an image file, checked cheaply as :meth:`read_image_file` would read it."""
        return check_image_file(path)

    def _label(self, i: int) -> np.ndarray:
        return self._load(i)[1]

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self._files(i)
        image = self.read_image_file(image_path)                         # (H, W, 3) (or (H, W, C))
        label = self._label(i)                                           # (H, W)
        check_same_size(image.shape, label.shape, image_path, label_path)
        return image, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, {self.num_classes} classes)"


def check_class_names(class_names, num_classes: int) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise DatasetError(f"{len(names)} class names given for {num_classes} classes")
    return names
