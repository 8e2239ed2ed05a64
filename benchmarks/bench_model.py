"""Whole-model speed and memory on the CPU: tinydeeplab vs PyTorch, ONNX Runtime and KerasHub on the
pascalvoc-shaped DeepLabV3+ (ResNet50, 21 classes), with the floor the multiply-adds set.

The model is ``build_model("resnet50", 21, seed=0)``, shaped exactly like KerasHub's
``deeplab_v3_plus_resnet50_pascalvoc`` preset: ResNet50 v1 bottleneck encoder, ASPP on P5 (rates
6/12/18), upsampling 8, low-level P2 projection 48 (``--model`` picks another recipe: tinydeeplab and
``onnxruntime-tdl`` only).

Workloads (``--workloads``; ``--size`` overrides the image side of all):

=========  ===========================================================================
infer1     inference, batch 1, 512x512 -> logits (1, 512, 512, 21)
infer4     inference, batch 4, 512x512
train512   one training step, batch 4, 512x512: forward (training mode), softmax
           cross-entropy (ignore label 255), backward, SGD momentum 0.9 update
train256   the same training step, batch 4, 256x256
=========  ===========================================================================

Frameworks (``--frameworks``, by default all but ``tinydeeplab-plan``; one whose packages this interpreter
lacks is listed as "not installed", not measured, and is no error):

================  ========================================================================================
tinydeeplab       ``--backend`` cpu (Numba kernels; numpy: the reference, for quick checks of the script)
tinydeeplab-plan  the same model through ``tinydeeplab.nn.InferencePlan`` (batch norm folded into the
                  convolutions, conv + bias + ReLU and the residual add + ReLU fused); inference only;
                  ``--inference-plan`` adds it next to tinydeeplab (its "agreement" is with the plain path)
torch             ``benchmarks/torch_deeplab.py``, the plain-PyTorch twin holding tinydeeplab's weights
                  (``load_from_tinydeeplab``), NCHW, ``torch.set_num_threads(--threads)``
torch-cl          the same in ``torch.channels_last`` memory format
onnxruntime       the torch twin exported by ``torch.onnx.export`` (TorchScript exporter, opset 17, batch
                  dynamic, image size fixed), ONNX Runtime CPU, all graph optimisations; inference only
onnxruntime-tdl   the same, on the graph of tinydeeplab's own exporter (``tinydeeplab.io.onnx_export``,
                  NHWC): whether the exported graph matters; inference only
keras-tf / -jax   KerasHub with ``KERAS_BACKEND`` tensorflow / jax / torch (its own random weights)
/ -torch
================  ========================================================================================

The torch step is :func:`torch_deeplab.make_step` (inference under ``inference_mode``; training:
``cross_entropy(ignore_index=255)``, ``zero_grad``, backward, ``SGD(momentum=0.9)``). Keras inference is
``model.predict_on_batch(x)``, Keras training ``model.train_on_batch(x, y)`` after ``compile(SGD(momentum=
0.9), SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))``; tinydeeplab's step is what
``tinydeeplab.train.Trainer`` does per batch (``zero_grad`` included).

**The floor.** Before the measurements a worker times a float32 ``(n, n) @ (n, n)`` NumPy matmul
(``--sgemm-size`` n, best of 5: ``2 n^3 / t`` flop/s, the machine's sgemm rate in this run) and counts the
model's multiply-adds from its layer shapes (:func:`tinydeeplab.models.cost.conv_costs`, the count of
``tinydeeplab summary --size``; live taps: a tap that reads only padding multiplies zeros). The floor of a
call is ``2 MACs / rate``, with ``MACs = N F`` for inference and ``N (3 F - F_image)`` for a training step
(weight and input gradients cost a forward's products each; the image needs no gradient); every time is
also printed as a multiple of it.

**Agreement.** Every framework but Keras holds the same weights, so its outputs must be tinydeeplab's up
to float32 round-off: the table "Agreement" gives ``max |a - b| / max |b|`` (b: tinydeeplab) of the
first inference call's logits, and for training the first step's loss and ``|g - g_tdl| / |g_tdl|`` of
all its gradients together (the torch gradients mapped to tinydeeplab's names and layout). A fast but
wrong peer shows there. (On this random-weight network float32 round-off alone moves the gradients by
several percent, 6e-2 at 4x256x256: batch norm over few values amplifies it; in float64 the twin's
gradients agree to 1e-12, ``bench_gpu.py --check``. The gradient figure catches gross errors only.)

Every (framework, workload) pair runs in its own subprocess of this interpreter (the ONNX export in one
more, before it), so "peak RSS" (``VmHWM``: model, activations, caches, framework runtime) belongs to
that workload alone. Times are medians of ``--repeats`` calls after warm-up calls (JIT compilation
excluded; the first call's time is reported separately). The frameworks take turns per workload so that
background load hits them alike. Errors (out of memory, ...) are reported in the tables and do not stop
the other measurements.

    python benchmarks/bench_model.py                                  # everything (tens of minutes)
    python benchmarks/bench_model.py --workloads infer1 --repeats 2   # quick look
    python benchmarks/bench_model.py --frameworks tinydeeplab --profile --workloads train256
    python benchmarks/bench_model.py --json results.json             # also save every number

``--profile`` runs each tinydeeplab workload once more (after a warm-up call) with every
``<op>_forward`` / ``<op>_backward`` of the backend module and the forward/backward of every leaf
layer wrapped by a timer, and prints the time per op and the 15 most expensive layers.

**Environments.** The peers need torch, onnx and onnxruntime in the interpreter that runs the script,
which also imports tinydeeplab (from this checkout: the workers put it first on ``sys.path``), so that
interpreter needs tinydeeplab's dependencies too. With the project's torch environment::

    /work/torchenv/bin/pip install numba scipy pillow matplotlib h5py     # once: tinydeeplab's dependencies
    PYTHONPATH=$PWD /work/torchenv/bin/python benchmarks/bench_model.py --json docs/data/bench_peers.json

The Keras anchors need keras-hub with its backends (e.g. ``/work/kerasenv``, likewise); frameworks not
installed in the interpreter used are listed as such.
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
PEERS = {"torch": ("torch",), "torch-cl": ("torch",), "onnxruntime": ("torch", "onnx", "onnxruntime"),
         "onnxruntime-tdl": ("onnx", "onnxruntime")}
"""The non-Keras peers and the modules each needs."""
INFERENCE_ONLY = ("onnxruntime", "onnxruntime-tdl")
PLAN = "tinydeeplab-plan"
"""tinydeeplab through its inference plan (batch norm folded, conv + bias + ReLU fused; inference only),
measured beside the plain path with ``--inference-plan`` (or ``--frameworks ... tinydeeplab-plan``)."""
FRAMEWORKS = ("tinydeeplab", PLAN, *PEERS, *KERAS_BACKENDS)
DEFAULT_FRAMEWORKS = tuple(fw for fw in FRAMEWORKS if fw != PLAN)
TORCH_TWIN_MODEL = "resnet50"          # benchmarks/torch_deeplab.py is this recipe only (as is the Keras anchor)
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


def build_tinydeeplab(device: str, recipe: str = TORCH_TWIN_MODEL):
    """The ``recipe`` model (default: the pascalvoc-shaped one) on backend ``device`` ("numpy", "cpu" or
    "cuda"); returns ``(model, notes)``. Every framework gets these weights (seed 0), Keras excepted."""
    from tinydeeplab import backend
    from tinydeeplab.models.recipes import build_model

    notes = []
    backend.set_backend(device)                     # raises ImportError if the backend is missing
    model = build_model(recipe, NUM_CLASSES, seed=0)
    if device != "cpu":
        if hasattr(model, "to"):
            model.to(device)
        else:
            notes.append(f"the model has no .to({device!r}): its parameters stay NumPy arrays on the host "
                         f"and the {device} ops receive host arrays")
    return model, notes


def tinydeeplab_step(model, workload: dict, *, plan: bool = False):
    """A zero-argument callable running one ``workload`` call (returning the logits (N, H, W, K) on the
    host, or the loss), and a dict of phase timings it fills. ``plan``: inference through
    :class:`tinydeeplab.nn.InferencePlan` (built here, once, from the model's weights)."""
    from tinydeeplab import backend
    from tinydeeplab.nn import InferencePlan, inference_mode
    from tinydeeplab.train import SGD

    x, y = make_batch(workload)
    phases: dict[str, float] = {}
    if plan:
        if workload["kind"] != "infer":
            raise ValueError(f"{PLAN} runs inference only")
        planned = InferencePlan(model)

        def infer_planned():
            out = to_host(planned(x))
            assert out.shape == (*x.shape[:3], NUM_CLASSES), out.shape
            return out
        return infer_planned, phases
    if workload["kind"] == "infer":
        def infer():                                  # what predict() runs: no caches kept
            with inference_mode():
                out = to_host(model.forward(x, training=False))
            assert out.shape == (*x.shape[:3], NUM_CLASSES), out.shape
            return out
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
        return float(loss)
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
            return out
        return infer

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_LABEL),
                  metrics=[])   # [] not None: None keeps the CategoricalAccuracy KerasHub compiled in
    notes.append(f"jit_compile={model.jit_compile}")

    def train():
        loss = model.train_on_batch(x, y)
        assert loss == loss, "loss is NaN"
        return float(loss)
    return train


