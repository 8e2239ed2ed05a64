#!/usr/bin/env python
"""Write tests/fixtures/mobilenet_tiny/: a tiny KerasHub ``MobileNetBackbone`` preset and its layer outputs.

A developer tool for the environment with keras-hub (``/work/kerasenv/bin/python tools/make_mobilenet_fixtures.py``;
KERAS_BACKEND=jax unless set). tinydeeplab's tests only read what it writes:

    preset/config.json, preset/model.weights.h5   the backbone alone, as ``MobileNetBackbone.save_to_preset`` writes it
    outputs.npz      ``x`` (a random batch); for every KerasHub block layer (``block_0_0`` ... the final
                     ConvBnAct ``block_{n+1}_0``) its output in inference mode (``infer/<layer>``), and for
                     the pyramid taps also in training mode (``train/<layer>``: batch statistics)
    outputs.json     the layer names in graph order, their strides, and the pyramid taps chosen *here*, from
                     Keras's own output shapes: ``P{l}`` = the last layer whose output has stride ``2**l``

The config is MobileNetV3-shaped (KerasHub's Small layout: hard_swish stem, SE in the depthwise block,
relu then hard_swish stacks, kernels 3 and 5, explicit paddings 1 and 2, residual blocks) at tiny width,
with channel counts that exercise ``adjust_channels`` (e.g. 20 -> 24, 0.25 * 40 -> 16). Weights are
random (tools/make_parity_fixtures.py's ``randomise``: He-normal kernels, random biases and BN
parameters, BN moving statistics from a calibration batch, perturbed).

``--check`` loads DIR/preset (``--out DIR``) into KerasHub and compares its outputs with DIR/outputs.npz: for the
preset written here, or for one tinydeeplab exported (``tinydeeplab.io.encoder_preset.save_encoder_preset``)
next to a copy of outputs.npz.
``--full small|large --out DIR`` does the same for KerasHub's full-size MobileNetV3 Small / Large configs
(``keras_hub/src/utils/timm/convert_mobilenet.py``, random weights, a 224x224 batch of 2; not committed):
``tinydeeplab``'s side is then ``python tools/make_mobilenet_fixtures.py --compare DIR`` in its own venv.
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixtures import randomise  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "mobilenet_tiny")
SEED = 20261202

CONFIG = dict(
    stackwise_num_blocks=[2, 3, 2, 2],
    stackwise_expansion=[[20, 24], [32, 40, 40], [48, 48], [64, 64]],
    stackwise_num_filters=[[8, 8], [12, 16, 16], [16, 16], [24, 24]],
    stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 3], [5, 5]],
    stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1], [2, 1]],
    stackwise_se_ratio=[[None, None], [0.25, 0.25, 0.25], [0.25, None], [0.25, 0.25]],
    stackwise_activation=[["relu", "relu"], ["hard_swish"] * 3, ["hard_swish", "relu"], ["hard_swish"] * 2],
    stackwise_padding=[[1, 1], [2, 2, 2], [2, 1], [2, 2]],
    output_num_filters=64, input_num_filters=8, depthwise_filters=8, depthwise_stride=2,
    depthwise_residual=False, squeeze_and_excite=0.5, last_layer_filter=40,
    input_activation="hard_swish", output_activation="hard_swish", image_shape=(None, None, 3),
)
INPUT_SHAPE = (2, 64, 96, 3)
FULL_INPUT_SHAPE = (2, 224, 224, 3)


def full_config(size):
    """KerasHub's own constructor arguments for mobilenetv3_small_100 / mobilenetv3_large_100."""
    from keras_hub.src.utils.timm.convert_mobilenet import convert_backbone_config

    return {**convert_backbone_config({"architecture": f"mobilenetv3_{size}_100"}), "image_shape": (None, None, 3)}


def build(config=None):
    import keras_hub

    return keras_hub.models.MobileNetBackbone(**(config or CONFIG))


def block_names(model):
    """Every KerasHub block layer (``block_0_0`` ... ``block_{n+1}_0``), in graph order."""
    return [layer.name for layer in model.layers if layer.name.startswith("block_")]


def layer_outputs(model, names, x, training):
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    return {n: np.asarray(y) for n, y in zip(names, probe(x, training=training))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check", action="store_true", help="reload the written preset in KerasHub and compare")
    ap.add_argument("--full", choices=("small", "large"), help="KerasHub's full-size MobileNetV3 config instead")
    ap.add_argument("--compare", metavar="DIR", help="(tinydeeplab's venv) compare tinydeeplab with DIR's outputs")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    import keras_hub

    shape = FULL_INPUT_SHAPE if args.full else INPUT_SHAPE
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=shape).astype("float32")
    if args.check:
        model = keras_hub.models.MobileNetBackbone.from_preset(os.path.join(args.out, "preset"))
        saved = np.load(os.path.join(args.out, "outputs.npz"), allow_pickle=False)
        names = block_names(model)
        got = layer_outputs(model, names, saved["x"], False)
        worst = max(float(np.abs(got[n] - saved[f"infer/{n}"]).max()) for n in names)
        print(f"reloaded preset: max abs difference over {len(names)} layers = {worst:.3g}")
        return 0 if worst == 0.0 else 1

    model = build(full_config(args.full) if args.full else None)
    randomise(model, rng, rng.normal(size=shape).astype("float32"))
    names = block_names(model)
    infer = layer_outputs(model, names, x, False)
    strides = {n: shape[1] // infer[n].shape[1] for n in names}
    taps = {}
    for n in names:                                         # the last layer at each stride 4..32
        if strides[n] in (4, 8, 16, 32):
            taps[f"P{int(np.log2(strides[n]))}"] = n
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    model.save_to_preset(os.path.join(args.out, "preset"))     # before the training-mode call moves the BN stats
    train = layer_outputs(model, list(taps.values()), x, True)
    arrays = {"x": x, **{f"infer/{n}": y for n, y in infer.items()}, **{f"train/{n}": y for n, y in train.items()}}
    np.savez_compressed(os.path.join(args.out, "outputs.npz"), **arrays)
    with open(os.path.join(args.out, "outputs.json"), "w") as f:
        json.dump({"layers": names, "strides": strides, "taps": dict(sorted(taps.items())),
                   "parameters": int(model.count_params())}, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(names)} layers, taps {taps}, {model.count_params()} weights")
    return 0


def compare(directory):
    """Load DIR/preset into tinydeeplab and print the max relative error of every layer KerasHub recorded."""
    sys.path.insert(0, REPO)
    from tinydeeplab.io.encoder_preset import load_encoder_preset
    from tinydeeplab.nn.hooks import record_outputs

    enc = load_encoder_preset(os.path.join(directory, "preset"))
    saved = np.load(os.path.join(directory, "outputs.npz"), allow_pickle=False)
    wanted = {s.module: s.keras_layer for s in enc.stages() if s.keras_layer}
    worst = 0.0
    for mode in ("infer", "train"):
        with record_outputs(enc, list(wanted)) as seen:
            enc.forward(saved["x"], training=mode == "train")
        for module, layer in wanted.items():
            if f"{mode}/{layer}" in saved:
                want = saved[f"{mode}/{layer}"]
                err = float(np.abs(seen[module] - want).max() / np.abs(want).max())
                worst = max(worst, err)
                print(f"{mode} {layer:10s} {str(want.shape):18s} max relative error {err:.2e}")
    print(f"worst {worst:.2e} over {len(wanted)} layers; taps {[s.keras_layer for s in enc.stages() if s.level]}")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
