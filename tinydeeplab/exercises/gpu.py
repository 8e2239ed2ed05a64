"""GPU-kernel exercises (notebook 16): a shared-memory tiled matrix product, a shared-memory block reduction.

====================  ================================================================  ========================
name                  the student writes                                                reference
====================  ================================================================  ========================
shared_tile_gemm      ``fn(tile) -> kernel``: a ``@cuda.jit`` kernel ``(a, b, c)`` with     ``a @ b`` (float64)
                      ``c = a @ b``; grid ``(ceil(N / tile), ceil(M / tile))``, block
                      ``(tile, tile)``; thread ``(tx, ty)`` of block ``(bx, by)`` owns
                      ``c[by * tile + ty, bx * tile + tx]``
block_channel_sums    ``fn(threads) -> kernel``: a ``@cuda.jit`` kernel ``(x, sums)``,      ``x.sum(0)``,
                      ``x (M, C)`` float32, ``sums (2, C)`` float64 ``= [sum x, sum x^2]``   ``(x ** 2).sum(0)``
                      per channel (batch norm's statistics); grid ``(C,)``, block           (float64)
                      ``(threads,)``, ``threads`` a power of two
====================  ================================================================  ========================

The function returns the kernel (a factory, like :func:`tinydeeplab.kernels.cuda.gemm.gemm_kernel`):
shared-memory shapes must be compile-time constants, so ``tile`` and ``threads`` are closure constants.
The checker launches the kernel itself, on device copies of seeded inputs, with the output pre-filled
with a sentinel (an entry nobody wrote shows as such) and, under the CUDA simulator, with fresh shared
memory filled with NaN (:func:`tinydeeplab.kernels.cuda.simulator.poisoned_shared_memory`), so that a
read of shared memory before any thread wrote it shows as NaN instead of passing by luck. The cases go
from one block and one step along K (or one pass over the rows) to partial tiles on every side, so the
step where a kernel first fails names the mistake:

* tile GEMM: an entry never written; a read before ``cuda.syncthreads()`` (NaN under the simulator);
  tile entries outside the matrices left unwritten instead of 0; the last partial tile along K missed;
  only the first tile along K; ``c`` stored transposed; correct with one tile along K but not with
  several (the second ``syncthreads``, before the next step overwrites the tiles); only the partial
  tiles at the bottom / right edge wrong; the rows of the tile that are wrong; a result that changes
  from launch to launch (a race);
* block sums: totals never stored; shared memory read before it was written (threads without rows must
  store 0); only the first ``threads`` rows (no loop over the rows); the last partial block of rows
  missed; a tree that stops one level early; only thread 0's partial; ``(sum x)^2`` for the sum of
  squares; the two rows swapped; means instead of sums; float32 accumulation (close, not exact).

Integer-valued float32 inputs keep every product and partial sum exact, so a wrong answer is compared
with each known wrong one exactly; one case of the sums has non-integer data for the float64 check.

>>> from tinydeeplab.exercises import describe
>>> describe("block_channel_sums")
'block_channel_sums: per-channel sum x and sum x^2 by a shared-memory tree in one block per channel (graded by tinydeeplab.exercises.gpu)'
"""
from __future__ import annotations

import math

import numpy as np

from . import exercise
from ._grading import attempt, fail

SENTINEL = 1.0e6
"""Pre-filled into the GEMM's ``c``: no product of the checker's small integer inputs reaches it."""
SUMS_SENTINEL = -1.0e300
"""Pre-filled into the sums."""


def _cuda():
    """``numba.cuda`` and the poisoning context, imported on first use (importing ``numba.cuda`` fixes the
    choice between the simulator and a GPU, so this module does not do it at import time)."""
    from numba import cuda

    from ..kernels import cuda as _backend  # noqa: F401 - installs the simulator's shared-array fix
    from ..kernels.cuda.simulator import poisoned_shared_memory
    return cuda, poisoned_shared_memory


def _kernel_from(fn, size, case, what: str):
    """``fn(size)``, checked to be a launchable kernel."""
    kernel = attempt(fn, case, size)
    if kernel is None:
        fail(f"{what} returned None: return the @cuda.jit kernel it defines", case)
    if not hasattr(kernel, "__getitem__") or not callable(kernel):
        fail(f"{what} should return a @cuda.jit kernel (launched as kernel[grid, block](...)), got "
             f"{type(kernel).__name__}", case)
    return kernel


