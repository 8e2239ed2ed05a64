"""GPU speed: tinydeeplab's Numba CUDA backend vs the same DeepLabV3+ in plain PyTorch on the same GPU.

The model is the pascalvoc-shaped DeepLabV3+ (ResNet50, 21 classes) of ``bench_model.py``; the PyTorch
twin is :mod:`torch_deeplab` (plain ``torch.nn``, NCHW, cuDNN with ``benchmark=True``), loaded with the
tinydeeplab model's weights.

Workloads (``--workloads``):

=========  ==========================================================================================
infer8     inference, batch 8, 512x512, input already on the GPU, logits left there
infer1     inference, batch 1, 512x512, likewise
train8     one training step, batch 8, 512x512: images and labels copied from the host (as a training
           loop does), forward in training mode, softmax cross-entropy (ignore 255), backward, SGD
           momentum 0.9
=========  ==========================================================================================

Frameworks (``--frameworks``): ``tinydeeplab`` (``backend="cuda"``), ``torch-fp32`` (TF32 off for both
matmul and cuDNN: true float32 products) and ``torch-tf32`` (TF32 on: tensor cores, 10-bit mantissa
products). Every (framework, workload) pair runs in its own subprocess. Each call is bracketed by a
device synchronisation; times are medians of ``--repeats`` calls after ``--warmup`` calls (compilation
and cuDNN autotuning happen there). "peak device MiB" is the highest device-wide memory use NVML saw
(polled every millisecond, CUDA context included) minus the use before the process touched the GPU.

``--check`` (on by default) first runs both models with the same weights on one batch (2 x 256 x 256,
TF32 off) and prints the largest difference of the float32 logits, and in float64 the training loss and
every parameter's gradient: the timings compare equal computations.

    python benchmarks/bench_gpu.py                                   # everything, a few minutes
    python benchmarks/bench_gpu.py --workloads train8 --profile      # where tinydeeplab's time goes
    python benchmarks/bench_gpu.py --json docs/data/bench_gpu.json
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/bench_gpu.py --count-launches   # launches per call, no GPU needed

``--count-launches`` only counts tinydeeplab's kernel launches per call of each workload (at
``--launch-size``, default 64x64: the count follows the layers, not the image size), after one
uncounted call, with :func:`tinydeeplab.kernels.cuda.launches.count_launches` (kernels not executed).

Needs a CUDA GPU, ``numba-cuda`` and (for the reference) ``torch``; the run stops with a one-line reason
when one is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import bench_model as bm

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "infer8": dict(kind="infer", batch=8, size=512),
    "infer1": dict(kind="infer", batch=1, size=512),
    "train8": dict(kind="train", batch=8, size=512),
}
FRAMEWORKS = ("tinydeeplab", "torch-fp32", "torch-tf32")
CHECK = dict(kind="train", batch=2, size=256)


# =============================================================================================
# Device helpers
# =============================================================================================
class DeviceMemoryPeak:
    """Device-wide memory use (MiB) above the use when this object was made, as NVML reports it.

    Make it before the process touches the GPU; ``start()`` a thread that polls every millisecond (only
    around an untimed call: the thread competes for the GIL with the launching thread), ``peak_mib()``."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s, self.peak, self.base, self.error = interval_s, 0, None, None
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used
            self.base = self.peak = self._used()
        except Exception as err:                       # no NVML: memory is reported as unknown
            self.error = f"NVML unavailable ({type(err).__name__}: {err})"

    def start(self):
        if self.base is not None:
            threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            time.sleep(self.interval_s)

    def peak_mib(self):
        if self.base is None:
            return None
        self.peak = max(self.peak, self._used())
        return (self.peak - self.base) / 2**20

    def stop(self):
        self._stop.set()


def make_batch(workload: dict, seed: int = 0):
    return bm.make_batch(dict(batch=workload["batch"], size=workload["size"]), seed)


