# %% [markdown]
# # 16. Fast on the GPU: from a naive kernel to tinydeeplab's CUDA kernels
#
# **The question.** How does a matrix product, the work horse of every convolution, go from one thread per
# output to a kernel that keeps a GPU busy, and what else, besides the arithmetic, sets the time of a training step
# on a GPU?
#
# **Why it matters.** tinydeeplab's `cuda` backend (`tinydeeplab/kernels/cuda/`, [the GPU guide](../docs/guides/gpu.md))
# runs the whole model in Numba CUDA kernels written in Python. Convolutions are an im2col gather and a matrix
# product (GEMM; notebook 01), and [notebook 15](15_fast_on_the_cpu.ipynb) showed how the CPU backend makes them
# fast. On a GPU the same product is a ladder of ideas, each a few lines of `numba.cuda`: one thread per output,
# memory accesses that a warp can combine, tiles staged in shared memory, several outputs per thread in registers,
# and, for the weight gradient, splitting the long sum over the batch's pixels across blocks.
#
# **How this notebook runs.** Every kernel below is real CUDA code for Numba. Without an NVIDIA GPU the first cell
# switches on Numba's CUDA *simulator* (`NUMBA_ENABLE_CUDASIM=1`), which runs each GPU thread as a Python thread:
# the results are exactly those of the kernel, the speed is not (a 32x32 product takes about a second). So the
# shapes are tiny, every rung is checked against NumPy, and **every speed figure is one measured on an NVIDIA H200
# by `benchmarks/bench_gpu.py` and `benchmarks/bench_gemm.py`, read from
# [docs/performance.md](../docs/performance.md)**, not on your machine. On a machine with a GPU the notebook runs
# on it unchanged.

# %%
import glob
import os
import sys

if not glob.glob("/dev/nvidia[0-9]*"):                  # no NVIDIA GPU: run the kernels on Numba's CUDA simulator
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")   # must happen before numba is imported
    if "numba" in sys.modules:                           # imported already (another notebook in this process)
        sys.modules["numba"].core.config.reload_config()

import math
import re
import textwrap
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import matplotlib.pyplot as plt
from numba import cuda, float32, float64

from tinydeeplab import backend
from tinydeeplab import functional as F
from tinydeeplab.exercises import check
from tinydeeplab.kernels import cuda as tdl_cuda
from tinydeeplab.kernels.cuda import gemm, reduce as tdl_reduce, simulator

SIMULATED = tdl_cuda.SIMULATED
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)
print("running on", "the CUDA simulator (CPU)" if SIMULATED else cuda.get_current_device().name)

# %% [markdown]
# ## 1. The execution model: a grid of blocks of threads
#
# A kernel launch `kernel[grid, block](args)` starts `grid` **blocks** of `block` **threads** each (both up to 3-D
# shapes); every thread runs the same function and finds its place from four read-only values: `cuda.blockIdx`,
# `cuda.threadIdx`, `cuda.blockDim`, `cuda.gridDim`. `cuda.grid(2)` is the usual shorthand
# $(\text{blockIdx.x}\cdot\text{blockDim.x} + \text{threadIdx.x},\ \text{blockIdx.y}\cdot\text{blockDim.y} +
# \text{threadIdx.y})$. The hardware behind it:
#
# * a block runs on one **streaming multiprocessor** (SM; an H200 has 132) from start to end, and its threads can
#   share a small, fast **shared memory** (`cuda.shared.array`, up to ~228 KB per SM) and wait for each other at a
#   barrier, `cuda.syncthreads()`; threads of different blocks can do neither within one (ordinary) launch: the
#   next launch is the grid-wide barrier;
# * the threads of a block are executed in **warps** of 32 consecutive threads, numbered with x fastest
#   ($t = \text{threadIdx.x} + \text{blockDim.x}\cdot\text{threadIdx.y}$); a warp issues one instruction for its 32
#   threads, and its 32 memory accesses are served together, in as few 32-byte *sectors* as their addresses allow;
# * each thread has its own registers; a small `cuda.local.array` whose indices are known once the loops are
#   unrolled lives there too (otherwise it spills to slow "local" memory: tinydeeplab's GEMM has no spills).
#
# The kernel below writes, for every entry of a 12x20 array, which block, which thread of the block and which warp
# computed it. The grid has more threads than entries (blocks are 8x8 and 20 is not a multiple of 8), so the
# kernel must **guard** its accesses: the threads outside the array do nothing. `cuda.atomic.add` counts how many
# threads wrote each entry (exactly one).

# %%
@cuda.jit
def where_am_i(block_of, thread_of, warp_of, hits):
    col, row = cuda.grid(2)                                # x along the columns, y along the rows
    if row < block_of.shape[0] and col < block_of.shape[1]:    # the guard: the grid overhangs the array
        t = cuda.threadIdx.x + cuda.blockDim.x * cuda.threadIdx.y   # linear thread index in the block
        block_of[row, col] = cuda.blockIdx.x + cuda.gridDim.x * cuda.blockIdx.y
        thread_of[row, col] = t
        warp_of[row, col] = t // 32
        cuda.atomic.add(hits, (row, col), 1)


