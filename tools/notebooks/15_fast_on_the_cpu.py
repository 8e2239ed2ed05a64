# %% [markdown]
# # 15. Fast on the CPU: what Numba compiles, convolution as a matrix product, exact savings, the roofline
#
# **The question.** tinydeeplab's CPU backend (`tinydeeplab.kernels.cpu`) trains the ResNet-50 DeepLabV3+ faster
# than KerasHub on TensorFlow (0.67x its step time on 2 cores, [docs/performance.md](../docs/performance.md)),
# with every op written in NumPy and Numba. What does Numba actually compile, how is a convolution turned into one
# big matrix product without running out of memory, which work is skipped without changing a single result, and
# how do you tell an op that waits for memory from an op that waits for arithmetic?
#
# **Why it matters.** "Make it faster" is only a plan once you know the limit an op runs into. A matrix product
# (GEMM) does $2MNK$ flops on $MK + KN + MN$ numbers and can keep the arithmetic units busy; a batch-norm or ReLU
# pass does one or two flops per number it reads and waits for memory, so vectorising it harder changes nothing,
# but reading the data fewer times does. You measure both limits on *your* machine below (its GEMM rate and its
# memory bandwidth), draw its roofline ([Williams, Waterman and Patterson 2009](https://doi.org/10.1145/1498765.1498785)),
# and place the project's own kernels on it. Every rung is checked against the reference op
# (`tinydeeplab.functional`, the NumPy spec); timings are printed, never asserted, since they depend on the
# machine and on whatever else runs on it. Each is the best of a few runs; on a machine shared with other jobs a
# multi-threaded BLAS waits for its preempted threads and a millisecond GEMM can take twenty, so for steady
# figures run with `OPENBLAS_NUM_THREADS=1` (the committed outputs were made that way, with one Numba thread, on a
# 2-core machine shared with other jobs: the first cell prints the settings and the load).
#
# Builds on notebooks 01 (convolution as im2col), 02 (batch norm) and 03 (atrous taps). You write a fused
# batch-norm + ReLU kernel and the live-tap plan of an atrous convolution (graded by `tinydeeplab.exercises.check`)
# and answer two inline questions. Sizes are small: the whole notebook runs in about a minute on 2 cores, most
# of it compiling the kernels once (later runs load them from Numba's cache).

# %%
import inspect
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
import numba
from numba import njit, prange

import tinydeeplab
from tinydeeplab import backend
from tinydeeplab import functional as F
from tinydeeplab.exercises import check
from tinydeeplab.functional.conv import conv2d_plan
from tinydeeplab.kernels import cpu
from tinydeeplab.kernels.cpu import batchnorm as cpu_bn
from tinydeeplab.kernels.cpu import conv as cpu_conv
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
from tinydeeplab.nn import inference_mode
from tinydeeplab.nn.layers import BatchNorm, Conv2D
from tinydeeplab.train import SGD

tinydeeplab.set_backend("cpu")            # the Numba kernels (layers call backend.ops().<op>)
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)
T_START = time.perf_counter()


def best_time(fn, repeats=5):
    """The best of ``repeats`` wall-clock times of ``fn()`` in seconds (the run least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


print(f"numba {numba.__version__}, {numba.get_num_threads()} Numba threads, numpy {np.__version__}, "
      f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
      f"load average {os.getloadavg()[0]:.1f}")

# %% [markdown]
# ## What Numba compiles
#
# `@njit` ("no-Python JIT") turns a Python function into machine code through LLVM the first time it is
# called. It does not compile *the function*: it compiles one **specialisation** per combination of argument
# types, which it reads off the arguments (`numba.typeof`): dtype, number of dimensions and layout (`C` for
# contiguous, `A` for any strides). Inside, only what Numba can type is allowed: loops over NumPy arrays and
# scalars, most of NumPy's functions, no Python objects. In exchange an explicit loop runs at the speed of C.
#
# The cell below writes ReLU three ways: a Python loop, NumPy (`np.maximum`, itself a compiled loop), and the same
# Python loop under `@njit`. It times the first call of the Numba version (compiling) apart from the later ones.

# %%
def relu_python(x, y):
    """y = max(x, 0), one element at a time (x, y: 1-D)."""
    for i in range(x.shape[0]):
        y[i] = x[i] if x[i] > 0 else 0.0


relu_numba = njit(relu_python)                     # the same source, compiled on first call


@njit(parallel=True)
def relu_parallel(x, y):
    """The same loop; prange splits its iterations over Numba's threads."""
    for i in prange(x.shape[0]):
        y[i] = x[i] if x[i] > 0 else 0.0


x = rng.standard_normal(200_000).astype(np.float32)
reference = np.maximum(x, 0)
times = {}
for name, fn in (("Python loop", relu_python), ("Numba, first call", relu_numba), ("Numba", relu_numba),
                 ("Numba parallel, first call", relu_parallel), ("Numba parallel", relu_parallel)):
    y = np.empty_like(x)
    repeats = 1 if "first" in name or name == "Python loop" else 5
    times[name] = best_time(lambda: fn(x, y), repeats)
    assert np.array_equal(y, reference), name
times["NumPy np.maximum"] = best_time(lambda: np.maximum(x, 0, out=y))
for name, t in times.items():
    print(f"{name:28s} {t * 1e3:9.3f} ms")

print("specialisations so far:", relu_numba.signatures)
relu_numba(x.astype(np.float64), np.empty(x.size))   # float64 arguments: a second specialisation is compiled
print("after a float64 call:  ", relu_numba.signatures)
assert len(relu_numba.signatures) == 2
print("numba.typeof:", numba.typeof(x), "|", numba.typeof(np.ones((4, 6))[:, ::2]))

# %% [markdown]
# **Types fixed in advance.** A signature string compiles eagerly, at the decorator, and then accepts only those
# types: here `float32[::1]` is a contiguous 1-D float32 array. A float64 array is refused (no silent recompile,
# no silent conversion), which is how a library makes sure its hot loop never runs in a dtype it was not tuned for.

# %%
@njit("void(float32[::1], float32[::1])")
def relu_f32(x, y):
    for i in range(x.shape[0]):
        y[i] = x[i] if x[i] > 0 else 0.0


print("compiled at definition:", relu_f32.signatures)
try:
    relu_f32(x.astype(np.float64), np.empty(x.size))
    raise AssertionError("a float64 call should have been refused")
except TypeError as err:
    print("TypeError:", str(err).splitlines()[0])