# =============================================================================================
# The two frameworks (worker side)
# =============================================================================================
def build_tinydeeplab():
    """The pascalvoc-shaped model with its parameters on the GPU, and the synchronising function."""
    from numba import cuda

    sys.path.insert(0, str(HERE.parent))
    model, notes = bm.build_tinydeeplab("cuda")
    name = cuda.get_current_device().name
    name = name.decode() if isinstance(name, bytes) else name
    notes.append(f"numba {bm.version('numba')}, numba-cuda {bm.version('numba-cuda')}, GPU {name}")
    return model, cuda.synchronize, notes


def tinydeeplab_step(model, workload: dict, check: bool = True):
    """One call of ``workload`` on tinydeeplab's cuda backend, and the phase timings it fills (``check``:
    assert the output shape and a finite loss; off when counting launches without running the kernels)."""
    from numba import cuda

    from tinydeeplab import backend
    from tinydeeplab.nn import inference_mode
    from tinydeeplab.train import SGD

    x, y = make_batch(workload)
    ops = backend.ops()
    phases: dict[str, float] = {}
    if workload["kind"] == "infer":
        xd = ops.to_device(x)

        def infer():
            with inference_mode():
                out = model.forward(xd, training=False)                         # device in, device out
            assert not check or tuple(out.shape) == (*x.shape[:3], bm.NUM_CLASSES)
        return infer, phases

    opt = SGD(model, lr=bm.LR, momentum=bm.MOMENTUM)

    def train():
        t0 = time.perf_counter()
        logits = model.forward(ops.to_device(x), training=True)               # what Trainer does per batch
        cuda.synchronize()
        t1 = time.perf_counter()
        ce = backend.ops()                                                    # looked up now (profiling)
        loss, cache = ce.softmax_cross_entropy_forward(logits, y, ignore_label=bm.IGNORE_LABEL)
        dlogits = ce.softmax_cross_entropy_backward(1.0, cache)
        cuda.synchronize()
        t2 = time.perf_counter()
        model.zero_grad()
        model.backward(dlogits)
        cuda.synchronize()
        t3 = time.perf_counter()
        opt.step()
        cuda.synchronize()
        phases.update(forward=t1 - t0, loss=t2 - t1, backward=t3 - t2, sgd=time.perf_counter() - t3)
        assert not check or loss == loss, "loss is NaN"
    return train, phases


def build_torch(tf32: bool, state=None):
    """The plain-torch twin on the GPU (weights from a tinydeeplab state dict, else a fresh tinydeeplab
    build with the same seed), and the synchronising function."""
    import torch
    import torch_deeplab

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    if state is None:
        sys.path.insert(0, str(HERE.parent))
        from tinydeeplab.models.recipes import build_model

        state = build_model("resnet50", bm.NUM_CLASSES, seed=0).state_dict()
    net = torch_deeplab.DeepLabV3Plus(bm.NUM_CLASSES)
    with torch.no_grad():
        torch_deeplab.load_from_tinydeeplab(net, state)
    notes = [f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
             f"GPU {torch.cuda.get_device_name(0)}, NCHW, cudnn.benchmark=True"]
    return net.cuda(), torch.cuda.synchronize, notes


def torch_step(net, workload: dict):
    """One call of ``workload`` on the torch twin on the GPU (:func:`torch_deeplab.make_step`)."""
    import torch_deeplab

    x, y = make_batch(workload)
    return torch_deeplab.make_step(net, x, y, workload["kind"], device="cuda", lr=bm.LR, momentum=bm.MOMENTUM,
                                   ignore_index=bm.IGNORE_LABEL), {}


def count_launches_per_call(workloads, size: int = 64, execute: bool = False) -> dict:
    """``{workload: Counter(kernel name -> launches)}`` of one tinydeeplab call of each workload (its batch,
    images ``size`` x ``size``), counted after one uncounted call. ``execute=False`` counts without running
    the kernels (:mod:`tinydeeplab.kernels.cuda.launches`: same count, seconds on the simulator)."""
    from tinydeeplab.kernels.cuda.launches import count_launches

    model, _ = bm.build_tinydeeplab("cuda")
    counts = {}
    for wl in workloads:
        step, _ = tinydeeplab_step(model, dict(WORKLOADS[wl], size=size), check=execute)
        with count_launches(execute=execute):
            step()                                            # first call: lazily made buffers
        with count_launches(execute=execute) as c:
            step()
        counts[wl] = c
    return counts