H, W, BLOCK = 12, 20, (8, 8)
grid = (math.ceil(W / BLOCK[0]), math.ceil(H / BLOCK[1]))
maps = [cuda.to_device(np.full((H, W), -1, np.int32)) for _ in range(4)]
maps[3] = cuda.to_device(np.zeros((H, W), np.int32))
where_am_i[grid, BLOCK](*maps)
block_of, thread_of, warp_of, hits = (m.copy_to_host() for m in maps)
rows, cols = np.mgrid[:H, :W]
bx, by = BLOCK
assert np.array_equal(block_of, cols // bx + grid[0] * (rows // by))
assert np.array_equal(thread_of, cols % bx + bx * (rows % by)) and np.array_equal(warp_of, thread_of // 32)
assert np.all(hits == 1)                                   # every entry written once, nothing outside
threads_launched = grid[0] * grid[1] * bx * by
print(f"grid {grid} x block {BLOCK}: {threads_launched} threads for {H * W} entries; "
      f"{threads_launched - H * W} threads did nothing")

fig, axes = plt.subplots(1, 3, figsize=(12, 2.8), layout="constrained")
for ax, data, title in zip(axes, (block_of, thread_of, warp_of), ("block (linear index)", "thread in its block",
                                                                     "warp in its block (32 threads)")):
    im = ax.imshow(data, cmap="tab20" if data.max() < 20 else "viridis")
    ax.set(title=title, xticks=range(0, W, 4), yticks=range(0, H, 4))
    fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# **Shared memory and the barrier.** Below, each thread of a block puts its input in shared memory and then reads
# its *neighbour's* slot. Without `cuda.syncthreads()` between the write and the read, a thread may read a slot
# that its neighbour has not written yet. On a GPU the result then depends on timing (within one warp it often
# comes out right by luck, which is worse). The simulator runs a block's threads one after the other up to each
# barrier, so the race always shows there; `simulator.poisoned_shared_memory()` (tinydeeplab's, for teaching and
# for the exercise checkers) fills fresh shared memory with NaN, so the unwritten slot shows as NaN instead of
# whatever was in memory. (The simulator keeps one shared array per launch, so the second block below reads the
# first block's leftovers instead: wrong, but not NaN.)

# %%
def make_neighbour_read(threads, sync):
    @cuda.jit
    def neighbour_read(x, y):
        s = cuda.shared.array(threads, float32)
        t = cuda.threadIdx.x
        i = cuda.blockIdx.x * threads + t
        s[t] = x[i]
        if sync:
            cuda.syncthreads()                             # every thread of the block has written its slot
        y[i] = s[(t + 1) % threads]                        # the neighbour's value (cyclic within the block)
    return neighbour_read


x_small = np.arange(16, dtype=np.float32)
expected = np.roll(x_small.reshape(2, 8), -1, axis=1).ravel()
for sync in (True, False):
    d_y = cuda.to_device(np.zeros(16, np.float32))
    with simulator.poisoned_shared_memory():
        make_neighbour_read(8, sync)[2, 8](cuda.to_device(x_small), d_y)
    y_small = d_y.copy_to_host()
    print(f"syncthreads {'yes' if sync else 'no '}: {y_small}")
    if sync:
        assert np.array_equal(y_small, expected)
    elif SIMULATED:                                        # the race, made visible: slots read before written
        assert np.isnan(y_small).any()

# %% [markdown]
# ## 2. The GEMM ladder, rungs 1 and 2: one thread per output, then coalesced
#
# $C = A B$ with $A$ $(M, K)$, $B$ $(K, N)$, all row-major float32. **Rung 1**: one thread per entry of $C$, looping
# over $k$. The first version maps the fastest thread index x to the *rows* of $C$; **rung 2** maps it to the
# columns. The arithmetic is identical; what differs is what a warp asks of memory. In rung 1 the 32 threads of a
# warp hold 32 different rows: their loads of `a[row, k]` are $4K$ bytes apart (32 sectors), all of them read the
# same `b[k, col]` (one sector, broadcast), and their stores hit 32 rows of $C$. In rung 2 they hold 32 consecutive
# columns: `b[k, col]` and `c[row, col]` are 128 contiguous bytes (4 sectors) and `a[row, k]` is one broadcast.
#
# Both kernels also count, with an atomic add into `loads`, how often each element of $A$ is read from global
# memory (bookkeeping for this notebook only; tinydeeplab's kernels have none): every element $N$ times, since
# every thread reads its whole row of $A$.

# %%
@cuda.jit
def gemm_naive(a, b, c, loads):
    row, col = cuda.grid(2)                                # rung 1: x (the fastest index) walks the ROWS of C
    if row < c.shape[0] and col < c.shape[1]:
        acc = float32(0.0)
        for k in range(a.shape[1]):
            acc += a[row, k] * b[k, col]
            cuda.atomic.add(loads, (row, k), 1)            # bookkeeping: one global load of a[row, k]
        c[row, col] = acc


@cuda.jit
def gemm_coalesced(a, b, c, loads):
    col, row = cuda.grid(2)                                # rung 2: x walks the COLUMNS: a warp reads a row of B
    if row < c.shape[0] and col < c.shape[1]:
        acc = float32(0.0)
        for k in range(a.shape[1]):
            acc += a[row, k] * b[k, col]
            cuda.atomic.add(loads, (row, k), 1)
        c[row, col] = acc


def run_gemm(kernel, grid, block, a, b, *extra):
    """``c = a @ b`` with ``kernel[grid, block](a, b, c, loads, *extra)``; returns c and the per-element load
    counts of a (host arrays)."""
    d_a, d_b = cuda.to_device(a), cuda.to_device(b)
    d_c = cuda.to_device(np.full((a.shape[0], b.shape[1]), np.nan, np.float32))
    d_loads = cuda.to_device(np.zeros(a.shape, np.int32))
    kernel[grid, block](d_a, d_b, d_c, d_loads, *extra)
    return d_c.copy_to_host(), d_loads.copy_to_host()


M, KD, N = 32, 48, 32                                      # KD: the inner size K (K is taken below)
a = rng.standard_normal((M, KD)).astype(np.float32)
b = rng.standard_normal((KD, N)).astype(np.float32)
ref = a.astype(np.float64) @ b.astype(np.float64)
start = time.perf_counter()
c1, loads1 = run_gemm(gemm_naive, (math.ceil(M / 32), math.ceil(N / 4)), (32, 4), a, b)
c2, loads2 = run_gemm(gemm_coalesced, (math.ceil(N / 32), math.ceil(M / 4)), (32, 4), a, b)
print(f"rungs 1 and 2 ({M}x{KD} @ {KD}x{N}) in {time.perf_counter() - start:.1f} s; max |error| "
      f"{np.abs(c1 - ref).max():.1e}, {np.abs(c2 - ref).max():.1e}")
assert np.allclose(c1, ref, rtol=1e-5, atol=1e-4) and np.allclose(c2, ref, rtol=1e-5, atol=1e-4)
assert np.all(loads1 == N) and np.all(loads2 == N)         # every element of A read N times from global memory


def warp_sectors(rows, cols, shape, itemsize=4, sector=32):
    """Distinct 32-byte sectors touched when the threads of a warp access entries (rows[t], cols[t]) of a
    row-major array of ``shape``."""
    return len(set((np.asarray(rows) * shape[1] + np.asarray(cols)) * itemsize // sector))


SHAPE = 4096                                               # a large square product, as on a GPU
lane, zero = np.arange(32), np.zeros(32, int)              # the first warp: threadIdx.x = 0..31, threadIdx.y = 0
owners = {"rung 1 (x along rows)": (lane, zero),           # (row, col) of C per thread: row, col = cuda.grid(2)
          "rung 2 (x along columns)": (zero, lane)}        # col, row = cuda.grid(2)
sectors = {}
for name, (r, c) in owners.items():
    sectors[name] = [warp_sectors(r, zero, (SHAPE, SHAPE)),     # a[row, k] at k = 0
                     warp_sectors(zero, c, (SHAPE, SHAPE)),     # b[k, col]
                     warp_sectors(r, c, (SHAPE, SHAPE))]        # c[row, col]
    print(f"{name:26s} sectors per warp access: load a {sectors[name][0]:2d}, load b {sectors[name][1]:2d}, "
          f"store c {sectors[name][2]:2d}")
assert sectors["rung 1 (x along rows)"] == [32, 1, 32] and sectors["rung 2 (x along columns)"] == [1, 4, 4]

fig, ax = plt.subplots(figsize=(6, 2.8), layout="constrained")
for i, (name, s) in enumerate(sectors.items()):
    ax.bar(np.arange(3) + 0.4 * i, s, width=0.4, label=name)
ax.set(xticks=np.arange(3) + 0.2, xticklabels=["load a[row, k]", "load b[k, col]", "store c[row, col]"],
       ylabel="32-byte sectors per warp", title=f"memory sectors one warp touches ({SHAPE}x{SHAPE} float32)")
ax.legend()
plt.show()

# %% [markdown]
# Rung 2 moves $(1 + 4) \times 32 = 160$ bytes per warp and step of $k$ instead of $33 \times 32 = 1056$. But both
# still read every element of $A$ and $B$ from global memory $N$ (or $M$) times: per multiply-add (2 FLOP), two
# 4-byte loads, an *operand intensity* of 0.25 FLOP per byte. The cell below puts that against the H200's published
# peaks (NVIDIA's data sheet, not measured by anyone here: about 67 TFLOP/s in float32 and 4.8 TB/s of memory
# bandwidth): if every operand came from memory, the product could not run faster than bandwidth x intensity.
# Tiles (rung 3) raise the intensity to $T/4$, and the shipped 64x64 tile is the first past the *ridge point*
# (peak / bandwidth) where the arithmetic, not the memory, becomes the limit.

# %%
PEAK_TFLOPS, BANDWIDTH_TBS = 67.0, 4.8                     # NVIDIA H200 SXM data sheet (float32, HBM3e)
ridge = PEAK_TFLOPS / BANDWIDTH_TBS                         # FLOP per byte where memory stops being the limit
intensity = {"rungs 1-2": 2 / (2 * 4), "tiles T = 16": 16 / 4, "tile 64 (shipped)": 64 / 4}   # FLOP / byte
for name, flop_per_byte in intensity.items():
    cap = min(PEAK_TFLOPS, BANDWIDTH_TBS * flop_per_byte)
    print(f"{name:18s} {flop_per_byte:5.2f} FLOP/B -> at most {cap:5.1f} TFLOP/s "
          f"({'memory' if flop_per_byte < ridge else 'arithmetic'}-bound; ridge {ridge:.1f} FLOP/B)")
assert BANDWIDTH_TBS * intensity["rungs 1-2"] < PEAK_TFLOPS / 50       # under a fiftieth of the arithmetic
assert intensity["tiles T = 16"] < ridge < intensity["tile 64 (shipped)"]

# %% [markdown]
# ## 3. Rung 3: tiles in shared memory
#
# A block of $T \times T$ threads owns a $T \times T$ tile of $C$. It walks along $K$ in steps of $T$: at each step
# its threads copy a $T \times T$ tile of $A$ and one of $B$ from global into shared memory (each thread one entry
# of each: coalesced), **wait** for the whole block, multiply out of shared memory, and **wait again** before the
# next step overwrites the tiles:
#
# ```
# for k0 in range(0, K, T):
#     a_tile[ty, tx] = A[row, k0 + tx]     (0 outside A)        # one global load each
#     b_tile[ty, tx] = B[k0 + ty, col]     (0 outside B)
#     syncthreads()                                              # the tiles are complete
#     acc += sum_kk a_tile[ty, kk] * b_tile[kk, tx]              # 2T shared-memory loads, T multiply-adds
#     syncthreads()                                              # nobody reads them any more
# ```
#
# Each element of $A$ is now read from global memory once per *block column*, $\lceil N / T\rceil$ times instead
# of $N$: the traffic falls by the factor $T$, and the operand intensity rises to $T/4$ FLOP per byte (4 FLOP/B for
# $T = 16$). The padding with zeros handles any $M$, $K$, $N$: a zero in the tile adds nothing to the sum.
# tinydeeplab's GEMM (`tinydeeplab/kernels/cuda/gemm.py`) is built this way, with the refinements of the next two
# rungs.
#
# The walk of one block, drawn for $M = N = 48$, $K = 64$ and $T = 16$: block $(b_x, b_y) = (1, 2)$ reads the
# tiles of its band of rows of $A$ and its band of columns of $B$, one pair per step (the colour is the step), and
# owns one tile of $C$. Counted over all blocks, the global loads fall by exactly the factor $T$.

# %%
T_DEMO, M_DEMO, N_DEMO, K_DEMO, BX, BY = 16, 48, 48, 64, 1, 2
steps = K_DEMO // T_DEMO
walk_a = np.full((M_DEMO, K_DEMO), np.nan)
walk_b = np.full((K_DEMO, N_DEMO), np.nan)
owned = np.full((M_DEMO, N_DEMO), np.nan)
for step in range(steps):
    walk_a[BY * T_DEMO:(BY + 1) * T_DEMO, step * T_DEMO:(step + 1) * T_DEMO] = step
    walk_b[step * T_DEMO:(step + 1) * T_DEMO, BX * T_DEMO:(BX + 1) * T_DEMO] = step
owned[BY * T_DEMO:(BY + 1) * T_DEMO, BX * T_DEMO:(BX + 1) * T_DEMO] = 1
blocks = (M_DEMO // T_DEMO) * (N_DEMO // T_DEMO)
tiled_loads = blocks * steps * 2 * T_DEMO * T_DEMO              # every block loads two tiles per step
naive_loads = 2 * M_DEMO * N_DEMO * K_DEMO                      # every thread loads a row of A and a column of B
print(f"global loads: one thread per output {naive_loads}, {T_DEMO}x{T_DEMO} tiles {tiled_loads} "
      f"({naive_loads // tiled_loads}x fewer)")
assert naive_loads == T_DEMO * tiled_loads
assert np.count_nonzero(~np.isnan(walk_a)) == T_DEMO * K_DEMO   # the block reads its whole band of A, once

fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained")
for ax, data, title in ((axes[0], walk_a, "A: tiles read, by step"), (axes[1], walk_b, "B: tiles read, by step"),
                        (axes[2], owned, f"C: the tile of block ({BX}, {BY})")):
    ax.imshow(np.zeros_like(data), cmap="Greys", vmin=0, vmax=1)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=steps - 1)
    ax.set(title=title, xticks=range(0, data.shape[1] + 1, T_DEMO), yticks=range(0, data.shape[0] + 1, T_DEMO))
    ax.grid(color="w", lw=0.5)
fig.colorbar(im, ax=axes[:2], shrink=0.8, label="step k0 / T")
plt.show()

# %% [markdown]
# ### Exercise 1: the shared-memory tile GEMM
#
# Complete `make_tile_gemm(tile)`: it returns a `@cuda.jit` kernel `(a, b, c)` that writes `c = a @ b` (float32,
# any sizes). The checker launches it with grid `(ceil(N / tile), ceil(M / tile))` and block `(tile, tile)`;
# thread `(tx, ty)` of block `(bx, by)` owns `c[by * tile + ty, bx * tile + tx]`. Shared arrays need their shape
# at compile time: `cuda.shared.array((tile, tile), float32)` works because `tile` is a constant of the closure
# (tinydeeplab's `gemm.gemm_kernel` is such a factory too). The shape of the answer:
#
# ```python
# def make_tile_gemm(tile):
#     @cuda.jit
#     def tile_gemm(a, b, c):
#         a_tile = cuda.shared.array((tile, tile), float32)
#         ...                                   # your loop over the tiles along K, then the guarded store
#     return tile_gemm
# ```
#
# The checker runs one block and one step along K first, then several steps, then partial tiles on every side,
# and says which step broke: a missing `syncthreads` (either one), tile entries outside the matrices left
# unwritten, the last partial tile along K, an unguarded store, a transposed result.

# %%
def make_tile_gemm(tile):
    """A kernel ``(a, b, c)``: ``c = a @ b`` with ``tile x tile`` shared-memory tiles, one thread per entry of c."""
    # BEGIN SOLUTION
    @cuda.jit
    def tile_gemm(a, b, c):
        a_tile = cuda.shared.array((tile, tile), float32)      # a_tile[ty, kk] = a[row0 + ty, k0 + kk]
        b_tile = cuda.shared.array((tile, tile), float32)      # b_tile[kk, tx] = b[k0 + kk, col0 + tx]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        row = cuda.blockIdx.y * tile + ty
        col = cuda.blockIdx.x * tile + tx
        m, k_len = a.shape
        n = b.shape[1]
        acc = float32(0.0)
        for k0 in range(0, k_len, tile):
            a_tile[ty, tx] = a[row, k0 + tx] if row < m and k0 + tx < k_len else float32(0.0)
            b_tile[ty, tx] = b[k0 + ty, col] if k0 + ty < k_len and col < n else float32(0.0)
            cuda.syncthreads()                                  # both tiles complete
            for kk in range(tile):
                acc += a_tile[ty, kk] * b_tile[kk, tx]
            cuda.syncthreads()                                  # everyone done before the next tiles
        if row < m and col < n:
            c[row, col] = acc
    return tile_gemm
    # END SOLUTION


# %%
print(check("shared_tile_gemm", make_tile_gemm))

# %% [markdown]
# **Inline question 1.** Each of the two `cuda.syncthreads()` protects against a different race: which one, and
# why can the second be left out when $K \le T$? Why must every thread of the block reach both barriers, even the
# threads whose entry of $C$ lies outside the matrix (so the bounds test cannot simply `return` early)?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The first barrier stops a thread from *reading* the tiles before the other threads have *written*
# their entries (read-after-write): without it, a fast thread multiplies with stale or unwritten values. The second
# stops a fast thread from *overwriting* the tiles with the next step's values while slower threads still read the
# current ones (write-after-read). With $K \le T$ there is no next step, so nothing overwrites the tiles. A barrier
# waits for all threads of the block: a thread that returned early never arrives, which on a GPU is undefined
# behaviour (a hang or a wrong result), and besides, the threads outside $C$ still have to load their share of the
# tiles (zeros, or real entries of $A$ and $B$ that the threads inside need). So the bounds test guards the loads
# and the final store, never the barriers.
# <!-- END ANSWER -->

# %% [markdown]
# ## 4. Rung 4: several outputs per thread, in registers; tinydeeplab's own GEMM
#
# In rung 3 each multiply-add needs two shared-memory loads, and shared memory, fast as it is, becomes the limit.
# **Register tiling**: a block owns a larger $B_T \times B_T$ tile of $C$ with fewer threads, each accumulating an
# $R \times R$ micro-tile in registers (`cuda.local.array`). Per step $kk$ a thread loads $R$ values of the A tile
# and $R$ of the B tile and does $R^2$ multiply-adds: $2/R$ shared loads per multiply-add instead of 2. The tiles
# are now larger than the block, so each thread copies several entries (`for idx in range(tid, size, threads)`),
# and thread $(t_x, t_y)$ owns rows $t_y + i\,B_T/R$ and columns $t_x + j\,B_T/R$, so that neighbouring threads
# still store neighbouring columns. With $R = 1$ this is rung 3. The kernel also takes `k_chunk`, the length of K
# a block sums (all of it here; rung 5 splits it), and counts global loads of $A$ as before, and its shared loads
# and multiply-adds.
#
# tinydeeplab ships $B_T = 64$, $K$ steps of 16 and $R = 4$ (256 threads, 16 outputs each;
# `gemm.GPU_TILES`), plus one padding column in the shared tiles against bank conflicts and transposed operands
# read in place (`trans_a`, `trans_b`); under the simulator its default is a 16x16 tile (16 threads).

# %%
def make_register_gemm(bt, r):
    """Kernel ``(a, b, c3, loads, traffic, k_chunk)``: block ``(bx, by, z)`` adds ``a[rows, K_z] @ b[K_z, cols]`` into
    ``c3[z]`` (``K_z`` = the z-th chunk of ``k_chunk`` along K); a ``bt x bt`` tile per block, ``r x r`` per
    thread. Launch: grid ``(ceil(N / bt), ceil(M / bt), splits)``, block ``(bt // r, bt // r)``."""
    nt = bt // r                                               # threads along each side of the block

    @cuda.jit
    def register_gemm(a, b, c3, loads, traffic, k_chunk):
        a_tile = cuda.shared.array((bt, bt), float32)          # a_tile[m, kk]
        b_tile = cuda.shared.array((bt, bt), float32)          # b_tile[kk, n]
        acc = cuda.local.array((r, r), float32)                # this thread's r x r outputs, in registers
        a_reg = cuda.local.array(r, float32)
        b_reg = cuda.local.array(r, float32)
        m_rows, k_len = a.shape
        n_cols = b.shape[1]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * nt + tx
        row0, col0 = cuda.blockIdx.y * bt, cuda.blockIdx.x * bt
        k_lo = cuda.blockIdx.z * k_chunk
        k_hi = min(k_len, k_lo + k_chunk)
        n_shared = 0                                           # bookkeeping: shared loads, multiply-adds
        n_mac = 0
        for i in range(r):
            for j in range(r):
                acc[i, j] = 0.0
        for k0 in range(k_lo, k_hi, bt):
            for idx in range(tid, bt * bt, nt * nt):           # cooperative, coalesced copies of both tiles
                mm, kk = idx // bt, idx % bt
                if row0 + mm < m_rows and k0 + kk < k_hi:
                    a_tile[mm, kk] = a[row0 + mm, k0 + kk]
                    cuda.atomic.add(loads, (row0 + mm, k0 + kk), 1)   # bookkeeping, as in rungs 1-2
                else:
                    a_tile[mm, kk] = 0.0
                kk, nn = idx // bt, idx % bt
                if k0 + kk < k_hi and col0 + nn < n_cols:
                    b_tile[kk, nn] = b[k0 + kk, col0 + nn]
                else:
                    b_tile[kk, nn] = 0.0
            cuda.syncthreads()
            for kk in range(bt):
                for i in range(r):
                    a_reg[i] = a_tile[ty + i * nt, kk]         # r shared loads ...
                for j in range(r):
                    b_reg[j] = b_tile[kk, tx + j * nt]         # ... and r more ...
                n_shared += 2 * r
                for i in range(r):
                    for j in range(r):
                        acc[i, j] += a_reg[i] * b_reg[j]       # ... for r * r multiply-adds
                n_mac += r * r
            cuda.syncthreads()
        cuda.atomic.add(traffic, 0, n_shared)
        cuda.atomic.add(traffic, 1, n_mac)
        c = c3[cuda.blockIdx.z]
        for i in range(r):
            for j in range(r):
                if row0 + ty + i * nt < m_rows and col0 + tx + j * nt < n_cols:
                    c[row0 + ty + i * nt, col0 + tx + j * nt] = acc[i, j]

    return register_gemm


def run_register_gemm(a, b, bt, r, splits=1):
    """``(c3 (splits, M, N), loads of a, shared loads per multiply-add)`` from the register-tiled kernel, K cut
    into ``splits`` chunks."""
    m, k = a.shape
    k_chunk = math.ceil(math.ceil(k / splits) / bt) * bt       # a whole number of steps per chunk
    d_c3 = cuda.to_device(np.full((splits, m, b.shape[1]), np.nan, np.float32))
    d_loads = cuda.to_device(np.zeros(a.shape, np.int32))
    d_traffic = cuda.to_device(np.zeros(2, np.int64))
    grid3 = (math.ceil(b.shape[1] / bt), math.ceil(m / bt), splits)
    make_register_gemm(bt, r)[grid3, (bt // r, bt // r)](cuda.to_device(a), cuda.to_device(b), d_c3, d_loads,
                                                          d_traffic, k_chunk)
    shared_loads, macs = d_traffic.copy_to_host()
    return d_c3.copy_to_host(), d_loads.copy_to_host(), shared_loads / macs


start = time.perf_counter()
rung3, loads3, shared3 = run_register_gemm(a, b, bt=16, r=1)  # R = 1: rung 3, 256 threads per block
rung4, loads4, shared4 = run_register_gemm(a, b, bt=32, r=4)  # 8 x 8 = 64 threads, 16 outputs each
print(f"rungs 3 and 4 in {time.perf_counter() - start:.1f} s; max |error| {np.abs(rung3[0] - ref).max():.1e}, "
      f"{np.abs(rung4[0] - ref).max():.1e}; shared-memory loads per multiply-add {shared3:g} and {shared4:g}")
assert np.allclose(rung3[0], ref, rtol=1e-5, atol=1e-4) and np.allclose(rung4[0], ref, rtol=1e-5, atol=1e-4)
assert np.all(loads3 == math.ceil(N / 16)) and np.all(loads4 == math.ceil(N / 32))   # one load per block column
assert shared3 == 2 and shared4 == 2 / 4                       # 2 / R shared loads per multiply-add

# tinydeeplab's GEMM on the same matrices: its simulator and its GPU tiling, and a transposed operand
d_a, d_b = cuda.to_device(a), cuda.to_device(b)
for tiles in (gemm.TILES, gemm.GPU_TILES):
    ours = gemm.matmul(d_a, d_b, tiles=tiles).copy_to_host()
    assert np.allclose(ours, ref, rtol=1e-5, atol=1e-4), tiles
bt_host = np.ascontiguousarray(b.T)                            # (N, K): B stored transposed
ours_t = gemm.matmul(d_a, cuda.to_device(bt_host), trans_b=True).copy_to_host()
assert np.allclose(ours_t, ref, rtol=1e-5, atol=1e-4)

# and its convolution (im2col + this GEMM) against the NumPy reference op
xc = rng.standard_normal((1, 6, 7, 3)).astype(np.float32)
wc = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
bc = rng.standard_normal(5).astype(np.float32)
y_ref, _ = F.conv2d_forward(xc, wc, bc, stride=1, dilation=2)
y_gpu, _ = tdl_cuda.conv2d_forward(*(cuda.to_device(v) for v in (xc, wc, bc)), stride=1, dilation=2)
assert np.allclose(y_gpu.copy_to_host(), y_ref, rtol=1e-5, atol=1e-5)
print(f"tinydeeplab matmul (tiles {tuple(gemm.TILES)} and {tuple(gemm.GPU_TILES)}, trans_b) and conv2d (3x3, "
      f"dilation 2) agree with NumPy; conv max |error| {np.abs(y_gpu.copy_to_host() - y_ref).max():.1e}")

# %% [markdown]
# Global loads of each element of $A$ (measured above with the counters; the large shape is the same count,
# $\lceil N / B_T\rceil$ per element, at $N = 4096$), and what an H200 made of tinydeeplab's GEMM, against cuBLAS
# (`torch.matmul`, float32, TF32 off) on the model's shapes at batch 8. **These speeds were measured on an NVIDIA
# H200 by `benchmarks/bench_gemm.py`** and are read from the table in docs/performance.md; the cell checks that the
# table is consistent (the ratio column, and the same FLOP count behind both timings of a row).

# %%
def markdown_table(text, header_start):
    """Rows (lists of cell strings) of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("*") for cell in line.strip("|").split("|")])
    return rows


PERFORMANCE = Path("../docs/performance.md").read_text(encoding="utf-8")     # the H200 measurements
gemm_rows = markdown_table(PERFORMANCE, "| GEMM (batch 8) |")
shapes = [row[0].replace("`", "") for row in gemm_rows]
cublas_ms, cublas_tf, tdl_ms, tdl_tf = (np.array([float(row[i]) for row in gemm_rows]) for i in (1, 2, 3, 4))
ratio = np.array([float(row[5].rstrip("x")) for row in gemm_rows])
assert len(gemm_rows) >= 6 and np.allclose(ratio, tdl_ms / cublas_ms, atol=0.06)
assert np.allclose(cublas_tf * cublas_ms, tdl_tf * tdl_ms, rtol=0.03)      # the same work behind both columns
print(f"H200 (measured elsewhere): tinydeeplab's GEMM {tdl_tf.min():.1f}-{tdl_tf.max():.1f} TFLOP/s, cuBLAS "
      f"{cublas_tf.min():.1f}-{cublas_tf.max():.1f}; tinydeeplab takes {ratio.min():.1f}-{ratio.max():.1f}x as long")

fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), layout="constrained", gridspec_kw={"width_ratios": [1, 2]})
names = ["1-2: one thread\nper output", "3: 16x16 tiles", "4: 32x32 tile,\n4x4 per thread", "shipped:\n64x64, 4x4"]
here = [loads1.max(), loads3.max(), loads4.max(), math.ceil(N / 64)]
large = [4096, 4096 // 16, 4096 // 32, 4096 // 64]
axes[0].bar(np.arange(4) - 0.2, here, width=0.4, label=f"N = {N} (measured here, except the last)")
axes[0].bar(np.arange(4) + 0.2, large, width=0.4, label="N = 4096 (the same count)")
axes[0].set(yscale="log", xticks=range(4), ylabel="global loads per element of A", title="operand reuse")
axes[0].set_xticklabels(names, fontsize=7)
axes[0].legend(fontsize=7)
pos = np.arange(len(shapes))
axes[1].barh(pos - 0.2, cublas_tf, height=0.4, label="cuBLAS (torch.matmul, fp32)")
axes[1].barh(pos + 0.2, tdl_tf, height=0.4, label="tinydeeplab gemm.py (64x64x16, 4x4)")
axes[1].set(yticks=pos, xlabel="TFLOP/s", title="measured on an NVIDIA H200 (docs/performance.md), not here")
axes[1].set_yticklabels(shapes, fontsize=7)
axes[1].invert_yaxis()
axes[1].legend(fontsize=7)
plt.show()

# %% [markdown]
# The remaining factor of 3-5 to cuBLAS is listed in docs/performance.md: scalar (not vectorised) shared-memory
# loads, no double buffering of the tiles, no asynchronous copies and no tensor-core instructions, all of which
# cuBLAS uses.

# %% [markdown]
# ## 5. Rung 5: split-K for the weight gradient
#
# The convolution's weight gradient is $dW = \text{col}^\top\, dy$: $(T C, P) \cdot (P, F)$ with $P = N H W$, every
# pixel of the batch. Its result is small and its inner dimension huge. For stack0's 3x3 convolution of the
# ResNet50 at batch 8 and 512x512 crops: $M = 9 \cdot 64 = 576$, $N = F = 64$, $K = 8 \cdot 128 \cdot 128 =
# 131072$. With 64x64 tiles that is $9 \times 1 = 9$ blocks for 132 SMs, each block walking 8192 steps along $K$
# alone: the GPU is 93 % idle.
#
# **Split-K** cuts $K$ into $S$ chunks, runs one block per (tile, chunk) (the grid's third dimension: `blockIdx.z`
# above), each writing its partial product into its own slice of an $(S, M, N)$ buffer, and a second, tiny kernel
# adds the $S$ slices:
#
# $$C = \sum_{z=0}^{S-1} A_{:, K_z} B_{K_z, :}.$$
#
# Blocks cannot wait for each other within a launch, hence the second launch; atomic adds into $C$ would do it in
# one, but in an order that changes from run to run, and tinydeeplab wants the same bits every run, so it adds the
# slices in a fixed order. It picks $S$ so that the launch has about two blocks per SM.

# %%
@cuda.jit
def sum_splits(c3, c):
    """``c[m, n] = sum_z c3[z, m, n]`` in a fixed order (grid-stride over the entries of c)."""
    n_cols = c.shape[1]
    for idx in range(cuda.grid(1), c.size, cuda.gridsize(1)):
        m, n = idx // n_cols, idx % n_cols
        acc = float32(0.0)
        for z in range(c3.shape[0]):
            acc += c3[z, m, n]
        c[m, n] = acc


P, TC, FO = 256, 18, 8                                         # pixels, taps x channels, filters: a tiny dW
col = rng.standard_normal((P, TC)).astype(np.float32)
dy = rng.standard_normal((P, FO)).astype(np.float32)
dw_ref = col.T.astype(np.float64) @ dy
S = 4
partial, _, _ = run_register_gemm(np.ascontiguousarray(col.T), dy, bt=16, r=4, splits=S)   # (S, TC, FO)
chunk = P // S
for z in range(S):                                             # each slice is the product over its chunk of K
    assert np.allclose(partial[z], col[z * chunk:(z + 1) * chunk].T @ dy[z * chunk:(z + 1) * chunk], atol=1e-4)
d_dw = cuda.device_array((TC, FO), np.float32)
sum_splits[1, 64](cuda.to_device(partial), d_dw)
assert np.allclose(d_dw.copy_to_host(), dw_ref, rtol=1e-5, atol=1e-4)
ours_dw = gemm.matmul(cuda.to_device(col), cuda.to_device(dy), trans_a=True, split_k=S).copy_to_host()
assert np.allclose(ours_dw, dw_ref, rtol=1e-5, atol=1e-4)      # tinydeeplab: col read transposed, in place
print(f"split-K dW ({TC}x{P} @ {P}x{FO}, S = {S}): ours and tinydeeplab's agree with NumPy "
      f"(max |error| {np.abs(d_dw.copy_to_host() - dw_ref).max():.1e}, {np.abs(ours_dw - dw_ref).max():.1e})")

# What tinydeeplab's rule picks for the H200 shape (132 SMs: 264 blocks wanted), and the same rule by hand
SMS, (M_dw, N_dw, K_dw) = 132, (9 * 64, 64, 8 * 128 * 128)
tiles_out = math.ceil(M_dw / 64) * math.ceil(N_dw / 64)
with mock.patch.object(gemm, "target_blocks", lambda: 2 * SMS):
    s_h200 = gemm.choose_split_k(M_dw, N_dw, K_dw, gemm.GPU_TILES)
assert s_h200 == math.ceil(2 * SMS / tiles_out) == 30
measured = re.search(r"stack0's 3x3 `dW` (\d+) → ([\d.]+) ms", PERFORMANCE)
before_ms, after_ms = float(measured.group(1)), float(measured.group(2))
print(f"H200 stack0 3x3 dW: {tiles_out} output tiles -> split-K S = {s_h200}, {tiles_out * s_h200} blocks for "
      f"{SMS} SMs; measured on the H200 (docs/performance.md): {before_ms:g} ms -> {after_ms:g} ms")

fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), layout="constrained")
axes[0].bar(["no split", f"S = {s_h200}"], [tiles_out, tiles_out * s_h200], color=["C3", "C2"])
axes[0].axhline(SMS, color="k", lw=1, ls="--", label=f"{SMS} SMs")
axes[0].set(ylabel="blocks in the launch", title="stack0 3x3 dW on an H200: blocks vs SMs")
axes[0].legend()
bars = axes[1].bar(["before split-K", "with split-K"], [before_ms, after_ms], color=["C3", "C2"])
axes[1].bar_label(bars, fmt="%g ms")
axes[1].set(ylabel="ms", title="that dW, measured on an H200 (docs/performance.md)")
plt.show()

# %% [markdown]
# ## 6. Reductions: the batch-norm sums with shared memory
#
# Batch norm in training needs, per channel $c$, $\sum_m x_{mc}$ and $\sum_m x_{mc}^2$ over the $M = N H W$ pixels
# (notebook 02; SyncBN adds these sums over the ranks, notebook 14). A GPU sums with a **tree** in shared memory:
# the $T$ threads of a block each add up a strided share of the rows in a register (rows $t, t + T, t + 2T,
# \dots$: any $M$, the last block of rows partial), store that partial in shared memory, and then halve: at step
# $s = T/2, T/4, \dots, 1$ thread $t < s$ adds slot $t + s$ into slot $t$, with a barrier after each step. After
# $\log_2 T$ steps slot 0 holds the block's total, and thread 0 writes it out. No atomics, so the order of the
# additions, and the result, is the same every run. The sums are accumulated in float64: batch norm subtracts
# $\text{mean}^2$ from $\text{mean of } x^2$, and float32 sums over a million pixels would lose the digits that
# difference needs (the figure below).
#
# ### Exercise 2: a block reduction with shared memory
#
# Complete `make_channel_sums(threads)`: it returns a `@cuda.jit` kernel `(x, sums)` with `x` $(M, C)$ float32 and
# `sums` $(2, C)$ float64, writing `sums[0, c]` $= \sum_m x_{mc}$ and `sums[1, c]` $= \sum_m x_{mc}^2$. It is launched
# with one block per channel, grid `(C,)`, and `threads` threads per block (a power of two); $M$ may be smaller than
# `threads`, or not a multiple of it. It is a factory like `make_tile_gemm` (the shared arrays have `threads`
# entries). Accumulate in float64 (`float64(x[m, c])`). The checker names the classic
# mistakes: the last partial block of rows missed, one row per thread only, threads with no rows that store nothing,
# a tree that stops one level early, $(\sum x)^2$, float32 sums.

# %%
def make_channel_sums(threads):
    """A kernel ``(x, sums)``: per channel (one block each) ``sums[:, c] = [sum_m x[m, c], sum_m x[m, c]^2]``."""
    # BEGIN SOLUTION
    @cuda.jit
    def channel_sums(x, sums):
        s_part = cuda.shared.array(threads, float64)
        q_part = cuda.shared.array(threads, float64)
        c = cuda.blockIdx.x
        t = cuda.threadIdx.x
        s = float64(0.0)
        q = float64(0.0)
        for m in range(t, x.shape[0], threads):                 # this thread's rows: t, t + threads, ...
            v = float64(x[m, c])
            s += v
            q += v * v
        s_part[t] = s                                           # 0 for a thread without rows
        q_part[t] = q
        cuda.syncthreads()
        step = threads // 2
        while step > 0:                                         # the tree: threads / 2, ..., 2, 1
            if t < step:
                s_part[t] += s_part[t + step]
                q_part[t] += q_part[t + step]
            cuda.syncthreads()
            step //= 2
        if t == 0:
            sums[0, c] = s_part[0]
            sums[1, c] = q_part[0]
    return channel_sums
    # END SOLUTION


# %%
print(check("block_channel_sums", make_channel_sums))

# %% [markdown]
# **Inline question 2.** In your kernel the 32 threads of a warp read `x[m, c]` for 32 different rows $m$ of one
# channel. How many 32-byte sectors does that warp access touch for $C = 256$ channels, and how does tinydeeplab's
# `column_sums` (`tinydeeplab/kernels/cuda/reduce.py`) lay out its threads instead? Why does it then need a second
# kernel?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The rows are $4C = 1024$ bytes apart, so the 32 loads touch 32 sectors, and 7/8 of every sector fetched
# is wasted (the other channels of those pixels), the uncoalesced pattern of rung 1. `column_sums` puts the x threads
# of a block along the *channels* (`COL_X` = 32 on a GPU: one warp reads 32 consecutive channels of one row, 128
# contiguous bytes, 4 sectors) and its y threads along the rows; the tree then runs over y in shared memory. And it
# splits the rows over many blocks (up to 512) so that the whole GPU works even when $C$ is small: each block writes
# a partial sum per channel, and since blocks cannot wait for each other inside a launch, a second tiny kernel adds
# the partials, in a fixed order, as split-K does.
# <!-- END ANSWER -->

# %% [markdown]
# tinydeeplab's reduction gives batch norm's statistics: the mean from `column_sums(x)`, the variance from the
# centred squares (a second pass, `MODE_CENTRED_SQUARES`), both equal to the reference op's batch statistics. The
# figure shows why the sums are float64: the relative error of a float32 running sum of $x^2$ ($x$ of mean 3)
# grows with the number of pixels, while the float64 one stays at round-off.

# %%
xb = (3 + rng.standard_normal((2, 5, 7, 6))).astype(np.float32)            # (N, H, W, C)
x2 = xb.reshape(-1, 6)                                                      # (M, C)
d_x2 = cuda.to_device(x2)
mean = tdl_reduce.column_sums(d_x2, divide_by=x2.shape[0])
var = tdl_reduce.column_sums(d_x2, mode=tdl_reduce.MODE_CENTRED_SQUARES, mean=mean, divide_by=x2.shape[0])
_, bn_cache = F.batchnorm_forward(xb, np.ones(6, np.float32), np.zeros(6, np.float32), np.zeros(6, np.float32),
                                  np.ones(6, np.float32), training=True)
assert np.allclose(mean.copy_to_host(), bn_cache["mean"], rtol=1e-6) and np.allclose(var.copy_to_host(),
                                                                                     bn_cache["var"], rtol=1e-5)
print("tinydeeplab column_sums -> batch mean and variance equal batchnorm_forward's:",
      np.round(mean.copy_to_host(), 4), np.round(var.copy_to_host(), 4))

sizes = np.logspace(2, 6, 9).astype(int)
big = 3 + rng.standard_normal(sizes[-1])
exact = np.cumsum(big.astype(np.float64) ** 2)                               # float64 running sum
run32 = np.cumsum((big ** 2).astype(np.float32), dtype=np.float32)           # float32 running sum, one by one
err32 = np.abs(run32[sizes - 1] - exact[sizes - 1]) / exact[sizes - 1]
err64 = np.abs(np.cumsum((big ** 2).astype(np.float64))[sizes - 1] - np.array([math.fsum(big[:s] ** 2)
                                                                                 for s in sizes])) / exact[sizes - 1]
print(f"relative error of sum x^2 over 10^6 pixels: float32 {err32[-1]:.1e}, float64 {err64[-1]:.1e}")
assert err32[-1] > 1e-5 and err32[-1] > 10 * err32[0] and np.all(err64 < 1e-12)

fig, ax = plt.subplots(figsize=(5.5, 3), layout="constrained")
ax.loglog(sizes, err32, "o-", label="float32 running sum")
ax.loglog(sizes, np.maximum(err64, 1e-17), "s-", label="float64 running sum")
ax.set(xlabel="pixels M", ylabel="relative error of sum x^2", title="why batch norm sums in float64")
ax.legend()
plt.show()

# %% [markdown]
# ## 7. Why launch counts matter
#
# Every kernel launch costs time on the *host* before the GPU sees it: Numba checks and packs the arguments in
# Python, then the driver queues the launch. At the ResNet's deeper stages an elementwise kernel (a ReLU, a batch
# norm's normalisation) has little work, so the host's few microseconds per launch, not the GPU, can set the pace,
# and a step's time has a floor of (launches x host cost per launch). Fusing kernels is the remedy:
# tinydeeplab's batch norm forms its per-channel coefficients once and then makes one pass over the activations.
#
# The cell below counts the launches of a small DeepLabV3+ (a two-stack ResNet with 4-channel layers) with the
# project's `count_launches` (`tinydeeplab/kernels/cuda/launches.py`), which wraps the launch method of Numba's
# kernel class, on the simulator or on your GPU. The count depends on the layers, not
# on the image size (checked at 8x8 and 16x16: the same total; at 8x8 two dilated 3x3 convolutions have a single
# live tap, notebook 03, and run as a 1x1 GEMM, so a copy of that tap's weights replaces their im2col, one launch
# either way), and it follows the layer list: one GEMM per convolution, 2 launches per inference-mode batch norm
# (coefficients, normalise), 6 in training (two column sums of two kernels each, then the same 2) plus 2
# moving-average updates.

# %%
from tinydeeplab.kernels.cuda.launches import count_launches   # noqa: E402  (the counter of benchmarks/bench_gpu.py)
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone   # noqa: E402

encoder = ResNetBackbone([4], [3], [4, 4], [1, 2], [1, 2], block_type="bottleneck_block", seed=0)
model = DeepLabV3ImageSegmenter(DeepLabV3Backbone(encoder, "P3", 2, [1, 2], low_level_feature_key="P2",
                                                  projection_filters=2, num_channels=4, seed=1), 3, seed=2)
layer_types = Counter(type(mod).__name__ for _, mod in model.modules())
start = time.perf_counter()
with backend.use_backend("cuda"):
    model.to("cuda")
    launches = {}
    for size, training in ((8, False), (16, False), (16, True)):
        image = tdl_cuda.to_device(rng.standard_normal((1, size, size, 3)).astype(np.float32))
        with count_launches() as counts:
            model.forward(image, training=training)
        launches[(size, training)] = counts
    model.to("numpy")
print(f"three forward passes in {time.perf_counter() - start:.1f} s; layers: "
      f"{ {k: layer_types[k] for k in ('Conv2D', 'BatchNorm', 'ReLU', 'Add', 'Resize')} }")
infer, train = launches[(16, False)], launches[(16, True)]
for key, counts in launches.items():
    print(f"{key[0]:2d}x{key[0]} {'training ' if key[1] else 'inference'}: {sum(counts.values()):3d} launches")
small = launches[(8, False)]
assert sum(small.values()) == sum(infer.values())          # the image size does not change the launch count
assert small - infer == Counter({"_tap_copy": 2}) and infer - small == Counter({"_im2col": 2})   # live taps, 8x8
bn_layers = layer_types["BatchNorm"]
assert infer["gemm"] == train["gemm"] == layer_types["Conv2D"]                 # one GEMM per convolution
assert infer["_coefficients"] == infer["_normalize"] == bn_layers              # 2 per batch norm (inference)
assert train["_column_partials"] == train["_sum_partials"] == 2 * bn_layers    # + 4 for the batch statistics
assert train["_moving_average"] == 2 * bn_layers                               # + 2 moving-statistics updates

# %% [markdown]
# And on the real thing. The per-launch host cost of *this* machine is measured below with an empty kernel (on
# the simulator that is the simulator's cost, milliseconds, not a GPU's). The H200 figures come from
# docs/performance.md: the ResNet50 DeepLabV3+ at batch 8 launches about 1,800 kernels per training step, and the
# table of how its step time got from 1.29 s to 0.317 s names the changes: split-K, the caching allocator, and
# batch norm fused from 12 to 6 launches forward and from 8 to 6 backward.

# %%
@cuda.jit
def empty_kernel(x):
    pass


probe = cuda.to_device(np.zeros(1, np.float32))
empty_kernel[1, 1](probe)                                  # compile first
cuda.synchronize()
start = time.perf_counter()
for _ in range(50):
    empty_kernel[1, 1](probe)
cuda.synchronize()
per_launch = (time.perf_counter() - start) / 50
step_launches = int(re.search(r"launches about ([\d,]+) kernels", PERFORMANCE).group(1).replace(",", ""))
states = markdown_table(PERFORMANCE, "| state of the CUDA backend |")
train8 = [float(re.match(r"[\d.]+", row[1]).group()) for row in states]
labels = [textwrap.fill(re.split(r"[:(,`]", row[0])[0].strip(), 30) for row in states]
assert step_launches > 1000 and train8[-1] < train8[0] and len(states) >= 4
assert "forward 12 → 6 launches, backward 8 → 6" in PERFORMANCE                 # the batch-norm fusion
print(f"host time per launch here ({'simulator' if SIMULATED else 'GPU'}): {per_launch * 1e6:.0f} us; "
      f"{step_launches} launches would take {step_launches * per_launch:.2f} s of host time at that rate")
print(f"H200 (measured elsewhere): train8 {' -> '.join(f'{t:g}' for t in train8)} s")

fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), layout="constrained")
kinds = sorted(set(train) | set(infer), key=lambda k: -train[k])
axes[0].barh(np.arange(len(kinds)) - 0.2, [infer[k] for k in kinds], height=0.4, label="inference forward")
axes[0].barh(np.arange(len(kinds)) + 0.2, [train[k] for k in kinds], height=0.4, label="training forward")
axes[0].set(yticks=range(len(kinds)), xlabel="launches (counted here)", title="launches per kernel, small DeepLabV3+")
axes[0].set_yticklabels(kinds, fontsize=7)
axes[0].invert_yaxis()
axes[0].legend(fontsize=7)
axes[1].barh(range(len(train8)), train8, color="C2")
axes[1].set(yticks=range(len(train8)), xlabel="train8 step, s (ResNet50 DeepLabV3+, batch 8, 512x512)",
            title="measured on an NVIDIA H200 (docs/performance.md), not here")
axes[1].set_yticklabels(labels, fontsize=7)
axes[1].invert_yaxis()
plt.show()

# %% [markdown]
# **What is left** (docs/performance.md, "What limits it"): the GEMM at 7-11 TFLOP/s against cuBLAS's 25-43 (the
# rungs this notebook stops before: vectorised loads, double buffering, tensor cores), the ~1,800 launches and their
# host cost (capturing the step in a CUDA graph would replay them without Python), and the memory-bound passes that
# PyTorch fuses into its convolutions. Each of them is measurable with the benchmarks on a GPU:
# `python benchmarks/bench_gemm.py`, `python benchmarks/bench_gpu.py --profile`.