# =============================================================================================
# PyTorch and ONNX Runtime side (worker)
# =============================================================================================
def build_torch_twin(spec: dict):
    """:class:`torch_deeplab.DeepLabV3Plus` holding the weights of tinydeeplab's model (seed 0), with torch
    using ``spec["threads"]`` threads; returns ``(net, notes)``."""
    import torch
    import torch_deeplab

    if spec["model"] != TORCH_TWIN_MODEL:
        raise ValueError(f"{spec['framework']}: the torch twin (benchmarks/torch_deeplab.py) is the "
                         f"{TORCH_TWIN_MODEL} model only, not {spec['model']}")
    torch.set_num_threads(spec["threads"])
    model, _ = build_tinydeeplab("numpy", spec["model"])
    net = torch_deeplab.DeepLabV3Plus(NUM_CLASSES)
    with torch.no_grad():
        torch_deeplab.load_from_tinydeeplab(net, model.state_dict())
    net.tdl_names = [name for name, _ in model.named_parameters()]        # for the gradient comparison
    return net, [f"torch {torch.__version__}, {torch.get_num_threads()} threads"]


def torch_step(spec: dict, workload: dict):
    """``(step, to_nhwc, gradients, notes)``: one ``workload`` call of the torch twin on the CPU, NCHW or,
    for ``torch-cl``, channels_last (:func:`torch_deeplab.make_step`); ``gradients()``: the last step's,
    named and laid out like tinydeeplab's."""
    import torch_deeplab

    net, notes = build_torch_twin(spec)
    channels_last = spec["framework"] == "torch-cl"
    notes.append("channels_last memory format" if channels_last else "NCHW memory format")
    x, y = make_batch(workload)
    step = torch_deeplab.make_step(net, x, y, workload["kind"], channels_last=channels_last, lr=LR,
                                   momentum=MOMENTUM, ignore_index=IGNORE_LABEL)
    to_nhwc = lambda out: out.permute(0, 2, 3, 1).contiguous().numpy()      # noqa: E731  (N, H, W, K)
    return step, to_nhwc, lambda: torch_deeplab.gradients_as_tinydeeplab(net, net.tdl_names), notes