# %% [markdown]
# **`parallel=True` and `prange`.** `prange` says the iterations are independent, and Numba splits them over its
# threads (`numba.get_num_threads()`, set by `NUMBA_NUM_THREADS`). Independent means no two iterations write the
# same element. A sum is the classic trap: `total[0] += x[i]` in a `prange` is a data race. Numba does recognise a
# *scalar* reduction (`s += x[i]` with `s` a local), but it combines the threads' partial sums in an order that
# depends on the number of threads, so the last bits of a float sum change with the machine.
#
# The project's batch norm (`tinydeeplab/kernels/cpu/batchnorm.py`) avoids both: the rows are cut into a **fixed**
# number of chunks (`N_CHUNKS = 64`), each chunk writes its own row of a partial-sum table, and the table is added
# up serially. The result is then the same bit for bit with any number of threads. The cell checks it on the
# project's own `channel_mean_var` kernel, with 1 thread against all of this process's threads.

# %%
x2 = rng.normal(3.0, 2.0, (4096, 16)).astype(np.float32)      # (M, C): M pixels, C channels
threads = numba.get_num_threads()
numba.set_num_threads(1)
mean_1, var_1 = cpu_bn.channel_mean_var(x2)
numba.set_num_threads(threads)
mean_n, var_n = cpu_bn.channel_mean_var(x2)
assert np.array_equal(mean_1, mean_n) and np.array_equal(var_1, var_n)      # bit for bit, any thread count
assert np.allclose(mean_n, x2.astype(np.float64).mean(0), rtol=1e-12) and np.allclose(
    var_n, x2.astype(np.float64).var(0), rtol=1e-10)
print(f"channel_mean_var: identical with 1 and {threads} threads; equal to NumPy's float64 mean and variance")
print("chunks:", cpu_bn.N_CHUNKS, "| float64 partial sums of float32 data:", mean_n.dtype)

# %% [markdown]
# **Caching.** Compiling costs seconds per kernel (the kernels of one training step took about 20 s on the 2-core
# development machine). With
# `@njit(cache=True)`, which every kernel of the project uses, Numba writes the machine code next to the source,
# in `__pycache__/` (an index `.nbi` and the code `.nbc`), and a later *process* loads it instead of compiling,
# as long as the source file and the argument types are unchanged. The cell writes a tiny module, imports it in
# two fresh processes, and reads the dispatcher's statistics: a cache miss (compile) in the first, a hit in the
# second.

