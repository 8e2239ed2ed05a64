"""Peak memory and time of ``tinydeeplab predict`` on a large image, and tiled-vs-whole agreement.

For each model (``--models``: recipes of :func:`tinydeeplab.models.recipes.build_model`, random
weights, 21 classes, saved as a preset without ``image_size`` so the model runs at the image's own
resolution) the benchmark

1. runs ``python -m tinydeeplab.cli predict`` in a subprocess on a generated ``--size`` x ``--size``
   RGB image (smooth colour fields with rectangles and discs, written as PNG), tiled with
   ``--window`` / ``--overlap`` (the defaults are what ``predict`` picks by itself for a large image),
   and reports the child's peak RSS (its own ``VmHWM`` from ``/proc/self/status``: the image read,
   the model, the tile activations, one row of tiles' class scores, the label and overlay PNGs) and
   its wall time;
2. at ``--agree-size`` (small enough for whole-image inference) runs ``predict`` once whole-image
   (one tile) and once tiled, and reports both peaks and the fraction of pixels whose labels agree.

    python benchmarks/bench_large_image.py                                   # 10000x10000, tiny + resnet50
    python benchmarks/bench_large_image.py --size 2048 --models tiny         # a quick look
    python benchmarks/bench_large_image.py --agree-size 0                    # skip the agreement runs

Random weights make labels hypersensitive to context (a trained model's labels agree more), so
the agreement is a lower-bound style figure for the tiling rule, not an accuracy.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_image(path: Path, size: int, seed: int = 0) -> Path:
    """A ``size`` x ``size`` RGB PNG: smooth colour gradients plus random rectangles and discs."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = Image.fromarray(np.stack([np.broadcast_to(ramp[None, :], (size, size)).astype(np.uint8),
                                      np.broadcast_to(ramp[:, None], (size, size)).astype(np.uint8),
                                      np.full((size, size), 96, np.uint8)], -1))
    draw = ImageDraw.Draw(image)
    for _ in range(max(size * size // 40000, 8)):
        x, y = rng.integers(0, size, 2)
        r = int(rng.integers(size // 100 + 4, size // 12 + 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r, x + r, y + r], fill=colour)
    Image.MAX_IMAGE_PIXELS = None
    image.save(path)
    return path


# The child reports its own VmHWM: ru_maxrss of a child starts at the parent's high-water mark
# (Linux carries it over the fork/exec), which would count this script's image generation.
CHILD = ("import sys\nfrom tinydeeplab.cli import main\ntry:\n    code = main(sys.argv[1:])\nfinally:\n"
         "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
         "    print('VmHWM_kB', hwm[0].split()[1] if hwm else 'nan', file=sys.stderr)\nsys.exit(code)")


def run_predict(preset: Path, image: Path, out: Path, extra=()) -> dict:
    """``tinydeeplab predict`` in a child process -> ``{peak_rss_mb, seconds, returncode, output}``."""
    args = ["predict", "--preset", str(preset), str(image), "--out", str(out), *extra]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    lines = (done.stdout + done.stderr).strip().splitlines()
    hwm = [float(line.split()[1]) for line in lines if line.startswith("VmHWM_kB")]
    return {"command": "tinydeeplab " + " ".join(args), "peak_rss_mb": hwm[0] / 1024 if hwm else float("nan"),
            "seconds": seconds, "returncode": done.returncode,
            "output": [line for line in lines if not line.startswith("VmHWM_kB")][-3:]}


def labels_of(out: Path, image: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(out / f"{image.stem}_labels.png") as im:
        return np.asarray(im)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=10000, help="side of the large image (default 10000)")
    p.add_argument("--models", nargs="+", default=["tiny", "resnet50"], help="recipes (default tiny resnet50)")
    p.add_argument("--window", type=int, nargs=2, default=(512, 512), metavar=("H", "W"),
                   help="tile window (default 512 512, predict's automatic choice)")
    p.add_argument("--overlap", type=int, default=128, help="tile overlap (default 128, a quarter window)")
    p.add_argument("--agree-size", type=int, default=1024,
                   help="image side for the tiled-vs-whole agreement (default 1024; 0 skips it)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tinydeeplab import save_keras_preset
    from tinydeeplab.models.recipes import build_model

    tiled = ["--window", *map(str, args.window), "--overlap", str(args.overlap)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = make_image(tmp / "large.png", args.size)
        small = make_image(tmp / "agree.png", args.agree_size, seed=1) if args.agree_size else None
        for name in args.models:
            preset = tmp / f"preset_{name}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")                 # tiny: narrower than KerasHub
                save_keras_preset(build_model(name, 21, seed=0), preset)
            row = {"model": name, "size": args.size, "window": list(args.window), "overlap": args.overlap}
            row["large"] = run_predict(preset, big, tmp / f"out_{name}", tiled)
            print(f"{name} {args.size}x{args.size} tiled: peak RSS {row['large']['peak_rss_mb']:.0f} MB, "
                  f"{row['large']['seconds']:.0f} s (exit {row['large']['returncode']})", flush=True)
            if small is not None:
                whole = run_predict(preset, small, tmp / f"whole_{name}")
                part = run_predict(preset, small, tmp / f"tiles_{name}", tiled)
                a, b = labels_of(tmp / f"whole_{name}", small), labels_of(tmp / f"tiles_{name}", small)
                row["agreement"] = {"size": args.agree_size, "whole": whole, "tiled": part,
                                    "fraction_equal": float((a == b).mean())}
                print(f"{name} {args.agree_size}x{args.agree_size}: whole-image peak {whole['peak_rss_mb']:.0f} MB "
                      f"{whole['seconds']:.0f} s, tiled peak {part['peak_rss_mb']:.0f} MB {part['seconds']:.0f} s, "
                      f"labels agree on {row['agreement']['fraction_equal']:.4f} of the pixels", flush=True)
            results.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
