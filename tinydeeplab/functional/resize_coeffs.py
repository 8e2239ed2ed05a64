"""Source coordinates and weights of bilinear resizing with half-pixel centres.

For output index ``o`` on an axis resized from ``n_in`` to ``n_out`` samples::

    scale = n_in / n_out
    src   = (o + 0.5) * scale - 0.5          # half-pixel centres (align_corners=False)
    i0    = clamp(floor(src), 0, n_in - 1)
    i1    = clamp(floor(src) + 1, 0, n_in - 1)
    t     = src - floor(src)                  # weight of i1; (1 - t) goes to i0

Clamping both neighbours to the edge is the "edge clamp": a sample left of the
first centre reads pixel 0 twice. No antialiasing, also when shrinking.
This module is shared by the NumPy reference and the Numba/CUDA kernels.
"""
from __future__ import annotations

import numpy as np


def bilinear_coefficients(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(i0, i1, t)``: int64 neighbour indices and float64 weights of ``i1``, each ``(n_out,)``.

    >>> i0, i1, t = bilinear_coefficients(2, 4)
    >>> i0.tolist(), i1.tolist(), t.tolist()
    ([0, 0, 0, 1], [0, 1, 1, 1], [0.75, 0.25, 0.75, 0.25])
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    floor = np.floor(src)
    t = src - floor
    i0 = np.clip(floor, 0, n_in - 1).astype(np.int64)
    i1 = np.clip(floor + 1, 0, n_in - 1).astype(np.int64)
    return i0, i1, t


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Nearest-neighbour source index with half-pixel centres: ``min(floor((o + 0.5) * n_in / n_out), n_in - 1)``.

    >>> nearest_indices(4, 2).tolist()
    [1, 3]
    """
    src = np.floor((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(src, n_in - 1)
