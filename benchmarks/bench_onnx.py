"""Inference speed: tinydeeplab vs ONNX Runtime on the same model, exported by ``tinydeeplab export-onnx``.

The model is a recipe (``--recipe``, default ``small``: ResNet bottleneck encoder, OS16, V3+ decoder,
random weights with randomised batch-norm statistics), the input (N, H, W, 3) float32. Measured:

=====================  ============================================================================
tinydeeplab            ``model.forward(x)`` under ``inference_mode()`` (the cpu backend: Numba kernels)
ort                    ONNX Runtime CPU, default session (all graph optimisations), dynamic H/W graph
ort fixed size         the same with a graph exported at ``--size`` (``export-onnx --size H W``)
ort no graph opt       ``graph_optimization_level=ORT_DISABLE_ALL``: the exported graph run node by node
                       (no Conv+BN / Conv+ReLU fusion, no NCHWc layout): what the fusions are worth
=====================  ============================================================================

Both sides use ``--threads`` threads (Numba's ``set_num_threads``, ORT's ``intra_op_num_threads``).
Times are the median and the minimum of ``--repeats`` calls after two warm-up calls; the frameworks
take turns call by call, so background load hits them alike. The script also prints the largest
relative difference of the logits (``max|a - b| / max|b|``) and the node types of the graph ONNX
Runtime actually runs (its optimised graph).

    python benchmarks/bench_onnx.py                                  # small, 1x256x256, 2 threads
    python benchmarks/bench_onnx.py --recipe resnet50 --size 512 512 --repeats 5
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="small")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)

    import numba
    import numpy as np
    import onnx
    import onnxruntime as ort

    from tinydeeplab.io.onnx_export import export_onnx
    from tinydeeplab.models.recipes import build_model
    from tinydeeplab.nn import inference_mode

    numba.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    model = build_model(args.recipe, args.num_classes)
    for _, mod in model.modules():                    # non-trivial BN statistics (as a trained model has)
        if "moving_mean" in mod.buffers:
            c = mod.buffers["moving_mean"].shape
            mod.buffers["moving_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
            mod.buffers["moving_variance"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    x = rng.uniform(-1, 1, size=(args.batch, *args.size, 3)).astype(np.float32)

    def tinydeeplab_forward():
        with inference_mode():
            return model.forward(x)

    runs = {"tinydeeplab": tinydeeplab_forward}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"ort": export_onnx(model, Path(tmp) / "dynamic.onnx"),
                  "ort fixed size": export_onnx(model, Path(tmp) / "fixed.onnx", size=args.size)}
        sessions = {}
        for name, level in (("ort", "ORT_ENABLE_ALL"), ("ort fixed size", "ORT_ENABLE_ALL"),
                            ("ort no graph opt", "ORT_DISABLE_ALL")):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            if name == "ort":
                so.log_severity_level = 3                  # no warning that the saved graph is machine-specific
                so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            sessions[name] = ort.InferenceSession(str(graphs.get(name, graphs["ort"])), so,
                                                  providers=["CPUExecutionProvider"])
            runs[name] = lambda s=sessions[name]: s.run(["logits"], {"images": x})[0]
        exported = collections.Counter(n.op_type for n in onnx.load(str(graphs["ort"])).graph.node)
        optimized = collections.Counter(n.op_type for n in onnx.load(str(Path(tmp) / "optimized.onnx")).graph.node)
        size_mb = graphs["ort"].stat().st_size / 1e6

        outputs = {name: run() for name, run in runs.items()}          # warm-up 1 (JIT, session set-up)
        for run in runs.values():
            run()                                                      # warm-up 2
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)

    ref = outputs["tinydeeplab"]
    print(f"# {args.recipe} ({model.num_parameters():,} parameters, {size_mb:.1f} MB .onnx), input "
          f"{tuple(x.shape)}, {args.threads} threads, {args.repeats} repeats; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; numpy {np.__version__}, numba {numba.__version__}, onnxruntime {ort.__version__}")
    print(f"| {'run':18s} | median s | min s  | vs tinydeeplab | max rel. diff |")
    print(f"|{'-' * 20}|----------|--------|----------------|---------------|")
    base = statistics.median(times["tinydeeplab"])
    for name, ts in times.items():
        rel = float(np.abs(outputs[name] - ref).max() / np.abs(ref).max())
        print(f"| {name:18s} | {statistics.median(ts):8.4f} | {min(ts):6.4f} | {base / statistics.median(ts):13.2f}x "
              f"| {rel:13.2e} |")
    print("exported graph:  " + ", ".join(f"{k} {v}" for k, v in exported.most_common()))
    print("ORT runs (optimised graph, dynamic H/W):  " + ", ".join(f"{k} {v}" for k, v in optimized.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
