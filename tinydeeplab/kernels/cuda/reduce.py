"""Deterministic sums on the GPU: per-column sums of an ``(M, C)`` matrix, and the sum of a vector.

Both are two-stage tree reductions, so the result does not depend on thread timing (no atomics):

**Column sums** (batch-norm statistics, conv bias gradient). ``x`` is an ``(M, C)`` row-major matrix
(NHWC activations with ``M = N*H*W``). Block ``(bx, by)`` has ``COL_X x COL_Y`` threads; thread
``(tx, ty)`` owns column ``c = bx * COL_X + tx`` (neighbouring threads read neighbouring addresses) and
adds the rows ``m = by * COL_Y + ty, + gridDim.y * COL_Y, ...`` in float64::

    partial[by, c] = sum over this block's rows of term(m, c)     # shared-memory tree over ty
    out[c]         = sum_by partial[by, c]                          # second, tiny kernel

``term`` is selected by ``mode``: ``x`` (0), ``(x - mean)^2`` (1, the two-pass variance) or
``x * (z - mean) * inv_std`` (2, ``sum dy * xhat`` of the batch-norm backward).

**Vector sum** (loss, gradient norm): a grid-stride loop per thread, a shared-memory tree per block,
then one block adds the per-block partials; ``squared`` sums ``v^2``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from .device import SIMULATED, empty

COL_X = 8 if SIMULATED else 32
"""Threads per block along the columns (C)."""
COL_Y = 2 if SIMULATED else 8
"""Threads per block along the rows (M); a power of two (tree reduction)."""
MAX_ROW_BLOCKS = 1 if SIMULATED else 512
"""Blocks along the rows; each reduces its share into one row of ``partial``."""
SUM_THREADS = 16 if SIMULATED else 256
"""Threads per block of the vector sum (a power of two)."""
SUM_BLOCKS = 1 if SIMULATED else 256
"""Blocks of the vector sum's first stage."""

MODE_SUM, MODE_CENTRED_SQUARES, MODE_TIMES_XHAT = 0, 1, 2


@cuda.jit
def _column_partials(x, z, mean, inv_std, mode, partial):
    """``partial[by, c] = sum_{rows m of block by} term(m, c)`` (float64); see the module docstring."""
    cache = cuda.shared.array((COL_Y, COL_X), float64)
    m_rows, c_cols = x.shape                                 # (M, C)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    c = cuda.blockIdx.x * COL_X + tx
    acc = 0.0
    if c < c_cols:
        for m in range(cuda.blockIdx.y * COL_Y + ty, m_rows, cuda.gridDim.y * COL_Y):
            v = float64(x[m, c])
            if mode == 1:
                d = v - mean[c]
                v = d * d
            elif mode == 2:
                v = v * ((float64(z[m, c]) - mean[c]) * inv_std[c])
            acc += v
    cache[ty, tx] = acc
    cuda.syncthreads()
    step = COL_Y // 2
    while step > 0:                                          # tree over the rows of the block
        if ty < step:
            cache[ty, tx] += cache[ty + step, tx]
        cuda.syncthreads()
        step //= 2
    if ty == 0 and c < c_cols:
        partial[cuda.blockIdx.y, c] = cache[0, tx]


@cuda.jit
def _sum_partials(partial, divisor, out):
    """``out[c] = sum_b partial[b, c] / divisor`` (one thread per column, fixed order)."""
    for c in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        acc = 0.0
        for b in range(partial.shape[0]):
            acc += partial[b, c]
        out[c] = acc / divisor


def column_sums(x2, *, mode=MODE_SUM, z2=None, mean=None, inv_std=None, divide_by=1):
    """Float64 ``(C,)`` device array of per-column sums of ``term(x2)`` over the ``M`` rows of ``x2 (M, C)``,
    divided by ``divide_by`` (``M`` gives the column means).

    ``mean`` / ``inv_std`` are float64 ``(C,)`` device arrays (modes 1 and 2); ``z2`` is ``(M, C)`` (mode 2).
    """
    m_rows, c_cols = x2.shape
    row_blocks = max(1, min(MAX_ROW_BLOCKS, math.ceil(m_rows / (COL_Y * 64))))
    partial = empty((row_blocks, c_cols), np.float64)        # (row blocks, C)
    dummy = partial[0]                                       # stands in for unused vector arguments
    grid = (math.ceil(c_cols / COL_X), row_blocks)
    _column_partials[grid, (COL_X, COL_Y)](x2, x2 if z2 is None else z2, dummy if mean is None else mean,
                                           dummy if inv_std is None else inv_std, mode, partial)
    out = empty((c_cols,), np.float64)
    _sum_partials[max(1, min(64, math.ceil(c_cols / 64))), 64](partial, float(divide_by), out)
    return out


@cuda.jit
def _vector_partials(v, squared, partial):
    """``partial[block] = sum of v[i] (or v[i]^2)`` over this block's grid-stride share, in float64."""
    cache = cuda.shared.array(SUM_THREADS, float64)
    tid = cuda.threadIdx.x
    acc = 0.0
    for i in range(cuda.grid(1), v.size, cuda.gridsize(1)):
        t = float64(v[i])
        acc += t * t if squared else t
    cache[tid] = acc
    cuda.syncthreads()
    step = SUM_THREADS // 2
    while step > 0:
        if tid < step:
            cache[tid] += cache[tid + step]
        cuda.syncthreads()
        step //= 2
    if tid == 0:
        partial[cuda.blockIdx.x] = cache[0]


@cuda.jit
def _store_total(partial, out, index):
    """``out[index] = sum(partial)`` (one thread: the partials are few)."""
    if cuda.grid(1) == 0:
        acc = 0.0
        for b in range(partial.size):
            acc += partial[b]
        out[index] = acc


def vector_sum(v_flat, *, squared=False, out=None, index=0):
    """Sum (or sum of squares) of a 1-D device array into ``out[index]`` (float64 device array; made when None).

    Returns ``out``. Writing into a slot lets the gradient norm collect one value per parameter on the
    device and copy a single number to the host.
    """
    blocks = max(1, min(SUM_BLOCKS, math.ceil(v_flat.size / SUM_THREADS)))
    partial = empty((blocks,), np.float64)
    _vector_partials[blocks, SUM_THREADS](v_flat, bool(squared), partial)
    if out is None:
        out = empty((1,), np.float64)
    _store_total[1, 1](partial, out, index)
    return out