# %%
module_dir = Path(tempfile.mkdtemp(prefix="numba-cache-demo-"))
(module_dir / "tiny_kernel.py").write_text(textwrap.dedent("""
    from numba import njit

    @njit(cache=True)
    def total(x):
        s = 0.0
        for v in x:
            s += v
        return s
"""))
probe = textwrap.dedent("""
    import time, numpy as np
    t0 = time.perf_counter()
    from tiny_kernel import total
    value = total(np.arange(10.0))
    print(value, sum(total.stats.cache_hits.values()), sum(total.stats.cache_misses.values()),
          time.perf_counter() - t0)
""")
env = {**os.environ, "PYTHONPATH": str(module_dir)}
env.pop("NUMBA_CACHE_DIR", None)                                    # the default: __pycache__ beside the source
runs = []
for _ in range(2):
    out = subprocess.run([sys.executable, "-c", probe], cwd=module_dir, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    value, hits, misses, seconds = out.stdout.split()
    runs.append((float(value), int(hits), int(misses), float(seconds)))
    print(f"process {len(runs)}: total = {value}, cache hits {hits}, misses {misses}, import + call {float(seconds):.2f} s")
assert runs[0][:3] == (45.0, 0, 1) and runs[1][:3] == (45.0, 1, 0)
print("written:", sorted(p.name for p in (module_dir / "__pycache__").iterdir() if p.suffix in (".nbi", ".nbc")))
kernel_cache = Path(os.environ.get("NUMBA_CACHE_DIR") or Path(cpu.__file__).parent / "__pycache__")
print(f"the project's kernels: {len(list(kernel_cache.rglob('*.nbi')))} cached index files under {kernel_cache}")

# %% [markdown]
# **Debugging: `NUMBA_DISABLE_JIT=1`.** Compiled code checks no array bounds (reading one past the end returns
# whatever lies in memory) and gives no Python traceback into the loop. With `NUMBA_DISABLE_JIT=1` set before
# Numba is imported, `@njit` returns the plain Python function: `print`, `pdb` and IndexError work again, at Python
# speed, and the traceback shows the line. (`NUMBA_BOUNDSCHECK=1` keeps the compiled code and adds bounds checks: an
# IndexError, without the line.) The cell runs an off-by-one kernel in a fresh process both ways.

# %%
buggy = textwrap.dedent("""
    import numpy as np
    from numba import njit

    @njit
    def forward_difference(x, y):
        for i in range(x.shape[0]):
            y[i] = x[i + 1] - x[i]          # off by one at the last i
    print(type(forward_difference).__name__)
    forward_difference(np.arange(5.0), np.empty(5))
""")
(module_dir / "buggy.py").write_text(buggy)
for flag, kind in (("NUMBA_DISABLE_JIT", "function"), ("NUMBA_BOUNDSCHECK", "CPUDispatcher")):
    out = subprocess.run([sys.executable, str(module_dir / "buggy.py")], env={**os.environ, flag: "1"}, capture_output=True,
                         text=True, timeout=120)
    last = out.stderr.strip().splitlines()[-1]
    print(f"{flag}=1: the decorated object is a {out.stdout.strip()!r}; error: {last}")
    assert out.returncode != 0 and "IndexError" in last and out.stdout.strip() == kind
    if flag == "NUMBA_DISABLE_JIT":
        assert "y[i] = x[i + 1] - x[i]" in out.stderr                  # the traceback shows the line

# %%
fig, ax = plt.subplots(figsize=(7, 2.8), layout="constrained")
names = list(times)
ax.barh(names, [times[n] * 1e3 for n in names], color=["C3" if "first" in n else "C0" for n in names])
ax.set(xscale="log", xlabel="ms (log scale), best of 5; red: includes compiling",
       title=f"ReLU of {x.size:,} float32 numbers, {threads} thread(s)")
ax.invert_yaxis()
plt.show()

# %% [markdown]
# Read the timings above: the compiled loop runs in the same league as NumPy's own compiled loop, the Python loop
# far behind, and the first call pays for the compiler. For an op this simple NumPy already does the job: Numba
# earns its place where NumPy would need several passes or temporary arrays (im2col, the batch-norm sums, a fused
# kernel), or a gather that NumPy cannot express without a huge index array (`col2im`, the resize adjoint).

# %% [markdown]
# ## Convolution as im2col + one GEMM, in bounded memory
#
# Notebook 01 wrote a convolution as one matrix product. For output pixel $p = (n, o_h, o_w)$ and the live taps
# $(i, j)$ of the kernel, the row $p$ of the matrix `col` holds every input number that pixel reads:
#
# $$\mathrm{col}[p, (i, j, c)] = x_{\mathrm{pad}}[n,\ o_h s_h + i d_h,\ o_w s_w + j d_w,\ c], \qquad
#   y = \mathrm{col}\ @\ w.\mathrm{reshape}(K_h K_w C, F)$$
#
# The copy is memory-bound and cheap (a `prange` over output rows: `im2col_rows` in
# `tinydeeplab/kernels/cpu/conv.py`); the product runs at BLAS speed. The cell drives the project's kernel by hand
# on a tiny input and compares with the reference op.

# %%
xs = np.arange(6 * 6, dtype=np.float32).reshape(1, 6, 6, 1) + 1      # (1, 6, 6, 1): pixel values 1 .. 36
ws = rng.standard_normal((3, 3, 1, 4)).astype(np.float32)
plan = conv2d_plan(xs.shape, ws.shape, (1, 1), (1, 1), "same")
tap_h = np.array(plan.live_h, np.int64) * 1                          # tap offsets i * dilation
tap_w = np.array(plan.live_w, np.int64) * 1
(pt, _), (pl, _) = plan.pads
ho, wo = plan.out_hw
col = np.empty((ho * wo, tap_h.size * tap_w.size * 1), np.float32)   # (P, T * C) = (36, 9)
cpu_conv.im2col_rows(xs, col, 0, ho, ho, wo, tap_h, tap_w, 1, 1, pt, pl)
y_gemm = (col @ ws.reshape(-1, 4)).reshape(1, ho, wo, 4)
y_ref, _ = F.conv2d_forward(xs, ws, padding="same")
assert np.allclose(y_gemm, y_ref, rtol=1e-5, atol=1e-5)
assert np.array_equal(col[7], xs[0, 0:3, 0:3, 0].ravel())            # output (1, 1) reads the top-left 3x3 block
assert np.count_nonzero(col == 0) == 4 * 6 * 3 - 4                   # padding zeros: 4 edges x 6 outputs x 3 taps
print("col", col.shape, "@ w", ws.reshape(-1, 4).shape, "= y", y_gemm.shape, ": equal to the reference conv")
print("row of output (1, 1):", col[7].astype(int).tolist())

# %% [markdown]
# **Why chunks.** The matrix `col` is $K_h K_w$ times larger than the input. At the shapes of the ResNet-50
# DeepLabV3+ training step of [docs/performance.md](../docs/performance.md) (batch 4, 512×512) it would be tens
# to hundreds of MB per layer:

# %%
def col_bytes(n, h_out, w_out, k, c, itemsize=4):
    """Bytes of the full im2col matrix: (N H_out W_out) rows of k * k * C numbers."""
    return n * h_out * w_out * k * k * c * itemsize


layers = {"stem 7x7, 3 -> 64 at 256x256": col_bytes(4, 256, 256, 7, 3),
          "stack0 3x3, 64 at 128x128": col_bytes(4, 128, 128, 3, 64),
          "stack1 3x3, 128 at 64x64": col_bytes(4, 64, 64, 3, 128),
          "ASPP 3x3 rate 6, 2048 at 16x16": col_bytes(4, 16, 16, 3, 2048),
          "decoder 3x3, 304 at 128x128": col_bytes(4, 128, 128, 3, 304)}
for name, b in layers.items():
    print(f"{name:34s} {b / 2**20:8.0f} MiB   ({b / cpu_conv.IM2COL_MAX_BYTES:5.1f} chunks of "
          f"{cpu_conv.IM2COL_MAX_BYTES / 2**20:.0f} MiB)")
assert col_bytes(4, 128, 128, 3, 304) == 4 * 128 * 128 * 9 * 304 * 4

# %% [markdown]
# So the kernel builds `col` for a **chunk** of output rows at a time (at most `IM2COL_MAX_BYTES`, 16 MiB), runs the
# GEMM of that chunk into its rows of `y`, and reuses one buffer for every chunk and every layer (`scratch`, kept
# per thread). The result is the same rows of the same product, only computed in pieces. The cell measures the
# peak memory NumPy allocates during one convolution (`tracemalloc`; each run in a fresh thread, so that it
# starts without a scratch buffer) with the bound lowered to 64 KiB, against a bound larger than the whole `col`.

# %%
xc = rng.standard_normal((2, 48, 48, 32)).astype(np.float32)          # (N, H, W, C)
wc = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
full_col = col_bytes(2, 48, 48, 3, 32)


def peak_of_conv(max_bytes):
    """(y, peak bytes allocated) of cpu.conv2d_forward with the im2col bound set to max_bytes, in a new thread."""
    result = {}

    def run():
        saved = cpu_conv.IM2COL_MAX_BYTES
        cpu_conv.IM2COL_MAX_BYTES = max_bytes
        tracemalloc.start()
        try:
            result["y"] = cpu.conv2d_forward(xc, wc, padding="same")[0]
            result["peak"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            cpu_conv.IM2COL_MAX_BYTES = saved
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return result["y"], result["peak"]


y_small, peak_small = peak_of_conv(64 * 2**10)
y_big, peak_big = peak_of_conv(4 * full_col)
y_ref, _ = F.conv2d_forward(xc, wc, padding="same")
out_bytes = y_ref.astype(np.float32).nbytes
assert np.allclose(y_small, y_ref, rtol=1e-4, atol=1e-4) and np.allclose(y_big, y_ref, rtol=1e-4, atol=1e-4)
assert np.allclose(y_small, y_big, rtol=1e-6, atol=1e-6)
assert peak_big >= full_col and peak_small < out_bytes + full_col / 4
print(f"full col {full_col / 2**20:.2f} MiB, output {out_bytes / 2**20:.2f} MiB")
print(f"peak allocated: one chunk of 64 KiB -> {peak_small / 2**20:.2f} MiB; one big chunk -> {peak_big / 2**20:.2f} MiB")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), layout="constrained", width_ratios=[1, 1.4])
axes[0].imshow(col, cmap="viridis", aspect="auto", interpolation="nearest")
axes[0].set(xlabel="column (tap i, j; 1 channel)", ylabel="row = output pixel (o_h, o_w)",
            title="im2col of a 6x6 image (0 = padding)")
