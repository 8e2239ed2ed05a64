"""Whole-model speed and memory: tinydeeplab vs KerasHub on the pascalvoc-shaped DeepLabV3+ (ResNet50, 21 classes).

The model is ``build_model("resnet50", 21)`` (random weights), shaped exactly like KerasHub's
``deeplab_v3_plus_resnet50_pascalvoc`` preset: ResNet50 v1 bottleneck encoder, ASPP on P5 (rates
6/12/18), upsampling 8, low-level P2 projection 48. The KerasHub anchor is the same architecture
built from its classes (no preprocessor: inputs are model-ready float32).

Workloads (``--workloads``):

=========  ===========================================================================
infer1     inference, batch 1, 512x512 -> logits (1, 512, 512, 21)
infer4     inference, batch 4, 512x512
train512   one training step, batch 4, 512x512: forward (training mode), softmax
           cross-entropy (ignore label 255), backward, SGD momentum 0.9 update
train256   the same training step, batch 4, 256x256
=========  ===========================================================================

Frameworks (``--frameworks``): ``tinydeeplab`` and ``keras-tf`` / ``keras-jax`` / ``keras-torch``
(KerasHub with ``KERAS_BACKEND`` set to tensorflow / jax / torch); by default every Keras backend
installed for this interpreter. Keras inference is ``model.predict_on_batch(x)``, Keras training is
``model.train_on_batch(x, y)`` after ``compile(SGD(momentum=0.9), SparseCategoricalCrossentropy(
from_logits=True, ignore_class=255))``; tinydeeplab's step is what ``tinydeeplab.train.Trainer``
does per batch (``zero_grad`` included).

Every (framework, workload) pair runs in its own subprocess of this interpreter, so "peak RSS"
(``VmHWM``: model, activations, caches, framework runtime) belongs to that workload alone. Times
are medians of ``--repeats`` calls after warm-up calls (JIT compilation excluded; the first call's
time is reported separately). The frameworks take turns per workload so that background load
hits them alike. Errors (missing backend, out of memory, ...) are reported in the tables and do
not stop the other measurements.

    python benchmarks/bench_model.py                                  # everything (tens of minutes)
    python benchmarks/bench_model.py --workloads infer1 --repeats 2   # quick look
    python benchmarks/bench_model.py --frameworks tinydeeplab --profile --workloads train256
    python benchmarks/bench_model.py --json results.json             # also save every number

``--profile`` runs each tinydeeplab workload once more (after a warm-up call) with every
``<op>_forward`` / ``<op>_backward`` of the backend module and the forward/backward of every leaf
layer wrapped by a timer, and prints the time per op and the 15 most expensive layers.

Run it with an interpreter that has keras-hub installed (e.g. a separate virtualenv in which
tinydeeplab is installed editable) to get the Keras anchors; without keras-hub only tinydeeplab is
measured.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKLOADS = {
    "infer1": dict(kind="infer", batch=1, size=512),
    "infer4": dict(kind="infer", batch=4, size=512),
    "train512": dict(kind="train", batch=4, size=512),
    "train256": dict(kind="train", batch=4, size=256),
}
KERAS_BACKENDS = {"keras-tf": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
FRAMEWORKS = ("tinydeeplab", *KERAS_BACKENDS)
NUM_CLASSES, IGNORE_LABEL, LR, MOMENTUM = 21, 255, 0.01, 0.9
RESULT_TAG = "RESULT "


# =============================================================================================
# Shared helpers
# =============================================================================================
def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (``VmHWM``; ``ru_maxrss`` as a fallback)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB on Linux


def current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_batch(workload: dict, seed: int = 0):
    """Model-ready images (N, H, W, 3) float32 in [-1, 1) and labels (N, H, W) int32 with ~5% 255s."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n, s = workload["batch"], workload["size"]
    x = rng.uniform(-1.0, 1.0, size=(n, s, s, 3)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=(n, s, s)).astype(np.int32)
    y[rng.random(y.shape) < 0.05] = IGNORE_LABEL
    return x, y


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# =============================================================================================
# tinydeeplab side (worker)
# =============================================================================================
def to_host(a):
    """Glue for a device backend: bring an output array to the host (also waits for the device)."""
    if hasattr(a, "copy_to_host"):          # numba.cuda device array
        return a.copy_to_host()
    if hasattr(a, "get") and not isinstance(a, dict):   # cupy-like
        return a.get()
    return a


