"""Device memory and launch configuration shared by every CUDA op.

**What lives where.** Activations, caches, parameters, gradients and optimizer state are Numba device
arrays (``DeviceNDArray``); the ops take and return them and never copy to the host on the way. The
copies happen at the ends only: :func:`to_device` for the input images (and labels), :func:`to_host`
for the logits or a checkpoint, plus one float64 scalar per loss / gradient norm.

**Validation.** The ops check their arguments with the same functions as the NumPy reference
(:mod:`tinydeeplab.functional.checks`). Those look at ``shape``, ``dtype`` and ``ndim`` only, so a
device array is validated through :func:`spec`: a zero-byte NumPy stand-in with the same shape and dtype
(``np.broadcast_to`` of one element), which costs no copy.

**Launch configuration.** Elementwise kernels use *grid-stride loops*: a grid of at most
:data:`MAX_BLOCKS` blocks of :data:`THREADS` threads walks the whole array, each thread taking every
``gridsize``-th element::

    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = f(x[i])

so one launch covers any size, consecutive threads touch consecutive addresses (coalesced), and the
grid can be capped. The CUDA simulator runs every thread as a Python thread, so under
``NUMBA_ENABLE_CUDASIM=1`` the cap is tiny (:data:`MAX_BLOCKS` = 2); the kernels are the same.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

SIMULATED = ".simulator" in getattr(cuda.jit, "__module__", "")
"""True when ``numba.cuda`` is the CPU simulator (``NUMBA_ENABLE_CUDASIM=1``)."""

THREADS = 32 if SIMULATED else 256
"""Threads per block of the 1-D (elementwise, grid-stride) kernels."""

MAX_BLOCKS = 2 if SIMULATED else 4096
"""Upper bound on the blocks of a 1-D launch; larger arrays are covered by the grid-stride loop."""


def is_device_array(a) -> bool:
    """True for a Numba device array (a real ``DeviceNDArray`` or the simulator's stand-in)."""
    return not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host") and hasattr(a, "shape")


def to_device(a):
    """Copy a host array to the device (C-contiguous); a device array is returned unchanged.

    ``to_host(to_device(a))`` equals ``a``. (No doctest here: examples in this package would need a
    GPU or the simulator at collection time.)
    """
    if is_device_array(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(a):
    """Copy a device array back to a NumPy array; host arrays (and None) pass through unchanged."""
    return a.copy_to_host() if is_device_array(a) else a


def spec(a):
    """A NumPy stand-in for validation: same shape and dtype as device array ``a``, no data, no copy.

    Host arrays and other objects are returned unchanged, so the shared checks still reject them with
    their usual message (the ops then insist on device arrays, see :func:`require_device`).
    """
    if is_device_array(a):
        return np.broadcast_to(np.zeros((), dtype=a.dtype), tuple(a.shape))
    return a


def require_device(a, name: str):
    """Raise a clear ``ValueError`` when an op of the cuda backend is handed a host array."""
    if not is_device_array(a):
        raise ValueError(
            f"{name} must be a device array on the cuda backend, got {type(a).__name__}"
            + (f" of shape {a.shape}" if isinstance(a, np.ndarray) else "")
            + ": copy inputs with tinydeeplab.kernels.cuda.to_device(x) and move models with model.to('cuda')")
    return a


def empty(shape, dtype):
    """An uninitialised device array (``cuda.device_array``)."""
    return cuda.device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def blocks_for(n: int, threads: int = None) -> int:
    """Number of blocks for ``n`` elements: ``ceil(n / threads)``, capped at :data:`MAX_BLOCKS`, >= 1."""
    threads = threads or THREADS
    return max(1, min(MAX_BLOCKS, math.ceil(n / threads)))


ROW_BLOCK = (8, 2) if SIMULATED else (32, 8)
"""Threads of a row-wise launch: x along the channels of a row, y along rows."""


def launch_rows(kernel, m_rows: int, *args) -> None:
    """Launch a row-wise kernel over an ``(M, C)`` matrix: block :data:`ROW_BLOCK`; thread ``(tx, ty)`` of block
    ``b`` takes rows ``b * ROW_BLOCK[1] + ty`` (grid-strided) and channels ``tx, tx + ROW_BLOCK[0], ...``, so
    a warp reads consecutive channels of one row and the channel needs no division."""
    if m_rows > 0:
        kernel[max(1, min(MAX_BLOCKS, math.ceil(m_rows / ROW_BLOCK[1]))), ROW_BLOCK](*args)


def launch_1d(kernel, n: int, *args) -> None:
    """Launch a grid-stride kernel over ``n`` elements: ``kernel[blocks_for(n), THREADS](*args)``."""
    if n > 0:
        kernel[blocks_for(n), THREADS](*args)


# ---------------------------------------------------------------------------------------------------
# Small kernels used by several ops
# ---------------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def unravel_nhwc(idx, h_n, w_n, c_n):
    """``(n, h, w, c)`` of the flat index ``idx`` into a C-contiguous ``(N, H, W, C)`` array: a grid-stride
    kernel with one thread per element finds its pixel and channel with it."""
    c = idx % c_n
    w = (idx // c_n) % w_n
    h = (idx // (c_n * w_n)) % h_n
    n = idx // (c_n * w_n * h_n)
    return n, h, w, c


@cuda.jit
def _fill_kernel(flat, value):
    """``flat[i] = value`` for every i (grid-stride)."""
    for i in range(cuda.grid(1), flat.size, cuda.gridsize(1)):
        flat[i] = value


@cuda.jit
def _copy_kernel(src, dst):
    """``dst[i] = src[i]`` for every i of two flat arrays of the same size (casts the dtype)."""
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        dst[i] = src[i]


def full(shape, value, dtype):
    """A device array filled with ``value`` (``zeros`` is ``full(shape, 0, dtype)``)."""
    out = empty(shape, dtype)
    launch_1d(_fill_kernel, out.size, out.reshape(out.size), np.dtype(dtype).type(value))
    return out


def zeros(shape, dtype):
    """A device array of zeros."""
    return full(shape, 0, dtype)


def zeros_like(a):
    """Device zeros with the shape and dtype of ``a`` (host or device)."""
    return zeros(a.shape, a.dtype)


def copy(a, dtype=None):
    """A fresh C-contiguous device copy of device array ``a`` (optionally cast to ``dtype``)."""
    out = empty(a.shape, dtype or a.dtype)
    launch_1d(_copy_kernel, out.size, flat(a), out.reshape(out.size))
    return out


def cast(a, dtype):
    """A device copy of ``a`` in ``dtype`` (float64 sums -> float32 gradients)."""
    return copy(a, dtype)


def flat(a):
    """The 1-D view of a C-contiguous device array (no copy)."""
    return a.reshape(a.size)
