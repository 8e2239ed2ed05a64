"""CamVid road scenes in the SegNet layout: 11 classes at 360x480, 367 train / 101 val / 233 test.

Layout::

    root/
      train/*.png        val/*.png        test/*.png            RGB frames
      trainannot/*.png   valannot/*.png   testannot/*.png       grey labels 0..10, 11 = void

Images and labels are paired by file name.  The void value 11 becomes the ignore label 255.

Usage::

    ds = CamVid("~/data/camvid", split="train")
    image, label = ds[0]        # (360, 480, 3) uint8, (360, 480) uint8 in {0..10, 255}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import check_label, read_index_png
from .base import IGNORE_LABEL, SegmentationDataset
from .errors import DatasetError

CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist"]
CAMVID_VOID = 11

# Display colours of the 11 classes (labels are indices: colours are only for overlays). The SegNet legend
# (SEGNET_PALETTE) draws road, car and fence in three near-identical purples, so overlays use these, which
# keep the familiar hues (sky blue, road purple, tree green, car navy, pedestrian red) but stay far apart.
CAMVID_PALETTE = np.array([[70, 130, 180], [150, 150, 150], [255, 220, 0], [128, 64, 128], [244, 35, 232],
                           [60, 180, 75], [255, 128, 0], [139, 90, 43], [0, 0, 142], [220, 20, 60],
                           [0, 230, 230]], np.uint8)
SEGNET_PALETTE = np.array([[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                           [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                           [0, 128, 192]], np.uint8)

_EXPECTED = ("the SegNet CamVid layout: {root}/{split}/*.png images and {root}/{split}annot/*.png labels, "
             "split in train, val, test")


def _pngs(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.iterdir()) if p.suffix.lower() == ".png" and p.is_file()}


class CamVid(SegmentationDataset):
    """CamVid (SegNet version): 11 classes, label 11 (void) mapped to 255 = ignore.

    ``split`` is ``train``, ``val`` or ``test`` (any ``{split}`` / ``{split}annot`` directory pair works).
    """

    num_classes = len(CAMVID_CLASSES)

    def __init__(self, root, split: str = "train"):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetError(f"CamVid root directory not found: {root} (expected {_EXPECTED})")
        if not (root / f"{split}annot").is_dir() and (root / "CamVid").is_dir():
            root = root / "CamVid"                                  # the folder holding CamVid/
        self.root = root
        self.split = split
        self.class_names = list(CAMVID_CLASSES)
        self.palette = CAMVID_PALETTE.copy()
        self.image_dir = root / split
        self.label_dir = root / f"{split}annot"
        if not self.image_dir.is_dir() or not self.label_dir.is_dir():
            have = sorted(d.name for d in root.iterdir() if d.is_dir() and (root / f"{d.name}annot").is_dir())
            raise DatasetError(f"CamVid: split {split!r} needs directories {self.image_dir} and "
                               f"{self.label_dir}; available splits in {root}: {have or 'none'} "
                               f"(expected {_EXPECTED})")
        images, labels = _pngs(self.image_dir), _pngs(self.label_dir)
        if not images:
            raise DatasetError(f"CamVid: no .png images in {self.image_dir}")
        no_label = sorted(set(images) - set(labels))
        no_image = sorted(set(labels) - set(images))
        if no_label or no_image:
            raise DatasetError(f"CamVid split {split!r}: images and labels do not pair up by file name: "
                               f"{len(no_label)} images without a label in {self.label_dir} "
                               f"(e.g. {no_label[:3]}), {len(no_image)} labels without an image in "
                               f"{self.image_dir} (e.g. {no_image[:3]})")
        self.names = sorted(images)
        self._images = images
        self._labels = labels

    def _files(self, i: int) -> tuple[Path, Path]:
        return self._images[self.names[i]], self._labels[self.names[i]]

    def _label(self, i: int) -> np.ndarray:
        label_path = self._labels[self.names[i]]
        label = read_index_png(label_path)                           # (H, W), 0..10 and 11 = void
        label[label == CAMVID_VOID] = IGNORE_LABEL
        return check_label(label, self.num_classes, IGNORE_LABEL, label_path)
