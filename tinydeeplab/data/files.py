"""File helpers shared by the readers: RGB images, index-label PNGs, label range checks.

Every failure becomes a :class:`DatasetError` naming the file.

Images that are not 8-bit are scaled to uint8 in one place, :func:`rgb8` (used by the dataset readers
and by the command line), never clipped:

=======================================  ==========================================================
PIL mode of the file                     pixel ``v`` becomes
=======================================  ==========================================================
``I;16``, ``I;16B``, ``I;16L`` (16-bit   ``v >> 8`` (the high byte), grey repeated to RGB; values
grey), ``I`` (32-bit integer)            must lie in 0..65535 (``I`` is read as 16-bit data)
``F`` (32-bit float, e.g. TIFF)          ``round(255 v)`` when every value is in [0, 1],
                                         ``round(v)`` when in [0, 255]; NaN/inf or anything
                                         outside [0, 255] is refused
16-bit RGB / RGBA (PNG, TIFF)            ``v >> 8``: Pillow itself keeps the high byte of these
everything else (1, L, P, RGB, RGBA,     PIL's ``convert("RGB")``
CMYK, YCbCr, LA, ...)
=======================================  ==========================================================

The high byte (rather than ``round(v / 257)``) is what Pillow and libpng's ``strip_16`` give for
16-bit colour files, so a 16-bit grey file and the same picture saved as 16-bit RGB read the same;
both map the usual 8-to-16-bit expansion ``257 * k`` back to exactly ``k``.

>>> from PIL import Image
>>> grey16 = Image.fromarray(np.array([[0, 257 * 128, 65535]], np.uint16))       # mode I;16
>>> rgb8(grey16, "mid.png")[0, :, 0].tolist()
[0, 128, 255]
>>> rgb8(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), "f.tif")[0, :, 0].tolist()
[0, 128, 255]
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace runs (newlines too) collapsed, cut to ``limit`` characters.

    >>> one_line("a\\n  b\\tc", limit=80)
    'a b c'
    >>> one_line("x" * 20, limit=10)
    'xxxxxxx...'
    """
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def rgb8(im: Image.Image, path) -> np.ndarray:
    """An opened PIL image as ``(H, W, 3)`` uint8 RGB, scaled as the module docstring's table says.

    Raises :class:`DatasetError` naming ``path`` for values that have no 8-bit meaning.
    """
    if im.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(im)                                                 # (H, W) uint16 / int32
        if grey.size and (int(grey.min()) < 0 or int(grey.max()) > 65535):
            raise DatasetError(f"{path}: {im.mode} image with values in [{grey.min()}, {grey.max()}]; "
                               f"expected 16-bit values 0..65535")
        grey8 = (grey.astype(np.uint32) >> 8).astype(np.uint8)                # (H, W)
    elif im.mode == "F":
        grey = np.asarray(im, dtype=np.float64)                               # (H, W)
        if not np.isfinite(grey).all():
            raise DatasetError(f"{path}: float image holds NaN or infinite values")
        lo, hi = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise DatasetError(f"{path}: float image with values in [{lo:g}, {hi:g}]; expected [0, 1] "
                               f"or [0, 255] (tinydeeplab does not guess other ranges)")
        grey8 = np.floor(grey * (255.0 if hi <= 1 else 1.0) + 0.5).astype(np.uint8)
    else:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()           # (H, W, 3)
    return np.repeat(grey8[:, :, None], 3, axis=2)                            # (H, W, 3)


@contextmanager
def image_errors(path, what: str = "image"):
    """Turn the errors of opening and decoding ``path`` into one-line :class:`DatasetError`\\ s."""
    try:
        yield
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} file not found") from None
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError) as e:
        cause = one_line(str(e).replace(f"'{path}'", "").replace(str(path), "")) or type(e).__name__
        raise DatasetError(f"{path}: not a readable {what} ({cause})") from e


def read_rgb(path) -> np.ndarray:
    """Decode an image file as RGB.  Returns ``(H, W, 3)`` uint8 (see :func:`rgb8` for what is scaled)."""
    with image_errors(path), Image.open(path) as im:
        return rgb8(im, path)                                                 # (H, W, 3)


def check_image_file(path) -> tuple[int, int]:
    """Check that ``path`` reads as :func:`read_rgb` would read it, cheaply; returns its ``(H, W)``.

    * PNG: PIL's ``verify()``, which checks the CRC-32 of every chunk, the compressed pixel data
      included, so a truncated file or a changed byte fails, at a small fraction of a full decode.  It
      cannot see a zlib stream that is broken yet has a valid checksum (written so by a broken
      encoder): such a file fails later, in one line naming it (:class:`~tinydeeplab.data.LoaderError`).
    * JPEG: decoded in draft mode (libjpeg's 1/8-scale DCT): every entropy-coded byte is still read,
      so a truncated or undecodable file fails as it would in :func:`read_rgb`, at about 60 % of the cost.
    * Anything else (BMP, TIFF, ...): decoded in full through :func:`rgb8`, which also applies the
      16-bit and float rules (a float image out of range is refused here, not in epoch 3).
    """
    with image_errors(path), Image.open(path) as im:
        width, height = im.size
        if im.format == "PNG":
            im.verify()                              # PNG holds no float pixels: no value to check
        elif im.format == "JPEG":
            im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            im.load()
        else:
            rgb8(im, path)
        return height, width


def read_index_png(path) -> np.ndarray:
    """Read a label image as class indices.  Returns ``(H, W)`` uint8.

    Palette PNGs (mode ``"P"``, as VOC ships them) are read as their *indices*, never converted to
    colours; grey (``"L"``) and 16/32-bit integer images are read as values (which must fit in 0..255).
    Colour (RGB/RGBA) masks are rejected: their colours must be mapped back to classes by a colour map
    (:mod:`tinydeeplab.data.colour_map`).
    """
    with image_errors(path, "label image"), Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "HSV", "LAB"):
            raise DatasetError(
                f"label file {path} is a {im.mode} colour image; expected a single-channel label PNG "
                f"(palette mode 'P' or grey 'L') whose pixel values are the class indices (colour-coded masks: "
                f"give a folder dataset a colour map, --colour-map FILE)")
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise DatasetError(f"label file {path} has shape {arr.shape}; expected (H, W)")
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
            raise DatasetError(f"label file {path} holds fractional values; expected class indices")
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


def check_same_size(image_shape, label_shape, image_path, label_path) -> None:
    """Raise a :class:`DatasetError` naming both files unless image (H, W, ...) and label (H, W) agree."""
    if tuple(image_shape[:2]) != tuple(label_shape):
        raise DatasetError(f"image {image_path} is {image_shape[0]}x{image_shape[1]} but its label "
                           f"{label_path} is {label_shape[0]}x{label_shape[1]}; they must have the same size")


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