axes[1].barh(list(layers), [b / 2**20 for b in layers.values()], color="C1", label="full im2col")
axes[1].axvline(cpu_conv.IM2COL_MAX_BYTES / 2**20, color="k", ls="--", label="chunk bound (16 MiB)")
axes[1].set(xscale="log", xlabel="MiB (log scale)", title="im2col size at batch 4, 512x512 (R50 DeepLabV3+)")
axes[1].set_xticks([10, 30, 100, 300, 1000], ["10", "30", "100", "300", "1000"])
axes[1].minorticks_off()
axes[1].invert_yaxis()
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# ## The exact savings
#
# Four pieces of work the project skips, each *exact*: the same terms are added (only, for some, in a different
# order, which moves the last bits of a float32 sum). Each cell counts or measures the saving and compares with
# the plain path.
#
# **1. A 1x1 convolution is one GEMM.** With a 1x1 kernel, stride 1 and no padding, `col` *is* the input:
# `y = x.reshape(N H W, C) @ w.reshape(C, F)`, no copy at all. Most convolutions of a ResNet-50 are 1x1 (two of
# the three in every bottleneck block, and the projection shortcuts: counted below on a narrow ResNet-50 with the
# same blocks). The plan says so (`gemm_only`), and the kernel calls exactly that product.

# %%
x1 = rng.standard_normal((2, 32, 32, 256)).astype(np.float32)          # (N, H, W, C)
w1 = rng.standard_normal((1, 1, 256, 64)).astype(np.float32)
plan1 = conv2d_plan(x1.shape, w1.shape, (1, 1), (1, 1), "same")
y1 = cpu.conv2d_forward(x1, w1)[0]
gemm = (x1.reshape(-1, 256) @ w1.reshape(256, 64)).reshape(y1.shape)
assert plan1.gemm_only and np.array_equal(y1, gemm)                    # the very same product, bit for bit
assert np.allclose(y1, F.conv2d_forward(x1, w1)[0], rtol=1e-4, atol=1e-4)


def im2col_1x1():
    """The plain path: copy x into a col matrix (one tap), then the GEMM."""
    c1 = np.empty((x1.shape[0] * 32 * 32, 256), np.float32)
    cpu_conv.im2col_rows(x1, c1, 0, 64, 32, 32, np.zeros(1, np.int64), np.zeros(1, np.int64), 1, 1, 0, 0)
    return c1 @ w1.reshape(256, 64)


assert np.allclose(im2col_1x1().reshape(y1.shape), y1, rtol=1e-6, atol=1e-6)
saving = {"1x1 conv": (best_time(im2col_1x1), best_time(lambda: cpu.conv2d_forward(x1, w1)))}
narrow_r50 = ResNetBackbone([8], [7], [8, 8, 8, 8], [3, 4, 6, 3], [1, 2, 2, 2], seed=0)   # R50's blocks, 1/8 wide
kernels = [m.params["kernel"].shape[:2] for _, m in narrow_r50.modules() if isinstance(m, Conv2D)]
ones = sum(k == (1, 1) for k in kernels)
assert ones == 2 * 16 + 4 and len(kernels) == 3 * 16 + 4 + 1      # 16 blocks, 4 shortcuts, the stem
print(f"ResNet-50 blocks: {ones} of {len(kernels)} convolutions are 1x1")
print(f"1x1 conv 256 -> 64 on {x1.shape}: plan gemm_only = {plan1.gemm_only}; im2col + GEMM "
      f"{saving['1x1 conv'][0] * 1e3:.2f} ms, one GEMM {saving['1x1 conv'][1] * 1e3:.2f} ms; "
      f"{x1.nbytes / 2**20:.0f} MiB not copied")

# %% [markdown]
# **2. Dead dilated taps are skipped.** With "same" padding, tap $(i, j)$ of a $3\times3$ kernel at rate $r$ reads
# input row $o + (i - 1) r$. When $r \ge H$, the rows $o \pm r$ are padding for every output $o$: the outer taps
# multiply only zeros (notebook 03). The plan (`conv2d_plan`, shared by every backend) lists the **live** taps and,
# for each, the output rectangle where it reads real pixels; a conv whose im2col would be mostly padding runs tap
# by tap over those rectangles (`_tapwise_forward`). The plain path below pads and multiplies all 9 taps everywhere.

# %%
def conv_all_taps(x, w, rate):
    """The plain path: pad by rate, add all 9 shifted 1x1 products (padding included)."""
    n, h, wd, c = x.shape
    xpad = np.pad(x, ((0, 0), (rate, rate), (rate, rate), (0, 0)))
    y = np.zeros((n, h, wd, w.shape[3]), x.dtype)
    for i in range(3):
        for j in range(3):
            y += xpad[:, i * rate:i * rate + h, j * rate:j * rate + wd] @ w[i, j]
    return y


xa = rng.standard_normal((2, 16, 16, 64)).astype(np.float32)            # an ASPP input at output stride 32
wa = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
dead_rows = []
for rate in (1, 6, 12, 18):
    p = conv2d_plan(xa.shape, wa.shape, (1, 1), (rate, rate), "same")
    real = sum((r1 - r0) * (c1 - c0) for _, _, (r0, r1), (c0, c1) in p.taps)   # (output, tap) pairs on real pixels
    y_fast = cpu.conv2d_forward(xa, wa, dilation=rate)[0]
    assert np.allclose(y_fast, conv_all_taps(xa, wa, rate), rtol=1e-4, atol=1e-3)
    t_plain = best_time(lambda: conv_all_taps(xa, wa, rate), 3)
    t_fast = best_time(lambda: cpu.conv2d_forward(xa, wa, dilation=rate), 3)
    dead_rows.append((rate, len(p.taps), real / (9 * 16 * 16), t_plain, t_fast))
    print(f"rate {rate:2d}: {len(p.taps)} live taps, {real / (9 * 16 * 16):6.1%} of the 9 x 256 products read "
          f"real pixels; all 9 taps {t_plain * 1e3:5.2f} ms, the plan {t_fast * 1e3:5.2f} ms")
assert [r[1] for r in dead_rows] == [9, 9, 9, 1]
assert dead_rows[3][2] == 1 / 9                                          # rate 18 >= 16: only the centre
saving["rate 18 on 16x16"] = dead_rows[3][3:]

# %% [markdown]
# ### Exercise 1: the live-tap plan of an atrous convolution
#
# Write `live_tap_plan(h, w, rate)` for a $3\times3$ convolution at dilation `rate`, stride 1, "same" padding (so
# `rate` rows of padding on every side), on an `h` × `w` map: the list of the **live** taps as
# `(i, j, (r0, r1), (c0, c1))`, where `i, j` in `0, 1, 2` index the kernel (the centre is `(1, 1)`) and the tap reads
# real pixels exactly for the output rows `r0 <= o_h < r1` and columns `c0 <= o_w < c1` (ends excluded, like
# `range`). A tap whose range is empty along either axis is dead and not listed. Work per axis: tap `i` of output
# row `o` reads input row `o + (i - 1) * rate`; for which `o` in `0 .. h - 1` is that inside `0 .. h - 1`? The
# checker compares with `conv2d_plan` (the project's plan) on 41 map sizes and rates, in any order of the taps.

