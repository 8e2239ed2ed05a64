"""Multi-channel image files (grey, RGB-NIR, multispectral) read as ``(H, W, C)`` arrays, values kept.

A C-channel model reads its images through :func:`read_stack`, which never rescales or converts
colours (that is the model's image converter's job, ``x = pixels * scale + offset`` per channel):

=====================================  ===========================================================
file                                   array
=====================================  ===========================================================
``.npy``                               ``np.load(allow_pickle=False)``: (H, W) -> C = 1, (H, W, C);
                                       dtype uint8, uint16 or float32 (finite), nothing else
TIFF with several pages                one single-band page per channel, all of one size and mode:
                                       ``L`` (uint8), ``I;16`` (uint16), ``F`` (float32)
one-page TIFF, PNG, JPEG, BMP          the file's own bands: grey ``L`` -> C = 1, ``LA`` -> 2,
                                       ``RGB`` -> 3, ``RGBA`` / ``CMYK`` -> 4 (raw band values);
                                       16-bit grey -> uint16, ``F`` -> float32; ``1`` (bilevel)
                                       -> 0 / 255; palette ``P`` -> its RGB colours
=====================================  ===========================================================

What Pillow (the only image library tinydeeplab uses) cannot read is refused in one line naming the
file: above all a TIFF with more than 4 samples per pixel, or with 3 samples not marked RGB; save
such data as one page per channel or as ``.npy``. A multi-page TIFF whose pages are not single-band is
refused too. 32-bit integer pages (``I``) must hold 0..65535 and are read as uint16.

>>> import tempfile, os
>>> with tempfile.TemporaryDirectory() as d:
...     np.save(os.path.join(d, "a.npy"), np.zeros((4, 5, 6), np.uint16))
...     stack = read_stack(os.path.join(d, "a.npy"))
...     probe = stack_info(os.path.join(d, "a.npy"))
>>> stack.shape, stack.dtype.name, probe
((4, 5, 6), 'uint16', (6, 'uint16'))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError
from .files import IMAGE_SUFFIXES, SIXTEEN_BIT_MODES, image_errors

STACK_SUFFIXES = (".npy", ".tif", ".tiff") + IMAGE_SUFFIXES
STACK_DTYPES = ("uint8", "uint16", "float32")
BAND_DTYPES = {"1": "uint8", "L": "uint8", "F": "float32", **{m: "uint16" for m in SIXTEEN_BIT_MODES}}
PAGE_MODES = ("L", "F") + SIXTEEN_BIT_MODES


def _check_npy(arr, path) -> np.ndarray:
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise DatasetError(f"{path}: array of shape {arr.shape}; expected (H, W) or (H, W, C)")
    if arr.dtype.name not in STACK_DTYPES:
        raise DatasetError(f"{path}: dtype {arr.dtype}; tinydeeplab reads {', '.join(STACK_DTYPES)} images "
                           f"(convert with arr.astype(...))")
    return arr


def _open_npy(path, mmap: bool) -> np.ndarray:
    try:
        return _check_npy(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False), path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (ValueError, OSError, EOFError) as err:
        pickled = "pickle" in str(err) or "Python objects" in str(err)
        why = "holds Python objects, which tinydeeplab never unpickles" if pickled else str(err)
        raise DatasetError(f"{path}: not a readable .npy array ({why})") from None


def _page_info(im: Image.Image, path) -> tuple[int, str]:
    """(channels, dtype name) of an opened Pillow image, from its header only."""
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        if im.mode not in PAGE_MODES:
            raise DatasetError(f"{path}: a {frames}-page TIFF of {im.mode} pages; tinydeeplab stacks single-band "
                               f"pages ({', '.join(PAGE_MODES[:3])}) as channels")
        return frames, BAND_DTYPES[im.mode]
    if im.mode == "P":
        return 3, "uint8"
    return len(im.getbands()), BAND_DTYPES.get(im.mode, "uint8")


def _band_array(im: Image.Image, path) -> np.ndarray:
    """One decoded Pillow image (or page) as (H, W, bands) of uint8 / uint16 / float32."""
    if im.mode == "P":
        im = im.convert("RGB")
    elif im.mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    if im.mode == "I":
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise DatasetError(f"{path}: 32-bit integer image with values in [{arr.min()}, {arr.max()}]; "
                               f"expected 0..65535")
        arr = arr.astype(np.uint16)
    elif arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        arr = arr.astype(np.uint16)                                   # big-endian I;16B -> native
    return arr.reshape(arr.shape[0], arr.shape[1], -1)                # (H, W, bands)


def _pillow_error(path):
    suffix = Path(path).suffix.lower()
    hint = (" (Pillow cannot read a TIFF with more than 4 samples per pixel, or 3 not marked RGB: save one "
            "page per channel, or a .npy array)") if suffix in (".tif", ".tiff") else ""
    return image_errors(path, f"image{hint}")


def stack_info(path) -> tuple[int, str]:
    """``(C, dtype name)`` of a stack file from its header (no pixel decoding): to check before training
    that every file of a dataset has the same channel count."""
    if Path(path).suffix.lower() == ".npy":
        arr = _open_npy(path, mmap=True)
        return (1 if arr.ndim == 2 else arr.shape[2]), arr.dtype.name
    with _pillow_error(path), Image.open(path) as im:
        return _page_info(im, path)


def read_stack(path) -> np.ndarray:
    """A multi-channel image file as ``(H, W, C)`` uint8, uint16 or float32 (module docstring's table);
    one-line :class:`DatasetError` naming the file for what cannot be read or has NaN/infinite values."""
    if Path(path).suffix.lower() == ".npy":
        arr = np.asarray(_open_npy(path, mmap=False))
        arr = arr[:, :, None] if arr.ndim == 2 else arr                # (H, W, C)
    else:
        with _pillow_error(path), Image.open(path) as im:
            _page_info(im, path)
            pages = []
            for k in range(getattr(im, "n_frames", 1)):
                im.seek(k)
                page = _band_array(im, path)                            # (H, W, bands)
                if pages and (page.shape[:2], page.dtype) != (pages[0].shape[:2], pages[0].dtype):
                    raise DatasetError(f"{path}: page {k} is {page.shape[0]}x{page.shape[1]} {page.dtype}, page 0 "
                                       f"{pages[0].shape[0]}x{pages[0].shape[1]} {pages[0].dtype}; all pages must "
                                       f"have one size and mode")
                pages.append(page)
            arr = np.concatenate(pages, axis=2) if len(pages) > 1 else pages[0]      # (H, W, C)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DatasetError(f"{path}: float image holds NaN or infinite values")
    return np.ascontiguousarray(arr)