def _launch(kernel, grid, block, case, *host_arrays):
    """Run ``kernel[grid, block]`` on device copies of ``host_arrays`` (shared memory poisoned under the
    simulator); returns the arrays copied back. An exception names the thread and the likely cause."""
    cuda, poisoned = _cuda()
    dev = [cuda.to_device(np.ascontiguousarray(a)) for a in host_arrays]
    try:
        with poisoned():
            kernel[grid, block](*dev)
        cuda.synchronize()
    except NotImplementedError:
        fail("not implemented yet (your kernel raises NotImplementedError: replace the `raise` with your code)",
             case)
    except IndexError as err:
        fail(f"your kernel raised IndexError: {err}; a thread read or wrote outside an array: guard every "
             f"global load and store with the matrix bounds (load 0 into shared memory instead)", case)
    except Exception as err:  # noqa: BLE001 - the student's bug, reported with its case
        fail(f"your kernel raised {type(err).__name__}: {err}", case)
    return [d.copy_to_host() for d in dev]


def _ints(rng, shape):
    """Integer-valued float32 in [-3, 3]: exact products and sums, and no entry of the result is 0 by luck
    more often than integers are."""
    return rng.integers(-3, 4, shape).astype(np.float32)


# --- the tiled matrix product ------------------------------------------------------------------------------------

_GEMM_CASES = (
    # (tile, M, K, N): one block and one step along K; one block, one step, matrices smaller than the tile
    # (fresh shared memory: unwritten tile entries show); one block, several steps; partial tiles on every side
    (4, 4, 4, 4),
    (8, 8, 8, 8),
    (8, 5, 6, 7),
    (8, 8, 24, 8),
    (8, 13, 19, 11),
)


def _fills_tiles(tile, m, k, n) -> bool:
    """True when M, K and N are multiples of the tile (no partial tile anywhere)."""
    return m % tile == 0 and k % tile == 0 and n % tile == 0


def _where(r: int, c: int, tile: int) -> str:
    return (f"C[{r}, {c}] (block (bx={c // tile}, by={r // tile}), thread (tx={c % tile}, ty={r % tile}), "
            f"row {r % tile} of its tile)")


