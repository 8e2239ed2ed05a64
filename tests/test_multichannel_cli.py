"""The command line on C-channel data: train -> evaluate -> predict on .npy stacks, RGB presets adapted."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinydeeplab import load_keras_preset, save_keras_preset
from tinydeeplab.cli import main
from tinydeeplab.models.recipes import build_model


def _stacks(root: Path, channels=4, n=4, size=32, dtype=np.uint16):
    """C-channel stacks whose last channel is bright right of a cut (class 1), dark left of it (class 0)."""
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        rng = np.random.default_rng(0 if split == "train" else 1)
        for i in range(n):
            low, bright = (3000, 20000) if dtype == np.uint16 else (60, 150)
            image = rng.integers(0, low, (size, size, channels)).astype(dtype)
            cut = int(rng.integers(size // 4, 3 * size // 4))
            image[:, cut:, -1] += bright
            label = np.zeros((size, size), np.uint8)
            label[:, cut:] = 1
            np.save(root / split / "images" / f"im{i}.npy", image)
            Image.fromarray(label).save(root / split / "masks" / f"im{i}.png")
    return root


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1
    return err[-1]


def test_train_evaluate_predict_on_four_channel_npy(tmp_path, capsys):
    data = _stacks(tmp_path / "data")
    out = tmp_path / "run"
    common = ["--dataset", "folder", "--data", str(data), "--num-classes", "2"]
    assert main(["train", *common, "--model", "tiny", "--epochs", "1", "--batch-size", "2", "--crop", "32", "32",
                 "--in-channels", "auto", "--mean", "1500", "--std", "3000", "--out", str(out), "--warmup", "1"]) == 0
    config = json.loads((out / "preset" / "config.json").read_text())
    assert config["config"]["image_encoder"]["config"]["image_shape"] == [None, None, 4]
    assert "in-channels = 4" in (out / "config.toml").read_text()
    model = load_keras_preset(out / "preset")
    np.testing.assert_allclose(model.preprocessor.scale, [1 / 3000], rtol=1e-6)
    np.testing.assert_allclose(model.preprocessor.offset, [-0.5], rtol=1e-6)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.npz"), *common, "--split", "val"]) == 0
    assert "mIoU" in capsys.readouterr().out
    image = data / "val" / "images" / "im0.npy"
    assert main(["predict", "--preset", str(out / "preset"), str(image), "--out", str(tmp_path / "pred")]) == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / "im0_labels.png"))
    assert labels.shape == (32, 32) and set(np.unique(labels)) <= {0, 1}
    assert np.asarray(Image.open(tmp_path / "pred" / "im0_overlay.png")).shape == (32, 32, 3)


@pytest.fixture
def rgb_preset(tmp_path):
    model = build_model("tiny", 2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return save_keras_preset(model, tmp_path / "rgb")


def test_an_rgb_preset_fine_tunes_on_four_channels_with_an_adaptation(tmp_path, capsys, rgb_preset):
    data = _stacks(tmp_path / "data", dtype=np.uint8)
    args = ["train", "--dataset", "folder", "--data", str(data), "--num-classes", "2", "--init-preset",
            str(rgb_preset), "--in-channels", "4", "--epochs", "1", "--batch-size", "2", "--crop", "32", "32",
            "--warmup", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "--adapt-channels" in _last_error(capsys)
    assert main([*args, "--adapt-channels", "zero", "--out", str(tmp_path / "b")]) == 0
    assert load_keras_preset(tmp_path / "b" / "preset").in_channels == 4


@pytest.mark.parametrize("extra, expected", [
    ([], "the images are uint16: give --mean and --std"),
    (["--mean", "1", "2", "--std", "1"], "--mean: 2 values for 4-channel images; give 1 or 4"),
    (["--mean", "1"], "give both --mean and --std"),
    (["--in-channels", "3"], "im0.npy: 4 channels; expected 3"),
])
def test_bad_multichannel_options_are_one_line(tmp_path, capsys, extra, expected):
    data = _stacks(tmp_path / "data", n=2)
    argv = ["train", "--dataset", "folder", "--data", str(data), "--num-classes", "2", "--model", "tiny",
            "--out", str(tmp_path / "run")]
    argv += extra if "--in-channels" in extra else ["--in-channels", "4", *extra]
    assert main(argv) == 2
    assert expected in _last_error(capsys)


def test_in_channels_needs_a_folder_dataset(tmp_path, capsys):
    assert main(["train", "--dataset", "shapes", "--in-channels", "4", "--out", str(tmp_path / "r")]) == 2
    assert "needs --dataset folder" in _last_error(capsys)


def test_a_three_channel_model_trained_on_stacks_evaluates_and_predicts(tmp_path, capsys):
    """--in-channels 3 trains on .npy stacks; evaluate reads them back with --in-channels (without it the
    folder reader looks for RGB images and says it found none), and predict reads a 3-channel .npy."""
    data = _stacks(tmp_path / "data", channels=3)
    out = tmp_path / "run"
    common = ["--dataset", "folder", "--data", str(data), "--num-classes", "2"]
    assert main(["train", *common, "--model", "tiny", "--epochs", "1", "--batch-size", "2", "--crop", "32", "32",
                 "--in-channels", "3", "--mean", "1500", "--std", "3000", "--out", str(out), "--warmup", "1"]) == 0
    capsys.readouterr()
    evaluate = ["evaluate", "--checkpoint", str(out / "checkpoint.npz"), *common, "--split", "val"]
    assert main(evaluate) == 2
    assert "images" in _last_error(capsys)
    assert main([*evaluate, "--in-channels", "4"]) == 2
    assert _last_error(capsys).endswith("--in-channels 4: the model reads 3 channels")
    for asked in ("3", "auto"):
        assert main([*evaluate, "--in-channels", asked]) == 0
        assert "mIoU" in capsys.readouterr().out
    image = data / "val" / "images" / "im0.npy"
    assert main(["predict", "--preset", str(out / "preset"), str(image), "--out", str(tmp_path / "pred")]) == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / "im0_labels.png"))
    assert labels.shape == (32, 32) and set(np.unique(labels)) <= {0, 1}
