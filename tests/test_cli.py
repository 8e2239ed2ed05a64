"""The command line: the demo, train -> evaluate -> predict on a tiny folder dataset, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.cli import main

PRESET = Path(__file__).parent / "fixtures" / "v3_tiny" / "preset"


def _folder_dataset(root: Path, n=4, size=64):
    """Images whose right half is bright (class 1) and left half dark (class 0); one ignored column."""
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        rng = np.random.default_rng(0 if split == "train" else 1)
        for i in range(n):
            image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            label = np.zeros((size, size), np.uint8)
            cut = int(rng.integers(size // 4, 3 * size // 4))
            image[:, cut:] += 150
            label[:, cut:] = 1
            label[:, cut] = 255
            Image.fromarray(image).save(root / split / "images" / f"im{i}.png")
            Image.fromarray(label).save(root / split / "masks" / f"im{i}.png")
    return root


def test_demo_runs_end_to_end_quickly(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", "tiny", "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "2", "--size", "32"]) == 0
    text = capsys.readouterr().out
    assert "validation mIoU" in text and "circle" in text
    for name in ("predictions.png", "curves.png", "metrics.csv", "metrics.json", "checkpoint.npz",
                 "preset/config.json"):
        assert (out / name).is_file(), name
    assert Image.open(out / "predictions.png").size[0] > 100


def test_train_evaluate_predict_on_a_folder_dataset(tmp_path, capsys):
    data = _folder_dataset(tmp_path / "data")
    out = tmp_path / "run"
    common = ["--dataset", "folder", "--data", str(data), "--num-classes", "2"]
    assert main(["train", *common, "--model", "tiny", "--epochs", "2", "--batch-size", "2", "--crop", "32", "32",
                 "--val-split", "val", "--out", str(out), "--lr", "0.02", "--warmup", "1"]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert len(rows) == 2 and "val_miou" in rows[-1]
    capsys.readouterr()
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.npz"), *common, "--split", "val",
                 "--json", str(metrics), "--figure", str(tmp_path / "figure.png")]) == 0
    assert Image.open(tmp_path / "figure.png").size[1] > 100
    printed = capsys.readouterr().out
    saved = json.loads(metrics.read_text())
    assert f"mIoU {saved['miou']:.4f}" in printed
    # the saved confusion matrix counts every non-ignored validation pixel once
    assert np.sum(saved["confusion"]) == 4 * 64 * 64 - 4 * 64
    image = data / "val" / "images" / "im0.png"
    assert main(["predict", "--preset", str(out / "preset"), str(image), "--out", str(tmp_path / "pred")]) == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / "im0_labels.png"))
    assert labels.shape == (64, 64) and set(np.unique(labels)) <= {0, 1}


@pytest.mark.parametrize("argv,expected", [
    (["evaluate", "--preset", "/nonexistent", "--dataset", "camvid", "--data", "/nowhere"], "not found"),
    (["evaluate", "--preset", str(PRESET), "--dataset", "camvid", "--data", "/nowhere"], "/nowhere"),
    (["evaluate", "--dataset", "shapes"], "exactly one of --preset"),
    (["train", "--dataset", "voc", "--out", "/tmp/x"], "--data DIR is required"),
    (["train", "--dataset", "shapes", "--model", "resnet9000", "--out", "OUT"], "unknown model"),
    (["predict", "--preset", str(PRESET), "no_such_image.png", "--out", "OUT"], "image file not found"),
    (["predict", "--preset", str(PRESET), __file__, "--out", "OUT"], "not a readable image"),
    (["summary", "/nonexistent"], "preset directory not found"),
])
def test_bad_arguments_give_one_line_errors(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err


def test_every_command_has_help(capsys):
    for command in ("demo", "train", "evaluate", "predict", "summary", "parity"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert "usage: tinydeeplab " + command in capsys.readouterr().out


def test_extending_a_run_replaces_its_preset(tmp_path):
    """Train 1 epoch, then extend to 2: the preset holds the weights of the end of epoch 2."""
    from tinydeeplab import load_keras_preset
    from tinydeeplab.train.checkpoint import read_checkpoint

    data = _folder_dataset(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--dataset", "folder", "--data", str(data), "--num-classes", "2", "--model", "tiny",
            "--batch-size", "2", "--crop", "32", "32", "--out", str(out), "--lr", "0.02", "--warmup", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    first = dict(load_keras_preset(out / "preset").named_parameters())
    assert main([*args, "--epochs", "2"]) == 0                       # resumes from the checkpoint
    second = dict(load_keras_preset(out / "preset").named_parameters())
    _, final, _ = read_checkpoint(out / "checkpoint.npz")
    name = "output_conv.kernel"
    assert not np.array_equal(first[name], second[name])
    np.testing.assert_array_equal(second[name], final[name])
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("preset")) == ["preset"]


def test_prediction_figure_leaves_the_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend must survive drawing a figure (viz once switched it to Agg)."""
    import matplotlib

    from tinydeeplab.viz import default_palette, prediction_figure

    before = matplotlib.get_backend()
    matplotlib.use("svg")                          # stands in for a notebook's backend: anything but Agg
    try:
        image = np.zeros((8, 8, 3), np.uint8)
        label = np.zeros((8, 8), np.int64)
        prediction_figure(tmp_path / "f.png", [image], [label], default_palette(2), ["a", "b"], labels=[label])
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert Image.open(tmp_path / "f.png").size[0] > 100
