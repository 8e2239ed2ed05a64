"""Training checkpoints: one ``.npz`` with the model, the optimizer's momentum and JSON metadata.

Layout of the archive (plain arrays only, so ``np.load(allow_pickle=False)`` reads it)::

    model/<dotted name>       every parameter and buffer (``model.state_dict()``)
    optimizer/<dotted name>   the momentum buffer of that parameter (``optimizer.state_dict()``)
    meta.json                 uint8 array of UTF-8 JSON: {"format", "version", "meta": {...}, "optimizer": {...}}

Writes are atomic (:mod:`tinydeeplab.atomic`): the archive goes to a temporary file in the same
directory, is flushed and fsync'ed, then ``os.replace``'d over the target, so a crash or an error
mid-write (disk full) leaves the previous checkpoint intact (and no half-written file under the
target name). A state with a NaN or an infinity anywhere (a parameter, a batch-norm statistic, a
momentum buffer) is never written, and never loaded: a diverged run cannot poison the last good
checkpoint, and a damaged file is refused naming its first bad array.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import open_for_write
from ..backend import to_numpy
from ..errors import CheckpointError
from ..nn.module import first_non_finite

FORMAT = "tinydeeplab-checkpoint"
VERSION = 1
_MODEL, _OPTIM, _META = "model/", "optimizer/", "meta.json"


def save_checkpoint(path, model, optimizer=None, **meta) -> Path:
    """Atomically write ``model`` (+ ``optimizer``) and JSON-serialisable ``meta`` to ``path``.

    >>> import tempfile, pathlib
    >>> from tinydeeplab.nn import Conv2D
    >>> conv = Conv2D(1, 2, 1, seed=0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = save_checkpoint(pathlib.Path(d) / "ckpt.npz", conv, epoch=3)
    ...     load_checkpoint(p, Conv2D(1, 2, 1, seed=1))
    {'epoch': 3}
    """
    path = Path(path)
    try:
        header = json.dumps({"format": FORMAT, "version": VERSION, "meta": meta,
                             "optimizer": optimizer.hyperparameters() if hasattr(optimizer, "hyperparameters")
                             else None}, allow_nan=True)
    except TypeError as err:
        raise CheckpointError(f"{path}: checkpoint metadata must be JSON-serialisable ({err})") from None
    arrays = {_MODEL + name: np.ascontiguousarray(to_numpy(a)) for name, a in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({_OPTIM + name: np.ascontiguousarray(to_numpy(v))
                       for name, v in optimizer.state_dict().items()})
    bad = first_non_finite(arrays)
    if bad is not None:
        raise CheckpointError(f"{path}: not written: {bad} holds NaN or infinite values (the training state "
                              f"diverged); the previous checkpoint, if any, is unchanged")
    arrays[_META] = np.frombuffer(header.encode("utf-8"), np.uint8)

    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with open_for_write(path) as f:
            np.savez(f, **arrays)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({err.strerror or err}); the previous "
                              f"checkpoint, if any, is unchanged") from err
    return path


def read_checkpoint(path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(header, model_state, optimizer_state)`` from ``path``, fully read and checked.

    Raises ``FileNotFoundError`` when there is no file and :class:`~tinydeeplab.errors.CheckpointError`
    naming the file when it is not a complete tinydeeplab checkpoint (truncated, corrupt, another kind
    of file) or holds a non-finite array (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    errors = (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError)
    try:
        data = np.load(path, allow_pickle=False)
    except errors as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt file?): {err}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: not a tinydeeplab checkpoint (a single .npy array, not an .npz archive)")
    try:
        with data:
            arrays = {name: data[name] for name in data.files}     # reads (and CRC-checks) every member
    except errors as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt file?): {err}") from None
    if _META not in arrays:
        raise CheckpointError(f"{path}: not a tinydeeplab checkpoint (no {_META} member)")
    try:
        header = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt {_META} ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinydeeplab checkpoint (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"{path}: corrupt {_META}")
    if header.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {header['version']} is newer than this "
                         f"tinydeeplab understands ({VERSION})")
    model_state, optim_state = {}, {}
    for name, a in arrays.items():
        if name.startswith(_MODEL):
            model_state[name[len(_MODEL):]] = a
        elif name.startswith(_OPTIM):
            optim_state[name[len(_OPTIM):]] = a
        else:
            raise CheckpointError(f"{path}: unexpected member {name!r}")
        if a.dtype.kind != "f":
            raise CheckpointError(f"{path}: {name} has dtype {a.dtype}, expected floating point")
    bad = first_non_finite(arrays)
    if bad is not None:
        raise CheckpointError(f"{path}: {bad} holds NaN or infinite values; this checkpoint cannot be used "
                              f"(written by a diverged run or damaged)")
    return header, model_state, optim_state


def load_checkpoint(path, model, optimizer=None) -> dict:
    """Load ``path`` into ``model`` (and ``optimizer``'s momentum); returns the ``meta`` saved with it.

    Everything is checked before anything is copied, so on error the model is unchanged: a
    missing file raises ``FileNotFoundError``; a truncated or corrupt file, a missing or extra
    parameter, a shape mismatch or a non-finite array raises
    :class:`~tinydeeplab.errors.CheckpointError` naming the file and the parameter.
    """
    header, model_state, optim_state = read_checkpoint(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(model_state))
    unexpected = sorted(set(model_state) - set(own))
    if missing or unexpected:
        parts = ([f"missing from the checkpoint: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"]
                 if missing else []) + \
                ([f"not in the model: {', '.join(unexpected[:10])}{' ...' if len(unexpected) > 10 else ''}"]
                 if unexpected else [])
        raise CheckpointError(f"{path}: checkpoint does not match the model ({'; '.join(parts)})")
    for name, a in own.items():
        if model_state[name].shape != a.shape:
            raise CheckpointError(f"{path}: parameter {name} has shape {model_state[name].shape} in the checkpoint, "
                             f"the model expects {a.shape}")
    if optimizer is not None:       # checks every name and shape before changing anything
        optimizer.load_state_dict(optim_state, source=str(path))
    model.load_state_dict(model_state, source=str(path))   # names and shapes already checked: cannot fail
    return header.get("meta", {})