# %%
def live_tap_plan(h, w, rate):
    """Live taps (i, j, (r0, r1), (c0, c1)) of a 3x3 conv at this rate, stride 1, "same" padding, on h x w."""
    # BEGIN SOLUTION
    def ranges(size):
        out = {}
        for k in range(3):
            offset = (k - 1) * rate                        # the input row read is o + offset
            first, end = max(0, -offset), min(size, size - offset)
            if end > first:
                out[k] = (first, end)
        return out
    rows, cols = ranges(h), ranges(w)
    return [(i, j, rows[i], cols[j]) for i in rows for j in cols]
    # END SOLUTION


# %%
print(check("live_tap_plan", live_tap_plan))

# %% [markdown]
# The project's plan on the ASPP maps of notebook 03: at output stride 32 a 512×512 crop gives a 16×16 map, where
# the rate-18 branch keeps only its centre tap, and rate 12 keeps all nine, but each outer tap reads real pixels for
# only a 4-row (or 4-column) band of outputs. The figure colours every tap by the fraction of outputs where it reads
# real pixels.

# %%
fig, axes = plt.subplots(1, 4, figsize=(11, 2.9), layout="constrained")
for ax, rate in zip(axes, (1, 6, 12, 18)):
    p = conv2d_plan((1, 16, 16, 1), (3, 3, 1, 1), (1, 1), (rate, rate), "same")
    share = np.zeros((3, 3))
    for i, j, (r0, r1), (c0, c1) in p.taps:
        share[i, j] = (r1 - r0) * (c1 - c0) / 256
    im = ax.imshow(share, cmap="viridis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(share):
        ax.text(j, i, f"{v:.0%}", ha="center", va="center", color="w" if v < 0.6 else "k")
    ax.set(title=f"rate {rate}: {len(p.taps)} live taps", xticks=[0, 1, 2], yticks=[0, 1, 2])
fig.colorbar(im, ax=axes, shrink=0.8, label="outputs reading real pixels")
plt.show()
plan12 = conv2d_plan((1, 16, 16, 1), (3, 3, 1, 1), (1, 1), (12, 12), "same")
assert plan12.taps[0] == (0, 0, (12, 16), (12, 16)) and plan12.dead_fraction == 0.75

# %% [markdown]
# **3. Classify before upsampling.** DeepLab's head ends with a bilinear resize (×4 in V3+) and a $1\times1$
# classifier. Both are linear, and every row of the resize matrix sums to 1 (asserted below), so the bias passes
# through too:
#
# $$\mathrm{resize}(x)\ @\ W + b \;=\; \mathrm{resize}(x\ @\ W + b)$$
#
# Classifying first runs the GEMM on 16 times fewer pixels and resizes $K = 21$ channels instead of 256. The
# segmenter does it by default (`classify_before_upsample=True`). In float64 the two orders agree to round-off:

# %%
f64 = rng.standard_normal((1, 32, 32, 256))                              # (N, h, w, 256) decoder features
wk, bk = rng.standard_normal((1, 1, 256, 21)) * 0.05, rng.standard_normal(21)
after = F.conv2d_forward(F.bilinear_resize_forward(f64, (128, 128))[0], wk, bk)[0]      # upsample, classify
before = F.bilinear_resize_forward(F.conv2d_forward(f64, wk, bk)[0], (128, 128))[0]     # classify, upsample
assert np.allclose(after, before, rtol=1e-12, atol=1e-12)
rows_sum = F.bilinear_resize_forward(np.ones((1, 32, 32, 1)), (128, 128))[0]            # resize of ones = row sums
assert np.allclose(rows_sum, 1.0, rtol=0, atol=1e-14)
assert inspect.signature(DeepLabV3ImageSegmenter).parameters["classify_before_upsample"].default is True
macs = {"upsample, classify": 128 * 128 * 256 * 21 + 128 * 128 * 256 * 4,   # GEMM + 4 taps per output, 256 ch
        "classify, upsample": 32 * 32 * 256 * 21 + 128 * 128 * 21 * 4}
print(f"max |difference| {np.abs(after - before).max():.1e}; multiply-adds "
      + ", ".join(f"{k}: {v / 1e6:.1f} M" for k, v in macs.items()))
f32, wk32, bk32 = f64.astype(np.float32), wk.astype(np.float32), bk.astype(np.float32)
saving["classify first"] = (
    best_time(lambda: cpu.conv2d_forward(cpu.bilinear_resize_forward(f32, (128, 128))[0], wk32, bk32)),
    best_time(lambda: cpu.bilinear_resize_forward(cpu.conv2d_forward(f32, wk32, bk32)[0], (128, 128))))
assert macs["upsample, classify"] > 10 * macs["classify, upsample"]

# %% [markdown]
# **4. Batch norm folded into the convolution, for inference.** In inference mode BN is an affine map per channel
# with fixed coefficients, $s = \gamma / \sqrt{\sigma^2 + \epsilon}$ and $t = \beta - \mu s$, so it can be folded
# into the preceding convolution's weights: $\mathrm{BN}(x * w) = x * (w\, s) + t$, one pass over the activations
# instead of two. tinydeeplab does **not** fold: it keeps BN a separate layer, so that one module trains and infers
# and its weights map one-to-one onto KerasHub's (the profile at the end counts the BN calls of an inference
# forward). Folding would be an export-time transformation; here is what it would give:

# %%
xb = rng.standard_normal((2, 32, 32, 64)).astype(np.float32)
wb = (rng.standard_normal((3, 3, 64, 64)) * 0.05).astype(np.float32)
gamma, beta = rng.uniform(0.5, 1.5, 64).astype(np.float32), rng.normal(0, 0.2, 64).astype(np.float32)
mu, var = rng.normal(0, 0.5, 64).astype(np.float32), rng.uniform(0.5, 2.0, 64).astype(np.float32)
eps = 1e-3
scale = gamma / np.sqrt(var + eps)                                    # (F,)
w_folded, b_folded = wb * scale, beta - mu * scale                    # (3, 3, C, F) scaled per output channel


def conv_then_bn():
    return cpu.batchnorm_forward(cpu.conv2d_forward(xb, wb)[0], gamma, beta, mu, var, training=False, eps=eps)[0]


def folded_conv():
    return cpu.conv2d_forward(xb, w_folded, b_folded)[0]


assert np.allclose(folded_conv(), conv_then_bn(), rtol=1e-4, atol=1e-4)
x64 = xb.astype(np.float64)
plain64 = F.batchnorm_forward(F.conv2d_forward(x64, wb.astype(np.float64))[0], *(v.astype(np.float64) for v in
                              (gamma, beta, mu, var)), training=False, eps=eps)[0]
s64 = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
folded64 = F.conv2d_forward(x64, wb * s64, beta - mu.astype(np.float64) * s64)[0]
assert np.allclose(folded64, plain64, rtol=1e-12, atol=1e-12)         # exact up to float64 round-off
saving["BN folded"] = (best_time(conv_then_bn), best_time(folded_conv))
print(f"folded == conv then BN (float64 max diff {np.abs(folded64 - plain64).max():.1e}); one "
      f"{xb.nbytes / 2**20:.1f} MiB pass fewer")

# %%
fig, ax = plt.subplots(figsize=(8, 2.8), layout="constrained")
labels = list(saving)
pos = np.arange(len(labels))
ax.barh(pos - 0.2, [saving[k][0] * 1e3 for k in labels], 0.4, label="plain path", color="C7")
ax.barh(pos + 0.2, [saving[k][1] * 1e3 for k in labels], 0.4, label="with the saving", color="C2")
ax.set(yticks=pos, yticklabels=labels, xlabel="ms (best of 5; same results, asserted above)",
       title="the exact savings, measured here")
ax.invert_yaxis()
ax.legend()
plt.show()
for k in labels:
    print(f"{k:18s} plain {saving[k][0] * 1e3:7.2f} ms   saved {saving[k][1] * 1e3:7.2f} ms   "
          f"ratio {saving[k][0] / saving[k][1]:.1f}x")

# %% [markdown]
# **Inline question 1.** The 1x1 convolution and the folded BN save a copy or a pass over the activations; the
# rate-18 branch saves 8 of its 9 products. Which kind of saving should show the larger gain in the timings above,
# and why? And why can't BN be folded into the convolution during *training*?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The 1x1 saving removes one memory-bound copy of $x$ ($2 \times$ its bytes moved) next to a GEMM that
# does $2 \cdot 256 \cdot 64$ flops per pixel: the GEMM dominates, so skipping the copy gains a fraction (folding BN
# likewise saves one pass next to a 3x3 GEMM). The rate-18 branch skips 8 of the 9 products themselves, the
# compute-bound part: its work falls by 9x, and the time with it, less the fixed costs per call. (Classifying
# before upsampling gains the most of all: it moves both the GEMM and the resize to 16x fewer pixels or 12x fewer
# channels.) Folding needs fixed coefficients $s, t$; in training BN normalises with the *batch*
# statistics $\mu_B, \sigma_B^2$, which depend on the convolution's output itself (they are computed from it, and the
# backward pass goes through them), and the moving statistics change every step. So folding is an inference-time
# transformation of trained weights, and training keeps the two passes (or fuses them another way: see the next
# exercise).
# <!-- END ANSWER -->

# %% [markdown]
# ## Memory-bound passes vs compute-bound GEMM: the roofline of this machine
#
# An op that does $W$ flops and must move $Q$ bytes between memory and the cores takes at least
# $\max(W / P,\ Q / B)$, with $P$ the peak flop rate and $B$ the memory bandwidth. Its **arithmetic intensity**
# $I = W / Q$ (flops per byte) decides which term wins: the attainable rate is $\min(P,\ I \cdot B)$, the *roofline*.
# The ridge $I^* = P / B$ separates memory-bound ops (left) from compute-bound ones (right). Two short measurements
# give this machine's roofline: $P$ from a float32 GEMM (NumPy's BLAS, as the convolutions use), $B$ from copying
# a 64 MiB array (larger than the caches; read + write = 2 bytes moved per byte copied).

# %%
n_gemm = 768
a_m, b_m = rng.standard_normal((n_gemm, n_gemm)).astype(np.float32), rng.standard_normal((n_gemm, n_gemm)).astype(np.float32)
c_m = np.empty_like(a_m)
t_gemm = best_time(lambda: np.matmul(a_m, b_m, out=c_m), 10)
PEAK = 2 * n_gemm ** 3 / t_gemm                                        # flop/s
src = np.ones(16 * 2**20, np.float32)                                  # 64 MiB
dst = np.empty_like(src)
t_copy = best_time(lambda: np.copyto(dst, src), 10)
BW = 2 * src.nbytes / t_copy                                           # bytes/s
assert np.array_equal(dst, src) and np.allclose(c_m[:4, :4], a_m[:4] @ b_m[:, :4], rtol=1e-4, atol=1e-3)
print(f"sgemm {n_gemm}^3: {PEAK / 1e9:.1f} GFLOP/s; copy of 64 MiB: {BW / 1e9:.1f} GB/s; "
      f"ridge at {PEAK / BW:.1f} flop/byte")

# %% [markdown]
# Now the project's kernels, each with its flop count $W$ and its compulsory traffic $Q$ (every input read once,
# every output written once, float32): ReLU does 1 flop per 8 bytes; inference BN 4 flops (subtract the mean,
# two multiplies, add beta, as its kernel does) per 8 bytes; training BN three passes (the mean, the variance, the
# normalisation: 8 flops, 16 bytes per element); a GEMM of $M \times K$ by $K \times N$
# does $2MNK$ flops on $4(MK + KN + MN)$ bytes, which grows with the sizes. The convolution's GEMM is counted on the
# input it reads ($x$, not the $9\times$ larger `col`, which stays in the cache chunk by chunk).

# %%
def gemm_intensity(m, k, n):
    """Flops per byte of an (m, k) @ (k, n) float32 product, counting each operand and the result once."""
    return 2 * m * k * n / (4 * (m * k + k * n + m * n))


act = rng.standard_normal((4, 64, 64, 64)).astype(np.float32)          # (N, H, W, C), 4 MiB
e = act.size
g64, b64 = np.ones(64, np.float32), np.zeros(64, np.float32)
x3 = rng.standard_normal((2, 32, 32, 64)).astype(np.float32)
w3 = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
x1b = rng.standard_normal((2, 32, 32, 512)).astype(np.float32)
w1b = rng.standard_normal((1, 1, 512, 128)).astype(np.float32)
small = rng.standard_normal((2, 32, 32, 21)).astype(np.float32)
p3, p1 = 2 * 32 * 32, 2 * 32 * 32
ops_on_roofline = {        # name: (flops, compulsory bytes, callable)
    "ReLU": (e, 8 * e, lambda: cpu.relu_forward(act)),
    "BN inference": (4 * e, 8 * e, lambda: cpu.batchnorm_forward(act, g64, b64, b64, g64, training=False)),
    "BN training": (8 * e, 16 * e, lambda: cpu.batchnorm_forward(act, g64, b64, b64, g64, training=True)),
    "bilinear x4, 21 ch": (8 * small.size * 16, 4 * small.size * 17,
                           lambda: cpu.bilinear_resize_forward(small, (128, 128))),
    "conv 3x3, 64 -> 64": (2 * p3 * 576 * 64, 4 * (x3.size + w3.size + p3 * 64), lambda: cpu.conv2d_forward(x3, w3)),
    "conv 1x1, 512 -> 128": (2 * p1 * 512 * 128, 4 * (x1b.size + w1b.size + p1 * 128),
                             lambda: cpu.conv2d_forward(x1b, w1b)),
}
measured = {}
for name, (flops, nbytes, fn) in ops_on_roofline.items():
    t = best_time(fn, 5)
    measured[name] = (flops / nbytes, flops / t, t)
    print(f"{name:22s} I = {flops / nbytes:7.3f} flop/B   {t * 1e3:7.3f} ms   {flops / t / 1e9:7.2f} GFLOP/s   "
          f"{nbytes / t / 1e9:6.1f} GB/s")
assert measured["ReLU"][0] == 1 / 8
assert gemm_intensity(n_gemm, n_gemm, n_gemm) == n_gemm / 6                  # a square GEMM: n / 6 flop/B
assert measured["conv 3x3, 64 -> 64"][0] > 50 * measured["BN inference"][0]   # two orders of magnitude apart

# %%
intensity = np.logspace(-2, 3, 200)
fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
ax.loglog(intensity, np.minimum(PEAK, intensity * BW) / 1e9, "k-", lw=2, label="roofline min(P, I B)")
ax.axvline(PEAK / BW, color="0.6", ls=":", lw=1)
ax.text(PEAK / BW * 1.1, PEAK / 1e9 * 0.04, f"ridge\n{PEAK / BW:.1f} flop/B", color="0.4")
ax.loglog([gemm_intensity(n_gemm, n_gemm, n_gemm)], [PEAK / 1e9], "k*", ms=12, label=f"sgemm {n_gemm}^3 (P)")
for k, (name, (i_op, rate, _)) in enumerate(measured.items()):
    ax.loglog([i_op], [rate / 1e9], "o", color=f"C{k}", ms=8, label=name)
ax.set(xlabel="arithmetic intensity (flop / byte)", ylabel="GFLOP/s",
       title=f"roofline of this machine: {PEAK / 1e9:.0f} GFLOP/s, {BW / 1e9:.1f} GB/s ({threads} Numba threads)")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# The memory-bound passes sit at the far left (an eighth to half a flop per byte), where no amount of arithmetic
# speed helps; a 4 MiB activation may still sit in the caches, so they can land above the DRAM line. The
# convolutions sit two orders of magnitude further right (asserted above), where the GEMM rate is the limit; where
# exactly the ridge falls between them is this machine's ratio of GEMM rate to bandwidth, printed above. That is the whole-model picture of [docs/performance.md](../docs/performance.md)
# too: convolutions run within 1.2–1.4x of the bare GEMM, and what is left to win is in the passes over the
# activations (batch norm is 20 % of a training step).
#
# ### Exercise 2: a fused batch norm + ReLU forward
#
# In inference mode BN followed by ReLU is $y = \max(\gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta,\ 0)$ per
# channel. The project runs it as two passes (`batchnorm_forward`, then an in-place `relu_forward`): read $x$,
# write $y$, read $y$, write $y$. A **fused** kernel reads $x$ and writes $y$ once. Write
# `fused_bn_relu(x, gamma, beta, mean, var, eps)` for `x` `(N, H, W, C)` and parameters `(C,)`: compute the scale
# and shift per channel once (NumPy, outside the kernel), then one `@njit(parallel=True)` loop with `prange` over
# the pixels of the `(N H W, C)` view. Return a new array of `x`'s dtype; do not modify `x`. The checker compares
# with the reference ops in float32 and float64 and names the first wrong channel and what went wrong there
# (ReLU before the scale, eps outside the root, batch statistics, ...). The check cell then times your kernel
# against the project's two passes.

# %%
def fused_bn_relu(x, gamma, beta, mean, var, eps):
    """max(gamma (x - mean) / sqrt(var + eps) + beta, 0) per channel, in one pass: x (N, H, W, C) -> same shape."""
    # BEGIN SOLUTION
    scale = (gamma / np.sqrt(var + eps)).astype(x.dtype)              # (C,)
    shift = (beta - mean * scale).astype(x.dtype)                     # (C,)
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[3])              # (M, C)
    y2 = np.empty_like(x2)
    _bn_relu_rows(x2, scale, shift, y2)
    return y2.reshape(x.shape)
    # END SOLUTION


