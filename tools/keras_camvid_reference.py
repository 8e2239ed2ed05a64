#!/usr/bin/env python
"""Train and evaluate a small KerasHub DeepLabV3+ on CamVid: a Keras-side reference.

This is a developer tool. It needs keras-hub and jax (e.g. the virtualenv
``/work/kerasenv``); the tinydeeplab package and its tests never import it.
Its outputs give tinydeeplab a *trained* KerasHub preset on real data, so that
imports (``tinydeeplab.load_keras_preset``) and evaluation can be compared with
Keras numbers that were produced by Keras itself.

Modes
-----
--train OUT_DIR [--minutes M] [--seed S] [--batch-size B] [--lr LR]
    Build a small DeepLabV3+ (ResNet bottleneck encoder, filters [64, 32, 32, 32],
    one block per stack; ASPP on P5 with rates 6/12/18, low-level P2 with 48
    projection filters, 11 classes) with a ``DeepLabV3ImageSegmenterPreprocessor``
    whose ``DeepLabV3ImageConverter`` resizes to 352x480 (bilinear, no crop) and
    maps pixels to [-1, 1]. Train it on CamVid ``train`` for about M minutes of
    wall time (Adam, sparse CE from logits, void ignored, random horizontal flips)
    and write OUT_DIR/preset (``save_to_preset``, preprocessor included) and
    OUT_DIR/train_log.json. The saved preset is loaded back with
    ``DeepLabV3ImageSegmenter.from_preset`` and checked against the in-memory model.

--evaluate PRESET_DIR [--split test] [--out JSON] [--batch-size B] [--limit N]
    Load the preset, and for every image of the split: apply the preset's image
    converter to the uint8 RGB image, run ``seg(x, training=False)``, resize the
    logits back to the image size (bilinear, half-pixel centres, no antialias),
    argmax, and accumulate an 11x11 confusion matrix (void label 11 excluded).
    Print a per-class IoU table and write the metrics JSON.

Data: CamVid in the SegNet layout (``{train,val,test}/*.png`` RGB 360x480 and
``{train,val,test}annot/*.png`` with labels 0..10, 11 = void), default
``/work/shared/data/camvid`` (``--data`` to change). Images and labels are paired
by file name.

Notes on KerasHub quirks handled here
-------------------------------------
* ``ResNetBackbone`` insists on ``stackwise_num_filters[0] == 64``.
* A bare ``seg(x)`` runs BatchNorm/Dropout in *training* mode; inference needs
  ``seg(x, training=False)`` (``predict`` does this too).
* ``Task.fit`` maps ``preprocess_samples`` over the data when a preprocessor is
  attached, and (keras-hub 0.32) only accepts arrays / tf.data / grain datasets,
  not a ``keras.utils.PyDataset``. Here the preprocessor is detached during
  training (inputs are already model-ready arrays made by the same converter),
  ``keras.Model.fit`` is called directly, and the preprocessor is re-attached
  before saving.
* The ASPP/decoder BatchNorms have momentum 0.99, too slow for a few minutes of
  training: all BN momenta are set to ``--bn-momentum`` (default 0.9) while
  training. Momentum is not in the saved config, so the preset is unaffected.
* ``compile(metrics="auto")`` breaks on (N, H, W) integer masks; metrics=[] here.
* Under jax on a 2-core CPU a batch-4 352x480 step takes ~5 s (TensorFlow ~1.2 s);
  KERAS_BACKEND set in the environment wins over the jax default.
* After training, task.weights.h5 also holds the optimizer variables;
  ``from_preset`` warns that it skips them (harmless).
* DeepLabV3+ only runs when the input sides fit the stride-32 encoder (352x480 does).

Everything runs with KERAS_BACKEND=jax (set below unless already set).
"""

import argparse
import glob
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

DEFAULT_DATA = "/work/shared/data/camvid"
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
           "Fence", "Car", "Pedestrian", "Bicyclist"]
NUM_CLASSES = len(CLASSES)
VOID = 11
IGNORE = 255
IMAGE_SIZE = (352, 480)

ENCODER = dict(
    input_conv_filters=[32],
    input_conv_kernel_sizes=[7],
    stackwise_num_filters=[64, 32, 32, 32],  # KerasHub requires 64 first
    stackwise_num_blocks=[1, 1, 1, 1],
    stackwise_num_strides=[1, 2, 2, 2],
    block_type="bottleneck_block",
)
BACKBONE = dict(
    spatial_pyramid_pooling_key="P5",
    upsampling_size=8,
    dilation_rates=[6, 12, 18],
    low_level_feature_key="P2",
    projection_filters=48,
)
CONVERTER = dict(
    image_size=IMAGE_SIZE,
    scale=1.0 / 127.5,
    offset=-1.0,
    interpolation="bilinear",
    crop_to_aspect_ratio=False,
)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def split_files(data_dir, split):
    """Sorted (image_path, label_path) pairs of a split, paired by file name."""
    images = sorted(glob.glob(os.path.join(data_dir, split, "*.png")))
    pairs = []
    for p in images:
        lab = os.path.join(data_dir, split + "annot", os.path.basename(p))
        if not os.path.exists(lab):
            raise FileNotFoundError(f"no label for {p} (expected {lab})")
        pairs.append((p, lab))
    if not pairs:
        raise FileNotFoundError(f"no images in {os.path.join(data_dir, split)}")
    return pairs


