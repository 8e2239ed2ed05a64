"""Input validation shared by the NumPy reference ops and the Numba kernels.

Every public op validates its arguments here first, so a bad call fails with a
``ValueError`` that names the argument and its shape instead of an ``IndexError``
from deep inside a loop.
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_array(x, name: str, ndim: int | None = None, *, float_only: bool = True) -> np.ndarray:
    """Return ``x`` if it is a float32/float64 ndarray with ``ndim`` axes, else raise ValueError."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        layout = {4: " (N, H, W, C)", 2: " (rows, cols)", 1: " (C,)"}.get(ndim, "")
        raise ValueError(f"{name} must have {ndim} dimensions{layout}, got shape {x.shape}")
    if float_only and x.dtype.type not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got dtype {x.dtype} (shape {x.shape})")
    return x


def check_nhwc(x, name: str = "x") -> np.ndarray:
    """Validate a 4-D float activation tensor ``(N, H, W, C)``."""
    return check_array(x, name, 4)


def check_same_dtype(**arrays) -> None:
    """Raise if the given (non-None) arrays do not all share one dtype."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    dtypes = {v.dtype for _, v in items}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}: {v.dtype}" for k, v in items)
        raise ValueError(f"arrays must share one dtype, got {desc}")


def pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Turn an int or a 2-sequence of ints into ``(a, b)``, each ``>= minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        out = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def check_channels(x_shape, w_shape, x_name: str = "x", w_name: str = "w") -> None:
    """Input channels of an NHWC tensor must match the I axis of an HWIO kernel."""
    if x_shape[-1] != w_shape[2]:
        raise ValueError(
            f"channel mismatch: {x_name} has {x_shape[-1]} channels (shape {tuple(x_shape)}) but "
            f"{w_name} expects {w_shape[2]} input channels (HWIO shape {tuple(w_shape)})")
