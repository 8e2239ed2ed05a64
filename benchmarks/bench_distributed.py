"""Data parallel on this machine, and what it predicts for a cluster.

    python benchmarks/bench_distributed.py                         # small shapes (the machine is shared)
    python benchmarks/bench_distributed.py --model small --size 128 --batch 8 --steps 8

Needs ``pip install '.[mpi]'`` (it starts ``mpiexec -n 2`` itself). It measures:

1. **Training**: 2 ranks x 1 thread (``mpiexec -n 2``, global batch split, SyncBN, gradients averaged in
   buckets during backward) vs 1 process x 2 threads on the same global batch: images/s, per step the
   communication time (the same buckets allreduced alone, no computation), the part of it left
   exposed after the backward (``wait``), and the overlap achieved ``1 - wait / communication``.
2. **Allreduce** between the 2 ranks: time per call from 8 B to 64 MB; latency ``alpha`` (the smallest
   message) and bandwidth ``beta^-1`` (fitted on the large ones, as the ring's bus bandwidth).
3. **A cost model** (alpha-beta, ring allreduce, bucketed): for N nodes and S gradient bytes in k buckets
   ``T_comm = 2 (N-1) k alpha + 2 (N-1)/N S / B``; a step takes ``T_c + max(0, T_comm - f T_b)`` with
   ``T_c`` the compute time, ``T_b`` the backward's part of it (2/3) and ``f`` the fraction of the
   backward that communication can hide behind (buckets start once the first layers' gradients are
   done: f = 0.5 assumed; 0 = no overlap). Efficiency = ``T_c / step``. Fed with the R50 DeepLabV3+
   (39.2 M parameters, 157 MB of float32 gradients, 25 MB buckets), this machine's measured figures,
   and published interconnect figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

R50_PARAMS = 39_190_656 + 5_376                       # the pascalvoc DeepLabV3+ (backbone + head)
BUCKET_MB = 25.0
INTERCONNECTS = {   # published figures: per-link bandwidth (bytes/s) and MPI small-message latency (s)
    "10 GbE (TCP)": (1.25e9, 50e-6),                   # 10 Gb/s line rate; ~50 us TCP/MPI latency
    "100 Gb/s EDR InfiniBand": (12.5e9, 1.0e-6),      # Mellanox EDR: 100 Gb/s, ~1 us MPI latency
    "400 Gb/s NDR InfiniBand": (50e9, 1.0e-6),        # NVIDIA Quantum-2 NDR: 400 Gb/s per port
}
NODES = {   # compute per step of one node (docs/performance.md): R50 DeepLabV3+ at 512x512
    "2-core CPU node, batch 4 (5.1 s)": 5.1,
    "H200 GPU node, batch 8 (0.317 s)": 0.317,
}


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec: pip install '.[mpi]'")
    return found


def _env(threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _run(cmd, threads) -> dict:
    out = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the roles run in subprocesses --------------------------------------------------------------------
def role_train(args) -> None:
    import numpy as np

    from tinydeeplab.backend import ops
    from tinydeeplab.data import BatchLoader, SyntheticShapes
    from tinydeeplab.models.recipes import build_model
    from tinydeeplab.train.distributed import GradientBuckets, World, loss_weights, sync_batchnorm
    from tinydeeplab.train.optim import SGD

    world = World.from_environment()
    data = SyntheticShapes(args.batch * (args.steps + 2), size=(args.size, args.size), seed=0)
    model = build_model(args.model, data.num_classes, seed=0)
    sync_batchnorm(model, world)
    shard = None if world.size == 1 else (world.rank, world.size)
    loader = BatchLoader(data, args.batch, converter=model.preprocessor, shard=shard, prefetch=0)
    buckets = GradientBuckets(model, world) if world.size > 1 else None
    opt, ce = SGD(model, 0.01, momentum=0.9), ops()
    times, waits, backs = [], [], []
    for i, (x, y) in enumerate(loader):
        t0 = time.perf_counter()
        logits = model.forward(x, training=True)
        loss, cache = ce.softmax_cross_entropy_forward(logits, y)
        loss, share = loss_weights(world, loss, cache["total"])
        model.zero_grad()
        dlogits = ce.softmax_cross_entropy_backward(share, cache)
        if buckets is None:
            tb = time.perf_counter()
            model.backward(dlogits)
            backs.append(time.perf_counter() - tb)
        else:
            buckets.backward(dlogits)
            waits.append(buckets.stats["wait_s"])
            backs.append(buckets.stats["backward_s"])
        opt.step()
        if i >= 2:                                   # the first steps compile / warm the caches
            times.append(time.perf_counter() - t0)
    result = {"ranks": world.size, "step_s": statistics.median(times), "backward_s": statistics.median(backs),
              "images_per_s": args.batch / statistics.median(times), "steps": len(times)}
    if buckets is not None:                          # the same buckets alone: communication without compute
        comm = []
        for _ in range(5):
            t0 = time.perf_counter()
            buffers = [(np.ones(n, np.float32), np.empty(n, np.float32)) for n in buckets.sizes]   # alive until done
            requests = [world.comm.Iallreduce(send, recv) for send, recv in buffers]
            for r in requests:
                world.wait(r, "benchmark allreduce")
            comm.append(time.perf_counter() - t0)
        result.update(comm_s=statistics.median(comm), wait_s=statistics.median(waits), buckets=len(buckets.sizes),
                      grad_bytes=buckets.stats["bytes"])
        result["overlap"] = max(0.0, 1.0 - result["wait_s"] / result["comm_s"])
    if world.is_root:
        print(json.dumps(result))


def role_allreduce(args) -> None:
    import numpy as np

    from tinydeeplab.train.distributed import World

    world = World.from_environment()
    rows = []
    for nbytes in [2 ** e for e in range(3, 27, 2)] + [2 ** 26]:     # 8 B .. 64 MB
        n = nbytes // 4
        send, recv = np.ones(n, np.float32), np.empty(n, np.float32)
        repeats = 50 if send.nbytes < 1e6 else 5
        world.comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(repeats):
            world.wait(world.comm.Iallreduce(send, recv), "benchmark allreduce")
        rows.append((int(send.nbytes), (time.perf_counter() - t0) / repeats))
    if world.is_root:
        print(json.dumps({"ranks": world.size, "rows": rows}))


# -- the model ----------------------------------------------------------------------------------------
def ring_allreduce_s(n_nodes, nbytes, bandwidth, latency, buckets):
    """``2 (N-1) k alpha + 2 (N-1)/N S / B``: reduce-scatter then all-gather around a ring, per bucket."""
    if n_nodes == 1:
        return 0.0
    return 2 * (n_nodes - 1) * buckets * latency + 2 * (n_nodes - 1) / n_nodes * nbytes / bandwidth


def efficiency(n_nodes, compute_s, comm_s, hidden=0.5, backward_share=2 / 3):
    exposed = max(0.0, comm_s - hidden * backward_share * compute_s)
    return compute_s / (compute_s + exposed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("driver", "train", "allreduce"), default="driver", help=argparse.SUPPRESS)
    p.add_argument("--model", default="tiny", help="architecture recipe of the training measurement")
    p.add_argument("--size", type=int, default=64, help="image side")
    p.add_argument("--batch", type=int, default=4, help="global batch")
    p.add_argument("--steps", type=int, default=6, help="timed steps (after 2 warm-up steps)")
    args = p.parse_args()
    if args.role == "train":
        return role_train(args)
    if args.role == "allreduce":
        return role_allreduce(args)
    me = [sys.executable, __file__, "--model", args.model, "--size", str(args.size), "--batch", str(args.batch),
          "--steps", str(args.steps)]
    single = _run(me + ["--role", "train"], threads=2)
    double = _run([_mpiexec(), "-n", "2", *me, "--role", "train"], threads=1)
    ar = _run([_mpiexec(), "-n", "2", *me, "--role", "allreduce"], threads=1)
    print(f"# {args.model} DeepLabV3+, global batch {args.batch} at {args.size}x{args.size}, {args.steps} timed steps")
    print("| run | step s | images/s | backward s | communication s/step | exposed s/step | overlap |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| 1 process x 2 threads | {single['step_s']:.3f} | {single['images_per_s']:.1f} | "
          f"{single['backward_s']:.3f} | - | - | - |")
    print(f"| 2 ranks x 1 thread | {double['step_s']:.3f} | {double['images_per_s']:.1f} | {double['backward_s']:.3f} | "
          f"{double['comm_s'] * 1e3:.2f} ms | {double['wait_s'] * 1e3:.2f} ms | {double['overlap']:.0%} |")
    print(f"gradients: {double['grad_bytes'] / 1e6:.2f} MB in {double['buckets']} bucket(s); 'exposed' is the "
          "time rank 0 waited after its backward (it includes waiting for a slower rank)")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    rows = ar["rows"]
    alpha = min(t for b, t in rows if b <= 1024)      # the fastest small message: other load only adds
    big = [(b, t) for b, t in rows if b >= 4e6]
    # ring bus bandwidth: 2 (N-1)/N bytes per byte reduced, N = 2 -> 1
    bw = statistics.median(2 * (ar["ranks"] - 1) / ar["ranks"] * b / max(t - alpha, 1e-12) for b, t in big)
    print("\n| allreduce bytes | time | algorithm bandwidth |")
    print("|---:|---:|---:|")
    for b, t in rows:
        print(f"| {b:,} | {t * 1e6:.1f} us | {b / t / 1e9:.3f} GB/s |")
    print(f"measured here (2 ranks, shared memory): latency alpha = {alpha * 1e6:.1f} us, bandwidth B = {bw / 1e9:.2f} GB/s")
    nbytes, k = R50_PARAMS * 4, -(-R50_PARAMS * 4 // int(BUCKET_MB * 1e6))
    links = {"this machine (measured)": (bw, alpha), **INTERCONNECTS}
    print(f"\n# cost model: R50 DeepLabV3+, {nbytes / 1e6:.0f} MB of gradients in {k} buckets of {BUCKET_MB:g} MB; "
          "half of the backward (2/3 of the step) can hide communication")
    print("| node | interconnect | T_comm at 8 / 64 / 256 nodes | efficiency 8 | 64 | 256 | (no overlap: 256) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for node, compute in NODES.items():
        for link, (b, lat) in links.items():
            comm = [ring_allreduce_s(n, nbytes, b, lat, k) for n in (8, 64, 256)]
            eff = [efficiency(n, compute, c) for n, c in zip((8, 64, 256), comm)]
            print(f"| {node} | {link} | {' / '.join(f'{c * 1e3:.0f} ms' for c in comm)} | "
                  f"{eff[0]:.1%} | {eff[1]:.1%} | {eff[2]:.1%} | {efficiency(256, compute, comm[2], hidden=0):.1%} |")


if __name__ == "__main__":
    main()