def export_worker(spec: dict) -> dict:
    """Write the ONNX graph an ``onnxruntime`` / ``onnxruntime-tdl`` measurement runs, to ``spec["path"]``
    (in a process of its own: the exporter's memory is not charged to ONNX Runtime). Batch dynamic, the
    image size fixed at ``spec["size"]``."""
    size = spec["size"]
    if spec["framework"] == "onnxruntime":                 # the torch twin, NCHW in and out
        import torch

        net, notes = build_torch_twin(spec)
        net.eval()
        example = torch.zeros(1, 3, size, size)
        torch.onnx.export(net, (example,), spec["path"], input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
        notes.append("torch.onnx.export (TorchScript exporter, opset 17), NCHW")
    else:                                                  # tinydeeplab's own exporter, NHWC in and out
        from tinydeeplab.io.onnx_export import export_onnx

        model, notes = build_tinydeeplab("numpy", spec["model"])
        export_onnx(model, spec["path"], size=(size, size), overwrite=True)
        notes.append("tinydeeplab.io.onnx_export, NHWC")
    return {"notes": notes + [f"graph {Path(spec['path']).stat().st_size / 1e6:.0f} MB, fixed {size}x{size}"]}


def onnxruntime_step(spec: dict, workload: dict):
    """``(step, to_nhwc, notes)``: ONNX Runtime (CPU, all graph optimisations, ``threads`` intra-op threads)
    on the graph :func:`export_worker` wrote."""
    import numpy as np
    import onnxruntime as ort

    x, _ = make_batch(workload)
    nchw = spec["framework"] == "onnxruntime"
    feed = {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if nchw else x}
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = spec["threads"], 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(spec["onnx_path"], so, providers=["CPUExecutionProvider"])

    def infer():
        return session.run(["logits"], feed)[0]
    to_nhwc = (lambda out: out.transpose(0, 2, 3, 1)) if nchw else (lambda out: out)
    return infer, to_nhwc, [f"onnxruntime {ort.__version__}, {spec['threads']} intra-op threads"]


# =============================================================================================
# The floor: multiply-adds over the sgemm rate (worker)
# =============================================================================================
def sgemm_rate(n: int, repeats: int = 5) -> dict:
    """The float32 ``(n, n) @ (n, n)`` NumPy matmul rate, best of ``repeats`` calls after one warm-up:
    ``2 n^3 / t`` flop/s."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return {"n": n, "best_s": best, "flops": 2.0 * n**3 / best}


def model_macs(recipe: str, size: int) -> dict:
    """Multiply-adds per image of ``recipe`` at ``size`` x ``size``, counted by tinydeeplab from the layer
    shapes (:func:`tinydeeplab.models.cost.conv_costs`, the count of ``tinydeeplab summary --size``):
    ``forward`` (live taps: a tap that reads only padding multiplies zeros), ``nominal`` (every tap) and
    ``image`` (the convolutions reading the 3-channel image, whose input gradient a step does not need)."""
    from tinydeeplab import backend
    from tinydeeplab.models.cost import conv_costs
    from tinydeeplab.models.recipes import build_model

    with backend.use_backend("numpy"):                # shapes only: no kernel compilation
        costs = conv_costs(build_model(recipe, NUM_CLASSES, seed=0), (size, size))
    return {"forward": sum(c.live_macs for c in costs), "nominal": sum(c.macs for c in costs),
            "image": sum(c.live_macs for c in costs if not c.depthwise and c.kernel[2] == 3)}


def step_macs(kind: str, batch: int, macs: dict) -> int:
    """Multiply-adds of one call: inference ``N F``; a training step ``N (3 F - F_image)`` (forward, the
    weight gradients and the input gradients each cost a forward's products; the image needs no gradient).

    >>> step_macs("infer", 2, {"forward": 10, "image": 1}), step_macs("train", 2, {"forward": 10, "image": 1})
    (20, 58)
    """
    per_image = macs["forward"] if kind == "infer" else 3 * macs["forward"] - macs["image"]
    return batch * per_image


def floor_seconds(kind: str, batch: int, macs: dict, flops: float) -> float:
    """The time a call would take if all its products ran at the measured sgemm rate: ``2 MACs / rate``.

    >>> floor_seconds("infer", 4, {"forward": 5e9, "image": 1e8}, 4e11)
    0.1
    """
    return 2.0 * step_macs(kind, batch, macs) / flops


def floor_worker(spec: dict) -> dict:
    """The sgemm rate (first, while nothing else runs in this process), then the multiply-adds of the
    model at each image size of ``spec["sizes"]``."""
    sgemm = sgemm_rate(spec["sgemm_size"])
    return {"sgemm": sgemm, "macs": {str(size): model_macs(spec["model"], size) for size in spec["sizes"]}}


# =============================================================================================
# Worker: one (framework, workload) measurement in this process
# =============================================================================================
def pin_threads(threads: int) -> None:
    """Restrict this process to ``threads`` cores when fewer than all were asked for."""
    if threads < available_cores() and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cores)


def build_step(spec: dict, workload: dict):
    """``(step, to_nhwc, gradients, model, phases, notes)`` for ``spec["framework"]``; for the agreement
    check ``to_nhwc`` turns a call's logits into (N, H, W, K) NumPy and ``gradients()`` gives the last
    training step's gradients by tinydeeplab name (both None: not comparable, other weights)."""
    import numpy as np

    from tinydeeplab import backend

    fw = spec["framework"]
    if fw in ("tinydeeplab", PLAN):
        model, notes = build_tinydeeplab(spec["device"], spec["model"])
        step, phases = tinydeeplab_step(model, workload, plan=fw == PLAN)
        grads = lambda: {k: backend.to_numpy(g) for k, g in model.named_gradients()}   # noqa: E731
        return step, np.asarray, grads, model, phases, notes
    if fw in ("torch", "torch-cl"):
        step, to_nhwc, grads, notes = torch_step(spec, workload)
        return step, to_nhwc, grads, None, {}, notes
    if fw in INFERENCE_ONLY:
        step, to_nhwc, notes = onnxruntime_step(spec, workload)
        return step, to_nhwc, None, None, {}, notes
    if spec["model"] != TORCH_TWIN_MODEL:
        raise ValueError(f"{fw}: the KerasHub anchor is the {TORCH_TWIN_MODEL} model only, not {spec['model']}")
    model, notes = build_keras(spec["threads"])
    notes.append("own (Keras) random weights: outputs not compared")
    return keras_step(model, workload, notes), None, None, None, {}, notes


def run_worker(spec: dict) -> dict:
    """Build the model, warm up, time ``repeats`` calls (or profile one); return the result dict.

    For the agreement check the first call's logits (inference; then dropped, not to weigh on the peak
    memory) or gradients (training) go to ``spec["out_path"]``, and its loss into the result."""
    import numpy as np

    pin_threads(spec["threads"])
    sys.path.insert(0, str(REPO))                  # run from a checkout without installing
    workload = spec["shape"]
    rss_start = current_rss_mib()
    t0 = time.perf_counter()
    step, to_nhwc, gradients, model, phases, notes = build_step(spec, workload)
    build_s = time.perf_counter() - t0
    rss_model = current_rss_mib()

    def call():
        t = time.perf_counter()
        out = step()
        return time.perf_counter() - t, out

    first_s, out = call()                          # JIT compile / graph tracing happens here
    first_loss = out if workload["kind"] == "train" else None
    if to_nhwc is not None and spec.get("out_path"):
        if workload["kind"] == "infer":
            np.save(spec["out_path"], np.asarray(to_nhwc(out), np.float32), allow_pickle=False)
        else:
            np.savez(spec["out_path"], **gradients())
    del out
    for _ in range(spec["warmup"] - 1):
        call()
    if spec.get("profile"):
        return {"profile": profile_tinydeeplab(model, step, phases), "notes": notes}

    times, phase_samples = [], []
    for _ in range(spec["repeats"]):
        times.append(call()[0])
        if phases:
            phase_samples.append(dict(phases))
    result = {"times": times, "median_s": statistics.median(times), "min_s": min(times), "first_s": first_s,
              "build_s": build_s, "peak_rss_mib": peak_rss_mib(), "rss_start_mib": rss_start,
              "rss_model_mib": rss_model, "notes": notes}
    if to_nhwc is not None and first_loss is not None:
        result["loss"] = float(first_loss)
    if phase_samples:
        result["phases_median_s"] = {k: statistics.median(p[k] for p in phase_samples) for k in phase_samples[0]}
    return result


TASKS = {"floor": floor_worker, "export": export_worker}
"""Worker jobs other than a measurement (``spec["task"]``)."""


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    sys.path.insert(0, str(REPO))
    result = TASKS[spec["task"]](spec) if "task" in spec else run_worker(spec)
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
    dists = ["numpy", "numba", "torch", "onnx", "onnxruntime", "keras", "keras-hub", "tensorflow", "jax", "jaxlib"]
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": available_cores(), "ram_gib": ram_gib,
            "python": platform.python_version(), "interpreter": sys.executable,
            "versions": {d: version(d) for d in dists if version(d)},
            "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def why_not_installed(framework: str) -> str | None:
    """Why ``framework`` cannot run with this interpreter (a missing package), or None if it can."""
    if framework in ("tinydeeplab", PLAN):
        return None
    needed = PEERS.get(framework) or ("keras_hub", KERAS_BACKENDS[framework])
    missing = [m for m in needed if not importable(m)]
    return f"{', '.join(missing)} not importable with {sys.executable}" if missing else None


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


def run_subprocess(spec: dict, args) -> dict:
    """Run one worker subprocess of this script on ``spec``; its result dict or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=worker_env(spec.get("framework", ""), args.threads), capture_output=True,
                              text=True, timeout=args.timeout)
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


def workload_shape(workload: str, args) -> dict:
    """The workload's kind and batch, at ``--size`` when given."""
    return dict(WORKLOADS[workload], size=args.size or WORKLOADS[workload]["size"])


def run_measurement(framework: str, workload: str, args, profile: bool = False, tmp: Path | None = None) -> dict:
    """One (framework, workload) measurement in a subprocess (the ONNX graph exported first, in one of its
    own); the result dict or ``{"error": ...}``. ``tmp``: where the logits (and graphs) go."""
    shape = workload_shape(workload, args)
    kind = shape["kind"]
    spec = {"framework": framework, "workload": workload, "shape": shape, "model": args.model,
            "threads": args.threads, "device": args.backend,
            "repeats": args.repeats or (5 if kind == "infer" else 3),
            "warmup": args.warmup or (2 if kind == "infer" else 1), "profile": profile}
    if tmp is not None:
        spec["out_path"] = str(tmp / f"{workload}-{framework}.{'npy' if kind == 'infer' else 'npz'}")
    if framework in INFERENCE_ONLY:
        path = (tmp or Path(".")) / f"{framework}-{shape['size']}.onnx"
        if not path.exists():
            r = run_subprocess({"task": "export", "framework": framework, "model": args.model,
                                "size": shape["size"], "path": str(path), "threads": args.threads}, args)
            if "error" in r:
                return {"error": f"ONNX export: {r['error']}", "wall_s": r["wall_s"]}
            path.with_suffix(".json").write_text(json.dumps(r["notes"]))
        spec["onnx_path"] = str(path)
        export_notes = json.loads(path.with_suffix(".json").read_text())
        r = run_subprocess(spec, args)
        return dict(r, notes=export_notes + r.get("notes", [])) if "error" not in r else r
    return run_subprocess(spec, args)


def progress_line(i: int, n: int, framework: str, workload: str, r: dict) -> str:
    head = f"[{i}/{n}] {workload:9s} {framework:15s}"
    if "error" in r:
        return f"{head} ERROR: {r['error']}  ({r['wall_s']:.0f} s)"
    return (f"{head} median {r['median_s']:.4g} s  (min {r['min_s']:.4g}, n={len(r['times'])}, "
            f"first call {r['first_s']:.2f} s)  peak RSS {r['peak_rss_mib']:.0f} MiB  ({r['wall_s']:.0f} s wall)")


# --------------------------------------------------------------------------------------------- tables
def fmt_s(r: dict | None) -> str:
    """A table cell: the median time, or why there is none."""
    if r is None:
        return "-"
    if "median_s" in r:
        return f"{r['median_s']:.4g}"
    return r.get("absent", "ERR")                     # "not installed", "n/a" (inference only), or an error


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "median_s" not in a or "median_s" not in b:
        return "-"
    return f"{a['median_s'] / b['median_s']:.2f}"


def relative_error(got, ref) -> float:
    """``max |got - ref| / max |ref|`` (the reference: tinydeeplab's)."""
    import numpy as np

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def gradient_error(got: dict, ref: dict) -> float:
    """``|g - g_ref| / |g_ref|`` over all parameters together (the global 2-norm)."""
    import numpy as np

    diff = sum(float(np.sum((np.asarray(got[k], np.float64) - ref[k]) ** 2)) for k in ref)
    return float(np.sqrt(diff / max(sum(float(np.sum(np.asarray(ref[k], np.float64) ** 2)) for k in ref), 1e-300)))


def agreement(results: dict, workload: str, framework: str, tmp: Path | None) -> str:
    """How far ``framework``'s outputs are from tinydeeplab's: the logits of the first inference call; the
    loss and the gradients of the first training step."""
    import numpy as np

    row = results.get(workload, {})
    r, ref = row.get(framework), row.get("tinydeeplab")
    if not r or "median_s" not in r or not ref or "median_s" not in ref:
        return "-"
    if framework in KERAS_BACKENDS:
        return "own weights"
    suffix = ".npz" if WORKLOADS[workload]["kind"] == "train" else ".npy"
    paths = [tmp / f"{workload}-{fw}{suffix}" if tmp else None for fw in (framework, "tinydeeplab")]
    if not all(p and p.exists() for p in paths):
        return "-"
    if suffix == ".npy":
        return f"{relative_error(*(np.load(p, allow_pickle=False) for p in paths)):.1e}"
    with np.load(paths[0], allow_pickle=False) as got, np.load(paths[1], allow_pickle=False) as want:
        g = gradient_error(got, {k: want[k] for k in want.files})
    return f"loss {relative_error(r['loss'], ref['loss']):.1e}, gradients {g:.1e}"


def workload_floors(floor: dict, workloads, args) -> dict:
    """``{workload: floor seconds}`` (None where the floor worker failed)."""
    out = {}
    for wl in workloads:
        shape = workload_shape(wl, args)
        macs = floor.get("macs", {}).get(str(shape["size"]))
        out[wl] = None if macs is None else floor_seconds(shape["kind"], shape["batch"], macs, floor["sgemm"]["flops"])
    return out


def print_floor(floor: dict, workloads, args) -> None:
    if "error" in floor:
        print(f"# floor: ERROR: {floor['error']}")
        return
    g = floor["sgemm"]
    print(f"# sgemm (NumPy float32 {g['n']}x{g['n']} matmul, best of 5): {g['flops'] / 1e9:.1f} GFLOP/s")
    for size, m in floor.get("macs", {}).items():
        print(f"# multiply-adds per image at {size}x{size} (tinydeeplab.models.cost): forward {m['forward'] / 1e9:.2f} G "
              f"(live taps; {m['nominal'] / 1e9:.2f} G counting every tap), training step 3 x forward - image convs "
              f"= {(3 * m['forward'] - m['image']) / 1e9:.2f} G")
    for wl, f in workload_floors(floor, workloads, args).items():
        if f is not None:
            shape = workload_shape(wl, args)
            print(f"# floor {wl}: {step_macs(shape['kind'], shape['batch'], floor['macs'][str(shape['size'])]) / 1e9:.2f} "
                  f"G multiply-adds x 2 / sgemm rate = {f:.3f} s")


def print_tables(results: dict, workloads: list[str], frameworks: list[str], floors: dict | None = None,
                 tmp: Path | None = None) -> None:
    """Times with the floor, multiples of the floor, tinydeeplab / peer ratios, agreement, memory, details."""
    floors = floors or {}
    peers = [fw for fw in frameworks if fw != "tinydeeplab"]
    print("\n## Median time per call (s); floor = multiply-adds x 2 / sgemm rate of this run\n")
    head = ["workload", "floor", *frameworks]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for wl in workloads:
        row, f = results.get(wl, {}), floors.get(wl)
        print("| " + " | ".join([wl, "-" if f is None else f"{f:.4g}", *(fmt_s(row.get(fw)) for fw in frameworks)])
              + " |")

    if any(f is not None for f in floors.values()):
        print("\n## Time as a multiple of the floor\n")
        print("| workload | " + " | ".join(frameworks) + " |")
        print("|---|" + "---:|" * len(frameworks))
        for wl in workloads:
            row, f = results.get(wl, {}), floors.get(wl)
            cells = [f"{row[fw]['median_s'] / f:.2f}" if f and "median_s" in row.get(fw, {}) else "-"
                     for fw in frameworks]
            print(f"| {wl} | " + " | ".join(cells) + " |")

    if peers:
        print("\n## tinydeeplab / peer time ratios (> 1: tinydeeplab slower)\n")
        print("| workload | " + " | ".join(f"tdl / {fw}" for fw in peers) + " | tdl / fastest peer |")
        print("|---|" + "---:|" * (len(peers) + 1))
        for wl in workloads:
            row = results.get(wl, {})
            tdl = row.get("tinydeeplab")
            ok = [(row[fw]["median_s"], fw) for fw in peers if "median_s" in row.get(fw, {})]
            best = f"{ratio(tdl, row[min(ok)[1]])} ({min(ok)[1]})" if ok else "-"
            print(f"| {wl} | " + " | ".join(ratio(tdl, row.get(fw)) for fw in peers) + f" | {best} |")

        print("\n## Agreement with tinydeeplab (max |a - b| / max |b| of the logits; training: of the first "
              "loss, and |g - g_tdl| / |g_tdl| of all its gradients)\n")
        print("| workload | " + " | ".join(peers) + " |")
        print("|---|" + "---:|" * len(peers))
        for wl in workloads:
            print(f"| {wl} | " + " | ".join(agreement(results, wl, fw, tmp) for fw in peers) + " |")

    print("\n## Peak resident memory per workload (MiB, VmHWM of its own process)\n")
    print("| workload | " + " | ".join(frameworks) + " |")
    print("|---|" + "---:|" * len(frameworks))
    for wl in workloads:
        row = results.get(wl, {})
        cells = [f"{row[fw]['peak_rss_mib']:.0f}" if "median_s" in row.get(fw, {}) else fmt_s(row.get(fw))
                 for fw in frameworks]
        print(f"| {wl} | " + " | ".join(cells) + " |")

    print("\n## Details\n")
    print("| workload | framework | median s | min s | images/s | first call s | build s | RSS after build MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    errors = []
    for wl, fw, r in measured(results, workloads, frameworks, errors):
        ips = WORKLOADS[wl]["batch"] / r["median_s"]
        print(f"| {wl} | {fw} | {r['median_s']:.4g} | {r['min_s']:.4g} | {ips:.2f} | {r['first_s']:.2f} | "
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
            if r is None or "absent" in r:
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
    print(f"# threads {args.threads} (Numba threads / BLAS / torch / ORT / TF intra-op; cores pinned if fewer than "
          f"all), tinydeeplab backend {args.backend!r}, model {args.model} DeepLabV3+ {NUM_CLASSES} classes, float32"
          + (f", images {args.size}x{args.size}" if args.size else ""))
    print(f"# frameworks: {', '.join(frameworks)}; repeats "
          f"{args.repeats or '5 (inference) / 3 (training)'}, warm-up "
          f"{args.warmup or '2 (inference) / 1 (training)'}")


def choose_frameworks(args) -> tuple[list[str], dict[str, str]]:
    """The frameworks of the tables (``--frameworks``, by default all) and ``{framework: why it is not
    installed}`` for those that cannot run: they are listed as "not installed", not measured."""
    frameworks = list(dict.fromkeys(args.frameworks or DEFAULT_FRAMEWORKS))
    if args.inference_plan and PLAN not in frameworks:
        frameworks.insert(frameworks.index("tinydeeplab") + 1 if "tinydeeplab" in frameworks else 0, PLAN)
    missing = {fw: why for fw in frameworks if (why := why_not_installed(fw))}
    return frameworks, missing


def orchestrate(args) -> None:
    import tempfile

    frameworks, missing = choose_frameworks(args)
    info = machine_info()
    print_machine(info, args, frameworks)
    for fw, why in missing.items():
        print(f"# {fw}: not installed ({why})")
    if args.backend != "cpu" and "tinydeeplab" in frameworks and len(frameworks) > 1:
        print(f"# note: tinydeeplab runs on backend {args.backend!r}; the peers run on the CPU")
    print(flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp_name:
        tmp = Path(tmp_name)
        sizes = sorted({workload_shape(wl, args)["size"] for wl in args.workloads})
        floor = run_subprocess({"task": "floor", "model": args.model, "sizes": sizes,
                                "sgemm_size": args.sgemm_size}, args)
        print_floor(floor, args.workloads, args)
        floors = workload_floors(floor, args.workloads, args) if "error" not in floor else {}

        results: dict[str, dict] = {}
        todo = [(wl, fw) for wl in args.workloads for fw in frameworks]
        runs = [(wl, fw) for wl, fw in todo if fw not in missing
                and not (fw in (*INFERENCE_ONLY, PLAN) and WORKLOADS[wl]["kind"] == "train")]
        i = 0
        for wl, fw in todo:                                    # frameworks take turns per workload
            if fw in missing:
                results.setdefault(wl, {})[fw] = {"absent": "not installed"}
                continue
            if (wl, fw) not in runs:
                results.setdefault(wl, {})[fw] = {"absent": "n/a"}      # ONNX Runtime: inference only
                continue
            i += 1
            r = run_measurement(fw, wl, args, tmp=tmp)
            results.setdefault(wl, {})[fw] = r
            print(progress_line(i, len(runs), fw, wl, r), flush=True)

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

        print_tables(results, args.workloads, frameworks, floors, tmp)
        agreements = {wl: {fw: agreement(results, wl, fw, tmp) for fw in frameworks if fw != "tinydeeplab"}
                      for wl in args.workloads}
    for wl, prof in profiles.items():
        if "error" not in prof:
            print_profile(wl, prof)
    if hasattr(os, "getloadavg"):
        print("\n# load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.json:
        info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "worker"},
               "workloads": {wl: workload_shape(wl, args) for wl in args.workloads}, "floor": floor,
               "floor_s": floors, "results": results, "agreement": agreements, "profiles": profiles}
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
                        help=f"default: all but {PLAN}; those whose packages this interpreter lacks are listed as "
                             "not installed")
    parser.add_argument("--model", default=TORCH_TWIN_MODEL,
                        help=f"tinydeeplab recipe (default {TORCH_TWIN_MODEL}; the torch twin and the Keras anchor "
                             f"exist for {TORCH_TWIN_MODEL} only)")
    parser.add_argument("--size", type=int, default=None, help="image side for every workload (default: theirs)")
    parser.add_argument("--sgemm-size", type=int, default=2048,
                        help="side of the float32 matmul whose rate sets the floor (default 2048)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement (default 5 for inference, 3 for training)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls before timing, the first one compiles (default 2 inference, 1 training)")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="threads per framework: Numba threads, BLAS, TF intra-op; fewer than all cores "
                             "also pins the process to that many cores (default: all usable cores)")
    parser.add_argument("--backend", choices=["cpu", "cuda", "numpy"], default="cpu",
                        help="tinydeeplab's backend (numpy: the reference, for quick checks of this script)")
    parser.add_argument("--inference-plan", action="store_true",
                        help=f"also measure {PLAN}: inference through tinydeeplab.nn.InferencePlan (batch norm "
                             "folded into the convolutions, conv + bias + ReLU and the residual add fused)")
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
    if (args.size is not None and args.size < 8) or args.sgemm_size < 1:
        parser.error("--size must be >= 8 and --sgemm-size >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