def read_image(path):
    """uint8 RGB (H, W, 3)."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def read_label(path):
    """uint8 (H, W), classes 0..10, void -> 255."""
    lab = np.array(Image.open(path), dtype=np.uint8)
    if lab.ndim == 3:
        lab = lab[..., 0]
    lab[lab >= NUM_CLASSES] = IGNORE
    return lab


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
def build_segmenter():
    import keras_hub

    enc = keras_hub.models.ResNetBackbone(**ENCODER)
    bb = keras_hub.models.DeepLabV3Backbone(image_encoder=enc, **BACKBONE)
    conv = keras_hub.layers.DeepLabV3ImageConverter(**CONVERTER)
    pre = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(image_converter=conv)
    return keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=bb, num_classes=NUM_CLASSES, preprocessor=pre)


def convert(converter, images_uint8):
    """Apply a KerasHub image converter to a uint8 batch -> float32 numpy."""
    return np.asarray(converter(np.asarray(images_uint8)), dtype=np.float32)


def resize_labels_nearest(labels, size):
    """Nearest resize of (N, H, W) uint8 labels, as the KerasHub preprocessor
    does for masks (keras Resizing, interpolation="nearest", no crop)."""
    import keras

    if labels.shape[1:3] == tuple(size):
        return labels
    layer = keras.layers.Resizing(size[0], size[1], interpolation="nearest",
                                  crop_to_aspect_ratio=False)
    out = np.asarray(layer(labels[..., None].astype("float32")))[..., 0]
    return np.rint(out).astype(np.uint8)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def train(args):
    import keras

    t_start = time.time()
    keras.utils.set_random_seed(args.seed)
    out_dir = os.path.abspath(args.train)
    os.makedirs(out_dir, exist_ok=True)
    preset_dir = os.path.join(out_dir, "preset")

    seg = build_segmenter()
    pre = seg.preprocessor
    conv = pre.image_converter
    n_params = seg.count_params()
    print(f"segmenter parameters: {n_params:,} (backbone {seg.backbone.count_params():,})")

    pairs = split_files(args.data, "train")
    if args.limit:
        pairs = pairs[: args.limit]
    print(f"loading {len(pairs)} train images ...", flush=True)
    xs, ys = [], []
    for i in range(0, len(pairs), 16):
        chunk = pairs[i:i + 16]
        imgs = np.stack([read_image(p) for p, _ in chunk])
        labs = np.stack([read_label(l) for _, l in chunk])
        xs.append(convert(conv, imgs))
        ys.append(resize_labels_nearest(labs, IMAGE_SIZE))
    x = np.concatenate(xs)
    y = np.concatenate(ys).astype(np.int32)
    del xs, ys
    print(f"x {x.shape} {x.dtype} range [{x.min():.3f}, {x.max():.3f}], y {y.shape}, "
          f"void fraction {np.mean(y == IGNORE):.3f}  ({time.time() - t_start:.1f} s)", flush=True)

    class Flipped(keras.utils.PyDataset):
        """Shuffled batches with random horizontal flips."""

        def __init__(self, x, y, batch_size, seed):
            super().__init__()
            self.x, self.y, self.bs = x, y, batch_size
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self):
            return len(self.x) // self.bs

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(self.x))

        def __getitem__(self, i):
            idx = np.sort(self.order[i * self.bs:(i + 1) * self.bs])
            xb, yb = self.x[idx].copy(), self.y[idx].copy()
            flip = self.rng.random(len(idx)) < 0.5
            xb[flip] = xb[flip, :, ::-1]
            yb[flip] = yb[flip, :, ::-1]
            return xb, yb

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self, seconds):
            super().__init__()
            self.seconds = seconds
            self.t0 = None
            self.steps = 0

        def on_train_begin(self, logs=None):
            self.t0 = time.time()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if time.time() - self.t0 > self.seconds:
                self.model.stop_training = True

    class EpochLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rows = []
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "seconds": round(time.time() - self.t0, 1),
                   **{k: float(v) for k, v in (logs or {}).items()}}
            self.rows.append(row)
            print("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()), flush=True)

    # The ASPP and decoder BNs use Keras' default momentum 0.99: with the ~100
    # steps that a few minutes of CPU training give, their moving statistics
    # stay ~40% at their initial 0/1 and inference-mode outputs are poor (the
    # training-mode loss looks fine). Momentum is not part of the preset
    # config (KerasHub hard-codes it when it builds the layers), so a training
    # value can be set here without changing what is saved.
    bns = [l for l in seg._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    if args.bn_momentum is not None:
        before = sorted({round(float(l.momentum), 4) for l in bns})
        for l in bns:
            l.momentum = args.bn_momentum
        print(f"BatchNormalization momentum for training: {before} -> {args.bn_momentum} "
              f"({len(bns)} layers)")

    seg.preprocessor = None  # inputs are already converted; fit must not re-apply it
    seg.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE),
        # metrics="auto" (KerasHub's ImageSegmenter default) fails on (N, H, W)
        # integer masks: incompatible shapes for broadcasting in the accuracy.
        metrics=[],
    )
    budget = TimeBudget(args.minutes * 60.0)
    log = EpochLog()
    ds = Flipped(x, y, args.batch_size, args.seed)
    print(f"training: batch {args.batch_size}, {len(ds)} steps/epoch, Adam lr {args.lr}, "
          f"budget {args.minutes} min", flush=True)
    t_fit = time.time()
    # KerasHub's Task.fit (PipelineModel.fit) only takes arrays / tf.data / grain
    # and re-slices them through tf.data; a keras PyDataset makes it fail
    # ("Could not build a TypeSpec"). With the preprocessor detached there is
    # nothing for it to do, so call the plain keras.Model.fit.
    keras.Model.fit(seg, ds, epochs=10_000, callbacks=[budget, log], verbose=0)
    fit_s = time.time() - t_fit
    print(f"trained {budget.steps} steps ({budget.steps / len(ds):.2f} epochs) in {fit_s:.1f} s", flush=True)

    # Quick sanity on the training set in inference mode.
    n_chk = min(8, len(x))
    lg = np.asarray(seg(x[:n_chk], training=False))
    pred = lg.argmax(-1)
    valid = y[:n_chk] != IGNORE
    train_acc = float((pred[valid] == y[:n_chk][valid]).mean())
    print(f"inference-mode pixel accuracy on {n_chk} train images (352x480): {train_acc:.4f}")

    seg.preprocessor = pre
    seg.save_to_preset(preset_dir)
    print(f"saved preset to {preset_dir}: {sorted(os.listdir(preset_dir))}")

    # Check the preset: preprocessor saved, loads back, same logits.
    import keras_hub

    with open(os.path.join(preset_dir, "preprocessor.json")) as f:
        pcfg = json.load(f)
    saved_size = pcfg["config"]["image_converter"]["config"]["image_size"]
    assert tuple(saved_size) == IMAGE_SIZE, saved_size
    seg2 = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(preset_dir)
    assert seg2.preprocessor is not None
    assert tuple(seg2.preprocessor.image_converter.image_size) == IMAGE_SIZE
    lg2 = np.asarray(seg2(x[:2], training=False))
    diff = float(np.abs(lg2 - lg[:2]).max())
    print(f"from_preset reload: preprocessor image_size {saved_size}, max |logits diff| {diff:.3g}")
    assert diff < 1e-4, diff

    info = {
        "preset": preset_dir,
        "encoder": ENCODER, "backbone": BACKBONE,
        "converter": {**CONVERTER, "image_size": list(IMAGE_SIZE)},
        "num_classes": NUM_CLASSES, "classes": CLASSES,
        "parameters": int(n_params),
        "train_images": int(len(x)), "batch_size": args.batch_size, "optimizer": "Adam",
        "lr": args.lr, "seed": args.seed, "minutes_budget": args.minutes,
        "steps": budget.steps, "fit_seconds": round(fit_s, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "augmentation": "random horizontal flip",
        "bn_momentum_during_training": args.bn_momentum,
        "loss": "SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)",
        "epochs": log.rows,
        "train_pixel_accuracy_first8": train_acc,
        "reload_max_abs_logits_diff": diff,
        "keras_backend": os.environ.get("KERAS_BACKEND"),
    }
    with open(os.path.join(out_dir, "train_log.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"wrote {os.path.join(out_dir, 'train_log.json')}")


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
def confusion(pred, label, n=NUM_CLASSES):
    """(n, n) int64 confusion matrix, rows = ground truth, cols = prediction."""
    valid = label < n
    idx = label[valid].astype(np.int64) * n + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=n * n).reshape(n, n)


def metrics_from_confusion(cm):
    tp = np.diag(cm).astype(np.float64)
    gt = cm.sum(1).astype(np.float64)
    pr = cm.sum(0).astype(np.float64)
    union = gt + pr - tp
    present = gt > 0
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    miou = float(np.nanmean(np.where(present, iou, np.nan))) if present.any() else float("nan")
    acc = float(tp.sum() / max(cm.sum(), 1))
    class_acc = np.where(gt > 0, tp / np.maximum(gt, 1), np.nan)
    return iou, miou, acc, class_acc, present


def evaluate(args):
    import keras
    import keras_hub

    t0 = time.time()
    preset = os.path.abspath(args.evaluate)
    seg = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(preset)
    if seg.preprocessor is None or seg.preprocessor.image_converter is None:
        raise SystemExit(f"{preset} has no image converter")
    conv = seg.preprocessor.image_converter
    pairs = split_files(args.data, args.split)
    if args.limit:
        pairs = pairs[: args.limit]
    print(f"evaluating {preset} on {args.split}: {len(pairs)} images, converter "
          f"image_size={conv.image_size} scale={conv.scale} offset={conv.offset} "
          f"interpolation={conv.interpolation} crop={conv.crop_to_aspect_ratio}", flush=True)

    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    bs = args.batch_size
    for i in range(0, len(pairs), bs):
        chunk = pairs[i:i + bs]
        imgs = [read_image(p) for p, _ in chunk]
        labs = [read_label(l) for _, l in chunk]
        shapes = {im.shape[:2] for im in imgs}
        groups = [list(range(len(imgs)))] if len(shapes) == 1 else [[j] for j in range(len(imgs))]
        for g in groups:
            h, w = imgs[g[0]].shape[:2]
            x = convert(conv, np.stack([imgs[j] for j in g]))
            logits = seg(x, training=False)
            logits = keras.ops.image.resize(logits, (h, w), interpolation="bilinear",
                                            antialias=False)
            pred = np.asarray(keras.ops.argmax(logits, axis=-1))
            for k, j in enumerate(g):
                cm += confusion(pred[k], labs[j])
        if (i // bs) % 10 == 0:
            print(f"  {min(i + bs, len(pairs))}/{len(pairs)}  ({time.time() - t0:.1f} s)", flush=True)

    iou, miou, acc, class_acc, present = metrics_from_confusion(cm)
    seconds = time.time() - t0
    print(f"\n{'class':<12} {'IoU':>8} {'acc':>8} {'gt pixels':>12}")
    for c, name in enumerate(CLASSES):
        s = "n/a" if np.isnan(iou[c]) else f"{iou[c]:.4f}"
        a = "n/a" if np.isnan(class_acc[c]) else f"{class_acc[c]:.4f}"
        print(f"{name:<12} {s:>8} {a:>8} {int(cm[c].sum()):>12,}")
    print(f"{'mIoU':<12} {miou:>8.4f}   (mean over {int(present.sum())} classes present in the labels)")
    print(f"{'pixel acc':<12} {acc:>8.4f}")
    print(f"{len(pairs)} images in {seconds:.1f} s")

    result = {
        "preset": preset,
        "split": args.split,
        "data": os.path.abspath(args.data),
        "num_images": len(pairs),
        "classes": CLASSES,
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(CLASSES, iou)},
        "per_class_accuracy": {n: (None if np.isnan(v) else float(v)) for n, v in zip(CLASSES, class_acc)},
        "miou": miou,
        "miou_definition": "mean IoU over classes with at least one ground-truth pixel; void (11) excluded",
        "pixel_accuracy": acc,
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_axes": "rows = ground truth, columns = prediction",
        "protocol": {
            "input": "uint8 RGB -> preset image converter (seg.preprocessor.image_converter)",
            "forward": "seg(x, training=False)",
            "resize_back": "keras.ops.image.resize(logits, (H, W), interpolation='bilinear', antialias=False)",
            "prediction": "argmax over classes",
            "batch_size": bs,
        },
        "converter": {"image_size": list(conv.image_size) if conv.image_size else None,
                      "scale": conv.scale, "offset": conv.offset,
                      "interpolation": conv.interpolation,
                      "crop_to_aspect_ratio": conv.crop_to_aspect_ratio},
        "keras_backend": keras.config.backend(),
        "seconds": round(seconds, 1),
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", metavar="OUT_DIR", help="train and write OUT_DIR/preset")
    mode.add_argument("--evaluate", metavar="PRESET_DIR", help="evaluate a preset on a split")
    ap.add_argument("--data", default=DEFAULT_DATA, help="CamVid root (SegNet layout)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall-time budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=None, help="train: 4, evaluate: 4")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--bn-momentum", type=float, default=0.9,
                    help="BatchNormalization momentum while training (all BN layers); "
                         "negative keeps KerasHub's values (0.9 encoder, 0.99 ASPP/decoder)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--out", default=None, help="metrics JSON path (evaluate)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (debug)")
    args = ap.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 4
    if args.bn_momentum is not None and args.bn_momentum < 0:
        args.bn_momentum = None
    if args.train:
        train(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
