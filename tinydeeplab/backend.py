"""One switch that selects which implementation of the ops runs.

* ``"numpy"`` — :mod:`tinydeeplab.functional`, the pure-NumPy reference (the spec);
* ``"cpu"``   — :mod:`tinydeeplab.kernels.cpu`, Numba ``parallel=True`` kernels (default);
* ``"cuda"``  — :mod:`tinydeeplab.kernels.cuda`, Numba CUDA kernels (``pip install tinydeeplab[cuda]``,
  or ``NUMBA_ENABLE_CUDASIM=1`` to run them on the CPU simulator).

Every backend module exports the same op names with the same signatures, so a layer
only ever writes ``ops().conv2d_forward(...)``.

>>> from tinydeeplab import backend
>>> with backend.use_backend("numpy"):
...     backend.get_backend()
'numpy'
"""
from __future__ import annotations

import contextlib
import importlib
import os

import numpy as np

from .errors import BackendError

BACKENDS = ("numpy", "cpu", "cuda")
_MODULES = {
    "numpy": "tinydeeplab.functional",
    "cpu": "tinydeeplab.kernels.cpu",
    "cuda": "tinydeeplab.kernels.cuda",
}
_current = os.environ.get("TINYDEEPLAB_BACKEND", "cpu")
_from_env = "TINYDEEPLAB_BACKEND" in os.environ     # name the variable in errors until set_backend is called


def _where() -> str:
    return " (set by the environment variable TINYDEEPLAB_BACKEND)" if _from_env else ""


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise BackendError(f"backend must be one of {BACKENDS}, got {name!r}{_where() if name == _current else ''}")
    return name


def set_backend(name: str) -> None:
    """Select the backend used by layers from now on."""
    global _current, _from_env
    _check(name)
    previous, _from_env_before = _current, _from_env
    _current, _from_env = name, False
    try:
        ops(name)  # import now so a missing extra fails here, not mid-forward
    except BackendError:
        _current, _from_env = previous, _from_env_before
        raise


def get_backend() -> str:
    """Name of the backend in use."""
    return _check(_current)


@contextlib.contextmanager
def use_backend(name: str):
    """Temporarily switch backend inside a ``with`` block."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def to_numpy(a):
    """``a`` as a host NumPy array: NumPy arrays (and None) pass through, device arrays are copied back.

    >>> to_numpy([1, 2]).tolist()
    [1, 2]
    """
    if a is None or isinstance(a, np.ndarray):
        return a
    if hasattr(a, "copy_to_host"):  # a numba.cuda device array
        return a.copy_to_host()
    return np.asarray(a)


def ops(name: str | None = None):
    """Return the module holding the ops of backend ``name`` (default: the current one)."""
    name = _check(name or get_backend())
    try:
        module = importlib.import_module(_MODULES[name])
        if name == "cuda":
            module.check_available()  # no GPU and no simulator: fail here, in one line
        return module
    except BackendError:
        raise
    except ImportError as err:  # only the cuda backend has an optional dependency
        where = _where() if name == _current else ""
        raise BackendError(
            f"backend {name!r}{where} is not available ({err}). For the GPU install the extra: "
            f"pip install 'tinydeeplab[cuda]', or set NUMBA_ENABLE_CUDASIM=1 to simulate it on the CPU"
        ) from None
