"""Segmentation datasets, joint transforms and a prefetching batch loader.

The dataset protocol
--------------------
Every dataset here (and any object the trainer accepts) offers:

* ``len(ds)`` — the number of items;
* ``ds[i] -> (image, label)`` — ``image`` (H, W, 3) uint8 RGB, ``label`` (H, W) uint8 class indices
  with **255 = ignore** (void, boundaries, padding); negative ``i`` counts from the end;
* ``ds.num_classes`` (int), ``ds.class_names`` (list of ``num_classes`` str);
* ``ds.ignore_label`` — always 255;
* ``ds.palette`` — (num_classes, 3) uint8 colours for label overlays;
* ``ds.names`` — list of item ids (file stems), e.g. for naming prediction files.

The readers here also offer ``ds.files(i) -> (image_path, label_path)`` (``()`` for generated items)
and ``ds.read_label(i)`` (the label alone, without decoding the image).

Readers check the directory layout when built and each label when read; problems raise
:class:`DatasetError` saying which file and what was expected.  :func:`validate_dataset` reads a
whole dataset once before training (cached by file size and mtime), so a bad item is reported before
epoch 1.

=========================  ==========================================================================
:class:`VOCSegmentation`   PASCAL VOC 2012 (palette PNG labels), 21 classes
:class:`SBDSegmentation`   Semantic Boundaries Dataset (``cls/*.mat``), the same 21 classes
:class:`CamVid`            CamVid in the SegNet layout, 11 classes (void 11 -> 255)
:class:`FolderDataset`     any ``images/`` + ``masks/`` folder pair, paired by file stem (index masks, or
                           RGB masks with a :class:`ColourMap`); with ``channels``, (H, W, C) image
                           stacks (``.npy``, TIFF pages: :mod:`.stacks`)
:class:`SyntheticShapes`   circles, squares and triangles generated on the fly (no files)
:class:`OneVsRest`         one class of another dataset against the rest (labels 0 / 1, void kept)
=========================  ==========================================================================

>>> ds = SyntheticShapes(length=3, size=(16, 16))
>>> image, label = ds[-1]
>>> len(ds), image.shape, label.shape, ds.num_classes, ds.ignore_label, ds.palette.shape
(3, (16, 16, 3), (16, 16), 4, 255, (4, 3))
"""
from .base import IGNORE_LABEL, SegmentationDataset, voc_palette
from .binary import OneVsRest
from .camvid import CAMVID_CLASSES, CamVid
from .errors import DatasetError, LoaderError
from .colour_map import ColourMap
from .folder import FolderDataset
from .loader import BatchLoader
from .sbd import SBDSegmentation
from .shapes import SHAPE_CLASSES, SyntheticShapes
from .transforms import (Compose, PadTo, RandomCrop, RandomHorizontalFlip, RandomScale, Resize,
                         to_model_input)
from .files import read_rgb
from .validate import DatasetCheck, validate_dataset
from .voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "IGNORE_LABEL", "SegmentationDataset", "voc_palette", "DatasetError", "LoaderError",
    "VOCSegmentation", "VOC_CLASSES", "SBDSegmentation", "CamVid", "CAMVID_CLASSES", "FolderDataset", "ColourMap",
    "SyntheticShapes", "SHAPE_CLASSES", "OneVsRest", "Compose", "RandomScale", "RandomCrop", "RandomHorizontalFlip",
    "Resize", "PadTo", "to_model_input", "BatchLoader", "validate_dataset", "DatasetCheck", "read_rgb",
]