def build_tinydeeplab(device: str):
    """The pascalvoc-shaped model on ``device`` ("cpu" or "cuda"); returns ``(model, notes)``."""
    from tinydeeplab import backend
    from tinydeeplab.models.recipes import build_model

    notes = []
    backend.set_backend(device)                     # raises ImportError if the backend is missing
    model = build_model("resnet50", NUM_CLASSES, seed=0)
    if device != "cpu":
        if hasattr(model, "to"):
            model.to(device)
        else:
            notes.append(f"the model has no .to({device!r}): its parameters stay NumPy arrays on the host "
                         f"and the {device} ops receive host arrays")
    return model, notes


def tinydeeplab_step(model, workload: dict):
    """A zero-argument callable running one ``workload`` call, and a dict of phase timings it fills."""
    from tinydeeplab import backend
    from tinydeeplab.nn import inference_mode
    from tinydeeplab.train import SGD

    x, y = make_batch(workload)
    phases: dict[str, float] = {}
    if workload["kind"] == "infer":
        def infer():                                  # what predict() runs: no caches kept
            with inference_mode():
                out = to_host(model.forward(x, training=False))
            assert out.shape == (*x.shape[:3], NUM_CLASSES), out.shape
        return infer, phases

    opt = SGD(model, lr=LR, momentum=MOMENTUM)

    def train():
        t0 = time.perf_counter()
        logits = model.forward(x, training=True)                               # (N, H, W, K)
        t1 = time.perf_counter()
        ce = backend.ops()                                                     # looked up now (profiling)
        loss, cache = ce.softmax_cross_entropy_forward(logits, y, ignore_label=IGNORE_LABEL)
        dlogits = ce.softmax_cross_entropy_backward(1.0, cache)
        t2 = time.perf_counter()
        model.zero_grad()                                                      # as Trainer does
        model.backward(dlogits)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        phases.update(forward=t1 - t0, loss=t2 - t1, backward=t3 - t2, sgd=t4 - t3)
        assert loss == loss, "loss is NaN"
    return train, phases


class OpProfiler:
    """Wraps every ``*_forward`` / ``*_backward`` function of a backend module with a timer.

    Only the outermost op call is counted (an op calling another wrapped op is not counted twice).
    The original functions are put back on exit. ``sync`` (e.g. ``numba.cuda.synchronize``) is called
    before each clock reading so that asynchronous GPU work is charged to the op that launched it.
    """

    def __init__(self, module, sync=None):
        self.module = module
        self.sync = sync or (lambda: None)
        self.totals: dict[str, list] = {}          # name -> [seconds, calls]
        self._saved: dict[str, object] = {}
        self._depth = 0

    def _wrap(self, name, fn):
        def wrapper(*args, **kwargs):
            self._depth += 1
            if self._depth == 1:
                self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.sync()
                    entry = self.totals.setdefault(name, [0.0, 0])
                    entry[0] += time.perf_counter() - t0
                    entry[1] += 1
        return wrapper

    def __enter__(self):
        for name in dir(self.module):
            fn = getattr(self.module, name)
            if callable(fn) and (name.endswith("_forward") or name.endswith("_backward")):
                self._saved[name] = fn
                setattr(self.module, name, self._wrap(name, fn))
        return self

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(self.module, name, fn)
        return False


