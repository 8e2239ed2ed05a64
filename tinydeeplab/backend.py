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


HELP = ("ops backend: numpy (the reference), cpu (Numba kernels), cuda (Numba CUDA kernels on the GPU: "
        "pip install 'tinydeeplab[cuda]'; NUMBA_ENABLE_CUDASIM=1 simulates it)")
"""One line describing the backends, for command-line help."""

DEVICE_BACKENDS = ("cuda",)
"""Backends whose arrays live in an accelerator's memory (``to_device`` copies, ``to_host`` copies back)."""


def is_device_array(a) -> bool:
    """Whether ``a`` lives in an accelerator's memory (a Numba CUDA device array)."""
    return not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host") and hasattr(a, "shape")


def to_numpy(a):
    """``a`` as a host NumPy array: NumPy arrays (and None) pass through, device arrays are copied back.

    >>> to_numpy([1, 2]).tolist()
    [1, 2]
    """
    if a is None or isinstance(a, np.ndarray):
        return a
    if is_device_array(a):
        return a.copy_to_host()
    return np.asarray(a)


to_host = to_numpy


def ops_for(a):
    """The ops module for array ``a`` where it lives: a device backend for a device array (the current
    one when it is a device backend); for a host array the current backend, or the NumPy reference when
    the current backend keeps its arrays on a device."""
    current = get_backend()
    if is_device_array(a):
        return ops(current if current in DEVICE_BACKENDS else DEVICE_BACKENDS[0])
    return ops("numpy" if current in DEVICE_BACKENDS else current)


def to_device(a):
    """``a`` where the current backend's ops want it (copied to the GPU on cuda; unchanged on the host)."""
    return ops().to_device(a)


def zeros_like(a):
    """Zeros with ``a``'s shape and dtype, in the memory where ``a`` lives."""
    return ops_for(a).zeros_like(a)


def transfer(a, name: str):
    """Array ``a`` in the memory of backend ``name`` (copied between host and device when they differ)."""
    _check(name)
    return ops(name).to_device(a) if name in DEVICE_BACKENDS else to_numpy(a)


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
