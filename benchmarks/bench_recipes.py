"""Training speed of the from-scratch recipes at a crop: images/s of one SGD step (what the Trainer does).

One step = forward (training mode) -> softmax cross-entropy (ignore 255) -> zero_grad -> backward ->
global-norm clipping at 5 -> SGD momentum 0.9 with weight decay. Random images and labels, batch
``--batch-size`` at ``--crop``; the first step (Numba compilation) is not timed; the median of ``--steps``
steps is reported together with the epoch time it implies for ``--epoch-images`` images and the epochs that
fit into ``--budget-h`` hours of training. Wall time depends on what else runs; the CPU time of the step
(all threads) does much less, and ``CPU s / --cores`` estimates the step on an idle machine (an upper bound of
the speed: it assumes both cores busy throughout, so the epoch and epoch-count columns are optimistic).

    python benchmarks/bench_recipes.py --recipes small medium --output-strides 16 8 --crop 256 352

The machine's other jobs slow every step alike; run the candidates in one invocation to compare them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinydeeplab.backend import ops  # noqa: E402
from tinydeeplab.models.recipes import build_model  # noqa: E402
from tinydeeplab.train.optim import SGD, clip_grad_norm  # noqa: E402


def step_seconds(model, x, y, steps: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``steps`` training steps after one untimed warm-up step."""
    ce, sgd = ops(), SGD(model, 0.01, momentum=0.9, weight_decay=1e-4)
    times = []
    for i in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        logits = model.forward(x, training=True)                                   # (N, H, W, K)
        _, cache = ce.softmax_cross_entropy_forward(logits, y, ignore_label=255)
        model.zero_grad()
        model.backward(ce.softmax_cross_entropy_backward(1.0, cache))
        clip_grad_norm(model, 5.0)
        sgd.step()
        if i:
            times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["medium"])
    p.add_argument("--output-strides", type=int, nargs="+", default=[16, 8])
    p.add_argument("--crop", type=int, nargs=2, default=(256, 352))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--epoch-images", type=int, default=367, help="images per epoch (CamVid train: 367)")
    p.add_argument("--budget-h", type=float, default=2.5, help="training budget in hours")
    p.add_argument("--cores", type=int, default=2, help="cores of an idle machine, for the idle estimate")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    h, w = args.crop
    x = rng.uniform(-1, 1, (args.batch_size, h, w, 3)).astype(np.float32)
    y = rng.integers(0, args.num_classes, (args.batch_size, h, w)).astype(np.int32)
    print(f"batch {args.batch_size} at {h}x{w}, {args.num_classes} classes, median of {args.steps} steps")
    print(f"{'recipe':10s} {'OS':>3s} {'parameters':>11s} {'s/step':>7s} {'images/s':>9s} {'CPU s/step':>10s} "
          f"{'idle images/s':>13s} {'s/epoch':>8s} {'epochs in ' + format(args.budget_h, 'g') + ' h':>14s}")
    for name in args.recipes:
        for stride in args.output_strides:
            model = build_model(name, args.num_classes, output_stride=stride)
            times = step_seconds(model, x, y, args.steps)
            sec = statistics.median(t for t, _ in times)
            cpu = statistics.median(c for _, c in times)
            idle = args.batch_size / (cpu / args.cores)     # if the step kept all cores busy on its own
            epoch = args.epoch_images / idle
            print(f"{name:10s} {stride:3d} {model.num_parameters():11,d} {sec:7.2f} {args.batch_size / sec:9.2f} "
                  f"{cpu:10.2f} {idle:13.2f} {epoch:8.0f} {args.budget_h * 3600 / epoch:14.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
