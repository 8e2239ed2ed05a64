"""Matrix product on the GPU: a tiled shared-memory GEMM with a register micro-tile per thread.

Computes, for row-major device matrices::

    C = op(A) @ op(B)            (or C += op(A) @ op(B) with accumulate=True)
    op(A) = A or A^T  (M, K),    op(B) = B or B^T  (K, N),    C (M, N)

The transposes are read in place (no transposed copy): ``dw = col^T @ dy`` and ``dcol = dy @ W^T`` in the
convolution backward are the same kernel with ``trans_a`` / ``trans_b`` set.

**Tiling.** Each block owns one ``BM x BN`` tile of ``C``. It walks along K in steps of ``BK``; at every
step the block's threads copy an ``(BM, BK)`` tile of ``op(A)`` and a ``(BK, BN)`` tile of ``op(B)`` from
global memory into shared memory (``cuda.shared.array``), wait (``cuda.syncthreads()``), and multiply
out of shared memory, which is ~100x faster to read than global memory::

    for k0 in range(0, K, BK):
        As[:, :] = op(A)[row0 : row0 + BM, k0 : k0 + BK]      # cooperative, coalesced loads
        Bs[:, :] = op(B)[k0 : k0 + BK, col0 : col0 + BN]      # zeros outside the matrices
        syncthreads()
        acc += As @ Bs                                        # each thread: its RM x RN outputs
        syncthreads()                                         # before the tiles are overwritten

Every element of ``A`` is read from global memory ``N / BN`` times instead of ``N`` times.

**Micro-tile.** A block has ``(BM / RM) x (BN / RN)`` threads, and thread ``(ty, tx)`` accumulates the
``RM x RN`` outputs at rows ``ty + i * (BM / RM)`` and columns ``tx + j * (BN / RN)`` in registers
(``cuda.local.array``): each shared-memory value it loads is used ``RN`` (or ``RM``) times, and
neighbouring threads write neighbouring columns of ``C`` (coalesced stores).

**Bank conflicts.** The tiles have one padding column (``(BK, BM + 1)``): threads that store
consecutive ``k`` of one row of ``A`` then land in different shared-memory banks instead of one.

**Split-K.** The weight gradient ``col^T @ dy`` has a small result (``T*C x F``, a handful of tiles) and a
huge ``K`` (every pixel of the batch): one block per tile would leave most of the GPU idle. Such products
cut ``K`` into ``S`` slices that run as separate blocks (``blockIdx.z``) and are added afterwards (see
:func:`matmul`).

Launch: ``grid = (ceil(N / BN), ceil(M / BM), S)``, ``block = (BN / RN, BM / RM)``. The GPU default
(:data:`TILES`) is a 64 x 64 tile with ``BK = 16`` and 4 x 4 per thread: 256 threads per block. Under
the simulator, where every thread is a Python thread, a 16 x 16 tile (16 threads) keeps the tests fast;
the tests run both configurations.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from .device import SIMULATED, empty, is_device_array, launch_1d


class Tiles(tuple):
    """``(BM, BN, BK, RM, RN)``: block tile of C, K step, and the per-thread micro-tile."""

    def __new__(cls, bm, bn, bk, rm, rn):
        if bm % rm or bn % rn:
            raise ValueError(f"the micro-tile {rm}x{rn} must divide the block tile {bm}x{bn}")
        return super().__new__(cls, (bm, bn, bk, rm, rn))


GPU_TILES = Tiles(64, 64, 16, 4, 4)
"""64 x 64 outputs per block, K step 16, 4 x 4 outputs per thread: 256 threads per block."""
SIMULATOR_TILES = Tiles(16, 16, 16, 4, 4)
"""16 x 16 outputs per block, 16 threads: the simulator pays per thread and per ``syncthreads``."""
TILES = SIMULATOR_TILES if SIMULATED else GPU_TILES
"""The configuration :func:`matmul` uses by default."""


SPLIT_K_MIN_DEPTH = 16 if SIMULATED else 512
"""Automatic split-K gives each split at least this many steps along K."""


@functools.lru_cache(maxsize=None)
def target_blocks() -> int:
    """Blocks a GEMM launch should reach before split-K stops paying: two per multiprocessor (1 under the
    simulator, where automatic split-K is off and the tests ask for it explicitly)."""
    if SIMULATED:
        return 1
    return 2 * cuda.get_current_device().MULTIPROCESSOR_COUNT


@functools.lru_cache(maxsize=None)
def gemm_kernel(dtype, tiles: Tiles, trans_a: bool, trans_b: bool, accumulate: bool,
                epilogue: tuple = (False, False, False)):
    """Compile (once per dtype, tiling and transpose/accumulate/epilogue flags) ``gemm(a, b, c3, k_chunk,
    bias, res)``.

    ``epilogue = (has_bias, has_residual, relu)``: each output is stored as ``act(acc + bias[n] + res[m, n])``
    (the terms whose flag is set; ``act`` the ReLU when ``relu``), in the same store that writes it: the
    fused convolution's bias, residual add and ReLU cost no pass of their own. Unused ``bias`` / ``res`` are
    placeholders. Not with ``accumulate`` or split-K (the epilogue needs the finished sum).

    ``c3`` is ``(S, M, N)``: block ``(bx, by, z)`` multiplies along ``K`` in ``[z * k_chunk, (z + 1) * k_chunk)``
    and writes (or, with ``accumulate``, adds) its tile into ``c3[z]``. Shared-memory and register arrays need
    their shape and dtype at compile time, and fixing the flags at compile time removes their branches from
    the inner loops, hence the factory.
    """
    bm, bn, bk, rm, rn = tiles
    tm, tn = bm // rm, bn // rn             # threads along the rows / columns of the tile
    n_threads = tm * tn
    bm_pad, bn_pad = bm + 1, bn + 1         # closure constants: shared-array shapes must be literals
    nb_type = numba.from_dtype(np.dtype(dtype))
    has_bias, has_res, relu = (bool(e) for e in epilogue)

    @cuda.jit
    def gemm(a, b, c3, k_chunk, bias, res):
        # One padding column: threads storing consecutive k of one row hit different banks.
        a_tile = cuda.shared.array((bk, bm_pad), nb_type)  # a_tile[k, m] = op(A)[row0 + m, k0 + k]
        b_tile = cuda.shared.array((bk, bn_pad), nb_type)  # b_tile[k, n] = op(B)[k0 + k, col0 + n]
        acc = cuda.local.array((rm, rn), nb_type)          # this thread's outputs, in registers
        a_reg = cuda.local.array(rm, nb_type)
        b_reg = cuda.local.array(rn, nb_type)

        _, m_rows, n_cols = c3.shape                        # C: (M, N) per split
        k_len = a.shape[0] if trans_a else a.shape[1]       # op(A): (M, K)
        k_lo = cuda.blockIdx.z * k_chunk
        k_hi = min(k_len, k_lo + k_chunk)
        c = c3[cuda.blockIdx.z]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * tn + tx
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bn
        for i in range(rm):
            for j in range(rn):
                acc[i, j] = 0

        for k0 in range(k_lo, k_hi, bk):
            # Cooperative loads; consecutive threads read consecutive addresses of the stored matrix.
            for idx in range(tid, bm * bk, n_threads):
                if trans_a:                                 # A stored (K, M): contiguous along m
                    kk, mm = idx // bm, idx % bm
                else:                                       # A stored (M, K): contiguous along k
                    mm, kk = idx // bk, idx % bk
                r, k = row0 + mm, k0 + kk
                if r < m_rows and k < k_hi:
                    a_tile[kk, mm] = a[k, r] if trans_a else a[r, k]
                else:
                    a_tile[kk, mm] = 0
            for idx in range(tid, bk * bn, n_threads):
                if trans_b:                                 # B stored (N, K): contiguous along k
                    nn, kk = idx // bk, idx % bk
                else:                                       # B stored (K, N): contiguous along n
                    kk, nn = idx // bn, idx % bn
                col, k = col0 + nn, k0 + kk
                if col < n_cols and k < k_hi:
                    b_tile[kk, nn] = b[col, k] if trans_b else b[k, col]
                else:
                    b_tile[kk, nn] = 0
            cuda.syncthreads()                              # tiles complete

            for kk in range(bk):                            # acc += a_tile^T @ b_tile, this thread's part
                for i in range(rm):
                    a_reg[i] = a_tile[kk, ty + i * tm]
                for j in range(rn):
                    b_reg[j] = b_tile[kk, tx + j * tn]
                for i in range(rm):
                    for j in range(rn):
                        acc[i, j] += a_reg[i] * b_reg[j]
            cuda.syncthreads()                              # everyone done before the next loads

        for i in range(rm):
            r = row0 + ty + i * tm
            if r < m_rows:
                for j in range(rn):
                    col = col0 + tx + j * tn
                    if col < n_cols:
                        if accumulate:
                            c[r, col] += acc[i, j]
                        else:
                            v = acc[i, j]
                            if has_bias:
                                v += bias[col]
                            if has_res:
                                v += res[r, col]
                            if relu and not (v > 0 or v != v):   # NaN stays NaN, as the ReLU op
                                v = 0
                            c[r, col] = v

    return gemm


@cuda.jit
def _sum_splits(partial, out, accumulate):
    """``out[m, n] (+)= sum_z partial[z, m, n]``, the splits added in a fixed order (deterministic)."""
    s_n, m_rows, n_cols = partial.shape
    for idx in range(cuda.grid(1), m_rows * n_cols, cuda.gridsize(1)):
        m, n = idx // n_cols, idx % n_cols
        acc = out[m, n] if accumulate else 0
        for z in range(s_n):
            acc += partial[z, m, n]
        out[m, n] = acc


def choose_split_k(m: int, n: int, k: int, tiles: Tiles) -> int:
    """How many slices of K to run in parallel: enough blocks to fill the GPU when ``M x N`` has few tiles
    (the weight gradient ``col^T @ dy``: a small ``(T*C, F)`` result summed over every pixel)."""
    out_tiles = math.ceil(m / tiles[0]) * math.ceil(n / tiles[1])
    want = math.ceil(target_blocks() / out_tiles)
    return max(1, min(want, k // SPLIT_K_MIN_DEPTH))


@functools.lru_cache(maxsize=None)
def _placeholders(dtype):
    """A (1,) and a (1, 1) device array of ``dtype``: the ``bias`` / ``res`` of a GEMM without that epilogue."""
    return cuda.to_device(np.zeros(1, dtype)), cuda.to_device(np.zeros((1, 1), dtype))


def matmul(a, b, out=None, *, trans_a: bool = False, trans_b: bool = False, accumulate: bool = False,
           tiles: Tiles | None = None, split_k: int | None = None, bias=None, residual=None, relu: bool = False):
    """``out = op(a) @ op(b)`` (``+=`` with ``accumulate``) for 2-D C-contiguous device arrays; returns ``out``.

    Epilogue (fused into the store, see :func:`gemm_kernel`): ``out = act(op(a) @ op(b) + bias + residual)``
    with ``bias`` (N,) broadcast over the rows, ``residual`` (M, N), ``act`` the ReLU when ``relu``; such a
    product runs without split-K and cannot accumulate.

    ``op(a)`` is ``a.T`` when ``trans_a`` (read in place). ``out`` is allocated when None.

    **Split-K.** When ``M x N`` has too few tiles to occupy the GPU but ``K`` is long, ``S`` slices of ``K``
    run as ``S`` independent blocks per tile into an ``(S, M, N)`` buffer, then one kernel adds the slices in
    a fixed order::

        C = sum_z op(A)[:, K_z] @ op(B)[K_z, :]

    ``split_k`` None chooses ``S`` (:func:`choose_split_k`); an int forces it (tests).
    """
    if not (is_device_array(a) and is_device_array(b)) or a.ndim != 2 or b.ndim != 2:
        raise ValueError("matmul takes two 2-D device arrays")
    m, k = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    k2, n = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
    if k != k2:
        raise ValueError(f"matmul: inner sizes differ, op(a) is ({m}, {k}) and op(b) is ({k2}, {n})")
    if a.dtype != b.dtype:
        raise ValueError(f"matmul: dtypes differ ({a.dtype}, {b.dtype})")
    if out is None:
        if accumulate:
            raise ValueError("accumulate=True needs out")
        out = empty((m, n), a.dtype)
    elif tuple(out.shape) != (m, n):
        raise ValueError(f"matmul: out has shape {tuple(out.shape)}, expected ({m}, {n})")
    epilogue = (bias is not None, residual is not None, bool(relu))
    if any(epilogue) and accumulate:
        raise ValueError("matmul: an epilogue (bias, residual, relu) cannot accumulate")
    if residual is not None and tuple(residual.shape) != (m, n):
        raise ValueError(f"matmul: residual has shape {tuple(residual.shape)}, expected ({m}, {n})")
    if m == 0 or n == 0:
        return out
    tiles = tiles or TILES
    bm, bn, bk, rm, rn = tiles
    splits = max(1, min(int(split_k), max(k, 1))) if split_k is not None else choose_split_k(m, n, k, tiles)
    if any(epilogue):
        splits = 1                                                      # the epilogue needs the whole sum
    pb, pr = _placeholders(a.dtype.type)
    extra = (pb if bias is None else bias, pr if residual is None else residual)
    k_chunk = max(bk, math.ceil(math.ceil(k / splits) / bk) * bk)       # a whole number of K steps per split
    splits = max(1, math.ceil(k / k_chunk))
    block = (bn // rn, bm // rm)                                        # (threads along N, along M)
    if splits == 1:
        kernel = gemm_kernel(a.dtype.type, tiles, bool(trans_a), bool(trans_b), bool(accumulate), epilogue)
        kernel[(math.ceil(n / bn), math.ceil(m / bm), 1), block](a, b, out.reshape(1, m, n), max(k, 1), *extra)
        return out
    partial = empty((splits, m, n), a.dtype)                            # (S, M, N)
    kernel = gemm_kernel(a.dtype.type, tiles, bool(trans_a), bool(trans_b), False)
    kernel[(math.ceil(n / bn), math.ceil(m / bm), splits), block](a, b, partial, k_chunk, *extra)
    launch_1d(_sum_splits, m * n, partial, out, bool(accumulate))
    return out