class LayerProfiler:
    """Times ``forward`` / ``backward`` of every leaf module (no children), keyed by dotted name.

    The wrappers are instance attributes shadowing the class methods; they are deleted on exit.
    """

    def __init__(self, model, sync=None):
        self.leaves = [(name, mod) for name, mod in model.modules() if not list(mod.children())]
        self.totals: dict[str, dict] = {}
        self.sync = sync or (lambda: None)

    def _wrap(self, name, mod, method):
        fn = getattr(mod, method)
        entry = self.totals.setdefault(name, {"type": type(mod).__name__, "forward": 0.0, "backward": 0.0})

        def wrapper(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                entry[method] += time.perf_counter() - t0
        object.__setattr__(mod, method, wrapper)

    def __enter__(self):
        for name, mod in self.leaves:
            for method in ("forward", "backward"):
                self._wrap(name, mod, method)
        return self

    def __exit__(self, *exc):
        for _, mod in self.leaves:
            for method in ("forward", "backward"):
                mod.__dict__.pop(method, None)
        return False


def profile_tinydeeplab(model, step, phases, sync=None) -> dict:
    """One profiled call of ``step`` (already warmed up): per-op and per-layer seconds (``sync``: see
    :class:`OpProfiler`)."""
    from tinydeeplab import backend

    with OpProfiler(backend.ops(), sync) as opp, LayerProfiler(model, sync) as lp:
        total = timed(step)
    return {"total_s": total, "phases": dict(phases),
            "ops": {k: {"seconds": v[0], "calls": v[1]} for k, v in opp.totals.items()},
            "layers": lp.totals}


# =============================================================================================
# KerasHub side (worker)
# =============================================================================================
KERAS_FULL = dict(
    encoder=dict(input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
                 stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2],
                 block_type="bottleneck_block"),
    backbone=dict(spatial_pyramid_pooling_key="P5", upsampling_size=8, dilation_rates=[6, 12, 18],
                  low_level_feature_key="P2", projection_filters=48),
)


def build_keras(threads: int):
    """The pascalvoc-shaped KerasHub segmenter (random weights, no preprocessor); returns ``(model, notes)``."""
    import keras
    import keras_hub

    notes = [f"keras {keras.__version__} backend {keras.backend.backend()}"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        notes.append(f"tf intra-op threads {threads}")
    elif keras.backend.backend() == "jax":
        import jax

        notes.append(f"jax devices {[str(d) for d in jax.devices()]}")
    elif keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
        notes.append(f"torch threads {threads} (CPU only)")
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ResNetBackbone(**KERAS_FULL["encoder"])
    backbone = keras_hub.models.DeepLabV3Backbone(image_encoder=encoder, **KERAS_FULL["backbone"])
    model = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=NUM_CLASSES, preprocessor=None)
    return model, notes


def keras_step(model, workload: dict, notes: list):
    """A zero-argument callable running one ``workload`` call in Keras."""
    import keras

    x, y = make_batch(workload)
    if workload["kind"] == "infer":
        def infer():
            out = model.predict_on_batch(x)
            assert tuple(out.shape) == (*x.shape[:3], NUM_CLASSES), out.shape
        return infer

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_LABEL),
                  metrics=[])   # [] not None: None keeps the CategoricalAccuracy KerasHub compiled in
    notes.append(f"jit_compile={model.jit_compile}")

    def train():
        loss = model.train_on_batch(x, y)
        assert loss == loss, "loss is NaN"
    return train


# =============================================================================================
# Worker: one (framework, workload) measurement in this process
# =============================================================================================
def pin_threads(threads: int) -> None:
    """Restrict this process to ``threads`` cores when fewer than all were asked for."""
    if threads < available_cores() and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)


def run_worker(spec: dict) -> dict:
    """Build the model, warm up, time ``repeats`` calls (or profile one); return the result dict."""
    pin_threads(spec["threads"])
    workload = WORKLOADS[spec["workload"]]
    rss_start = current_rss_mib()
    t0 = time.perf_counter()
    phases = {}
    if spec["framework"] == "tinydeeplab":
        sys.path.insert(0, str(REPO))              # run from a checkout without installing
        model, notes = build_tinydeeplab(spec["device"])
        step, phases = tinydeeplab_step(model, workload)
    else:
        model, notes = build_keras(spec["threads"])
        step = keras_step(model, workload, notes)
    build_s = time.perf_counter() - t0
    rss_model = current_rss_mib()

    first_s = timed(step)                          # JIT compile / graph tracing happens here
    for _ in range(spec["warmup"] - 1):
        step()
    if spec.get("profile"):
        return {"profile": profile_tinydeeplab(model, step, phases), "notes": notes}

    times, phase_samples = [], []
    for _ in range(spec["repeats"]):
        times.append(timed(step))
        if phases:
            phase_samples.append(dict(phases))
    result = {"times": times, "median_s": statistics.median(times), "min_s": min(times), "first_s": first_s,
              "build_s": build_s, "peak_rss_mib": peak_rss_mib(), "rss_start_mib": rss_start,
              "rss_model_mib": rss_model, "notes": notes}
    if phase_samples:
        result["phases_median_s"] = {k: statistics.median(p[k] for p in phase_samples) for k in phase_samples[0]}
    return result


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = run_worker(spec)
    print(RESULT_TAG + json.dumps(result), flush=True)


