"""The offline demo: train a small DeepLabV3+ on synthetic shapes, evaluate it, draw the results.

Nothing is downloaded: the images are generated on the fly (:class:`tinydeeplab.data.SyntheticShapes`:
coloured circles, squares and triangles on textured backgrounds; 4 classes with the background).
The defaults train the ``small`` recipe (0.4 M parameters, output stride 16, ASPP rates 1/2/3: every
atrous tap reads the 6x6 map of the 96x96 images, see :mod:`tinydeeplab.models.atrous`) for about two
minutes on 2 idle CPU cores and reach a validation mIoU above 0.94.

Files written to ``out_dir``: ``checkpoint.npz`` (resumable), ``metrics.csv`` / ``metrics.json``,
``curves.png`` (loss and validation mIoU per epoch), ``predictions.png`` (validation images, ground
truth and prediction overlays) and ``preset/`` (the trained model as a KerasHub preset).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from .data import SyntheticShapes
from .io.keras_preset import save_keras_preset
from .models.recipes import build_model
from .train import evaluate
from .train.builder import build_trainer
from .train.rundir import RunLock
from .viz import prediction_figure

SCALE, OFFSET = 1 / 127.5, -1.0   # model input = pixel * SCALE + OFFSET (the model's converter, used by the loader)


def run_demo(out_dir="tinydeeplab-demo", *, model_name="small", epochs=14, steps_per_epoch=50, batch_size=8, size=96, lr=0.1,
             val_images=48, seed=0, max_shapes=3, colour_hints=True, resume=False, progress=True) -> dict:
    """Train, evaluate and draw; returns ``{"miou", "pixel_accuracy", "iou", "out_dir", ...}``."""
    out = Path(out_dir)
    train_set = SyntheticShapes(length=steps_per_epoch * batch_size, size=(size, size), seed=seed,
                                max_shapes=max_shapes, colour_hints=colour_hints)
    val_set = SyntheticShapes(length=val_images, size=(size, size), seed=seed + 1000, max_shapes=max_shapes,
                             colour_hints=colour_hints)
    model = build_model(model_name, train_set.num_classes, seed=seed, scale=SCALE, offset=OFFSET)
    total = epochs * steps_per_epoch
    trainer = build_trainer(model, train_set, out_dir=out, epochs=epochs, batch_size=batch_size, crop=None, lr=lr,
                            schedule="cosine", warmup=min(20, total // 10), momentum=0.9, weight_decay=1e-4,
                            clip_norm=5.0, seed=seed, val_set=val_set, progress=progress)
    with RunLock(out):                   # one writer for the whole demo, the figures and preset included
        history = trainer.fit(resume=resume)
        result = evaluate(model, val_set, progress=False)
        shown = [val_set[i] for i in range(4)]
        preds = [model.segment(image) for image, _ in shown]
        prediction_figure(out / "predictions.png", [im for im, _ in shown], preds, val_set.palette,
                          val_set.class_names, labels=[lab for _, lab in shown],
                          title=f"validation mIoU {result['miou']:.3f}")
        with warnings.catch_warnings():  # the small model's 64-channel head: a tinydeeplab-only preset
            warnings.simplefilter("ignore")
            save_keras_preset(model, out / "preset", overwrite=True)
    return {**result, "out_dir": out, "history": history, "class_names": val_set.class_names,
            "num_parameters": model.num_parameters()}
