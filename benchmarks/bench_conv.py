"""Convolution speed: Numba im2col + BLAS (``backend "cpu"``) vs the NumPy reference vs a bare GEMM.

The bare GEMM is the matrix product the convolution reduces to, on ready-made operands:
``(P, KH*KW*C) @ (KH*KW*C, F)`` with ``P = N * H_out * W_out`` output pixels (for the backward the two
products ``dy @ W^T`` and ``col^T @ dy``). ``numba / GEMM`` is therefore the overhead of im2col /
col2im and of the bookkeeping: 1.0 would be a free im2col.

    python benchmarks/bench_conv.py                 # full table (a couple of minutes on 2 cores)
    python benchmarks/bench_conv.py --repeats 5     # quicker, noisier

Times are medians over ``--repeats`` runs after two warm-up calls; the three timings of a row are
interleaved so that background load hits them alike. The first-call line is the JIT compile (or the
load from Numba's on-disk cache, ``cache=True``) of the conv kernels in this process.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as tinydeeplab.kernels.cpu does; before Numba starts
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from tinydeeplab import functional as ref  # noqa: E402
from tinydeeplab.kernels import cpu  # noqa: E402
from tinydeeplab.kernels.cpu import conv as kconv  # noqa: E402

# name, x shape (N, H, W, C), kernel (KH, KW), filters F, stride, dilation
CASES = [
    ("3x3 s1 same", (1, 64, 64, 256), (3, 3), 256, 1, 1),
    ("1x1 s1", (1, 64, 64, 256), (1, 1), 1024, 1, 1),
    ("3x3 s2 same", (1, 64, 64, 256), (3, 3), 256, 2, 1),
    ("3x3 rate 2 same", (1, 64, 64, 256), (3, 3), 256, 1, 2),
    ("7x7 s2 stem", (1, 256, 256, 3), (7, 7), 64, 2, 1),
]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved_medians(fns, repeats: int) -> list[float]:
    """Median seconds of each callable, calling them in turn ``repeats`` times after 2 warm-ups."""
    for fn in fns:
        fn()
        fn()
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for s, fn in zip(samples, fns):
            s.append(timed(fn))
    return [statistics.median(s) for s in samples]


def backward_parts(x, w, dy, cache):
    """The two halves of ``conv2d_backward`` on their own, to time them separately:
    ``dw = sum_chunks col^T @ dy`` (im2col + GEMM) and ``dx = col2im(dy @ W^T)`` (GEMM + col2im)."""
    plan, (ho, wo), stride, pads = cache["plan"], cache["out_hw"], cache["stride"], cache["pads"]
    (pt, _), (pl, _) = pads
    f = w.shape[3]
    dy2 = dy.reshape(-1, f)
    wmat = w.reshape(-1, f)

    def dw_part():
        dw = np.zeros(wmat.shape, np.float32)
        for g0, g1, col in kconv._col_chunks(x, plan, stride, pads, (ho, wo)):
            dw += col.T @ dy2[g0 * wo:g1 * wo]
        return dw

    def dx_part():
        dx = np.zeros_like(x)
        rows = kconv._chunk_rows(wo, wmat.shape[0], x.itemsize)
        for g0 in range(0, x.shape[0] * ho, rows):
            g1 = min(g0 + rows, x.shape[0] * ho)
            dcol = dy2[g0 * wo:g1 * wo] @ wmat.T
            kconv.col2im_rows(dcol, dx, g0, g1, ho, wo, plan["tap_h"], plan["tap_w"],
                              stride[0], stride[1], pt, pl)
        return dx

    return dw_part, dx_part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    # first call: JIT compile (or cache load) of im2col + col2im
    x0 = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
    w0 = rng.standard_normal((3, 3, 4, 4)).astype(np.float32)
    t0 = time.perf_counter()
    y0, c0 = cpu.conv2d_forward(x0, w0)
    t_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu.conv2d_backward(y0, c0)
    t_bwd = time.perf_counter() - t0

    import numba
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads, layer "
          f"{numba.threading_layer()}), numpy {np.__version__}, float32")
    print(f"# first call (JIT compile or cache load): conv2d_forward {t_fwd:.2f} s, conv2d_backward {t_bwd:.2f} s")
    print()
    print("| case | x -> y | numba ms | numpy-reference ms | bare GEMM ms | numba / GEMM |")
    print("|---|---|---:|---:|---:|---:|")
    for name, xs, (kh, kw), f, s, d in CASES:
        x = rng.standard_normal(xs).astype(np.float32)
        w = (rng.standard_normal((kh, kw, xs[3], f)) / np.sqrt(kh * kw * xs[3])).astype(np.float32)
        y, cache = cpu.conv2d_forward(x, w, stride=s, dilation=d, padding="same")
        p, k = y.shape[0] * y.shape[1] * y.shape[2], kh * kw * xs[3]
        a = rng.standard_normal((p, k)).astype(np.float32)             # im2col-shaped operand
        wm = w.reshape(k, f)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dy2 = dy.reshape(p, f)
        shape = f"{xs} -> {y.shape}"

        fwd = [lambda: cpu.conv2d_forward(x, w, stride=s, dilation=d, padding="same"),
               lambda: a @ wm]
        if not args.no_reference:
            fwd.append(lambda: ref.conv2d_forward(x, w, stride=s, dilation=d, padding="same"))
        t = interleaved_medians(fwd, args.repeats)
        t_ref = f"{t[2] * 1e3:.1f}" if len(t) > 2 else "-"
        print(f"| {name} forward | {shape} | {t[0] * 1e3:.1f} | {t_ref} | {t[1] * 1e3:.1f} | "
              f"{t[0] / t[1]:.2f} |", flush=True)

        if name in ("3x3 s1 same", "1x1 s1"):
            _, rcache = ref.conv2d_forward(x, w, stride=s, dilation=d, padding="same")
            bwd = [lambda: cpu.conv2d_backward(dy, cache),
                   lambda: (dy2 @ wm.T, a.T @ dy2)]                        # dcol and dw GEMMs
            if not args.no_reference:
                bwd.append(lambda: ref.conv2d_backward(dy, rcache))
            t = interleaved_medians(bwd, args.repeats)
            t_ref = f"{t[2] * 1e3:.1f}" if len(t) > 2 else "-"
            print(f"| {name} backward dx+dw | {shape} | {t[0] * 1e3:.1f} | {t_ref} | {t[1] * 1e3:.1f} | "
                  f"{t[0] / t[1]:.2f} |", flush=True)
            if not cache["plan"]["gemm_only"]:
                dw_part, dx_part = backward_parts(x, w, dy, cache)
                t = interleaved_medians([dw_part, lambda: a.T @ dy2, dx_part, lambda: dy2 @ wm.T], args.repeats)
                print(f"| {name} backward dw only | {shape} | {t[0] * 1e3:.1f} | - | {t[1] * 1e3:.1f} | "
                      f"{t[0] / t[1]:.2f} |")
                print(f"| {name} backward dx only | {shape} | {t[2] * 1e3:.1f} | - | {t[3] * 1e3:.1f} | "
                      f"{t[2] / t[3]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
