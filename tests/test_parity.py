"""Parity with KerasHub, against fixtures written by ``tools/make_parity_fixtures.py`` (no Keras needed).

Each fixture directory holds a KerasHub preset with random weights and perturbed BN statistics, and
``cases.npz`` with inputs, labels, Keras logits (inference and training mode), the Keras loss
(``SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)``), Keras gradients of that loss
w.r.t. every trainable weight (keyed by HDF5 dataset path), the moving statistics after one
training-mode call, and a raw-image case through the preset's image converter.

Tolerances (issue 3): logits max |diff| <= 1e-4 * max |logit|, argmax agreement >= 99.99 %,
every weight gradient max |diff| <= 1e-3 * max(max |Keras gradient|, 1e-4 * the model's largest gradient).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from tinydeeplab import functional as F
from tinydeeplab import load_keras_preset, use_backend
from tinydeeplab.io.keras_layout import keras_weight_paths
from tinydeeplab.parity import logits_at_size

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["v3_tiny", "v3plus_tiny", "effnet_v3plus_tiny", "effnet_lite_v3_tiny", "effnetv2_v3plus_tiny"]
LOGIT_TOL, ARGMAX_MIN, GRAD_TOL = 1e-4, 0.9999, 1e-3
GRAD_FLOOR = 1e-4   # gradients below this fraction of the model's largest are compared with it (see below)


@lru_cache(maxsize=None)
def _meta(name):
    return json.loads((FIXTURES / name / "weights.json").read_text())


@lru_cache(maxsize=None)
def _cases(name):
    with np.load(FIXTURES / name / "cases.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _model(name):
    return load_keras_preset(FIXTURES / name / "preset")


def _case_params(kind):
    out = []
    for name in NAMES:
        meta = _meta(name)
        cases = [c[0] for c in meta["cases"]] if kind == "all" else meta[kind]
        out += [pytest.param(name, c, id=f"{name}-{c}") for c in cases]
    return out


def _grad_params():
    """(name, case, training) for every gradient set the fixtures store."""
    out = []
    for name in NAMES:
        meta = _meta(name)
        for training, kind in ((False, "grad_cases"), (True, "train_grad_cases")):
            mode = "training" if training else "inference"
            out += [pytest.param(name, c, training, id=f"{name}-{c}-{mode}") for c in meta[kind]]
    return out


def _key(paths, dotted):
    """Fixture key of a weight: "<file>/<HDF5 dataset path>"."""
    return "/".join(paths[dotted])


def _assert_logits_close(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs Keras {want.shape}"
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    assert err <= LOGIT_TOL * scale, f"{what}: max|diff| {err:.3e} > {LOGIT_TOL} x max|logit| {scale:.3f}"
    agree = float((got.argmax(-1) == want.argmax(-1)).mean())
    assert agree >= ARGMAX_MIN, f"{what}: argmax agrees on {agree:.6%} of pixels"


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("name,case", _case_params("all"))
def test_inference_logits_match_keras(name, case, backend):
    data = _cases(name)
    with use_backend(backend):
        model = _model(name)
        x = data[f"input_{case}"]
        want = data[f"logits_{case}"]
        _assert_logits_close(logits_at_size(model, x, want.shape[1:3]), want, f"{name}/{case}")


@pytest.mark.parametrize("name,case", _case_params("all"))
def test_training_mode_logits_and_moving_statistics_match_keras(name, case):
    data = _cases(name)
    model = _model(name)
    logits = logits_at_size(model, data[f"input_{case}"], data[f"logits_train_{case}"].shape[1:3],
                                 training=True)
    _assert_logits_close(logits, data[f"logits_train_{case}"], f"{name}/{case} (training mode)")
    paths = keras_weight_paths(model)
    buffers = dict(model.named_buffers())
    checked = 0
    for dotted, value in buffers.items():
        key = f"moving_train_{case}/{_key(paths, dotted)}"
        want = data[key]
        err = float(np.abs(value - want).max())
        assert err <= 1e-4 * max(1.0, float(np.abs(want).max())), f"{dotted}: moving statistic off by {err:.3e}"
        checked += 1
    assert checked == sum(1 for w in _meta(name)["weights"] if not w["trainable"])


@pytest.mark.parametrize("name,case,training", _grad_params())
def test_loss_and_every_weight_gradient_match_keras(name, case, training):
    data = _cases(name)
    prefix = "train_" if training else ""
    model = _model(name)
    x, labels = data[f"input_{case}"], data[f"labels_{case}"]
    logits = model.forward(x, training=training)
    loss, cache = F.softmax_cross_entropy_forward(logits, labels, ignore_label=_meta(name)["ignore_class"])
    want_loss = float(data[f"loss_{prefix}{case}"])
    assert abs(loss - want_loss) <= 1e-5 * max(1.0, abs(want_loss)), f"loss {loss} vs Keras {want_loss}"
    model.zero_grad()
    model.backward(F.softmax_cross_entropy_backward(1.0, cache))
    paths = keras_weight_paths(model)
    grads = dict(model.named_gradients())
    assert len(grads) == sum(1 for w in _meta(name)["weights"] if w["trainable"])
    worst = []
    # A gradient that is exactly zero in exact arithmetic (a BN beta whose every path ends in a
    # training-mode BN, which removes per-channel constants: EfficientNet's project_bn) is float32 noise
    # on both sides; such weights are judged against GRAD_FLOOR x the largest gradient of the model.
    floor = GRAD_FLOOR * max(float(np.abs(data[f"grad_{prefix}{case}/{_key(paths, d)}"]).max()) for d in grads)
    for dotted, g in grads.items():
        want = data[f"grad_{prefix}{case}/{_key(paths, dotted)}"]
        assert g.shape == want.shape, f"{dotted}: gradient shape {g.shape} vs Keras {want.shape}"
        rel = float(np.abs(g - want).max()) / max(float(np.abs(want).max()), floor, 1e-12)
        worst.append((rel, dotted))
    rel, dotted = max(worst)
    assert rel <= GRAD_TOL, f"worst gradient {dotted}: relative error {rel:.3e} (> {GRAD_TOL})"


@pytest.mark.parametrize("name", NAMES)
def test_image_converter_and_segment_match_keras_preprocessing(name):
    data = _cases(name)
    if "raw_pp" not in data:
        pytest.skip("fixture has no preprocessor case")
    model = _model(name)
    raw = data["raw_pp"].astype(np.uint8)                                            # (N, 50, 70, 3)
    for i, image in enumerate(raw):
        x, _ = model.preprocessor(image)                                             # (1, h, w, 3)
        want = data["pre_pp"][i:i + 1]
        err = float(np.abs(x - want).max())
        assert x.shape == want.shape and err <= 1e-4 * float(np.abs(want).max()), \
            f"image {i}: preprocessed input differs from Keras by {err:.3e}"
        logits = model.forward(x)
        _assert_logits_close(logits, data["logits_pp"][i:i + 1], f"{name}/raw image {i}")
        labels = model.segment(image)
        assert labels.shape == image.shape[:2]


def test_fixture_metadata_names_every_weight_file_dataset():
    """The committed fixture and the layout rule agree on the full set of HDF5 datasets."""
    for name in NAMES:
        model = _model(name)
        ours = {(f, p) for f, p in keras_weight_paths(model).values()}
        theirs = {(w["file"], w["path"]) for w in _meta(name)["weights"]}
        assert ours == theirs


@pytest.mark.parametrize("name", NAMES)
def test_every_stage_matches_stored_keras_activations(name):
    """The stages of the parity report, against Keras's own per-layer outputs (inference mode)."""
    from tinydeeplab.parity import stage_names, tinydeeplab_stages

    layers = json.loads((FIXTURES / name / "activations.json").read_text())["layers"]
    with np.load(FIXTURES / name / "activations.npz", allow_pickle=False) as data:
        acts = {k: data[k] for k in data.files}
    model = _model(name)
    ours = tinydeeplab_stages(model, acts["input_act"])
    for module, scope, layer in stage_names(model):
        if layer == "SpatialPyramidPooling":
            layer = next(k.split("/", 1)[1] for k, v in layers.items()
                         if k.startswith("backbone/") and v["class_name"] == layer)
        want = acts[f"act/{scope}/{layer}"]
        err = float(np.abs(ours[module] - want).max())
        assert err <= LOGIT_TOL * float(np.abs(want).max()), f"{module} vs Keras {layer}: max|diff| {err:.3e}"
    _assert_logits_close(ours["logits"], acts["act/segmenter/segmentation_output"], f"{name} logits")


def test_parity_command_with_stored_cases(capsys):
    from tinydeeplab.cli import main

    name = "v3plus_tiny"
    assert main(["parity", str(FIXTURES / name / "preset"), "--cases", str(FIXTURES / name / "cases.npz")]) == 0
    out = capsys.readouterr().out
    assert "logits_odd" in out and "OK" in out


def test_parity_command_flags_a_broken_port(tmp_path, capsys):
    """Damage one weight: the report must say DIFFERENT and exit 1."""
    import shutil

    import h5py

    from tinydeeplab.cli import main

    name = "v3_tiny"
    preset = Path(shutil.copytree(FIXTURES / name / "preset", tmp_path / "preset"))
    with h5py.File(preset / "model.weights.h5", "r+") as f:
        f["layers/spatial_pyramid_pooling/projection/layers/conv2d/vars/0"][0, 0, 0, :] += 1.0
    assert main(["parity", str(preset), "--cases", str(FIXTURES / name / "cases.npz")]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