def _gemm_diagnosis(got, a, b, tile, case, rerun, *, one_step_ok: bool, full_tiles_ok: bool):
    """Fail with the most specific message that explains ``got`` (nothing when it is right)."""
    m, k = a.shape
    expected = a.astype(np.float64) @ b.astype(np.float64)             # exact: integer data
    unwritten = got == SENTINEL
    if unwritten.any():
        r, c = (int(i) for i in np.argwhere(unwritten)[0])
        fail(f"{int(unwritten.sum())} of {got.size} entries of C were never written, first {_where(r, c, tile)}: "
             f"every thread with row < M and col < N must store its sum", case)
    nan = np.isnan(got)
    if nan.any():
        r, c = (int(i) for i in np.argwhere(nan)[0])
        if full_tiles_ok:
            fail(f"{int(nan.sum())} entries of C are NaN, first {_where(r, c, tile)}, only when the matrices do not "
                 f"fill the tiles: tile entries outside A or B were never written (the simulator fills fresh "
                 f"shared memory with NaN); store 0 there, so the tile is complete", case)
        fail(f"{int(nan.sum())} entries of C are NaN, first {_where(r, c, tile)}: your kernel read shared memory "
             f"that no thread had written yet (the simulator fills fresh shared memory with NaN): did you call "
             f"cuda.syncthreads() after loading the tiles, before the multiply loop reads them?", case)
    if np.array_equal(got, expected):
        return
    k_full = k // tile * tile
    if k_full < k and np.array_equal(got, a[:, :k_full].astype(np.float64) @ b[:k_full]):
        fail(f"C misses the last partial tile along K (the last {k - k_full} of K = {k} terms): loop over "
             f"ceil(K / tile) tiles and load 0 past K", case)
    if k > tile and np.array_equal(got, a[:, :tile].astype(np.float64) @ b[:tile]):
        fail(f"C holds only the first tile along K (K = {k}, tile {tile}): step k0 over range(0, K, tile) and "
             f"keep adding into the same accumulator", case)
    if got.shape[0] == got.shape[1] and np.array_equal(got, expected.T):
        fail("C is stored transposed: thread (tx, ty) of block (bx, by) owns C[by * tile + ty, bx * tile + tx] "
             "(rows follow y, columns follow x)", case)
    if k > tile and one_step_ok:
        fail(f"C is right when K fits in one tile but wrong with {math.ceil(k / tile)} tiles along K: a thread "
             f"that finishes its multiply loop early overwrites the tiles while the others still read them; "
             f"did you call cuda.syncthreads() at the end of each step, before loading the next tiles?", case)
    if not np.array_equal(rerun, got):
        fail("C changes from one launch to the next on the same inputs: a race; every thread must finish "
             "writing a tile before any reads it, and finish reading before the next step overwrites it "
             "(cuda.syncthreads() at both places)", case)
    wrong = got != expected
    rows, cols = np.nonzero(wrong)
    r, c = int(rows[0]), int(cols[0])
    first = f"first {_where(r, c, tile)}: got {got[r, c]:.6g}, expected {expected[r, c]:.6g}"
    m_full, n_full = m // tile * tile, got.shape[1] // tile * tile
    if np.all((rows >= m_full) | (cols >= n_full)):
        fail(f"only entries in the partial tiles at the bottom / right edge are wrong ({int(wrong.sum())} of "
             f"{got.size}), {first}: check the bounds when loading (row < M, k < K, col < N) and storing", case)
    tile_rows = sorted({int(i) for i in rows % tile})
    if len(tile_rows) < tile:
        fail(f"row{'s' if len(tile_rows) > 1 else ''} {', '.join(map(str, tile_rows))} of the tiles "
             f"{'are' if len(tile_rows) > 1 else 'is'} wrong, the others right ({int(wrong.sum())} of {got.size} "
             f"entries), {first}: look at how those threads index the shared tiles", case)
    fail(f"C differs from A @ B in {int(wrong.sum())} of {got.size} entries, {first}", case)


@exercise("shared_tile_gemm", "C = A @ B with shared-memory tiles: a @cuda.jit kernel, one thread per entry of C")
def _check_shared_tile_gemm(fn):
    rng = np.random.default_rng(160)
    for i, (tile, m, k, n) in enumerate(_GEMM_CASES):
        case = {"tile": tile, "M": m, "K": k, "N": n}
        kernel = _kernel_from(fn, tile, case, "make_tile_gemm(tile)")
        a, b = _ints(rng, (m, k)), _ints(rng, (k, n))
        grid, block = (math.ceil(n / tile), math.ceil(m / tile)), (tile, tile)
        c0 = np.full((m, n), SENTINEL, np.float32)
        got = _launch(kernel, grid, block, case, a, b, c0)[2]
        if np.array_equal(got, a.astype(np.float64) @ b):
            continue
        rerun = _launch(kernel, grid, block, case, a, b, c0)[2]
        passed = _GEMM_CASES[:i]                            # a wrong result fails: the earlier cases passed
        _gemm_diagnosis(got, a, b, tile, case, rerun,
                        one_step_ok=k > tile and any(kp <= tp for tp, _, kp, _ in passed),
                        full_tiles_ok=any(_fills_tiles(*p) for p in passed) and not _fills_tiles(tile, m, k, n))
    return f"{len(_GEMM_CASES)} cases, tiles 4 and 8, up to {max(c[1] for c in _GEMM_CASES)} rows"


# --- the block reduction -----------------------------------------------------------------------------------------

_SUM_CASES = (
    # (threads, M rows, C channels, integer data): one pass, several passes + a partial one, fewer rows than
    # threads, then non-integer data with a large mean (float32 accumulation shows)
    (8, 8, 3, True),
    (8, 29, 3, True),
    (16, 5, 2, True),
    (8, 200, 2, False),
)


def _sums(x, rows=None):
    """float64 ``[sum x, sum x^2]`` over the rows selected by the boolean mask ``rows`` (all when None)."""
    x = x.astype(np.float64)
    if rows is not None:
        x = x[rows]
    return np.stack([x.sum(0), (x * x).sum(0)])