def print_launch_counts(counts: dict, size: int, top: int = 8) -> None:
    from tinydeeplab.kernels.cuda.device import SIMULATED

    where = ("CUDA simulator: automatic split-K off, on a GPU each split GEMM adds one launch" if SIMULATED
             else "GPU")
    print(f"# kernel launches per call at {size}x{size} ({where})")
    for wl, c in counts.items():
        print(f"{wl}: {sum(c.values())} launches; most launched: "
              + ", ".join(f"{name} {n}" for name, n in c.most_common(top)))


# =============================================================================================
# Worker: one measurement, or the equivalence check
# =============================================================================================
def run_worker(spec: dict) -> dict:
    mem = DeviceMemoryPeak()                                  # baseline before this process uses the GPU
    workload = WORKLOADS[spec["workload"]]
    t0 = time.perf_counter()
    if spec["framework"] == "tinydeeplab":
        model, sync, notes = build_tinydeeplab()
        step, phases = tinydeeplab_step(model, workload)
    else:
        model, sync, notes = build_torch(tf32=spec["framework"] == "torch-tf32")
        step, phases = torch_step(model, workload)
    build_s = time.perf_counter() - t0

    def call():
        sync()
        t = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - t

    first_s = call()
    for _ in range(spec["warmup"] - 1):
        call()
    if spec.get("profile"):
        prof = bm.profile_tinydeeplab(model, lambda: (sync(), step(), sync()), phases, sync=sync)
        return {"profile": prof, "notes": notes}
    if spec.get("host_profile"):
        return {"host_profile": host_profile(call), "notes": notes}
    times, phase_samples = [], []
    for _ in range(spec["repeats"]):
        times.append(call())
        if phases:
            phase_samples.append(dict(phases))
    mem.start()                         # polled during one more, untimed call only
    call()
    if spec["framework"] == "tinydeeplab":
        from tinydeeplab.kernels.cuda import allocator

        st = allocator.stats()
        notes.append(f"caching allocator {'on' if st['hits'] + st['misses'] else 'off'}: "
                     f"{st['cached_bytes'] / 2**20:.0f} MiB cached at the end")
    result = {"times": times, "median_s": statistics.median(times), "min_s": min(times), "first_s": first_s,
              "build_s": build_s, "peak_device_mib": mem.peak_mib(), "peak_rss_mib": bm.peak_rss_mib(),
              "notes": notes + ([mem.error] if mem.error else [])}
    if phase_samples:
        result["phases_median_s"] = {k: statistics.median(p[k] for p in phase_samples) for k in phase_samples[0]}
    mem.stop()
    return result


