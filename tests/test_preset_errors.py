"""Damaged presets give one clear PresetError naming the file (and the layer), never a deep traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from tinydeeplab import load_keras_preset, save_keras_preset
from tinydeeplab.cli import main as cli_main
from tinydeeplab.io.errors import PresetError

PRESET = Path(__file__).parent / "fixtures" / "v3_tiny" / "preset"


@pytest.fixture
def preset(tmp_path):
    """A private copy of a good preset that each test damages."""
    return Path(shutil.copytree(PRESET, tmp_path / "preset"))


def _load_error(path) -> str:
    with pytest.raises(PresetError) as info:
        load_keras_preset(path)
    return str(info.value)


def test_the_good_copy_loads(preset):
    assert load_keras_preset(preset).num_classes == 5


def test_missing_directory(tmp_path):
    assert "preset directory not found" in _load_error(tmp_path / "nope")


@pytest.mark.parametrize("fname", ["model.weights.h5", "task.weights.h5", "config.json"])
def test_missing_file(preset, fname):
    (preset / fname).unlink()
    msg = _load_error(preset)
    assert fname in msg and "not found" in msg


def test_truncated_hdf5(preset):
    path = preset / "model.weights.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _load_error(preset)
    assert "model.weights.h5" in msg and ("truncated" in msg or "corrupt" in msg or "cannot read" in msg)


def test_hdf5_that_is_not_hdf5(preset):
    (preset / "task.weights.h5").write_bytes(b"\x89HDF this is not really hdf5" * 10)
    msg = _load_error(preset)
    assert "task.weights.h5" in msg and "not a readable HDF5 file" in msg


def test_weight_with_wrong_shape_names_file_dataset_and_layer(preset):
    target = "layers/functional/layers/conv2d_3/vars/0"
    with h5py.File(preset / "model.weights.h5", "r+") as f:
        shape = f[target].shape
        del f[target]
        f.create_dataset(target, data=np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32))
    msg = _load_error(preset)
    assert "model.weights.h5" in msg and target in msg and "backbone.image_encoder." in msg and "shape" in msg


def test_missing_dataset_is_reported_by_name(preset):
    with h5py.File(preset / "model.weights.h5", "r+") as f:
        del f["layers/spatial_pyramid_pooling/projection/layers/batch_normalization/vars/1"]
    msg = _load_error(preset)
    assert "missing weights" in msg and "backbone.aspp.projection.bn" in msg


def test_extra_dataset_is_reported(preset):
    with h5py.File(preset / "model.weights.h5", "r+") as f:
        f.create_dataset("layers/mystery_layer/vars/0", data=np.zeros(3, np.float32))
    assert "layers/mystery_layer/vars/0" in _load_error(preset)


def test_integer_weights_are_refused(preset):
    target = "layers/conv2d/vars/0"
    with h5py.File(preset / "task.weights.h5", "r+") as f:
        shape = f[target].shape
        del f[target]
        f.create_dataset(target, data=np.zeros(shape, np.int32))
    msg = _load_error(preset)
    assert "task.weights.h5" in msg and "output_conv.kernel" in msg and "dtype" in msg


def test_optimizer_variables_are_ignored(preset):
    with h5py.File(preset / "task.weights.h5", "r+") as f:
        f.create_dataset("optimizer/vars/999", data=np.zeros(3, np.float32))
    load_keras_preset(preset)


def test_config_that_is_not_json(preset):
    (preset / "config.json").write_text("{'class_name': 'DeepLabV3Backbone',")
    msg = _load_error(preset)
    assert "config.json" in msg and "not valid JSON" in msg


def test_config_that_is_json_but_not_an_object(preset):
    (preset / "task.json").write_text("[1, 2, 3]")
    assert "task.json" in _load_error(preset)


@pytest.mark.parametrize("which", ["backbone", "encoder"])
def test_unsupported_backbone_class(preset, which):
    cfg = json.loads((preset / "config.json").read_text())
    if which == "backbone":
        cfg["class_name"] = "SegFormerBackbone"
    else:
        cfg["config"]["image_encoder"]["class_name"] = "MiTBackbone"
    (preset / "config.json").write_text(json.dumps(cfg))
    msg = _load_error(preset)
    assert "config.json" in msg and ("SegFormerBackbone" in msg or "MiTBackbone" in msg)


def test_bad_config_value_is_reported(preset):
    cfg = json.loads((preset / "config.json").read_text())
    cfg["config"]["spatial_pyramid_pooling_key"] = "P9"
    (preset / "config.json").write_text(json.dumps(cfg))
    msg = _load_error(preset)
    assert "config.json" in msg and "P9" in msg


def test_cli_reports_a_bad_preset_in_one_line(preset, capsys):
    (preset / "config.json").write_text("not json")
    assert cli_main(["summary", str(preset)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err


def test_export_round_trip_is_exact(tmp_path):
    model = load_keras_preset(PRESET)
    out = save_keras_preset(model, tmp_path / "exported")
    again = load_keras_preset(out)
    ref, got = model.state_dict(), again.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        np.testing.assert_array_equal(ref[k], got[k], err_msg=k)
    assert again.preprocessor.get_config() == model.preprocessor.get_config()
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.forward(x), again.forward(x))


def test_export_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("keep me")
    with pytest.raises(PresetError, match="not empty"):
        save_keras_preset(load_keras_preset(PRESET), tmp_path / "taken")
    assert (tmp_path / "taken" / "file.txt").read_text() == "keep me"


def test_kaggle_handle_without_kagglehub_says_how_to_get_the_files(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kagglehub", None)     # makes `import kagglehub` fail
    msg = _load_error("kaggle://keras/deeplabv3plus/keras/deeplab_v3_plus_resnet50_pascalvoc/4")
    assert "kagglehub" in msg and "pip install kagglehub" in msg and "directory" in msg


# ------------------------------------------------------------------ the preprocessor (image converter)

def _edit_converter(preset, edit, fname="preprocessor.json"):
    """Apply ``edit`` to the parsed JSON of the preset's preprocessor file and write it back."""
    path = preset / fname
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _converter_key(key, value):
    def edit(data):
        data["config"]["image_converter"]["config"][key] = value
    return edit