def _sum_variants(x, threads):
    """``[(value, message)]``: the known wrong answers for ``x (M, C)`` and a block of ``threads``."""
    m = x.shape[0]
    tid = np.arange(m) % threads                              # the thread that reads row m in a block-stride loop
    right = _sums(x)
    out = []
    if m > threads:
        out.append((_sums(x, np.arange(m) < threads),
                    f"you summed only the first {threads} rows (one per thread): loop over the rows "
                    f"m = tid, tid + {threads}, tid + {2 * threads}, ... while m < M"))
    if m > threads and m % threads:
        out.append((_sums(x, np.arange(m) < m // threads * threads),
                    f"the sum misses the last partial block of rows (the last {m % threads} of M = {m}): loop "
                    f"while m < M, not over whole blocks of {threads} rows"))
    if threads > 1:
        out.append((_sums(x, tid % 2 == 0), "the tree stops one level early: only the even threads' partials reach "
                    "thread 0; halve the step down to 1 (while step > 0)"))
        out.append((_sums(x, tid == 0), "only thread 0's own partial sum: add the other threads' partials with the "
                    "shared-memory tree (syncthreads between its steps)"))
    out.append((np.stack([right[0], right[0] ** 2]), "sums[1] is (sum x)^2: it must be the sum of squares, "
                "each thread adding x * x"))
    out.append((right[::-1], "the two rows are swapped: sums[0] = sum x, sums[1] = sum x^2"))
    out.append((right / m, f"you divided by M = {m}: store the sums (means come later, once the sums of all "
                "blocks, or ranks, are added)"))
    return out


@exercise("block_channel_sums", "per-channel sum x and sum x^2 by a shared-memory tree in one block per channel")
def _check_block_channel_sums(fn):
    rng = np.random.default_rng(161)
    for threads, m, c, integer in _SUM_CASES:
        case = {"threads": threads, "M": m, "C": c}
        kernel = _kernel_from(fn, threads, case, "make_channel_sums(threads)")
        x = _ints(rng, (m, c)) if integer else (10 + rng.standard_normal((m, c))).astype(np.float32)
        s0 = np.full((2, c), SUMS_SENTINEL)
        got = _launch(kernel, (c,), (threads,), case, x, s0)[1]
        expected = _sums(x)
        if got.dtype != np.float64:
            fail(f"sums has dtype {got.dtype}: keep the float64 array the checker hands in", case)
        if (got == SUMS_SENTINEL).any():
            j, ch = (int(i) for i in np.argwhere(got == SUMS_SENTINEL)[0])
            fail(f"sums[{j}, {ch}] was never written: thread 0 of block {ch} must store the block's totals", case)
        if np.isnan(got).any():
            fail("the sums are NaN: a thread read shared memory that was never written (the simulator fills fresh "
                 "shared memory with NaN); every thread must store its partial, 0.0 if it has no rows (M < "
                 "threads), and call cuda.syncthreads() before the tree reads it", case)
        if np.allclose(got, expected, rtol=1e-11, atol=0):
            continue
        for value, message in _sum_variants(x, threads):
            if np.allclose(got, value, rtol=1e-11, atol=0):
                fail(message, case)
        if not integer and np.allclose(got, expected, rtol=1e-5, atol=0):
            worst = float(np.max(np.abs(got - expected) / np.abs(expected)))
            fail(f"the sums are close but not exact (relative error {worst:.1e}): accumulate in float64 "
                 f"(acc = float64(0.0); acc += float64(x[m, c])), as batch norm's sums do; float32 keeps ~7 digits",
                 case)
        rerun = _launch(kernel, (c,), (threads,), case, x, s0)[1]
        if not np.array_equal(rerun, got):
            fail("the sums change from one launch to the next on the same inputs: a race; call "
                 "cuda.syncthreads() after every step of the tree, before the next step reads", case)
        j, ch = (int(i) for i in np.argwhere(~np.isclose(got, expected, rtol=1e-11, atol=0))[0])
        fail(f"sums[{j}, {ch}] (block {ch}) is {got[j, ch]:.10g}, expected {expected[j, ch]:.10g}", case)
    return f"{len(_SUM_CASES)} cases, blocks of 8 and 16 threads, up to {max(s[1] for s in _SUM_CASES)} rows"