def host_profile(call, top: int = 30) -> str:
    """cProfile of one call: where the *host* spends its time (Python glue, kernel launches, allocation)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    call()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def run_check() -> dict:
    """Same weights, same batch, on the GPU: float32 inference logits (TF32 off), then in float64 the
    training-mode loss and every parameter's gradient (float64 separates a real difference from the
    float32 round-off that a deep random-weight network amplifies)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torch_deeplab

    from tinydeeplab import backend
    from tinydeeplab.models.recipes import build_model
    from tinydeeplab.nn import inference_mode

    model, sync, notes = build_tinydeeplab()
    state = {k: np.asarray(backend.to_numpy(v)) for k, v in model.state_dict().items()}
    net, _, tnotes = build_torch(tf32=False, state=state)
    x, y = make_batch(CHECK, seed=1)
    ops = backend.ops()
    to_nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy()).cuda()  # noqa: E731
    with inference_mode():
        z_tdl = ops.to_host(model.forward(ops.to_device(x), training=False))          # (N, H, W, K)
    net.eval()
    with torch.no_grad():
        z_torch = net(to_nchw(x)).permute(0, 2, 3, 1).cpu().numpy()

    model64 = build_model("resnet50", bm.NUM_CLASSES, seed=0).astype(np.float64).to("cuda")
    net64 = net.double()
    x64 = x.astype(np.float64)
    logits = model64.forward(ops.to_device(x64), training=True)
    loss_tdl, cache = ops.softmax_cross_entropy_forward(logits, y, ignore_label=bm.IGNORE_LABEL)
    model64.zero_grad()
    model64.backward(ops.softmax_cross_entropy_backward(1.0, cache))
    grads_tdl = {k: np.asarray(backend.to_numpy(g)) for k, g in model64.named_gradients()}
    net64.train()
    labels = torch.from_numpy(y.astype("int64")).cuda()
    loss_torch = F.cross_entropy(net64(to_nchw(x64)), labels, ignore_index=bm.IGNORE_LABEL)
    loss_torch.backward()
    grads_torch = torch_deeplab.gradients_as_tinydeeplab(net64, grads_tdl)
    rel = {k: float(np.linalg.norm(grads_tdl[k] - grads_torch[k]) / max(np.linalg.norm(grads_torch[k]), 1e-300))
           for k in grads_tdl}
    worst = max(rel, key=rel.get)
    return {"logits_max_abs_diff": float(np.abs(z_tdl - z_torch).max()), "logits_max_abs": float(np.abs(z_torch).max()),
            "loss_tinydeeplab": loss_tdl, "loss_torch": float(loss_torch.item()),
            "gradients_compared": len(rel), "grad_rel_err_max": rel[worst], "grad_rel_err_worst": worst,
            "grad_rel_err_median": statistics.median(rel.values()), "notes": notes + tnotes}


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = run_check() if spec.get("check") else run_worker(spec)
    print(bm.RESULT_TAG + json.dumps(result), flush=True)


