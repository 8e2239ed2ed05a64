"""Depthwise convolution speed (``backend "cpu"``) against a bare copy of its input.

A depthwise 3x3 does 9 multiply-adds per output element and no reduction over channels: it is
memory-bound, so the yardstick is the memory traffic it cannot avoid. ``copy`` is ``np.copyto`` of the
input's bytes into a ready buffer (read ``x``, write as many bytes); ``numba / copy`` is how many copies
of the input the op costs. The forward reads ``x`` and writes ``y`` (one copy's traffic at stride 1);
the backward reads ``dy``, ``x`` and ``w``, writes ``dx``, and makes a second pass over ``x`` and ``dy``
for ``dw``.

    python benchmarks/bench_depthwise.py                  # the table of docs/performance.md
    python benchmarks/bench_depthwise.py --repeats 3      # quicker, noisier
    python benchmarks/bench_depthwise.py --reference      # add the NumPy reference (slow)

Times are the *best* of ``--repeats`` runs after two warm-up calls, the timings of a row interleaved so
that background load hits them alike. Best, not median: on a machine shared with other jobs a parallel
loop whose second thread is preempted waits for it, and medians then measure the neighbours (on our
2-core machine at load 6-10 medians of the same kernel varied 5x between runs; the best of 15 within 20 %).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as tinydeeplab.kernels.cpu does; before Numba starts
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from tinydeeplab import functional as ref  # noqa: E402
from tinydeeplab.kernels import cpu  # noqa: E402

SHAPES = [(1, 64, 64, 256), (8, 128, 128, 32)]
"""Inputs (N, H, W, C): a deep, small map (an encoder's last stages) and a shallow, large one (its first)."""
OPTIONS = [(1, 1), (2, 1), (1, 2)]
"""(stride, dilation) of the 3x3 depthwise kernel, depth multiplier 1, "same" padding."""


def interleaved_best(fns, repeats: int) -> list[float]:
    """Fastest seconds of each callable, calling them in turn ``repeats`` times after 2 warm-ups."""
    for fn in fns:
        fn()
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--reference", action="store_true", help="also time the (slow) NumPy reference")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    x0 = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    w0 = rng.standard_normal((3, 3, 4, 1)).astype(np.float32)
    t0 = time.perf_counter()
    y0, c0 = cpu.depthwise_conv2d_forward(x0, w0)
    cpu.depthwise_conv2d_backward(y0, c0)
    t_first = time.perf_counter() - t0

    import numba
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads), numpy {np.__version__}, float32")
    print(f"# first call (JIT compile or cache load): forward + backward {t_first:.2f} s")
    print()
    print("| x (N, H, W, C) | stride | dilation | pass | numba ms | copy of x ms | numba / copy |"
          + (" reference ms |" if args.reference else ""))
    print("|---|---:|---:|---|---:|---:|---:|" + ("---:|" if args.reference else ""))
    for shape in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        w = (rng.standard_normal((3, 3, shape[3], 1)) / 3).astype(np.float32)
        b = rng.standard_normal(shape[3]).astype(np.float32)
        dst = np.empty_like(x)
        for stride, dilation in OPTIONS:
            kw = {"stride": stride, "dilation": dilation, "padding": "same"}
            y, cache = cpu.depthwise_conv2d_forward(x, w, b, **kw)
            dy = rng.standard_normal(y.shape).astype(np.float32)
            passes = {"forward": (lambda: cpu.depthwise_conv2d_forward(x, w, b, **kw),
                                  lambda: ref.depthwise_conv2d_forward(x, w, b, **kw)),
                      "backward": (lambda: cpu.depthwise_conv2d_backward(dy, cache),
                                   lambda: ref.depthwise_conv2d_backward(dy, ref.depthwise_conv2d_forward(
                                       x, w, b, **kw)[1]))}
            for name, (kernel, reference) in passes.items():
                fns = [kernel, lambda: np.copyto(dst, x)] + ([reference] if args.reference else [])
                t = interleaved_best(fns, args.repeats)
                extra = f" {t[2] * 1e3:.1f} |" if args.reference else ""
                print(f"| {shape} | {stride} | {dilation} | {name} | {t[0] * 1e3:.2f} | {t[1] * 1e3:.2f} | "
                      f"{t[0] / t[1]:.2f} |{extra}", flush=True)


if __name__ == "__main__":
    main()
