"""Writes that never leave a half-written file under the target name, with the user's umask.

A file is written to a temporary sibling (``.<name>.<random>.tmp``), flushed, fsync'ed and then
``os.replace``'d over the target, so after a crash or an error (disk full, Ctrl-C) the target is
either the old file or the new one, never a mixture. A directory (a preset) is built the same way
under ``.<name>.<random>.tmp`` and renamed into place. ``mkstemp``/``mkdtemp`` create their files
with mode 0600/0700; the results get the modes an ordinary ``open``/``mkdir`` would give
(0666/0777 minus the umask), so other users see outputs as they expect.

Leftover temporaries of interrupted writes start with ``.`` and end in ``.tmp``:
:func:`remove_leftovers` deletes them (the run directory does it when it is locked).

>>> import tempfile, pathlib
>>> with tempfile.TemporaryDirectory() as d:
...     p = write_bytes(pathlib.Path(d) / "a.txt", b"hello")
...     p.read_bytes(), sorted(x.name for x in pathlib.Path(d).iterdir())
(b'hello', ['a.txt'])
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _temp_name(path: Path) -> tuple[str, str]:
    return f".{path.name}.", ".tmp"


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_for_write(path):
    """``with open_for_write(p) as f: f.write(...)``: ``p`` appears complete on success, unchanged on error."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    prefix, suffix = _temp_name(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def write_bytes(path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``; returns the path."""
    with open_for_write(path) as f:
        f.write(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def build_directory(path):
    """``with build_directory(p) as tmp: <write files into tmp>``: then ``tmp`` is renamed to ``p``.

    ``p`` must not exist or be an empty directory (checked by the caller's policy before any work).
    On error the temporary directory is removed and ``p`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temp_name(path)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~current_umask())
        if path.exists():
            path.rmdir()                       # empty (the caller checked): rename needs it gone
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def replace_directory(path, write) -> Path:
    """Build a new directory with ``write(tmp_dir)`` and swap it in for ``path`` (which may exist).

    The new directory is complete before the old one moves aside (to ``.<name>.old.tmp``), so an
    interruption leaves the old directory, or the new one under ``path``, never a half-written one.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old.tmp")
    shutil.rmtree(old, ignore_errors=True)
    fresh = path.with_name(f".{path.name}.new.tmp")
    shutil.rmtree(fresh, ignore_errors=True)
    with build_directory(fresh) as tmp:
        write(tmp)
    if path.exists():
        path.rename(old)
    fresh.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(path.parent)
    return path


def remove_leftovers(directory) -> list[Path]:
    """Delete the temporaries of interrupted writes in ``directory`` (``.*.tmp`` files and folders).

    Only call this while holding the directory's lock: another writer's temporaries look the same.
    Returns what was removed.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed
