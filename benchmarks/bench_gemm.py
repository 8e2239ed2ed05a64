"""GPU matrix product: tinydeeplab's tiled GEMM (each tiling of ``--tiles``) vs ``torch.matmul`` (float32, TF32 off).

The shapes are the convolutions of the pascalvoc DeepLabV3+ at batch 8, 512x512, as im2col GEMMs
``(P, T*C) @ (T*C, F)`` (forward), plus the two backward products of one of them::

    python benchmarks/bench_gemm.py                       # all shapes, every tiling in TILINGS
    python benchmarks/bench_gemm.py --tiles 64,64,16,4,4  # one tiling (BM,BN,BK,RM,RN)

Prints milliseconds and TFLOP/s (2*M*N*K / time) per shape and the tinydeeplab / torch time ratio. Needs a
CUDA GPU, numba-cuda and torch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, M, K, N, trans_a, trans_b): C (M, N) = op(A) (M, K) @ op(B) (K, N)
SHAPES = [
    ("stack0 1x1 64->256  (P=8*128^2)", 131072, 64, 256, False, False),
    ("stack0 3x3 64->64   im2col", 131072, 576, 64, False, False),
    ("stack2 3x3 256->256 im2col", 8192, 2304, 256, False, False),
    ("stack3 1x1 512->2048", 2048, 512, 2048, False, False),
    ("ASPP 1x1 2048->256", 2048, 2048, 256, False, False),
    ("head 1x1 304->256", 131072, 304, 256, False, False),
    ("bwd dW = col^T dy (stack0 3x3)", 576, 131072, 64, True, False),
    ("bwd dcol = dy W^T (stack0 3x3)", 131072, 64, 576, False, True),
]
TILINGS = ["64,64,16,4,4"]


def time_it(fn, sync, repeats=20):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", nargs="+", default=None, help="BM,BN,BK,RM,RN tilings (default: the module's list)")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    import numpy as np
    import torch
    from numba import cuda

    from tinydeeplab.kernels.cuda import gemm

    tilings = [gemm.Tiles(*map(int, t.split(","))) for t in (args.tiles or TILINGS)]
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    head = ["shape", "torch ms", "torch TF/s"]
    for t in tilings:
        head += [f"{'x'.join(map(str, t))} ms", "TF/s", "ratio"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for name, m, k, n, ta, tb in SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        flop = 2.0 * m * n * k
        at, bt = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        opa, opb = (at.T if ta else at), (bt.T if tb else bt)
        t_torch = time_it(lambda: torch.matmul(opa, opb), torch.cuda.synchronize, args.repeats)
        ref = torch.matmul(opa, opb).cpu().numpy()
        cells = [name, f"{t_torch * 1e3:.3f}", f"{flop / t_torch / 1e12:.1f}"]
        ad, bd = cuda.to_device(a), cuda.to_device(b)
        out = cuda.device_array((m, n), np.float32)
        for tiles in tilings:
            t = time_it(lambda: gemm.matmul(ad, bd, out, trans_a=ta, trans_b=tb, tiles=tiles), cuda.synchronize,
                        args.repeats)
            err = float(np.abs(out.copy_to_host() - ref).max() / np.abs(ref).max())
            flag = " WRONG" if err > 1e-4 else ""
            cells.append(f"{t * 1e3:.3f} | {flop / t / 1e12:.1f} | {t / t_torch:.1f}x{flag}")
        print("| " + " | ".join(cells) + " |", flush=True)
    for tiles in tilings:                        # registers and local (spilled) memory per thread
        k = gemm.gemm_kernel(np.float32, tiles, False, False, False)
        try:
            regs, local = k.get_regs_per_thread(), k.get_local_mem_per_thread()
            if isinstance(regs, dict):               # one entry per compiled signature: there is one
                regs, local = next(iter(regs.values())), next(iter(local.values()))
            print(f"{'x'.join(map(str, tiles))}: {regs} registers, {local} B local memory per thread")
        except Exception as err:  # noqa: BLE001 - informational only
            print(f"{tiles}: resource query failed ({err})")


if __name__ == "__main__":
    main()
