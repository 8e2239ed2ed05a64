"""Check a whole dataset before training: a bad image or label is reported before epoch 1, not in epoch 5.

:func:`validate_dataset` reads every item once and stops at the first bad one with a one-line
:class:`DatasetError` naming the item, its file and what is wrong:

* the image decodes (as :func:`~tinydeeplab.data.files.read_rgb` would; see
  :func:`~tinydeeplab.data.files.check_image_file` for the cheap JPEG path);
* the label decodes *in full* and every value is a class ``< num_classes`` or the ignore label
  (the dataset's own reader does this, with its mapping, e.g. CamVid's void 11 -> 255);
* image and label have the same size.

It also counts the valid (non-ignore) label pixels; when there are none at all it warns (training would
learn nothing and mIoU is undefined).

Cache
-----
With ``cache=PATH`` (the CLI uses ``<out>/.dataset-check.json``), each item that passed is recorded by
the path, byte size and modification time (ns) of its image and label files, with its size and valid
pixel count.  A later run skips items whose files are unchanged and rechecks the rest.  The cache is a
hint, never trusted blindly: an entry is used only when every file's size and mtime match, the dataset
has the same class and label rules, and the entry is well-formed; a corrupt or foreign cache file is
ignored and rewritten.  It is written atomically (temporary file in the same folder, then
``os.replace``), also when a bad item stops the pass, so the items before it are not read again.

Datasets whose items have no files (:class:`~tinydeeplab.data.SyntheticShapes`: ``files(i) == ()``)
are generated correct by construction and are not read.  Objects that only follow the dataset protocol
(``len``, ``ds[i]``, ``num_classes``) and have no ``files`` method are checked by loading every item,
without a cache.

>>> import io
>>> from tinydeeplab.data import SyntheticShapes
>>> validate_dataset(SyntheticShapes(3, (16, 16))).checked      # generated: nothing to read
0
>>> class Listed:                     # the bare dataset protocol: every item is loaded and checked
...     num_classes, ignore_label, names = 2, 255, ["a", "b"]
...     def __len__(self): return 2
...     def __getitem__(self, i): return np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 255 * i, np.uint8)
>>> r = validate_dataset(Listed())
>>> r.checked, r.valid_pixels
(2, 16)
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import check_image_file, check_label, check_same_size, one_line
from .errors import DatasetError

CACHE_FORMAT = "tinydeeplab dataset check 1"      # change it when the rules of a check change


@dataclass
class DatasetCheck:
    """What :func:`validate_dataset` found."""

    items: int                    # items in the dataset
    checked: int                  # items read by this call
    cached: int                   # items skipped: unchanged since they passed before
    valid_pixels: int | None      # non-ignore label pixels of all items; None when nothing was read
    seconds: float

    @property
    def all_ignore(self) -> bool:
        """True when every label of the dataset is all ignore (no pixel to learn from)."""
        return self.valid_pixels == 0


def validate_dataset(dataset, cache=None, *, name: str | None = None, progress=None,
                     interval: float = 5.0) -> DatasetCheck:
    """Read every item of ``dataset`` once; raise a one-line :class:`DatasetError` at the first bad one.

    ``cache``: a JSON file recording the items that passed (see the module docstring); ``None`` for
    none.  ``name`` names the dataset in messages (default: its class name).  ``progress``: a text
    stream (e.g. ``sys.stderr``) that gets a line every ``interval`` seconds during a long pass, and a
    summary line at its end.  When no label has a valid pixel it warns in one line: on ``progress``
    (``warning: ...``) when given, else as a ``UserWarning``.
    """
    name = name or type(dataset).__name__
    n = len(dataset)
    t0 = last = time.monotonic()
    files_of = getattr(dataset, "files", None)
    if files_of is not None and n and not tuple(files_of(0)):
        return DatasetCheck(n, 0, 0, None, time.monotonic() - t0)         # generated items: nothing to read
    cache = None if cache is None or files_of is None else Path(cache)
    entries = _read_cache(cache) if cache is not None else {}
    rules, valid, checked, cached = _rules(dataset), 0, 0, 0
    ok = printed = False
    try:
        for i in range(n):
            try:
                files = tuple(str(p) for p in files_of(i)) if files_of is not None else ()
                key, stamp = "\n".join(files), _stamps(files)                 # (image, label) paths
                if files and _usable(entries.get(key), stamp, rules):
                    valid, cached = valid + entries[key]["valid"], cached + 1
                else:
                    shape, count = _check_item(dataset, i, files)
                    valid, checked = valid + count, checked + 1
                    if files:
                        entries[key] = {"stamp": stamp, "rules": rules, "shape": shape, "valid": count}
            except DatasetError as err:
                raise DatasetError(f"{name} item {i}{_item_name(dataset, i)}: {one_line(err, 500)}") from err
            if progress is not None and time.monotonic() - last >= interval:
                last, printed = time.monotonic(), True
                print(f"checking {name}: {i + 1}/{n} items ({cached} unchanged), {last - t0:.0f} s",
                      file=progress, flush=True)
        ok = True
    finally:
        if cache is not None and (checked or not cache.is_file()):
            try:
                _write_cache(cache, entries)
            except OSError:
                if ok:
                    raise                  # after a bad item, its error is the one to report
    seconds = time.monotonic() - t0
    if printed:
        print(f"checked {name}: {n} items ({cached} unchanged since the last check) in {seconds:.0f} s",
              file=progress, flush=True)
    if n and valid == 0:
        message = (f"{name}: the labels of all {n} items are entirely ignore "
                   f"({getattr(dataset, 'ignore_label', 255)}): no pixel to learn from or to score")
        if progress is not None:
            print(f"warning: {message}", file=progress, flush=True)
        else:
            warnings.warn(message, stacklevel=2)
    return DatasetCheck(n, checked, cached, valid, seconds)


def _check_item(dataset, i: int, files: tuple[str, ...]) -> tuple[list[int], int]:
    """Check item ``i``; returns its (H, W) and its number of valid label pixels."""
    ignore = int(getattr(dataset, "ignore_label", 255))
    if files and hasattr(dataset, "read_label"):
        check = getattr(dataset, "check_image_file", check_image_file)
        image_shape = check(files[0])                                     # (H, W) without a full decode
        label = np.asarray(dataset.read_label(i))                         # (H, W), decoded and checked
        where = files
    else:
        try:
            image, label = dataset[i]
        except DatasetError:
            raise
        except Exception as err:  # noqa: BLE001 - a protocol dataset's own failure, named in one line
            raise DatasetError(f"{type(err).__name__}: {one_line(err)}") from err
        image, label = np.asarray(image), np.asarray(label)
        if image.ndim != 3 or image.shape[2] != getattr(dataset, "channels", 3):
            raise DatasetError(f"image has shape {image.shape}; expected (H, W, {getattr(dataset, 'channels', 3)})")
        image_shape, where = image.shape[:2], files or ("the image", "the label")
    if label.ndim != 2:
        raise DatasetError(f"label {where[-1]} has shape {label.shape}; expected (H, W)")
    check_same_size(image_shape, label.shape, where[0], where[-1])
    check_label(label, int(dataset.num_classes), ignore, where[-1])
    return [int(s) for s in image_shape], int(np.count_nonzero(label != ignore))


def _item_name(dataset, i: int) -> str:
    try:
        return f" ({dataset.names[i]!r})"
    except Exception:  # noqa: BLE001 - the name is a courtesy
        return ""


def _rules(dataset) -> str:
    """What, besides the files, decides whether an item passes: the reader and its label rules."""
    return (f"{CACHE_FORMAT}|{type(dataset).__module__}.{type(dataset).__qualname__}|"
            f"{dataset.num_classes}|{getattr(dataset, 'ignore_label', 255)}|"
            f"{getattr(dataset, 'file_ignore_label', '')}|{getattr(dataset, 'label_rules', '')}"
            + (f"|{dataset.channels} channels" if getattr(dataset, "multichannel", False) else ""))


def _stamps(files) -> list[list[int]]:
    """[[size, mtime_ns], ...] of ``files``; a missing file raises a DatasetError naming it."""
    out = []
    for f in files:
        try:
            st = os.stat(f)
        except FileNotFoundError:
            raise DatasetError(f"{f}: file not found (listed by the dataset)") from None
        out.append([int(st.st_size), int(st.st_mtime_ns)])
    return out


def _usable(entry, stamp, rules: str) -> bool:
    """True for a well-formed cache entry of these rules whose files are unchanged."""
    if not isinstance(entry, dict) or entry.get("stamp") != stamp or entry.get("rules") != rules:
        return False
    shape, valid = entry.get("shape"), entry.get("valid")
    return (isinstance(shape, list) and len(shape) == 2
            and all(type(s) is int and s > 0 for s in shape)
            and type(valid) is int and 0 <= valid <= shape[0] * shape[1])


def _read_cache(path) -> dict:
    """The entries of a cache file; ``{}`` when it is missing, unreadable, corrupt or not ours."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("items"), dict):
        return {}
    return data["items"]


def _write_cache(path: Path, entries: dict) -> None:
    """Write the cache atomically (:func:`tinydeeplab.atomic.write_text`)."""
    from ..atomic import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"format": CACHE_FORMAT, "items": entries}, separators=(",", ":")))
