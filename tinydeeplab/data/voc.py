"""PASCAL VOC 2012 segmentation (the 1,464 train / 1,449 val images with pixel labels).

Layout (``root`` may be ``VOC2012`` itself, the ``VOCdevkit`` folder above it, or the folder above that)::

    VOCdevkit/VOC2012/
      ImageSets/Segmentation/{train,val,trainval}.txt    one image id per line
      JPEGImages/{id}.jpg                                RGB photo
      SegmentationClass/{id}.png                         palette PNG: index = class, 255 = boundary/void

The label PNGs are palette images: their *indices* are the classes (read in PIL mode ``"P"``); converting
them to RGB would give the overlay colours instead.  The 255 boundary band is kept as the ignore label.

Usage::

    ds = VOCSegmentation("~/data/VOCdevkit", split="val")
    image, label = ds[0]        # (H, W, 3) uint8, (H, W) uint8 in {0..20, 255}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import available_splits, check_label, missing_files_error, read_index_png, read_split_file
from .base import IGNORE_LABEL, SegmentationDataset, voc_palette
from .errors import DatasetError

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]

_EXPECTED = ("a VOC2012 directory holding ImageSets/Segmentation/, JPEGImages/ and SegmentationClass/ "
             "(or a VOCdevkit directory containing VOC2012/)")


def find_voc_root(root) -> Path:
    """Return the ``VOC2012`` directory for ``root`` = VOC2012, VOCdevkit, or the folder holding VOCdevkit."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"VOC root directory not found: {root} (expected {_EXPECTED})")
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "ImageSets").is_dir() or (cand / "JPEGImages").is_dir():
            return cand
    raise DatasetError(f"{root} does not look like PASCAL VOC: no ImageSets/ or JPEGImages/ in it, "
                       f"in {root / 'VOC2012'} or in {root / 'VOCdevkit' / 'VOC2012'} (expected {_EXPECTED})")


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 semantic segmentation: 21 classes (background + 20 objects), 255 = ignore.

    ``split`` names a file ``ImageSets/Segmentation/{split}.txt`` (``train``, ``val``, ``trainval``).
    The layout and every listed file are checked when the dataset is built; label values are checked
    when an item is read (a value >= 21 other than 255 raises :class:`DatasetError`).
    """

    num_classes = len(VOC_CLASSES)

    def __init__(self, root, split: str = "train"):
        self.root = find_voc_root(root)
        self.split = split
        self.class_names = list(VOC_CLASSES)
        self.palette = voc_palette(self.num_classes)                      # (21, 3) uint8
        sets = self.root / "ImageSets" / "Segmentation"
        self.image_dir = self.root / "JPEGImages"
        self.label_dir = self.root / "SegmentationClass"
        for d, what in ((sets, "split lists"), (self.image_dir, "JPEG images"),
                        (self.label_dir, "palette PNG labels")):
            if not d.is_dir():
                raise DatasetError(f"VOC: directory {d} with the {what} is missing (expected {_EXPECTED})")
        split_file = sets / f"{split}.txt"
        if not split_file.is_file():
            raise DatasetError(f"VOC: unknown split {split!r}: {split_file} not found; "
                               f"available splits: {available_splits(sets) or 'none'}")
        self.names = read_split_file(split_file, "VOC")
        missing = [p for n in self.names
                   for p in (self.image_dir / f"{n}.jpg", self.label_dir / f"{n}.png") if not p.is_file()]
        if missing:
            raise missing_files_error(f"VOC split {split!r}", missing, 2 * len(self.names),
                                      "JPEGImages/{id}.jpg and SegmentationClass/{id}.png for every id "
                                      f"in {split_file}")

    def _files(self, i: int) -> tuple[Path, Path]:
        return self.image_dir / f"{self.names[i]}.jpg", self.label_dir / f"{self.names[i]}.png"

    def _label(self, i: int) -> np.ndarray:
        label_path = self._files(i)[1]
        return check_label(read_index_png(label_path), self.num_classes, IGNORE_LABEL, label_path)  # (H, W)
