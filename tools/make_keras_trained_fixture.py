#!/usr/bin/env python
"""Write tests/fixtures/keras_trained_tiny: a preset trained *by KerasHub* and the mIoU *Keras* measures.

This is a developer tool: it needs keras-hub and jax (e.g. ``/work/kerasenv``); the tinydeeplab package
and its tests never import it. ``tests/test_expect_miou.py`` then checks that
``tinydeeplab evaluate --expect-miou`` reproduces the Keras number from the preset and the images alone.

What it does
------------
1. Generates a small synthetic dataset with NumPy (3 classes: background noise, a red disc, a blue
   rectangle; a one-pixel ring of ignore label 255 round the disc): 96 training images of 64x64 and
   6 validation images of 48x80, a size other than the converter's, so that the resize to the model
   and the logits' resize back are both exercised.
2. Builds a tiny KerasHub ``DeepLabV3ImageSegmenter`` (the v3_tiny parity fixture's encoder and
   backbone, 3 classes) with a ``DeepLabV3ImageConverter`` resizing to 64x64, ``x / 127.5 - 1``.
3. Trains it in Keras (Adam, sparse CE from logits with ``ignore_class=255``; all BN momenta 0.9 while
   training, as tools/keras_camvid_reference.py explains), copies the weights into a fresh segmenter
   (so no optimizer variables are saved) and writes ``preset/`` with ``save_to_preset``.
4. Evaluates the saved preset in Keras, with the protocol of tools/keras_camvid_reference.py: the
   preset's converter on the uint8 image, ``seg(x, training=False)``, the logits resized back with
   ``keras.ops.image.resize`` (bilinear, no antialias), argmax, one confusion matrix over the split,
   ignore label excluded. mIoU = mean IoU over the classes present in labels or predictions (the
   definition ``tinydeeplab evaluate`` uses; here every class is present in the labels).
5. Writes ``val.npz`` (``images`` (6, 48, 80, 3) uint8, ``labels`` (6, 48, 80) uint8; the test writes
   them out as a folder dataset of PNGs) and ``keras_miou.json``.

Run (from the repository root, about two minutes on two cores)::

    KERAS_BACKEND=jax /work/kerasenv/bin/python tools/make_keras_trained_fixture.py
"""
import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "keras_trained_tiny")
CLASSES = ["background", "disc", "rectangle"]
IGNORE = 255
ENCODER = dict(input_conv_filters=[8], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 4],
               stackwise_num_blocks=[1, 1, 2], stackwise_num_strides=[1, 2, 2], block_type="bottleneck_block")
BACKBONE = dict(spatial_pyramid_pooling_key="P4", upsampling_size=2, dilation_rates=[3])
CONVERTER = dict(image_size=(64, 64), scale=1.0 / 127.5, offset=-1.0, interpolation="bilinear",
                 crop_to_aspect_ratio=False)


def make_item(rng, h, w):
    """One (image (h, w, 3) uint8, label (h, w) uint8) pair of the synthetic task."""
    image = rng.normal(110, 30, (h, w, 3))
    label = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    rh, rw = rng.integers(h // 5, h // 2), rng.integers(w // 5, w // 2)
    box = (yy >= top) & (yy < top + rh) & (xx >= left) & (xx < left + rw)
    image[box] = rng.normal((40, 60, 200), 25, (int(box.sum()), 3))
    label[box] = 2
    cy, cx, r = rng.uniform(0.25 * h, 0.75 * h), rng.uniform(0.25 * w, 0.75 * w), rng.uniform(0.12, 0.25) * min(h, w)
    dist = np.hypot(yy - cy, xx - cx)
    disc = dist < r
    image[disc] = rng.normal((210, 50, 40), 25, (int(disc.sum()), 3))
    label[disc] = 1
    label[np.abs(dist - r) < 0.7] = IGNORE                               # a thin ring of "don't know"
    return np.clip(image, 0, 255).astype(np.uint8), label


def build_segmenter():
    import keras_hub

    encoder = keras_hub.models.ResNetBackbone(**ENCODER)
    backbone = keras_hub.models.DeepLabV3Backbone(image_encoder=encoder, **BACKBONE)
    converter = keras_hub.layers.DeepLabV3ImageConverter(**CONVERTER)
    pre = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(image_converter=converter)
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=len(CLASSES), preprocessor=pre)