# =============================================================================================
# Orchestrator
# =============================================================================================
def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024**2
    dists = ["numpy", "numba", "keras", "keras-hub", "tensorflow", "jax", "jaxlib", "torch"]
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": available_cores(), "ram_gib": ram_gib,
            "python": platform.python_version(), "interpreter": sys.executable,
            "versions": {d: version(d) for d in dists if version(d)},
            "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def installed_keras_frameworks() -> tuple[list[str], str | None]:
    """Keras frameworks whose backend is installed; and why none are, if so."""
    if importlib.util.find_spec("keras_hub") is None:
        return [], f"keras_hub is not importable with {sys.executable}"
    found = [fw for fw, mod in KERAS_BACKENDS.items() if importlib.util.find_spec(mod) is not None]
    return found, None if found else "keras_hub is installed but none of tensorflow, jax, torch is"


def worker_env(framework: str, threads: int) -> dict:
    env = dict(os.environ)
    env.update(NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # what tinydeeplab.kernels.cpu sets itself
    if framework in KERAS_BACKENDS:
        env["KERAS_BACKEND"] = KERAS_BACKENDS[framework]
    return env


def error_summary(proc: subprocess.CompletedProcess) -> str:
    """A one-line reason for a failed worker."""
    if proc.returncode < 0:
        sig = -proc.returncode
        return f"killed by signal {sig}" + (" (out of memory?)" if sig == 9 else "")
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
    for ln in reversed(lines):                        # the exception line of the traceback
        if ("Error" in ln or "Exception" in ln) and not ln.startswith("File "):
            return ln[:400]
    return (lines[-1][:400] if lines else f"exit status {proc.returncode}")


def run_measurement(framework: str, workload: str, args, profile: bool = False) -> dict:
    """Run one worker subprocess; returns its result dict or ``{"error": ...}``."""
    kind = WORKLOADS[workload]["kind"]
    spec = {"framework": framework, "workload": workload, "threads": args.threads, "device": args.backend,
            "repeats": args.repeats or (5 if kind == "infer" else 3),
            "warmup": args.warmup or (2 if kind == "infer" else 1), "profile": profile}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=worker_env(framework, args.threads), capture_output=True, text=True,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if args.verbose and proc.stderr:
        sys.stderr.write(proc.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["wall_s"] = wall
            return result
    return {"error": error_summary(proc), "wall_s": wall}


def progress_line(i: int, n: int, framework: str, workload: str, r: dict) -> str:
    head = f"[{i}/{n}] {workload:9s} {framework:12s}"
    if "error" in r:
        return f"{head} ERROR: {r['error']}  ({r['wall_s']:.0f} s)"
    return (f"{head} median {r['median_s']:.3f} s  (min {r['min_s']:.3f}, n={len(r['times'])}, "
            f"first call {r['first_s']:.2f} s)  peak RSS {r['peak_rss_mib']:.0f} MiB  ({r['wall_s']:.0f} s wall)")


# --------------------------------------------------------------------------------------------- tables
def fmt_s(r: dict | None) -> str:
    if r is None:
        return "-"
    return "ERR" if "error" in r else f"{r['median_s']:.3f}"


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "error" in a or "error" in b:
        return "-"
    return f"{a['median_s'] / b['median_s']:.2f}"


def print_tables(results: dict, workloads: list[str], frameworks: list[str]) -> None:
    """Time table with tinydeeplab/Keras ratios, a memory table, per-measurement details, errors."""
    keras_fws = [fw for fw in frameworks if fw != "tinydeeplab"]
    print("\n## Median time per call (s) and tinydeeplab / Keras time ratios (> 1: tinydeeplab slower)\n")
    head = ["workload", *frameworks, *(f"tdl / {fw}" for fw in keras_fws)]
    if keras_fws:
        head.append("tdl / fastest Keras")
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for wl in workloads:
        row = results.get(wl, {})
        tdl = row.get("tinydeeplab")
        cells = [wl, *(fmt_s(row.get(fw)) for fw in frameworks), *(ratio(tdl, row.get(fw)) for fw in keras_fws)]
        if keras_fws:
            ok = [(row[fw]["median_s"], fw) for fw in keras_fws if fw in row and "error" not in row[fw]]
            cells.append(f"{ratio(tdl, row[min(ok)[1]])} ({min(ok)[1]})" if ok and tdl and "error" not in tdl
                         else "-")
        print("| " + " | ".join(cells) + " |")

    print("\n## Peak resident memory per workload (MiB, VmHWM of its own process)\n")
    print("| workload | " + " | ".join(frameworks) + " |")
    print("|---|" + "---:|" * len(frameworks))
    for wl in workloads:
        row = results.get(wl, {})
        cells = []
        for fw in frameworks:
            r = row.get(fw)
            cells.append("-" if r is None else "ERR" if "error" in r else f"{r['peak_rss_mib']:.0f}")
        print(f"| {wl} | " + " | ".join(cells) + " |")

    print("\n## Details\n")
    print("| workload | framework | median s | min s | images/s | first call s | build s | RSS after build MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    errors = []
    for wl, fw, r in measured(results, workloads, frameworks, errors):
        ips = WORKLOADS[wl]["batch"] / r["median_s"]
        print(f"| {wl} | {fw} | {r['median_s']:.3f} | {r['min_s']:.3f} | {ips:.2f} | {r['first_s']:.2f} | "
              f"{r['build_s']:.1f} | {r['rss_model_mib']:.0f} |")
    phase_rows = [(wl, results[wl]["tinydeeplab"]["phases_median_s"]) for wl in workloads
                  if "phases_median_s" in results.get(wl, {}).get("tinydeeplab", {})]
    if phase_rows:
        print("\ntinydeeplab training-step phases (median s): "
              + "; ".join(f"{wl}: " + ", ".join(f"{k} {v:.2f}" for k, v in ph.items()) for wl, ph in phase_rows))
    print_notes_and_errors(results, workloads, errors)


def measured(results: dict, workloads, frameworks, errors: list):
    """``(workload, framework, result)`` of every successful measurement; failures go to ``errors``."""
    for wl in workloads:
        for fw in frameworks:
            r = results.get(wl, {}).get(fw)
            if r is None:
                continue
            if "error" in r:
                errors.append(f"- {wl} / {fw}: {r['error']}")
                continue
            yield wl, fw, r


def print_notes_and_errors(results: dict, workloads, errors: list) -> None:
    notes = sorted({f"- {fw}: {n}" for wl in workloads for fw, r in results.get(wl, {}).items()
                    for n in r.get("notes", [])})
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    if errors:
        print("\nErrors:\n" + "\n".join(errors))


def print_profile(workload: str, prof: dict) -> None:
    """Per-op forward/backward totals and the 15 most expensive leaf layers of one profiled call."""
    total = prof["total_s"]
    print(f"\n## Profile: tinydeeplab {workload} (one call, {total:.3f} s with timers)\n")
    if prof.get("phases"):
        print("phases: " + ", ".join(f"{k} {v:.3f} s" for k, v in prof["phases"].items()) + "\n")
    ops = {}
    for name, v in prof["ops"].items():
        op, half = name.rsplit("_", 1)
        ops.setdefault(op, {})[half] = v
    empty = {"seconds": 0.0, "calls": 0}
    has_backward = any(h == "backward" for h in (n.rsplit("_", 1)[1] for n in prof["ops"]))
    halves = ("forward", "backward") if has_backward else ("forward",)
    print("| op | " + " | ".join(f"{h} ms | calls" for h in halves) + " | share of call |")
    print("|---|" + "---:|---:|" * len(halves) + "---:|")
    op_sum = 0.0
    for op, entry in sorted(ops.items(), key=lambda kv: -sum(h["seconds"] for h in kv[1].values())):
        s = sum(h["seconds"] for h in entry.values())
        op_sum += s
        cells = " | ".join(f"{entry.get(h, empty)['seconds'] * 1e3:.1f} | {entry.get(h, empty)['calls']}"
                           for h in halves)
        print(f"| {op} | {cells} | {100 * s / total:.1f}% |")
    print("| (outside the ops: Python glue, plain NumPy, zero_grad, SGD) |" + " |" * (2 * len(halves))
          + f" {100 * (total - op_sum) / total:.1f}% |")
    layers = sorted(prof["layers"].items(), key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"]))
    print("\nTop 15 layers by time:\n")
    print("| layer | type | forward ms | backward ms | total ms | share |")
    print("|---|---|---:|---:|---:|---:|")
    for name, v in layers[:15]:
        s = v["forward"] + v["backward"]
        print(f"| {name} | {v['type']} | {v['forward'] * 1e3:.1f} | {v['backward'] * 1e3:.1f} | {s * 1e3:.1f} | "
              f"{100 * s / total:.1f}% |")


def print_machine(info: dict, args, frameworks: list[str]) -> None:
    v = ", ".join(f"{k} {val}" for k, val in info["versions"].items())
    print(f"# machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
          f"{info['ram_gib']:.1f} GiB RAM, Python {info['python']} ({info['interpreter']})")
    print(f"# versions: {v}")
    load = info["loadavg_start"]
    print(f"# load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else "# load average: n/a")
    print(f"# threads {args.threads} (Numba threads / BLAS / TF intra-op; cores pinned if fewer than all), "
          f"tinydeeplab backend {args.backend!r}, model resnet50 DeepLabV3+ 21 classes, float32")
    print(f"# frameworks: {', '.join(frameworks)}; repeats "
          f"{args.repeats or '5 (inference) / 3 (training)'}, warm-up "
          f"{args.warmup or '2 (inference) / 1 (training)'}")


def choose_frameworks(args) -> tuple[list[str], str | None]:
    """The frameworks to measure, and why the Keras anchors are skipped (None if they are not)."""
    if args.frameworks:
        return args.frameworks, None
    installed, why_not = installed_keras_frameworks()
    return ["tinydeeplab", *installed], why_not


def orchestrate(args) -> None:
    frameworks, why_no_keras = choose_frameworks(args)
    info = machine_info()
    print_machine(info, args, frameworks)
    if why_no_keras:
        print(f"# Keras anchors skipped: {why_no_keras}")
    if args.backend != "cpu" and "tinydeeplab" in frameworks and len(frameworks) > 1:
        print(f"# note: tinydeeplab runs on backend {args.backend!r}; the Keras anchors run on their default "
              f"devices (CPU here unless the backend finds a GPU)")
    print(flush=True)

    results: dict[str, dict] = {}
    n, i = len(args.workloads) * len(frameworks), 0
    for wl in args.workloads:                                  # frameworks take turns per workload
        for fw in frameworks:
            i += 1
            r = run_measurement(fw, wl, args)
            results.setdefault(wl, {})[fw] = r
            print(progress_line(i, n, fw, wl, r), flush=True)

    profiles = {}
    if args.profile and "tinydeeplab" in frameworks:
        for wl in args.workloads:
            r = run_measurement("tinydeeplab", wl, args, profile=True)
            if "error" in r:
                print(f"[profile] {wl}: ERROR: {r['error']}", flush=True)
                profiles[wl] = r
            else:
                profiles[wl] = r["profile"]
                print(f"[profile] {wl}: done ({r['wall_s']:.0f} s wall)", flush=True)

    print_tables(results, args.workloads, frameworks)
    for wl, prof in profiles.items():
        if "error" not in prof:
            print_profile(wl, prof)
    if hasattr(os, "getloadavg"):
        print("\n# load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.json:
        info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "worker"},
               "workloads": {wl: WORKLOADS[wl] for wl in args.workloads}, "results": results,
               "profiles": profiles}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"# results written to {args.json}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Workloads: " + ", ".join(
                                         f"{k} ({v['kind']} batch {v['batch']} at {v['size']}x{v['size']})"
                                         for k, v in WORKLOADS.items()))
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS),
                        help="which workloads to measure (default: all)")
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=None,
                        help="default: tinydeeplab and every Keras backend installed for this interpreter")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement (default 5 for inference, 3 for training)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls before timing, the first one compiles (default 2 inference, 1 training)")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="threads per framework: Numba threads, BLAS, TF intra-op; fewer than all cores "
                             "also pins the process to that many cores (default: all usable cores)")
    parser.add_argument("--backend", choices=["cpu", "cuda"], default="cpu", help="tinydeeplab's backend")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each tinydeeplab workload once: time per op and the top 15 layers")
    parser.add_argument("--json", metavar="OUT", help="save machine info, every timing and the profiles as JSON")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per measurement subprocess")
    parser.add_argument("--verbose", action="store_true", help="pass the subprocesses' stderr through")
    parser.add_argument("--worker", help=argparse.SUPPRESS)    # internal: one measurement, JSON spec
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.warmup is not None and args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first call compiles)")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
