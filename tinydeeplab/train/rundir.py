"""A training run directory: one writer at a time, and a resumed run is the same run.

``with RunLock(out_dir):`` takes an advisory, exclusive ``flock`` on ``out_dir/.lock`` for as long
as the block runs. A second process that wants the same directory gets a one-line
:class:`~tinydeeplab.errors.CheckpointError` naming the process that holds it. The kernel drops a
``flock`` when its process dies (even by ``kill -9``), so a stale lock from a killed run never
blocks the next one: there is nothing to clean up by hand. The lock is re-entrant within a process
(the CLI holds it across training and the final preset; the trainer takes it again inside).

While it holds the lock, the run removes the temporaries that interrupted writes left behind
(:func:`tinydeeplab.atomic.remove_leftovers`, and the ``preset.new`` / ``.preset.*`` folders of
older versions): hundreds of MB after a killed preset export.

:func:`check_same_run` compares the hyperparameters recorded in a checkpoint with the ones of the
run that wants to resume it; any difference is refused unless the caller lets that key change.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     with RunLock(d) as lock:
...         with RunLock(d):                 # the same process: re-entrant
...             pass
...         lock.held
True
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import threading
from pathlib import Path

from ..atomic import remove_leftovers
from ..errors import CheckpointError, TrainingError

LOCK_FILE = ".lock"
_LEGACY_LEFTOVERS = ("preset.new", "preset.old")          # names used by tinydeeplab <= 0.1 mid-write
_held: dict[str, list] = {}                                 # resolved dir -> [fd, depth]
_held_lock = threading.Lock()


class RunLock:
    """Exclusive advisory lock of a run directory (see the module docstring)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.held = False

    def __enter__(self) -> "RunLock":
        d = self.directory
        if d.exists() and not d.is_dir():
            raise CheckpointError(f"{d}: exists and is not a directory (the run's output directory)")
        d.mkdir(parents=True, exist_ok=True)
        key = str(d.resolve())
        with _held_lock:
            if key in _held:
                _held[key][1] += 1
                self.held = True
                return self
            path = d / LOCK_FILE
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise CheckpointError(f"{d}: another tinydeeplab process is writing to this run directory "
                                          f"({_holder(path)}); wait for it to finish or choose another --out") from None
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode())
            _held[key] = [fd, 1]
        self.held = True
        clean_leftovers(d)
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.directory.resolve())
        with _held_lock:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                os.close(entry[0])                      # closing the descriptor releases the flock
        self.held = False


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f"held by {text}" if text.startswith("pid ") else "locked"


def clean_leftovers(directory) -> list[Path]:
    """Remove the temporaries of interrupted writes in a (locked) run directory; returns them."""
    directory = Path(directory)
    removed = remove_leftovers(directory)
    for p in directory.iterdir():
        legacy = p.name in _LEGACY_LEFTOVERS or (p.name.startswith(".preset.") and p.is_dir())
        if legacy:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def check_same_run(recorded: dict | None, current: dict, *, allowed=(), source="checkpoint") -> list[str]:
    """Refuse to resume a run with other hyperparameters: raise unless every changed key is ``allowed``.

    ``recorded``: the ``run`` settings stored in the checkpoint (None for checkpoints that predate them:
    nothing to compare). Returns the keys that changed and were allowed.

    >>> check_same_run({"lr": 0.1, "batch_size": 8}, {"lr": 0.1, "batch_size": 8})
    []
    >>> check_same_run({"lr": 0.1}, {"lr": 0.2}, allowed=["lr"])
    ['lr']
    >>> check_same_run({"lr": 0.1}, {"lr": 0.2})
    Traceback (most recent call last):
    ...
    tinydeeplab.errors.TrainingError: checkpoint: this run was started with lr 0.1, now 0.2; resume with the same settings, pass --override lr to change them, or --restart
    """
    if not recorded:
        return []
    changed = [k for k in current if k in recorded and _norm(recorded[k]) != _norm(current[k])]
    refused = [k for k in changed if k not in allowed]
    if refused:
        what = ", ".join(f"{k} {show_value(recorded[k])}, now {show_value(current[k])}" for k in refused)
        raise TrainingError(f"{source}: this run was started with {what}; resume with the same settings, pass "
                            f"--override {' '.join(refused)} to change them, or --restart")
    return changed


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def show_value(v) -> str:
    """An option value as typed on the command line: ``[256, 352]`` -> ``"256 352"``.

    >>> show_value((256, 352)), show_value(0.05)
    ('256 352', '0.05')
    """
    v = _norm(v)
    return " ".join(str(x) for x in v) if isinstance(v, list) else str(v)
