#!/usr/bin/env python
"""Print the CamVid ablation table of docs/results.md from the run directories.

Each row is one committed config (``configs/ablation_<row>.toml``); its run directory
``runs/ablation_<row>/`` holds ``metrics.csv`` (written by ``tinydeeplab train``) and ``test.json``
(written by ``tinydeeplab evaluate --json``). Rows whose run has not finished are listed as owed.

    python tools/ablation_table.py [--runs runs] [--copy docs/data]
"""
import argparse
import csv
import json
import shutil
from pathlib import Path

ROWS = [("os16", "OS16, rates 3/6/9 (matched), V3+, no weights: the baseline"),
        ("os32", "OS32, rates 6/12/18 (the old recipe)"),
        ("os8", "OS8, rates 6/12/18"),
        ("v3", "V3 decoder (no low-level branch)"),
        ("mismatched", "rates 12/24/36 (mismatched to the 16x22 map)"),
        ("class_weights", "median-frequency class weights")]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs", help="folder holding the ablation_<row> run directories")
    p.add_argument("--copy", default=None, help="also copy each row's test.json and metrics.csv here as "
                                                "camvid_ablation_<row>.json and camvid_ablation_<row>_metrics.csv")
    args = p.parse_args()
    names = None
    lines = []
    for row, what in ROWS:
        run = Path(args.runs) / f"ablation_{row}"
        test = run / "test.json"
        if not test.is_file() or not (run / "metrics.csv").is_file():
            lines.append(f"| `{row}` | {what} | owed | | | | |")
            continue
        result = json.loads(test.read_text())
        names = result["class_names"]
        epochs = list(csv.DictReader((run / "metrics.csv").open()))
        seconds = sum(float(e["seconds"]) for e in epochs)
        images = sum(float(e["seconds"]) * float(e["images_per_s"]) for e in epochs)
        iou = " / ".join(f"{100 * v:.1f}" if v is not None else "-" for v in result["iou"])
        lines.append(f"| `{row}` | {what} | **{result['miou']:.3f}** | {len(epochs)} | {seconds / 60:.1f} min | "
                     f"{images / seconds:.1f} | {iou} |")
        if args.copy:
            shutil.copyfile(test, Path(args.copy) / f"camvid_ablation_{row}.json")
            shutil.copyfile(run / "metrics.csv", Path(args.copy) / f"camvid_ablation_{row}_metrics.csv")
    order = " / ".join(names) if names else "per-class IoU"
    print("| config | what changes | test mIoU | epochs | training time | images/s | per-class IoU % "
          f"({order}) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