# =============================================================================================
# Orchestrator
# =============================================================================================
def run_subprocess(spec: dict, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s", "wall_s": time.perf_counter() - t0}
    if args.verbose and proc.stderr:
        sys.stderr.write(proc.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(bm.RESULT_TAG):
            return dict(json.loads(line[len(bm.RESULT_TAG):]), wall_s=time.perf_counter() - t0)
    return {"error": bm.error_summary(proc), "wall_s": time.perf_counter() - t0}


def print_check(c: dict) -> None:
    if "error" in c:
        print(f"# equivalence check: ERROR: {c['error']}")
        return
    print(f"# equivalence check (batch {CHECK['batch']}, {CHECK['size']}x{CHECK['size']}, same weights, TF32 off): "
          f"float32 logits max |diff| {c['logits_max_abs_diff']:.2e} (max |logit| {c['logits_max_abs']:.2f}); "
          f"float64 loss {c['loss_tinydeeplab']:.12f} vs {c['loss_torch']:.12f}; {c['gradients_compared']} gradients, "
          f"relative error median {c['grad_rel_err_median']:.1e}, max {c['grad_rel_err_max']:.1e} "
          f"({c['grad_rel_err_worst']})")


def print_tables(results: dict, workloads, frameworks) -> None:
    refs = [fw for fw in frameworks if fw != "tinydeeplab"]
    head = ["workload", *(f"{fw} s" for fw in frameworks), *(f"tdl / {fw}" for fw in refs)]
    print("\n## Median time per call (s) and tinydeeplab / PyTorch ratios (> 1: tinydeeplab slower)\n")
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for wl in workloads:
        row = results.get(wl, {})
        cells = [wl, *(bm.fmt_s(row.get(fw)) for fw in frameworks),
                 *(bm.ratio(row.get("tinydeeplab"), row.get(fw)) for fw in refs)]
        print("| " + " | ".join(cells) + " |")
    print("\n## Details\n")
    print("| workload | framework | median s | min s | images/s | first call s | peak device MiB | host peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    errors = []
    for wl, fw, r in bm.measured(results, workloads, frameworks, errors):
        dev = r.get("peak_device_mib")
        print(f"| {wl} | {fw} | {r['median_s']:.4f} | {r['min_s']:.4f} | {WORKLOADS[wl]['batch'] / r['median_s']:.1f} "
              f"| {r['first_s']:.2f} | {'-' if dev is None else f'{dev:.0f}'} | {r['peak_rss_mib']:.0f} |")
    for wl in workloads:
        ph = results.get(wl, {}).get("tinydeeplab", {}).get("phases_median_s")
        if ph:
            print(f"\ntinydeeplab {wl} phases (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in ph.items()))
    bm.print_notes_and_errors(results, workloads, errors)


def orchestrate(args) -> None:
    info = bm.machine_info()
    info["versions"].update({d: bm.version(d) for d in ("numba-cuda", "nvidia-ml-py") if bm.version(d)})
    print(f"# machine: {info['cpu']}, {info['cores']} cores; versions: "
          + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"# frameworks {', '.join(args.frameworks)}; repeats {args.repeats}, warm-up {args.warmup}", flush=True)
    out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "worker"}, "results": {}}
    if args.check:
        out["check"] = run_subprocess({"check": True}, args)
        print_check(out["check"])
    n, i = len(args.workloads) * len(args.frameworks), 0
    for wl in args.workloads:
        for fw in args.frameworks:
            i += 1
            spec = {"framework": fw, "workload": wl, "repeats": args.repeats, "warmup": args.warmup}
            r = run_subprocess(spec, args)
            out["results"].setdefault(wl, {})[fw] = r
            print(f"[{i}/{n}] {wl} {fw}: " + (f"ERROR {r['error']}" if "error" in r else
                  f"median {r['median_s']:.4f} s, first {r['first_s']:.2f} s ({r['wall_s']:.0f} s wall)"), flush=True)
    if args.profile:
        out["profiles"] = {}
        for wl in args.workloads:
            r = run_subprocess({"framework": "tinydeeplab", "workload": wl, "repeats": 1, "warmup": args.warmup,
                                "profile": True}, args)
            out["profiles"][wl] = r.get("profile", r)
    if args.host_profile:
        for wl in args.workloads:
            r = run_subprocess({"framework": "tinydeeplab", "workload": wl, "repeats": 1, "warmup": args.warmup,
                                "host_profile": True}, args)
            print(f"\n## Host profile (cProfile, one call): tinydeeplab {wl}\n")
            print(r.get("host_profile", r.get("error")))
    print_tables(out["results"], args.workloads, args.frameworks)
    for wl, prof in out.get("profiles", {}).items():
        if "error" in prof:
            print(f"\n[profile] {wl}: ERROR {prof['error']}")
        else:
            bm.print_profile(wl, prof)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"# results written to {args.json}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=["infer8", "train8"])
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first; the first compiles (default 3)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the equivalence check")
    p.add_argument("--profile", action="store_true", help="also time every tinydeeplab op (synchronised)")
    p.add_argument("--host-profile", action="store_true", help="also cProfile one tinydeeplab call per workload")
    p.add_argument("--json", metavar="OUT", help="save every number as JSON")
    p.add_argument("--count-launches", action="store_true",
                   help="only count tinydeeplab's kernel launches per call of each workload (no timing, no torch; "
                        "works under NUMBA_ENABLE_CUDASIM=1)")
    p.add_argument("--launch-size", type=int, default=64, help="image side for --count-launches (default 64)")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per subprocess")
    p.add_argument("--verbose", action="store_true", help="pass the subprocesses' stderr through")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 1:
        p.error("--repeats and --warmup must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    if args.count_launches:
        sys.path.insert(0, str(HERE.parent))
        print_launch_counts(count_launches_per_call(args.workloads, args.launch_size), args.launch_size)
        return
    missing = [m for m in ("numba.cuda", "torch") if not _importable(m)]
    if missing:
        sys.exit(f"bench_gpu: {', '.join(missing)} not importable with {sys.executable}")
    orchestrate(args)


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


if __name__ == "__main__":
    main()
