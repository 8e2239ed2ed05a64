"""tinydeeplab: DeepLabV3 / DeepLabV3+ written by hand in NumPy + Numba.

Layers: :mod:`tinydeeplab.functional` (reference maths), :mod:`tinydeeplab.kernels`
(Numba CPU / CUDA), :mod:`tinydeeplab.nn` (modules with params and grads),
:mod:`tinydeeplab.models` (ResNet, ASPP, DeepLab), :mod:`tinydeeplab.io` (Keras presets).
"""
from .backend import get_backend, set_backend, use_backend
from .io.keras_preset import load_keras_preset, save_keras_preset

__version__ = "0.1.0"
__all__ = ["get_backend", "set_backend", "use_backend", "load_keras_preset", "save_keras_preset", "__version__"]
