"""File helpers shared by the readers: RGB images, index-label PNGs, label range checks.

Every failure becomes a :class:`DatasetError` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_rgb(path) -> np.ndarray:
    """Decode an image file as RGB.  Returns ``(H, W, 3)`` uint8 (grey, palette, RGBA, CMYK converted)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()           # (H, W, 3)
    except FileNotFoundError:
        raise DatasetError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from e


def read_index_png(path) -> np.ndarray:
    """Read a label image as class indices.  Returns ``(H, W)`` uint8.

    Palette PNGs (mode ``"P"``, as VOC ships them) are read as their *indices*, never converted to
    colours; grey (``"L"``) and 16/32-bit integer images are read as values (which must fit in 0..255).
    Colour (RGB/RGBA) masks are rejected: their colours would first have to be mapped back to classes.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "HSV", "LAB"):
                raise DatasetError(
                    f"label file {path} is a {mode} colour image; expected a single-channel label PNG "
                    f"(palette mode 'P' or grey 'L') whose pixel values are the class indices")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"label file not found: {path}") from None
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"cannot read label image {path}: {e}") from e
    if arr.ndim != 2:
        raise DatasetError(f"label file {path} has shape {arr.shape}; expected (H, W)")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DatasetError(f"label file {path} has values in [{arr.min()}, {arr.max()}]; "
                               f"expected class indices in 0..255")
        arr = arr.astype(np.uint8)
    return np.array(arr, dtype=np.uint8)                                          # (H, W)


def check_label(label: np.ndarray, num_classes: int, ignore_label: int, source) -> np.ndarray:
    """Raise a :class:`DatasetError` unless every value is a class ``< num_classes`` or ``ignore_label``."""
    bad = (label >= num_classes) & (label != ignore_label)
    if bad.any():
        values = sorted(int(v) for v in np.unique(label[bad]))
        raise DatasetError(
            f"label {source} has values {values[:10]} outside the classes 0..{num_classes - 1} "
            f"(and the ignore label {ignore_label}); {int(bad.sum())} pixels affected")
    return label


def check_same_size(image: np.ndarray, label: np.ndarray, source) -> None:
    if image.shape[:2] != label.shape:
        raise DatasetError(f"{source}: image is {image.shape[0]}x{image.shape[1]} but its label is "
                           f"{label.shape[0]}x{label.shape[1]}; they must have the same size")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: directory not found: {path}")
    return path


def read_split_file(path: Path, what: str) -> list[str]:
    """Item ids of a split file, one per line (first whitespace-separated token; blank lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{what}: cannot read split file {path}: {e}") from e
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise DatasetError(f"{what}: split file {path} lists no items")
    return ids


def available_splits(directory: Path) -> list[str]:
    """Stems of the ``*.txt`` files in ``directory`` (the split names it offers)."""
    return sorted(p.stem for p in directory.glob("*.txt")) if directory.is_dir() else []


def missing_files_error(what: str, missing: list[Path], total: int, expected: str) -> DatasetError:
    shown = ", ".join(str(p) for p in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return DatasetError(f"{what}: {len(missing)} of {total} expected files are missing: {shown}{more} "
                        f"(expected {expected})")
