"""Inference with and without :class:`tinydeeplab.nn.InferencePlan`, calls interleaved in one process.

``bench_model.py --inference-plan`` measures the plan as its own framework, each in a subprocess of its
own, one after the other; on a shared machine the load can change between the two. Here the plain call
and the planned call alternate (plain, plan, plain, plan, ...) on the same model and input, so both see
the same load; the medians and minima of each are printed, with the agreement of the logits
(``max |plan - plain| / max |plain|``) and the plan's build time. Besides the wall time each call's CPU time
of this process (``time.process_time``) is printed: with one Numba and one BLAS thread it is the work the
call did, which other processes on the machine do not inflate (they only take the core away, which the wall
time shows).

    python benchmarks/bench_inference_plan.py --model small --size 256 --repeats 5
    python benchmarks/bench_inference_plan.py --model resnet50 --size 512
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small", help="recipe (tinydeeplab.models.recipes), default small")
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each first (default 2)")
    parser.add_argument("--backend", default="cpu", choices=["cpu", "numpy", "cuda"])
    args = parser.parse_args(argv)

    import numpy as np

    from tinydeeplab import backend
    from tinydeeplab.models.recipes import build_model
    from tinydeeplab.nn import InferencePlan, inference_mode

    backend.set_backend(args.backend)
    model = build_model(args.model, args.classes, seed=0)
    rng = np.random.default_rng(0)
    for _, m in model.modules():                     # non-trivial batch norms (fresh ones are 0 / 1)
        if "moving_mean" in m.buffers:
            c = m.params["gamma"].shape
            m.buffers["moving_mean"][:] = rng.normal(0, 0.2, c)
            m.buffers["moving_variance"][:] = rng.uniform(0.5, 1.5, c)
    if args.backend == "cuda":
        model.to("cuda")
    x = rng.normal(0, 1, (args.batch, args.size, args.size, 3)).astype(np.float32)
    t0 = time.perf_counter()
    plan = InferencePlan(model)
    build_s = time.perf_counter() - t0

    def plain():
        with inference_mode():
            return backend.to_numpy(model.forward(x))

    def planned():
        return backend.to_numpy(plan(x))

    a, b = plain(), planned()
    err = float(np.abs(a.astype(np.float64) - b).max() / np.abs(a).max())
    for _ in range(args.warmup - 1):
        plain(), planned()
    times = {"plain": [], "plan": []}
    cpu = {"plain": [], "plan": []}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("plan", planned)):
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"# {args.model} {args.batch}x{args.size}x{args.size}, backend {args.backend}, "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, load average {load}")
    print(f"# plan: {len(plan.fused)} fused ops, built in {build_s:.3f} s; logits agree to {err:.1e} (relative)")
    print("| path | median s | min s | median CPU s | min CPU s | calls |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.4f} | {min(ts):.4f} | {statistics.median(cpu[name]):.4f} | "
              f"{min(cpu[name]):.4f} | {len(ts)} |")
    med = lambda d, k: statistics.median(d[k])  # noqa: E731
    print(f"# plain / plan: wall median {med(times, 'plain') / med(times, 'plan'):.2f}x, "
          f"min {min(times['plain']) / min(times['plan']):.2f}x; "
          f"CPU median {med(cpu, 'plain') / med(cpu, 'plan'):.2f}x, "
          f"min {min(cpu['plain']) / min(cpu['plan']):.2f}x")


if __name__ == "__main__":
    main()
