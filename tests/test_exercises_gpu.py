"""The GPU-kernel checkers (notebook 16) pass a student's kernels and name each mistake they claim to recognise.

The kernels are written the way a student writes them (one switch per mistake), not from the checker's
variants; they run on the CUDA simulator (``tests/conftest.py`` switches it on).
"""
from __future__ import annotations

import numpy as np
import pytest
from numba import cuda, float32, float64

from tinydeeplab.exercises import ExerciseFailure, check
from tinydeeplab.kernels.cuda import SIMULATED, simulator


def make_tile_gemm(tile, mistake=None):
    """A student's shared-memory tile GEMM, ``c = a @ b``, with an optional mistake."""
    sync_before = mistake != "no sync before the multiply"
    sync_after = mistake != "no sync after the multiply"
    zero_fill = mistake != "no zeros outside the matrices"
    whole_tiles_only = mistake == "whole tiles only"
    first_tile_only = mistake == "first tile only"
    transposed = mistake == "transposed store"
    guard_store = mistake != "no store guard"

    @cuda.jit
    def kernel(a, b, c):
        a_tile = cuda.shared.array((tile, tile), float32)
        b_tile = cuda.shared.array((tile, tile), float32)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * tile + ty
        col = cuda.blockIdx.x * tile + tx
        m, k_len = a.shape
        n = b.shape[1]
        k_stop = k_len - k_len % tile if whole_tiles_only else k_len
        if first_tile_only:
            k_stop = 1
        acc = float32(0.0)
        for k0 in range(0, k_stop, tile):
            if row < m and k0 + tx < k_len:
                a_tile[ty, tx] = a[row, k0 + tx]
            elif zero_fill:
                a_tile[ty, tx] = 0
            if k0 + ty < k_len and col < n:
                b_tile[ty, tx] = b[k0 + ty, col]
            elif zero_fill:
                b_tile[ty, tx] = 0
            if sync_before:
                cuda.syncthreads()
            for kk in range(tile):
                acc += a_tile[ty, kk] * b_tile[kk, tx]
            if sync_after:
                cuda.syncthreads()
        if (row < m and col < n) or not guard_store:
            if transposed:
                c[col, row] = acc
            else:
                c[row, col] = acc

    return kernel


def make_channel_sums(threads, mistake=None):
    """A student's one-block-per-channel ``[sum x, sum x^2]`` with a shared-memory tree, optional mistake."""
    one_row_per_thread = mistake == "one row per thread"
    whole_blocks_only = mistake == "whole blocks only"
    levels = int(np.log2(threads)) - (1 if mistake == "tree stops early" else 0)
    idle_threads_store = mistake != "idle threads store nothing"
    square_of_sum = mistake == "square of the sum"
    in_float32 = mistake == "float32 accumulation"

    @cuda.jit
    def kernel(x, sums):
        cache = cuda.shared.array((2, threads), float64)    # [partial sums of x, of x^2]
        c, t, m_rows = cuda.blockIdx.x, cuda.threadIdx.x, x.shape[0]
        stop = m_rows - m_rows % threads if whole_blocks_only else m_rows
        if one_row_per_thread:
            stop = min(m_rows, threads)
        s = float32(0.0) if in_float32 else float64(0.0)
        q = float32(0.0) if in_float32 else float64(0.0)
        for m in range(t, stop, threads):
            v = x[m, c] if in_float32 else float64(x[m, c])
            s += v
            q += v * v
        if t < m_rows or idle_threads_store:
            cache[0, t] = s
            cache[1, t] = q
        cuda.syncthreads()
        for level in range(levels):                     # partner at distance threads/2, threads/4, ..., 1
            half = threads >> (level + 1)
            if t < half:
                for j in range(2):
                    cache[j, t] = cache[j, t] + cache[j, t + half]
            cuda.syncthreads()
        if t == 0:
            sums[0, c] = cache[0, 0]
            sums[1, c] = cache[0, 0] * cache[0, 0] if square_of_sum else cache[1, 0]

    return kernel


def test_reference_kernels_pass():
    assert check("shared_tile_gemm", make_tile_gemm).startswith("shared_tile_gemm: passed")
    assert check("block_channel_sums", make_channel_sums).startswith("block_channel_sums: passed")


GEMM, SUMS = ("shared_tile_gemm", make_tile_gemm), ("block_channel_sums", make_channel_sums)


@pytest.mark.skipif(not SIMULATED, reason="the NaN poisoning of shared memory is the simulator's")
@pytest.mark.parametrize("exercise, mistake, message", [
    (GEMM, "no sync before the multiply", r"read shared memory that no thread had written yet.*syncthreads\(\) "
                                          r"after loading the tiles"),
    (GEMM, "no sync after the multiply", r"right when K fits in one tile but wrong with 3 tiles.*syncthreads\(\) "
                                         r"at the end of each step"),
    (GEMM, "no zeros outside the matrices", r"only when the matrices do not fill the tiles.*store 0 there"),
    (GEMM, "whole tiles only", r"misses the last partial tile along K \(the last 6 of K = 6 terms\)"),
    (GEMM, "first tile only", r"only the first tile along K"),
    (GEMM, "transposed store", r"stored transposed"),
    (GEMM, "no store guard", r"IndexError.*guard every global load and store"),
    (SUMS, "one row per thread", r"only the first 8 rows.*loop over the rows"),
    (SUMS, "whole blocks only", r"misses the last partial block of rows \(the last 5 of M = 29\)"),
    (SUMS, "tree stops early", r"the tree stops one level early"),
    (SUMS, "idle threads store nothing", r"0\.0 if it has no rows.*threads 16, M 5"),
    (SUMS, "square of the sum", r"\(sum x\)\^2"),
    (SUMS, "float32 accumulation", r"close but not exact.*accumulate in float64"),
], ids=lambda v: v[0] if isinstance(v, tuple) else None)
def test_mistakes_are_named(exercise, mistake, message):
    name, make = exercise
    with pytest.raises(ExerciseFailure, match=message):
        check(name, lambda size: make(size, mistake))


def test_a_factory_that_returns_no_kernel_is_told_so():
    with pytest.raises(ExerciseFailure, match="returned None"):
        check("shared_tile_gemm", lambda tile: None)
    with pytest.raises(ExerciseFailure, match="should return a @cuda.jit kernel"):
        check("block_channel_sums", lambda threads: (lambda x, sums: None))    # forgot @cuda.jit


@pytest.mark.skipif(not SIMULATED, reason="a property of the CUDA simulator")
def test_poisoned_shared_memory_shows_an_unsynchronised_read():
    """Thread 0 reads its neighbour's slot before the neighbour runs: NaN inside the context, and the
    simulator's leftover memory outside it (whatever np.empty found); a synchronised read is right in both."""
    def make(sync):
        @cuda.jit
        def shift(x, y):
            s = cuda.shared.array(4, float64)
            t = cuda.threadIdx.x
            s[t] = x[t]
            if sync:
                cuda.syncthreads()
            y[t] = s[(t + 1) % 4]
        return shift

    x = np.arange(1.0, 5.0)
    for sync in (True, False):
        y = np.zeros(4)
        with simulator.poisoned_shared_memory():
            make(sync)[1, 4](x, y)
        if sync:
            np.testing.assert_array_equal(y, np.roll(x, -1))
        else:
            assert np.isnan(y[0]), y
    assert not simulator._poison                            # the context restores the default