def keras_miou(seg, images, labels):
    """The Keras-side protocol (module docstring, step 4) -> (miou, pixel accuracy, confusion, smallest margin)."""
    import keras

    k = len(CLASSES)
    cm = np.zeros((k, k), np.int64)
    margin = np.inf
    for image, label in zip(images, labels):
        x = np.asarray(seg.preprocessor.image_converter(image[None]), np.float32)    # (1, 64, 64, 3)
        logits = keras.ops.image.resize(seg(x, training=False), image.shape[:2], interpolation="bilinear",
                                        antialias=False)
        logits = np.asarray(logits)[0]                                               # (h, w, k)
        top2 = np.sort(logits, axis=-1)[..., -2:]
        margin = min(margin, float((top2[..., 1] - top2[..., 0]).min()))
        valid = label != IGNORE
        pred = logits.argmax(-1)
        cm += np.bincount(k * label[valid].astype(np.int64) + pred[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0])), float(tp.sum() / cm.sum()), cm, margin


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--steps", type=int, default=240, help="Adam steps of batch 8")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import keras

    t0 = time.time()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = [make_item(rng, 64, 64) for _ in range(96)]
    val = [make_item(rng, 48, 80) for _ in range(6)]

    seg = build_segmenter()
    converter = seg.preprocessor.image_converter
    x = np.asarray(converter(np.stack([im for im, _ in train])), np.float32)        # (96, 64, 64, 3)
    y = np.stack([lab for _, lab in train]).astype(np.int32)                         # (96, 64, 64)
    for layer in seg._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    pre, seg.preprocessor = seg.preprocessor, None                                  # inputs are model-ready
    seg.compile(optimizer=keras.optimizers.Adam(args.lr), metrics=[],
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE))
    epochs = max(1, args.steps // (len(x) // 8))
    history = keras.Model.fit(seg, x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=True)
    losses = [round(float(v), 4) for v in history.history["loss"]]
    print(f"trained {epochs} epochs of {len(x) // 8} steps in {time.time() - t0:.0f} s; loss per epoch {losses}")
    seg.preprocessor = pre

    fresh = build_segmenter()                                  # same weights, no optimizer variables
    fresh(x[:1], training=False)
    fresh.set_weights(seg.get_weights())
    preset = os.path.join(args.out, "preset")
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    fresh.save_to_preset(preset)

    import keras_hub

    loaded = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(preset)
    images, labels = [im for im, _ in val], [lab for _, lab in val]
    miou, accuracy, cm, margin = keras_miou(loaded, images, labels)
    print(f"Keras on the saved preset: val mIoU {miou:.6f}, pixel accuracy {accuracy:.6f}, "
          f"smallest top-2 logit margin {margin:.2e}")
    np.savez_compressed(os.path.join(args.out, "val.npz"), images=np.stack(images), labels=np.stack(labels))
    record = {
        "miou": miou, "pixel_accuracy": accuracy, "confusion": cm.tolist(), "class_names": CLASSES,
        "split": "val", "num_images": len(val), "smallest_top2_logit_margin": margin,
        "miou_definition": "mean IoU over the classes present in labels or predictions; 255 excluded",
        "protocol": "preset image converter on uint8 -> seg(x, training=False) -> keras.ops.image.resize "
                    "(bilinear, antialias=False) to the image size -> argmax -> confusion matrix",
        "training": {"steps": epochs * (len(x) // 8), "batch_size": 8, "optimizer": f"Adam({args.lr})",
                     "loss_per_epoch": losses, "seed": args.seed, "bn_momentum_while_training": 0.9},
        "keras_backend": keras.config.backend(), "keras_hub": keras_hub.__version__,
        "written_by": "tools/make_keras_trained_fixture.py",
    }
    with open(os.path.join(args.out, "keras_miou.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