@njit(parallel=True)
def _bn_relu_rows(x2, scale, shift, y2):
    """y2 = max(x2 * scale + shift, 0), rows in parallel: the kernel of the fused pass."""
    # BEGIN SOLUTION
    for m in prange(x2.shape[0]):
        for c in range(x2.shape[1]):
            v = x2[m, c] * scale[c] + shift[c]
            y2[m, c] = v if v > 0 else 0.0
    # END SOLUTION


# %%
print(check("fused_bn_relu", fused_bn_relu))
x_t = rng.standard_normal((4, 64, 64, 64)).astype(np.float32)          # (N, H, W, C), 4 MiB
gamma_t, beta_t = rng.uniform(0.5, 1.5, 64).astype(np.float32), rng.normal(0, 0.5, 64).astype(np.float32)
mean_t, var_t = rng.normal(0, 0.5, 64).astype(np.float32), rng.uniform(0.5, 2, 64).astype(np.float32)


def two_passes():
    """The project's two passes: inference-mode batch norm, then ReLU in place."""
    y = cpu.batchnorm_forward(x_t, gamma_t, beta_t, mean_t, var_t, training=False)[0]
    return cpu.relu_forward(y, inplace=True)[0]


assert np.allclose(fused_bn_relu(x_t, gamma_t, beta_t, mean_t, var_t, 1e-3), two_passes(), rtol=1e-5, atol=1e-5)
t_two = best_time(two_passes, 10)
t_fused = best_time(lambda: fused_bn_relu(x_t, gamma_t, beta_t, mean_t, var_t, 1e-3), 10)
print(f"{x_t.shape} float32 ({x_t.nbytes / 2**20:.0f} MiB): two passes {t_two * 1e3:.2f} ms "
      f"({4 * x_t.nbytes / t_two / 1e9:.1f} GB/s moved), fused {t_fused * 1e3:.2f} ms "
      f"({2 * x_t.nbytes / t_fused / 1e9:.1f} GB/s moved): {t_two / t_fused:.2f}x")

