#!/usr/bin/env python
"""Print the CamVid ablation table of docs/results.md from the run directories.

Each row is one committed config (``configs/ablation_<row>.toml``); its run directory
``runs/ablation_<row>/`` holds ``metrics.csv`` (written by ``tinydeeplab train``) and ``test.json``
(written by ``tinydeeplab evaluate --json``). Rows whose run has not finished are listed as owed.
``--from-copies docs/data`` prints the table from the committed copies instead (no runs/ needed).

    python tools/ablation_table.py [--runs runs] [--copy docs/data]
    python tools/ablation_table.py --from-copies docs/data [--plot docs/figures/camvid_ablation_iou.png]
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
    p.add_argument("--from-copies", default=None, metavar="DIR",
                   help="read camvid_ablation_<row>.json / _metrics.csv from DIR instead of the run directories")
    p.add_argument("--plot", default=None, metavar="PNG", help="also draw per-class IoU bars of every finished row")
    args = p.parse_args()
    if args.from_copies and args.copy:
        p.error("--from-copies and --copy exclude each other: the copies are what --copy writes")
    names = None
    lines = []
    finished = {}                     # row -> (mIoU, per-class IoU)
    for row, what in ROWS:
        if args.from_copies:
            test = Path(args.from_copies) / f"camvid_ablation_{row}.json"
            metrics = Path(args.from_copies) / f"camvid_ablation_{row}_metrics.csv"
        else:
            run = Path(args.runs) / f"ablation_{row}"
            test, metrics = run / "test.json", run / "metrics.csv"
        if not test.is_file() or not metrics.is_file():
            lines.append(f"| `{row}` | {what} | owed | | | | |")
            continue
        result = json.loads(test.read_text())
        names = result["class_names"]
        finished[row] = (result["miou"], result["iou"])
        epochs = list(csv.DictReader(metrics.open()))
        seconds = sum(float(e["seconds"]) for e in epochs)
        images = sum(float(e["seconds"]) * float(e["images_per_s"]) for e in epochs)
        iou = " / ".join(f"{100 * v:.1f}" if v is not None else "-" for v in result["iou"])
        lines.append(f"| `{row}` | {what} | **{result['miou']:.3f}** | {len(epochs)} | {seconds / 60:.1f} min | "
                     f"{images / seconds:.1f} | {iou} |")
        if args.copy:
            shutil.copyfile(test, Path(args.copy) / f"camvid_ablation_{row}.json")
            shutil.copyfile(metrics, Path(args.copy) / f"camvid_ablation_{row}_metrics.csv")
    order = " / ".join(names) if names else "per-class IoU"
    print("| config | what changes | test mIoU | epochs | training time | images/s | per-class IoU % "
          f"({order}) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(lines))
    if args.plot:
        if not finished:
            raise SystemExit("--plot: no finished row to draw")
        plot_rows(finished, names, args.plot)


def plot_rows(finished, names, path):
    """Grouped bars: one group per class (plus mIoU), one bar per ablation row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    labels = list(names) + ["mIoU"]
    x = np.arange(len(labels))
    width = 0.8 / len(finished)
    fig, ax = plt.subplots(figsize=(12, 4))
    for k, (row, (miou, iou)) in enumerate(finished.items()):
        values = [100 * (v if v is not None else 0.0) for v in iou] + [100 * miou]
        ax.bar(x + (k - (len(finished) - 1) / 2) * width, values, width, label=f"{row} ({miou:.3f})")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel("test IoU %")
    ax.set_title("CamVid ablation, test split at 360x480 (one seed per row)")
    ax.legend(ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
