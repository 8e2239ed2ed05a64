"""The dataset check before training: a cold pass, a cached pass, and a plain ``ds[i]`` read of every item.

    python benchmarks/bench_dataset_check.py                         # CamVid train from ../shared, if there
    python benchmarks/bench_dataset_check.py --data DIR --dataset voc --split train

``cold`` reads every item (labels decoded in full, JPEG images at 1/8 scale, other images in full),
``cached`` finds every item unchanged in the cache, ``ds[i]`` is what one epoch's reading costs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from tinydeeplab.cli import open_dataset  # noqa: E402
from tinydeeplab.data import validate_dataset  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT), help=f"dataset root (default {DEFAULT})")
    p.add_argument("--dataset", default="camvid", choices=("voc", "sbd", "camvid"), help="reader (default camvid)")
    p.add_argument("--split", default="train", help="split (default train)")
    args = p.parse_args()
    ds = open_dataset(args.dataset, args.data, args.split)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / ".dataset-check.json"
        t0 = time.perf_counter()
        validate_dataset(ds, cache)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = validate_dataset(ds, cache)
        warm = time.perf_counter() - t0
        size = cache.stat().st_size
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    full = time.perf_counter() - t0
    print(f"{args.dataset} {args.split}: {len(ds)} items, {r.valid_pixels:,} valid label pixels")
    print(f"cold check {cold:.2f} s ({cold / len(ds) * 1e3:.1f} ms/item), cached {warm * 1e3:.1f} ms, "
          f"ds[i] of every item {full:.2f} s; cache file {size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