# %% [markdown]
# **Inline question 2.** Counting only compulsory traffic, by how much can fusing BN and ReLU speed up the
# inference pass at most, and why might you measure less (or, on a small activation, more)? In the *training*
# backward pass, which passes over the activations would a fused BN + ReLU backward save?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Two passes move $4 \times$ the activation's bytes (read $x$, write $y$, read $y$, write $y$), the fused
# one $2 \times$: at most 2x for a memory-bound op, whatever the arithmetic. You measure less when the second pass
# finds $y$ still in the caches (a 4 MiB activation fits in L2/L3 on many machines, so it does not go to DRAM),
# when the fixed cost per call (Python, launching the threads of a `prange`) is a large part of a small op, or when
# other processes share the memory bus; more is possible if the two-pass version allocates (page faults on fresh
# memory) where the fused one does not. In training the ReLU backward reads $y$ and $dy$ and writes $dx_{relu}$,
# then BN's backward reads that and $x$ twice (the sums $\sum dy$, $\sum dy\,\hat x$, then $dx$): a fused backward
# applies the ReLU mask while computing the sums and again when forming $dx$, saving the write and the re-read of
# the intermediate gradient (two full passes of $4$ to $6$).
# <!-- END ANSWER -->

# %% [markdown]
# ## Where a training step spends its time
#
# The project's profiler (`OpProfiler` in `benchmarks/bench_model.py`, which made the per-op table of
# [docs/performance.md](../docs/performance.md#where-the-time-goes)) wraps every `<op>_forward` / `<op>_backward`
# of the backend module with a timer for one call. Here it profiles one training step (forward in training
# mode, softmax cross-entropy, backward, SGD) of a small DeepLabV3+ (the model of notebook 11: ResNet with
# 16 filters, ASPP with 32 channels, V3+ decoder, 4 classes) on a batch of 2 × 64×64 images, after a warm-up step
# that compiles what is not cached yet.

