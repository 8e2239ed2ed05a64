"""tinydeeplab: DeepLabV3 / DeepLabV3+ written by hand in NumPy + Numba.

Layers: :mod:`tinydeeplab.functional` (reference maths), :mod:`tinydeeplab.kernels`
(Numba CPU / CUDA), :mod:`tinydeeplab.nn` (modules with params and grads),
:mod:`tinydeeplab.models` (ResNet, ASPP, DeepLab), :mod:`tinydeeplab.io` (Keras presets).
"""
import os as _os
import tempfile as _tempfile


def _numba_cache_dir() -> None:
    """Give Numba a writable cache when the install is read-only (a system site-packages, a container).

    The kernels are compiled with ``cache=True``: Numba writes them beside the sources (``__pycache__``)
    or to ``NUMBA_CACHE_DIR``, and fails at import, deep inside, when it can do neither. When the package
    folder is not writable and the user chose no cache folder, use one in the temporary directory.
    """
    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    kernels = _os.path.join(_os.path.dirname(__file__), "kernels")
    pycache = _os.path.join(kernels, "cpu", "__pycache__")
    if _os.access(pycache if _os.path.isdir(pycache) else _os.path.join(kernels, "cpu"), _os.W_OK):
        return
    uid = getattr(_os, "getuid", lambda: "user")()
    _os.environ["NUMBA_CACHE_DIR"] = _os.path.join(_tempfile.gettempdir(), f"tinydeeplab-numba-cache-{uid}")
    import sys as _sys
    if "numba" in _sys.modules:                 # numba read its settings when it was imported
        from numba.core import config as _config
        _config.CACHE_DIR = _os.environ["NUMBA_CACHE_DIR"]


_numba_cache_dir()

from .backend import get_backend, set_backend, use_backend  # noqa: E402
from .io.keras_preset import load_keras_preset, save_keras_preset  # noqa: E402

__version__ = "0.1.0"
__all__ = ["get_backend", "set_backend", "use_backend", "load_keras_preset", "save_keras_preset", "__version__"]
