"""One class against the rest: a binary (foreground / background) view of a multi-class dataset.

:class:`OneVsRest` turns labels into the targets of a binary head (``num_classes=1``)::

    label 0  where the item's label is another class        (the rest, background)
    label 1  where it is the chosen class                   (foreground)
    255      where it is the ignore label                   (void stays ignored)

>>> from tinydeeplab.data import SyntheticShapes
>>> shapes = SyntheticShapes(length=2, size=(16, 16), seed=3)
>>> circles = OneVsRest(shapes, "circle")
>>> circles.num_classes, circles.class_names, len(circles)
(2, ['rest', 'circle'], 2)
>>> image, label = circles[0]
>>> bool(((label == 1) == (shapes[0][1] == 1)).all())
True
"""
from __future__ import annotations

import numpy as np

from .base import SegmentationDataset
from .errors import DatasetError


class OneVsRest(SegmentationDataset):
    """The items of ``dataset`` with labels 1 on class ``class_name``, 0 on every other class, ignore kept.

    ``class_name`` is one of ``dataset.class_names`` (e.g. CamVid's ``"Road"``); a name it lacks is a
    :class:`DatasetError` listing the names it has.
    """

    num_classes = 2

    def __init__(self, dataset, class_name: str):
        names = [str(c) for c in dataset.class_names]
        if class_name not in names:
            raise DatasetError(f"class {class_name!r} is not one of the dataset's classes: {', '.join(names)}")
        self.dataset, self.class_index = dataset, names.index(class_name)
        self.ignore_label = int(getattr(dataset, "ignore_label", 255))
        self.class_names = ["rest", class_name]
        palette = np.asarray(dataset.palette)
        self.palette = np.stack([np.zeros(3, np.uint8), palette[self.class_index]]).astype(np.uint8)   # (2, 3)

    @property
    def names(self) -> list[str]:
        return self.dataset.names

    def __len__(self) -> int:
        return len(self.dataset)

    def _target(self, label) -> np.ndarray:
        label = np.asarray(label)                                               # (H, W)
        target = (label == self.class_index).astype(np.uint8)
        target[label == self.ignore_label] = self.ignore_label
        return target

    def _files(self, i: int):
        return self.dataset.files(i) if hasattr(self.dataset, "files") else ()

    def _label(self, i: int) -> np.ndarray:
        return self._target(self.dataset.read_label(i) if hasattr(self.dataset, "read_label") else self.dataset[i][1])

    def _load(self, i: int):
        image, label = self.dataset[i]
        return image, self._target(label)

    def __repr__(self) -> str:
        return f"OneVsRest({self.dataset!r}, {self.class_names[1]!r})"
