"""Command line: ``tinydeeplab demo | summary | parity``.

Errors in what the user typed (bad paths, bad presets) are printed as one line and exit with
status 2; a traceback means a bug in tinydeeplab.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .io.errors import PresetError


def small_deeplab_v3_plus(num_classes=5, seed=0, channels=32):
    """A small DeepLabV3+ (ResNet with one bottleneck block per stack) for demos and tests."""
    from .models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone

    enc = ResNetBackbone([64], [7], [64, 16, 16, 16], [1, 1, 1, 1], [1, 2, 2, 2], seed=seed)
    backbone = DeepLabV3Backbone(enc, "P5", 8, [6, 12, 18], low_level_feature_key="P2", projection_filters=16,
                                 num_channels=channels, seed=seed + 1)
    return DeepLabV3ImageSegmenter(backbone, num_classes, seed=seed + 2)


def cmd_demo(args) -> int:
    from . import backend
    from .backend import ops

    backend.set_backend(args.backend)
    model = small_deeplab_v3_plus()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, model.num_classes, size=x.shape[:3])
    print(f"DeepLabV3+ (small ResNet encoder), {model.num_parameters():,} parameters, backend {args.backend!r}")
    for step in range(args.steps):
        t0 = time.perf_counter()
        logits = model.forward(x, training=True)
        loss, cache = ops().softmax_cross_entropy_forward(logits, labels)
        model.backward(ops().softmax_cross_entropy_backward(1.0, cache))
        dt = time.perf_counter() - t0
        print(f"step {step}: input {x.shape} -> logits {logits.shape}, loss {float(loss):.4f}, "
              f"forward+backward {dt * 1000:.0f} ms" + (" (includes JIT compilation)" if step == 0 else ""))
    return 0


def cmd_summary(args) -> int:
    from .io.keras_preset import load_keras_preset

    model = load_keras_preset(args.preset)
    print(f"{args.preset}: {model.num_parameters():,} parameters "
          f"(backbone {model.backbone.num_parameters():,}), {model.num_classes} classes")
    for name, p in model.named_parameters():
        print(f"  {name:70s} {str(p.shape):>22s}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinydeeplab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a small DeepLabV3+ forward + backward pass and print shapes and timing")
    d.add_argument("--size", type=int, default=128, help="input height and width (default 128)")
    d.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    d.add_argument("--steps", type=int, default=3, help="number of forward+backward steps (default 3)")
    d.add_argument("--backend", choices=("numpy", "cpu", "cuda"), default="cpu", help="op implementation")
    d.set_defaults(func=cmd_demo)
    s = sub.add_parser("summary", help="load a KerasHub preset directory and list its parameters")
    s.add_argument("preset", help="preset directory (or kaggle://... with kagglehub installed)")
    s.set_defaults(func=cmd_summary)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (PresetError, FileNotFoundError, ValueError) as err:
        print(f"tinydeeplab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
