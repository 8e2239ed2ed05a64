"""The Semantic Boundaries Dataset (SBD, Hariharan et al. 2011): 11,355 VOC-style images with labels.

Layout (``root`` may be ``benchmark_RELEASE/dataset`` or ``benchmark_RELEASE``)::

    dataset/
      {train,val}.txt          one image id per line (8,498 / 2,857)
      img/{id}.jpg             RGB photo
      cls/{id}.mat             MATLAB file: struct GTcls with field Segmentation, (H, W) class indices

The classes are the 21 VOC classes.  SBD class maps have no void band, but a 255 is still accepted as
ignore.  (The usual "train_aug" set is SBD train+val plus VOC train, minus VOC val.)

Usage::

    ds = SBDSegmentation("~/data/benchmark_RELEASE", split="train")
    image, label = ds[0]        # (H, W, 3) uint8, (H, W) uint8 in {0..20}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from .files import available_splits, check_label, missing_files_error, read_split_file
from .base import IGNORE_LABEL, SegmentationDataset, voc_palette
from .errors import DatasetError
from .voc import VOC_CLASSES

_EXPECTED = "benchmark_RELEASE/dataset holding {train,val}.txt, img/{id}.jpg and cls/{id}.mat"


def _field(obj, name: str):
    """``obj.name`` for a loadmat struct in either form (mat_struct object or numpy record array)."""
    if hasattr(obj, "_fieldnames"):                                # struct_as_record=False
        return getattr(obj, name) if name in obj._fieldnames else None
    if isinstance(obj, np.ndarray) and obj.dtype.names is not None:   # struct_as_record=True (default)
        if name not in obj.dtype.names:
            return None
        value = obj[name]
        while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
            value = value.item()                                   # unwrap (1, 1) / 0-d object cells
        return value
    return None


def read_sbd_mat(path) -> np.ndarray:
    """Read ``GTcls.Segmentation`` from an SBD ``cls/*.mat`` file.  Returns ``(H, W)`` uint8."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DatasetError(f"SBD label file not found: {path}") from None
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError, ... for damaged files
        raise DatasetError(f"cannot read SBD label file {path} as a MATLAB .mat file: "
                           f"{type(e).__name__}: {e}") from e
    if "GTcls" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"SBD label file {path} has no 'GTcls' struct (variables: {keys}); "
                           f"expected an SBD cls/*.mat file")
    seg = _field(mat["GTcls"], "Segmentation")
    if seg is None:
        raise DatasetError(f"SBD label file {path}: struct 'GTcls' has no field 'Segmentation'")
    seg = np.asarray(seg)
    if seg.ndim == 2 and seg.dtype.kind == "f" and np.array_equal(seg, np.round(seg)):
        seg = seg.astype(np.int64)                                   # saved as double: whole numbers only
    if seg.ndim != 2 or seg.dtype.kind not in "uib":
        raise DatasetError(f"SBD label file {path}: GTcls.Segmentation is {seg.dtype} with shape "
                           f"{seg.shape}; expected an (H, W) integer class map")
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise DatasetError(f"SBD label file {path}: values in [{seg.min()}, {seg.max()}] do not fit 0..255")
    return seg.astype(np.uint8)                                                   # (H, W)


def find_sbd_root(root) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"SBD root directory not found: {root} (expected {_EXPECTED})")
    for cand in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (cand / "img").is_dir() or (cand / "cls").is_dir():
            return cand
    raise DatasetError(f"{root} does not look like SBD: no img/ or cls/ in it or in {root / 'dataset'} "
                       f"(expected {_EXPECTED})")


class SBDSegmentation(SegmentationDataset):
    """SBD semantic segmentation (``cls`` maps): the 21 VOC classes, 255 = ignore.

    ``split`` names a file ``{split}.txt`` in the dataset directory (``train`` or ``val``).
    """

    num_classes = len(VOC_CLASSES)

    def __init__(self, root, split: str = "train"):
        self.root = find_sbd_root(root)
        self.split = split
        self.class_names = list(VOC_CLASSES)
        self.palette = voc_palette(self.num_classes)
        self.image_dir = self.root / "img"
        self.label_dir = self.root / "cls"
        for d, what in ((self.image_dir, "JPEG images"), (self.label_dir, ".mat class maps")):
            if not d.is_dir():
                raise DatasetError(f"SBD: directory {d} with the {what} is missing (expected {_EXPECTED})")
        split_file = self.root / f"{split}.txt"
        if not split_file.is_file():
            raise DatasetError(f"SBD: unknown split {split!r}: {split_file} not found; "
                               f"available splits: {available_splits(self.root) or 'none'}")
        self.names = read_split_file(split_file, "SBD")
        missing = [p for n in self.names
                   for p in (self.image_dir / f"{n}.jpg", self.label_dir / f"{n}.mat") if not p.is_file()]
        if missing:
            raise missing_files_error(f"SBD split {split!r}", missing, 2 * len(self.names),
                                      f"img/{{id}}.jpg and cls/{{id}}.mat for every id in {split_file}")

    def _files(self, i: int) -> tuple[Path, Path]:
        return self.image_dir / f"{self.names[i]}.jpg", self.label_dir / f"{self.names[i]}.mat"

    def _label(self, i: int) -> np.ndarray:
        label_path = self._files(i)[1]
        return check_label(read_sbd_mat(label_path), self.num_classes, IGNORE_LABEL, label_path)  # (H, W)
