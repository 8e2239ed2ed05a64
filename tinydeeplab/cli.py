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
    n_stats = sum(b.size for _, b in model.named_buffers())
    print(f"{args.preset}: {model.num_parameters():,} trainable parameters "
          f"(backbone {model.backbone.num_parameters():,}) + {n_stats:,} batch-norm statistics "
          f"= {model.num_parameters() + n_stats:,} weights (Keras's count_params); {model.num_classes} classes")
    for name, p in model.named_parameters():
        print(f"  {name:70s} {str(p.shape):>22s}")
    return 0


def read_image(path) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from an image file, or a one-line ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


def cmd_parity(args) -> int:
    from . import parity
    from .io.keras_preset import load_keras_preset

    model = load_keras_preset(args.preset)
    if args.cases:
        with np.load(args.cases, allow_pickle=False) as data:
            rows = parity.compare_with_cases(model, {k: data[k] for k in data.files})
        print(f"tinydeeplab vs stored Keras logits in {args.cases}")
    else:
        if args.image:
            x, _ = model.preprocessor(read_image(args.image))                       # (1, h, w, 3)
        else:
            h, w = args.size or model.preprocessor.image_size or (512, 512)
            x = np.random.default_rng(0).normal(size=(1, h, w, 3)).astype(np.float32)
        try:
            theirs = parity.keras_stages(args.preset, x, model)
        except RuntimeError as err:
            raise ValueError(str(err)) from None
        rows = parity.compare(parity.tinydeeplab_stages(model, x), theirs)
        print(f"tinydeeplab vs KerasHub on {'image ' + args.image if args.image else 'a random input'} "
              f"of shape {x.shape}")
    print(parity.format_table(rows, args.tolerance))
    worst = max(r["relative"] for r in rows)
    print(f"worst relative difference {worst:.3e}: {'OK' if worst <= args.tolerance else 'DIFFERENT'} "
          f"(tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


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
    q = sub.add_parser("parity", help="compare a preset's outputs in tinydeeplab and KerasHub, layer by layer",
                       description="Runs the preset in tinydeeplab and in KerasHub (needs keras-hub) on the same "
                       "input and prints max |diff| and relative difference per stage (stem, every ResNet "
                       "block, ASPP, decoder, head, logits). With --cases, compares the logits with stored "
                       "Keras outputs instead and needs no Keras. Exit status 1 when a stage exceeds "
                       "--tolerance.")
    q.add_argument("preset", help="preset directory")
    q.add_argument("--image", help="an image file, preprocessed with the preset's image converter")
    q.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="size of the random input when no --image (default: the preset's image_size, else 512 512)")
    q.add_argument("--cases", help="an .npz with input_<case> and logits_<case> arrays written by Keras")
    q.add_argument("--tolerance", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    q.set_defaults(func=cmd_parity)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:        # output piped into head & co.
        return 0
    except (PresetError, FileNotFoundError, ValueError) as err:
        print(f"tinydeeplab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