# %%
sys.path.insert(0, str(Path(tinydeeplab.__file__).resolve().parents[1] / "benchmarks"))
from bench_model import OpProfiler                                     # noqa: E402  (the project's profiler)

encoder = ResNetBackbone([16], [3], [16, 16, 16, 16], [1, 1, 1, 1], [1, 2, 2, 2], seed=0)
model = DeepLabV3ImageSegmenter(DeepLabV3Backbone(encoder, "P5", 8, [1, 2, 3], low_level_feature_key="P2",
                                                  projection_filters=16, num_channels=32, seed=1), 4, seed=2)
optimizer = SGD(model, lr=0.01, momentum=0.9)
images = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
labels = rng.integers(0, 4, (2, 64, 64)).astype(np.int32)


def train_step():
    logits = model.forward(images, training=True)                     # (2, 64, 64, 4)
    ops = backend.ops()                                               # looked up now: the profiler's wrappers
    loss, cache = ops.softmax_cross_entropy_forward(logits, labels, ignore_label=255)
    model.zero_grad()
    model.backward(ops.softmax_cross_entropy_backward(1.0, cache))
    optimizer.step()
    return loss


t0 = time.perf_counter()
train_step()                                                          # warm-up: compiles or loads the kernels
print(f"{model.num_parameters():,} parameters; warm-up step {time.perf_counter() - t0:.2f} s")
with OpProfiler(backend.ops()) as prof:
    t0 = time.perf_counter()
    for _ in range(3):
        train_step()
    step_s = (time.perf_counter() - t0) / 3
per_op = {}
for name, (seconds, calls) in prof.totals.items():
    op, half = name.rsplit("_", 1)
    per_op.setdefault(op, {"forward": [0.0, 0], "backward": [0.0, 0]})[half] = [seconds / 3, calls // 3]
convs = sum(isinstance(m, Conv2D) for _, m in model.modules())
bns = sum(isinstance(m, BatchNorm) for _, m in model.modules())
assert per_op["conv2d"]["forward"][1] == per_op["conv2d"]["backward"][1] == convs
assert per_op["batchnorm"]["forward"][1] == bns
in_ops = sum(v[0] for d in per_op.values() for v in d.values())
assert in_ops <= step_s
print(f"step {step_s * 1e3:.1f} ms, {in_ops / step_s:.0%} of it inside the ops; {convs} Conv2D and {bns} "
      f"BatchNorm layers, each called once forward and once backward")
for op, d in sorted(per_op.items(), key=lambda kv: -sum(v[0] for v in kv[1].values())):
    total = d["forward"][0] + d["backward"][0]
    print(f"  {op:22s} forward {d['forward'][0] * 1e3:6.2f} ms ({d['forward'][1]:3d} calls)   backward "
          f"{d['backward'][0] * 1e3:6.2f} ms ({d['backward'][1]:3d})   {total / step_s:6.1%} of the step")

with OpProfiler(backend.ops()) as inference, inference_mode():        # inference: BN is not folded away
    model.forward(images, training=False)
assert inference.totals["batchnorm_forward"][1] == bns and "batchnorm_backward" not in inference.totals

# %%
ranked = sorted(per_op, key=lambda op: -(per_op[op]["forward"][0] + per_op[op]["backward"][0]))[:9]
fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
fw = np.array([per_op[op]["forward"][0] * 1e3 for op in ranked])
bw = np.array([per_op[op]["backward"][0] * 1e3 for op in ranked])
ax.barh(ranked, fw, label="forward", color="C0")
ax.barh(ranked, bw, left=fw, label="backward", color="C1")
ax.barh(["(outside the ops)"], [(step_s - in_ops) * 1e3], color="C7")
ax.set(xlabel="ms per training step (mean of 3)", title=f"per-op profile of a training step, batch 2 x 64x64 "
       f"({step_s * 1e3:.0f} ms)")
ax.invert_yaxis()
ax.legend()
plt.show()
print(f"notebook ran in {time.perf_counter() - T_START:.0f} s")

# %% [markdown]
# Compare with the ResNet-50 step of [docs/performance.md](../docs/performance.md) (convolutions 62 %, batch norm
# 20 %, the rest memory-bound passes and 2 % outside the ops): with 64×64 inputs and 16 channels the GEMMs are tiny,
# so the fixed costs per call (Python, argument checks, starting a parallel loop) and the memory-bound ops weigh
# more, as does the time outside the ops (the layers' Python, zeroing the gradients, the SGD update), all printed
# above for this machine. Profile at the size you care about: the ranking of the ops, and therefore what to
# optimise next, depends on it.
#
# **Where to go next.** The GPU backend (`tinydeeplab/kernels/cuda`) runs the same plan with CUDA kernels; the
# benchmarks and their history (what each change gained, and the test that proves it exact) are in
# [docs/performance.md](../docs/performance.md).
