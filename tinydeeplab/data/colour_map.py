"""Colour-coded masks: a table of class name -> RGB colour, read from JSON or CSV, applied exactly.

Many datasets ship their masks as RGB images with a colour table (CamVid's 32-class release,
Cityscapes' colour files, most annotation tools' exports). A :class:`ColourMap` holds that table in
class-index order (class ``k`` is the ``k``-th entry of the file) and converts both ways:

* :meth:`ColourMap.labels`: ``(H, W, 3)`` colours -> ``(H, W)`` class indices. Only exact matches
  count (no nearest colour: a JPEG-compressed or anti-aliased mask is refused, not guessed). A colour
  that is not in the table raises a one-line :class:`DatasetError` naming the mask file, the first such
  pixel (row, col) and its colour, or, with ``unknown="ignore"``, becomes the ignore label 255.
* :meth:`ColourMap.colours`: ``(H, W)`` class indices -> ``(H, W, 3)`` colours; the ignore label 255 is
  written as :attr:`ColourMap.ignore_colour`, the darkest grey ``(v, v, v)`` that no class uses.

The two files it reads (class index = order in the file)::

    classes.json    {"background": [0, 0, 0], "road": [128, 64, 128], "car": [64, 0, 128]}
    classes.csv     name,r,g,b                       (the header line is optional)
                    background,0,0,0
                    road,128,64,128
                    car,64,0,128

A file with a duplicate name or colour, a value that is not an integer in 0..255, or a malformed line
is refused in one line naming the file and the line (CSV) or key (JSON).

>>> cm = ColourMap(["background", "road"], [(0, 0, 0), (128, 64, 128)])
>>> mask = np.array([[[0, 0, 0], [128, 64, 128]]], np.uint8)          # (1, 2, 3)
>>> cm.labels(mask, "a.png").tolist()
[[0, 1]]
>>> cm.colours(np.array([[1, 255]], np.uint8)).tolist()              # 255 -> the first unused grey
[[[128, 64, 128], [1, 1, 1]]]
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .base import IGNORE_LABEL
from .errors import DatasetError
from .files import image_errors

UNKNOWN_COLOUR_CHOICES = ("error", "ignore")


def _pack(rgb) -> np.ndarray:
    """Colours (..., 3) uint8 -> one int32 key per colour, ``r * 65536 + g * 256 + b``."""
    rgb = np.asarray(rgb, np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class ColourMap:
    """Class names and their mask colours, class ``k`` = entry ``k``.

    ``names``: ``K`` distinct non-empty strings; ``colours``: ``K`` distinct ``(r, g, b)`` with integer
    components in 0..255; ``1 <= K <= 255`` (255 is the ignore label). ``source`` names the table in
    messages (the file it was read from), ``where[k]`` entry ``k`` (``"line 3"``, ``"key 'road'"``;
    default ``"class k"``).

    >>> ColourMap(["sky", "road"], [(128, 128, 128), (128, 128, 128)], source="mine")
    Traceback (most recent call last):
    ...
    tinydeeplab.errors.DatasetError: mine: class 1: colour (128, 128, 128) already given to class 'sky' (class 0)
    """

    def __init__(self, names, colours, source: str = "colour map", where=None):
        self.source = str(source)
        self.names = [str(n) for n in names]
        colours = list(colours)
        where = [f"class {k}" for k in range(len(self.names))] if where is None else list(where)
        if len(colours) != len(self.names) or len(where) != len(self.names):
            raise DatasetError(f"{self.source}: {len(self.names)} class names but {len(colours)} colours")
        if not 1 <= len(self.names) <= 255:
            raise DatasetError(f"{self.source}: {len(self.names)} classes; a colour map holds 1..255 "
                               f"(255 is the ignore label)")
        first: dict = {}                                                   # name or colour -> entry
        for k, (name, colour, at) in enumerate(zip(self.names, colours, where)):
            if not name.strip():
                raise DatasetError(f"{self.source}: {at}: empty class name")
            colour = tuple(colour) if isinstance(colour, (list, tuple)) or getattr(colour, "ndim", 0) == 1 else (colour,)
            if len(colour) != 3 or not all(_is_byte(c) for c in colour):
                raise DatasetError(f"{self.source}: {at}: expected integers 0..255 for r, g, b, got "
                                   f"{list(colour)}")
            colour = tuple(int(c) for c in colour)
            for what, key in (("class name", ("name", name)), ("colour", ("colour", colour))):
                if key in first:
                    j = first[key]
                    shown = repr(name) if what == "class name" else str(colour)
                    raise DatasetError(f"{self.source}: {at}: {what} {shown} already given to class "
                                       f"{self.names[j]!r} ({where[j]})")
                first[key] = k
            colours[k] = colour
        self.palette = np.array(colours, np.uint8)                         # (K, 3)
        keys = _pack(self.palette)                                         # (K,)
        self._order = np.argsort(keys, kind="stable")                      # (K,) class of each sorted key
        self._sorted_keys = keys[self._order]                              # (K,)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"ColourMap({len(self)} classes from {self.source})"

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def ignore_colour(self) -> tuple[int, int, int]:
        """The colour :meth:`colours` gives the ignore label: the smallest grey ``(v, v, v)`` no class uses.

        >>> ColourMap(["a", "b"], [(0, 0, 0), (255, 0, 0)]).ignore_colour
        (1, 1, 1)
        >>> ColourMap(["a"], [(9, 9, 9)]).ignore_colour
        (0, 0, 0)
        """
        used = {tuple(c) for c in self.palette.tolist()}
        v = next(v for v in range(256) if (v, v, v) not in used)          # 256 greys > 255 classes
        return (v, v, v)

    def fingerprint(self) -> str:
        """A short hash of the table (names and colours in order): changes when the mapping changes."""
        text = json.dumps([self.names, self.palette.tolist()])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def labels(self, rgb, source, unknown: str = "error") -> np.ndarray:
        """Colour mask ``rgb`` (H, W, 3) uint8 -> class indices (H, W) uint8, exact matches only.

        ``unknown="error"``: a colour outside the table raises a :class:`DatasetError` naming ``source``
        (the mask file), the first such pixel in reading order and its colour; ``"ignore"``: such pixels
        get the ignore label 255.

        >>> cm = ColourMap(["sky", "road"], [(128, 128, 128), (128, 64, 128)], source="classes.csv")
        >>> mask = np.array([[[128, 128, 128], [128, 64, 128], [7, 8, 9]]], np.uint8)
        >>> cm.labels(mask, "m.png", unknown="ignore").tolist()
        [[0, 1, 255]]
        >>> cm.labels(mask, "m.png")
        Traceback (most recent call last):
        ...
        tinydeeplab.errors.DatasetError: m.png: pixel (row 0, col 2) has colour (7, 8, 9), which is not in the colour map classes.csv (1 pixel of 1 unknown colour in this mask); --unknown-colour ignore (unknown_colour='ignore') maps such pixels to the ignore label 255
        """
        if unknown not in UNKNOWN_COLOUR_CHOICES:
            raise DatasetError(f"unknown colour rule {unknown!r}; expected one of {UNKNOWN_COLOUR_CHOICES}")
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise DatasetError(f"{source}: colour mask of shape {rgb.shape} and dtype {rgb.dtype}; "
                               f"expected (H, W, 3) uint8")
        keys = _pack(rgb)                                                  # (H, W) int32
        at = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self) - 1)   # (H, W)
        known = self._sorted_keys[at] == keys                              # (H, W) bool
        if not known.all() and unknown == "error":
            row, col = np.unravel_index(int(np.argmax(~known)), known.shape)
            n_pixels = int(np.count_nonzero(~known))
            n_colours = int(np.unique(keys[~known]).size)
            colour = tuple(int(c) for c in rgb[row, col])
            raise DatasetError(
                f"{source}: pixel (row {row}, col {col}) has colour {colour}, which is not in the colour map "
                f"{self.source} ({n_pixels} pixel{'s' * (n_pixels != 1)} of {n_colours} unknown "
                f"colour{'s' * (n_colours != 1)} in this mask); --unknown-colour ignore "
                f"(unknown_colour='ignore') maps such pixels to the ignore label {IGNORE_LABEL}")
        return np.where(known, self._order[at], IGNORE_LABEL).astype(np.uint8)   # (H, W)

    def colours(self, labels) -> np.ndarray:
        """Class indices (H, W) -> colours (H, W, 3) uint8; 255 -> :attr:`ignore_colour`.

        Any other value outside ``0..K-1`` raises a :class:`DatasetError` (it has no colour).
        """
        labels = np.asarray(labels)
        bad = (labels >= len(self)) & (labels != IGNORE_LABEL) | (labels < 0)
        if bad.any():
            values = sorted(int(v) for v in np.unique(labels[bad]))[:10]
            raise DatasetError(f"labels {values} have no colour in {self.source} (classes 0..{len(self) - 1}, "
                               f"ignore {IGNORE_LABEL})")
        table = np.zeros((256, 3), np.uint8)
        table[:len(self)] = self.palette
        table[IGNORE_LABEL] = self.ignore_colour
        return table[labels.astype(np.int64)]                              # (H, W, 3)

    @classmethod
    def read(cls, path) -> "ColourMap":
        """Read a ``.json`` or ``.csv`` colour map (see the module docstring); one-line errors name the file."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".csv"):
            raise DatasetError(f"{path}: a colour map must be a .json or .csv file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DatasetError(f"{path}: colour map file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise DatasetError(f"{path}: cannot read the colour map ({err})") from None
        names, colours, where = (_parse_json if suffix == ".json" else _parse_csv)(text, path)
        return cls(names, colours, source=str(path), where=where)


def _is_byte(value) -> bool:
    """An integer in 0..255 (JSON ``true`` and ``12.0`` are not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) <= 255


def _parse_json(text: str, path):
    """``{"name": [r, g, b], ...}`` -> (names, colours, where), in file order."""
    class Pairs(list):                                                     # a JSON object, keys in order
        pass

    def no_duplicates(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise DatasetError(f"{path}: key {key!r}: class name given twice")
            seen.add(key)
        return Pairs(pairs)
    try:
        pairs = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    if not isinstance(pairs, Pairs) or not pairs:
        raise DatasetError(f"{path}: expected a JSON object {{\"class name\": [r, g, b], ...}} with at least "
                           f"one class")
    for key, value in pairs:
        if not isinstance(value, list) or isinstance(value, Pairs):
            raise DatasetError(f"{path}: key {key!r}: expected [r, g, b], got {json.dumps(value)}")
    return [k for k, _ in pairs], [v for _, v in pairs], [f"key {k!r}" for k, _ in pairs]


def _parse_csv(text: str, path):
    """Rows ``name,r,g,b`` (an optional header ``name,r,g,b`` first; blank lines skipped) ->
    (names, colours, where)."""
    names, colours, where = [], [], []
    rows = csv.reader(io.StringIO(text))
    for row in rows:
        fields = [f.strip() for f in row]
        if not any(fields):
            continue
        if not names and [f.lower() for f in fields] == ["name", "r", "g", "b"]:
            continue                                                       # the header
        at = f"line {rows.line_num}"
        if len(fields) != 4:
            raise DatasetError(f"{path}: {at}: expected 4 fields name,r,g,b, got {len(fields)}: {','.join(row)}")
        try:
            colours.append([int(f) for f in fields[1:]])
        except ValueError:
            raise DatasetError(f"{path}: {at}: expected integers 0..255 for r, g, b, got "
                               f"{','.join(fields[1:])}") from None
        names.append(fields[0])
        where.append(at)
    if not names:
        raise DatasetError(f"{path}: no classes (expected lines name,r,g,b)")
    return names, colours, where


def read_colour_mask(path) -> np.ndarray:
    """Decode a colour mask as ``(H, W, 3)`` uint8 RGB, without any scaling that could shift a colour.

    RGB as stored; RGBA without its alpha; palette (``P``) images through their palette; grey (``L``)
    as ``(v, v, v)``. 16-bit and float masks are refused (their colours are not 8-bit table entries).
    """
    with image_errors(path, "colour mask"), Image.open(path) as im:
        if im.mode not in ("RGB", "RGBA", "P", "L", "1"):
            raise DatasetError(f"colour mask {path} is a {im.mode} image; expected 8-bit RGB, RGBA, "
                               f"palette or grey")
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()        # (H, W, 3)
