#!/usr/bin/env python
"""A short synthetic-shapes run for docs/results.md: what each channel adaptation keeps, as mIoU.

1. Train the ``tiny`` recipe on RGB shapes (64x64) and save it as a preset.
2. Load that preset for other channel counts and evaluate on the same validation images, turned into
   C channels the way each scheme expects: ``repeat`` (C = 6, the RGB image twice), ``zero`` (C = 4,
   RGB plus a channel of uniform noise), ``mean`` (C = 1, the grey image round(mean of RGB)); and the
   RGB model on the grey image repeated to RGB, which ``mean`` must reproduce.
3. Fine-tune the grey (``mean``) model for a few epochs, and train a grey model from scratch for the
   same number of steps, to compare the two starts.

    PYTHONPATH=. python tools/multichannel_shapes_run.py --out /tmp/mc-shapes
"""
import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from tinydeeplab import load_keras_preset, save_keras_preset
from tinydeeplab.data import SyntheticShapes
from tinydeeplab.models.recipes import build_model
from tinydeeplab.train import evaluate
from tinydeeplab.train.builder import build_trainer


class Mapped:
    """A dataset whose images go through ``fn(image, i)`` -> (H, W, C); labels unchanged."""

    def __init__(self, base, fn, channels):
        self.base, self.fn, self.channels = base, fn, channels
        self.num_classes, self.class_names, self.palette = base.num_classes, base.class_names, base.palette
        self.names, self.ignore_label = base.names, base.ignore_label

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return self.fn(image, int(i)), label

    def read_label(self, i):
        return self.base.read_label(i)


def grey(image, i):
    return np.rint(image.mean(axis=2, keepdims=True)).astype(np.uint8)                # (H, W, 1)


def train(model, data, out, epochs, steps, lr):
    trainer = build_trainer(model, data, out_dir=out, epochs=epochs, batch_size=8, crop=None, lr=lr,
                            schedule="cosine", warmup=min(20, epochs * steps // 10), seed=0, progress=False)
    t0 = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="batches of 8 per epoch")
    args = parser.parse_args()
    size = (64, 64)
    train_rgb = SyntheticShapes(args.steps * 8, size=size, seed=0, colour_hints=True)
    val_rgb = SyntheticShapes(64, size=size, seed=1000, colour_hints=True)
    rows = {}

    model = build_model("tiny", 4, seed=0)
    rows["train_rgb_seconds"] = train(model, train_rgb, args.out / "rgb", args.epochs, args.steps, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        preset = save_keras_preset(model, args.out / "rgb" / "preset", overwrite=True)
    miou = lambda m, d: float(evaluate(m, d, progress=False)["miou"])   # noqa: E731
    rows["rgb"] = miou(load_keras_preset(preset), val_rgb)
    noise = lambda image, i: np.concatenate(                            # noqa: E731
        [image, np.random.default_rng(i).integers(0, 256, image.shape[:2] + (1,), dtype=np.uint8)], axis=2)
    cases = {"repeat C=6": (6, "repeat", lambda image, i: np.concatenate([image, image], axis=2)),
             "zero C=4 (4th channel noise)": (4, "zero", noise), "mean C=1 (grey)": (1, "mean", grey)}
    for name, (c, scheme, fn) in cases.items():
        rows[name] = miou(load_keras_preset(preset, in_channels=c, adapt=scheme), Mapped(val_rgb, fn, c))
    rows["rgb model on grey images repeated to RGB"] = miou(
        load_keras_preset(preset), Mapped(val_rgb, lambda image, i: np.repeat(grey(image, i), 3, axis=2), 3))

    grey_train, grey_val = Mapped(train_rgb, grey, 1), Mapped(val_rgb, grey, 1)
    tuned = load_keras_preset(preset, in_channels=1, adapt="mean")
    rows["finetune_seconds"] = train(tuned, grey_train, args.out / "grey-ft", args.finetune_epochs, args.steps, 0.02)
    rows[f"mean C=1 fine-tuned {args.finetune_epochs} epochs"] = miou(tuned, grey_val)
    scratch = build_model("tiny", 4, seed=0, in_channels=1)
    train(scratch, grey_train, args.out / "grey-scratch", args.finetune_epochs, args.steps, 0.1)
    rows[f"grey from scratch {args.finetune_epochs} epochs"] = miou(scratch, grey_val)
    print(json.dumps(rows, indent=1))
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
