"""Any segmentation data as two folders: images and same-named label PNGs.

Layout::

    images_dir/{name}.png|.jpg|.jpeg|.bmp       RGB (grey / palette images are converted)
    masks_dir/{name}.png                       class index per pixel (palette or grey PNG), or, with
                                               a colour map, one colour per class (RGB PNG)

With ``channels`` (a count, or ``"auto"``: the first image's) the images are multi-channel stacks
instead, read with their values kept by :func:`~tinydeeplab.data.stacks.read_stack`: ``.npy``,
multi-page TIFF, and PNG / JPEG / BMP / TIFF with their own bands (a grey PNG is C = 1). Every
image must have the same channel count and dtype, checked from the file headers when the dataset
is built.

Usage::

    ds = FolderDataset("my/images", "my/masks", num_classes=3, class_names=["bg", "cat", "dog"])
    ds = FolderDataset("my/images", "my/masks", colour_map="my/classes.json")     # RGB masks
    ds = FolderDataset("tiles/images", "tiles/masks", num_classes=2, channels=4)      # RGB-NIR .npy
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .colour_map import UNKNOWN_COLOUR_CHOICES, ColourMap, read_colour_mask
from .files import IMAGE_SUFFIXES, check_image_file, check_label, read_index_png, read_rgb, require_dir
from .stacks import STACK_SUFFIXES, read_stack, stack_info
from .base import IGNORE_LABEL, SegmentationDataset, check_class_names, voc_palette
from .errors import DatasetError


class FolderDataset(SegmentationDataset):
    """Images and masks paired by file stem (``a.jpg`` with ``a.png``).

    Mask values ``0..num_classes-1`` are classes.  ``ignore_label`` is the value that marks ignored
    pixels *in the mask files*; it is returned as 255 (the protocol's ignore label), so a folder whose
    masks use e.g. 254 for void still yields 255.  Any other value raises :class:`DatasetError` on read.

    ``colour_map`` (a :class:`~tinydeeplab.data.colour_map.ColourMap` or the path of its ``.json`` /
    ``.csv`` file): the masks are RGB, one colour per class, converted exactly; the map gives the
    classes, their names and the overlay palette (``num_classes``, if given, must agree; ``class_names``
    and ``ignore_label`` do not apply). A colour outside the map raises :class:`DatasetError` naming the
    file, pixel and colour, or with ``unknown_colour="ignore"`` becomes the ignore label 255.
    """

    def __init__(self, images_dir, masks_dir, num_classes: int | None = None, class_names=None,
                 ignore_label: int = 255, colour_map=None, unknown_colour: str = "error", channels=None):
        self.colour_map = None
        if colour_map is not None:
            self.colour_map = colour_map if isinstance(colour_map, ColourMap) else ColourMap.read(colour_map)
            if num_classes is not None and int(num_classes) != len(self.colour_map):
                raise DatasetError(f"num_classes {num_classes} but the colour map {self.colour_map.source} "
                                   f"has {len(self.colour_map)} classes")
            if class_names is not None:
                raise DatasetError("give class_names or a colour_map (which names the classes), not both")
            num_classes, class_names = len(self.colour_map), self.colour_map.names
        elif num_classes is None:
            raise DatasetError("FolderDataset needs num_classes (or a colour_map)")
        if unknown_colour not in UNKNOWN_COLOUR_CHOICES:
            raise DatasetError(f"unknown_colour must be one of {UNKNOWN_COLOUR_CHOICES}, got {unknown_colour!r}")
        self.unknown_colour = unknown_colour
        num_classes = int(num_classes)
        if not 1 <= num_classes <= 255:
            raise DatasetError(f"num_classes must be in 1..255, got {num_classes}")
        if not num_classes <= int(ignore_label) <= 255:
            raise DatasetError(f"ignore_label must be in {num_classes}..255 (not one of the classes "
                               f"0..{num_classes - 1}), got {ignore_label}")
        self.num_classes = num_classes
        self.file_ignore_label = int(ignore_label)
        self.class_names = (check_class_names(class_names, num_classes) if class_names is not None
                            else [f"class_{c}" for c in range(num_classes)])
        self.palette = voc_palette(num_classes) if self.colour_map is None else self.colour_map.palette
        self.label_rules = ("" if self.colour_map is None else
                            f"colours {self.colour_map.fingerprint()} unknown {unknown_colour}")
        self.images_dir = require_dir(Path(images_dir).expanduser(), "FolderDataset images")
        self.masks_dir = require_dir(Path(masks_dir).expanduser(), "FolderDataset masks")

        suffixes = IMAGE_SUFFIXES if channels is None else STACK_SUFFIXES
        images: dict[str, Path] = {}
        for p in sorted(self.images_dir.iterdir()):
            if p.is_file() and p.suffix.lower() in suffixes:
                if p.stem in images:
                    raise DatasetError(f"FolderDataset: two images share the name {p.stem!r}: "
                                       f"{images[p.stem].name} and {p.name}")
                images[p.stem] = p
        masks = {p.stem: p for p in sorted(self.masks_dir.iterdir())
                 if p.is_file() and p.suffix.lower() == ".png"}
        if not images:
            raise DatasetError(f"FolderDataset: no images ({', '.join(suffixes)}) in {self.images_dir}")
        if not masks:
            raise DatasetError(f"FolderDataset: no .png masks in {self.masks_dir}")
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            raise DatasetError(
                f"FolderDataset: images and masks must pair up by file stem: {len(no_mask)} images have no "
                f"mask {masks_dir}/<stem>.png (e.g. {no_mask[:3]}), {len(no_image)} masks have no image in "
                f"{images_dir} (e.g. {no_image[:3]})")
        self.names = sorted(images)
        self._images = images
        self._masks = masks
        self.multichannel = channels is not None
        self.channels, self.dtype = (3, "uint8") if channels is None else self._probe(channels)

    def _probe(self, channels) -> tuple[int, str]:
        """The common (channel count, dtype) of the stacks, from their headers; DatasetError naming the first
        file that differs from ``channels`` (or from the first file's, for ``"auto"``)."""
        if channels != "auto" and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise DatasetError(f"FolderDataset: channels must be a count >= 1 or 'auto', got {channels!r}")
        first = None
        for name in self.names:
            path = self._images[name]
            c, dtype = stack_info(path)
            if first is None:
                first = (path, c if channels == "auto" else channels, dtype)
            if c != first[1]:
                told = f"{first[0].name} has {first[1]}" if channels == "auto" else f"expected {first[1]}"
                raise DatasetError(f"{path}: {c} channels; {told} (every image of the folder needs the same count)")
            if dtype != first[2]:
                raise DatasetError(f"{path}: dtype {dtype}; {first[0].name} is {first[2]} (every image of the "
                                   f"folder needs the same dtype)")
        return first[1], first[2]

    def read_image_file(self, path) -> np.ndarray:
        """An image of this folder: (H, W, 3) uint8 RGB, or with ``channels`` the (H, W, C) stack."""
        return read_stack(path) if self.multichannel else read_rgb(path)

    def check_image_file(self, path) -> tuple[int, int]:
        """(H, W) of an image, checked as :meth:`read_image_file` reads it (a stack is decoded in full)."""
        return read_stack(path).shape[:2] if self.multichannel else check_image_file(path)

    def _files(self, i: int) -> tuple[Path, Path]:
        return self._images[self.names[i]], self._masks[self.names[i]]

    def _label(self, i: int) -> np.ndarray:
        mask_path = self._masks[self.names[i]]
        if self.colour_map is not None:
            return self.colour_map.labels(read_colour_mask(mask_path), mask_path, self.unknown_colour)  # (H, W)
        label = check_label(read_index_png(mask_path), self.num_classes, self.file_ignore_label, mask_path)
        label[label == self.file_ignore_label] = IGNORE_LABEL
        return label                                                 # (H, W)