@pytest.mark.parametrize("edit,key", [
    (lambda d: d.__setitem__("config", 5), "config"),
    (lambda d: d.__setitem__("config", [1, 2]), "config"),
    (lambda d: d["config"].__setitem__("image_converter", "bilinear"), "config.image_converter"),
    (lambda d: d["config"]["image_converter"].__setitem__("config", [64, 96]), "config.image_converter.config"),
    (_converter_key("image_size", [0, 0]), "image_size"),
    (_converter_key("image_size", [-64, 96]), "image_size"),
    (_converter_key("image_size", [64]), "image_size"),
    (_converter_key("image_size", [64, 96, 3]), "image_size"),
    (_converter_key("image_size", ["64", "96"]), "image_size"),
    (_converter_key("image_size", [64.5, 96]), "image_size"),
    (_converter_key("image_size", 64), "image_size"),
    (_converter_key("scale", "1/255"), "scale"),
    (_converter_key("scale", [0.1, 0.2]), "scale"),
    (_converter_key("scale", [[0.1], [0.2, 0.3]]), "scale"),
    (_converter_key("offset", {"r": 1}), "offset"),
    (_converter_key("offset", [None, 1, 2]), "offset"),
    (_converter_key("interpolation", "bicubic"), "interpolation"),
    (_converter_key("interpolation", 5), "interpolation"),
    (_converter_key("crop_to_aspect_ratio", "yes"), "crop_to_aspect_ratio"),
    (_converter_key("pad_to_aspect_ratio", True), "pad_to_aspect_ratio"),
    (_converter_key("antialias", True), "antialias"),
])
def test_a_bad_preprocessor_is_one_preset_error_naming_file_and_key(preset, edit, key):
    _edit_converter(preset, edit)
    msg = _load_error(preset)
    assert "\n" not in msg and "preprocessor.json" in msg and key in msg, msg


def test_image_converter_json_alone_is_checked_too(preset):
    (preset / "preprocessor.json").unlink()
    _edit_converter(preset, lambda d: d["config"].__setitem__("image_size", [0, 96]), "image_converter.json")
    msg = _load_error(preset)
    assert "image_converter.json" in msg and "image_size" in msg


def test_good_preprocessor_variants_still_load(preset):
    _edit_converter(preset, lambda d: d["config"]["image_converter"]["config"].update(
        scale=[0.1, 0.2, 0.3], offset=[-1, -1, -1], image_size=[64.0, 96.0], interpolation="nearest",
        antialias=False, pad_to_aspect_ratio=False, crop_to_aspect_ratio=True))
    conv = load_keras_preset(preset).preprocessor
    assert conv.image_size == (64, 96) and conv.scale.tolist() == pytest.approx([0.1, 0.2, 0.3])
    _edit_converter(preset, lambda d: d["config"].__setitem__("image_converter", None))
    assert load_keras_preset(preset).preprocessor.image_size is None       # no converter: identity


def test_cli_reports_a_bad_preprocessor_in_one_line(preset, capsys):
    _edit_converter(preset, _converter_key("image_size", [0, 0]))
    assert cli_main(["summary", str(preset)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "preprocessor.json" in err and "image_size" in err


def test_a_checkpoints_preprocessor_config_is_checked_too():
    from tinydeeplab.io.keras_preset import model_from_configs, preset_configs

    configs = preset_configs(load_keras_preset(PRESET))
    configs["preprocessor"]["config"]["image_converter"]["config"]["image_size"] = [0, 0]
    with pytest.raises(PresetError, match="run/checkpoint.npz: preprocessor: image_size"):
        model_from_configs(configs, source="run/checkpoint.npz")
