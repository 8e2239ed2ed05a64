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

from tinydeeplab import load_keras_preset, use_backend
from tinydeeplab.io.keras_layout import keras_weight_paths
from tinydeeplab.parity import GRAD_TOLERANCE, gradient_errors, logits_at_size

FIXTURES = Path(__file__).parent / "fixtures"
# Every fixture directory the tool wrote (v3_tiny, v3plus_tiny: ResNet v1 bottleneck; v3plus_v2_tiny:
# pre-activation ResNet v2; v3_basic_tiny: basic blocks; effnet*: EfficientNet v1, lite, v2; densenet_v3plus_tiny:
# DenseNet): every test below runs on each.
NAMES = sorted(d.name for d in FIXTURES.iterdir() if (d / "weights.json").is_file())
LOGIT_TOL, ARGMAX_MIN, GRAD_TOL = 1e-4, 0.9999, GRAD_TOLERANCE
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
    stored = f"grad_{prefix}{case}/"
    keras_grads = {k[len(stored):]: v for k, v in data.items() if k.startswith(stored)}
    assert len(keras_grads) == sum(1 for w in _meta(name)["weights"] if w["trainable"])
    loss, worst = gradient_errors(model, data[f"input_{case}"], data[f"labels_{case}"], keras_grads,
                                  training=training, ignore_label=_meta(name)["ignore_class"],
                                  floor=GRAD_FLOOR)
    want_loss = float(data[f"loss_{prefix}{case}"])
    assert abs(loss - want_loss) <= 1e-5 * max(1.0, abs(want_loss)), f"loss {loss} vs Keras {want_loss}"
    assert len(worst) == len(keras_grads)
    rel, _, dotted = max(worst)
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
    assert "grad_train_sq (training BN)" in out and "worst of 82 weights" in out   # the gradient rows


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


def _h5_arrays(path):
    import h5py

    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, obj: found.__setitem__(key, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return {k: v for k, v in found.items() if not k.startswith("optimizer/")}


@pytest.mark.parametrize("name", NAMES)
def test_export_writes_exactly_the_datasets_keras_wrote(name, tmp_path):
    """The export round trip: tinydeeplab's preset holds the KerasHub preset's HDF5 datasets, same paths, same
    values, no others (so ``from_preset`` reads it as it read Keras's own; checked live with
    ``tools/make_parity_fixtures.py --check-roundtrip``)."""
    from tinydeeplab import save_keras_preset

    out = save_keras_preset(_model(name), tmp_path / "exported")
    for fname in ("model.weights.h5", "task.weights.h5"):
        want, got = _h5_arrays(FIXTURES / name / "preset" / fname), _h5_arrays(out / fname)
        assert sorted(got) == sorted(want), f"{fname}: {sorted(set(got) ^ set(want))[:5]}"
        for key, value in want.items():
            assert got[key].shape == value.shape and np.array_equal(got[key], value), f"{fname}: {key}"
