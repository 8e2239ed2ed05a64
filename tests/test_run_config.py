"""``train --config FILE.toml``, the run's config.toml, the new train options and ``summary --size``."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tinydeeplab.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import _folder_dataset  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def _flags(data, out):
    return ["--dataset", "folder", "--data", str(data), "--num-classes", "2", "--model", "tiny", "--epochs", "1",
            "--batch-size", "2", "--crop", "32", "32", "--lr", "0.02", "--warmup", "1", "--out", str(out)]


def test_a_config_file_reproduces_the_run_of_the_same_flags(tmp_path):
    from tinydeeplab.train.checkpoint import read_checkpoint

    data = _folder_dataset(tmp_path / "data")
    assert main(["train", *_flags(data, tmp_path / "a")]) == 0
    saved = tmp_path / "a" / "config.toml"
    config = tomllib.loads(saved.read_text())
    assert config["batch-size"] == 2 and config["crop"] == [32, 32] and config["output-stride"] == 16
    assert main(["train", "--config", str(saved), "--out", str(tmp_path / "b")]) == 0   # the flag wins over "out"
    again = tomllib.loads((tmp_path / "b" / "config.toml").read_text())
    assert again.pop("out").endswith("b") and config.pop("out").endswith("a")
    assert again == config
    _, a, _ = read_checkpoint(tmp_path / "a" / "checkpoint.npz")
    _, b, _ = read_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_command_line_flags_win_over_the_file(tmp_path):
    data = _folder_dataset(tmp_path / "data")
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "folder"\ndata = "{data}"\nnum-classes = 2\nmodel = "tiny"\nepochs = 1\n'
                      f'batch-size = 2\ncrop = [32, 32]\nlr = 0.5\nwarmup = 1\nout = "{tmp_path / "x"}"\n')
    assert main(["train", "--config", str(config), "--lr", "0.02", "--atrous-rates", "1", "2"]) == 0
    written = tomllib.loads((tmp_path / "x" / "config.toml").read_text())
    assert written["lr"] == 0.02 and written["atrous-rates"] == [1, 2] and written["epochs"] == 1


@pytest.mark.parametrize("text,expected", [
    ("batch_size = 2\n", "unknown key 'batch_size' (did you mean batch-size?)"),
    ("learning-rate = 2\n", "unknown key 'learning-rate'"),
    ("lr = -1\n", "lr = -1: expected a finite number > 0"),
    ("crop = 32\n", "crop = 32: expected a list"),
    ("crop = [32]\n", "crop = [32]: expected 2 values"),
    ('schedule = "step"\n', 'schedule = "step": choose from cosine, poly'),
    ("restart = 1\n", "restart = 1: expected true or false"),
    ("epochs = true\n", "epochs = true: expected an integer"),
    ("data = 3\n", "data = 3: expected a string"),
    ("lr = [\n", "not valid TOML"),
])
def test_bad_config_files_give_one_line_errors_naming_file_and_key(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert main(["train", "--config", str(config), "--dataset", "shapes", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tinydeeplab train: error: --config ") and str(config) in err and expected in err, err
    assert not (tmp_path / "o").exists()


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: file not found" in capsys.readouterr().err


def test_train_warns_once_about_a_degenerate_aspp(tmp_path, capsys):
    data = _folder_dataset(tmp_path / "data")
    assert main(["train", *_flags(data, tmp_path / "w"), "--output-stride", "32", "--atrous-rates", "1", "6"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ASPP")]
    assert len(warnings) == 1 and "branch2 (rate 6) is a 1x1 conv at the 32x32 training crop (1x1 map)" in warnings[0]
    assert main(["train", *_flags(data, tmp_path / "v"), "--atrous-rates", "1"]) == 0       # 2x2 map: rate 1 is fine
    assert "warning: ASPP" not in capsys.readouterr().err


def test_median_frequency_class_weights_reach_the_trainer(tmp_path, monkeypatch):
    from tinydeeplab.train import builder

    seen = {}
    plain = builder.Trainer

    def spy(*args, **kwargs):
        seen["weights"] = kwargs.get("class_weights")
        return plain(*args, **kwargs)

    monkeypatch.setattr(builder, "Trainer", spy)
    data = _folder_dataset(tmp_path / "data")
    assert main(["train", *_flags(data, tmp_path / "m"), "--class-weights", "median-frequency"]) == 0
    labels = [np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(p)) for p in
              sorted((data / "train" / "masks").glob("*.png"))]
    pixels = np.array([sum(int((lab == c).sum()) for lab in labels) for c in (0, 1)], float)
    freq = pixels / (len(labels) * labels[0].size)          # both classes are in every image
    np.testing.assert_allclose(seen["weights"], np.median(freq) / freq, rtol=1e-6)
    assert main(["train", *_flags(data, tmp_path / "n")]) == 0
    assert seen["weights"] is None


def test_summary_size_lists_the_live_taps(capsys):
    assert main(["summary", "small", "--size", "32", "32", "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "atrous convolutions at input 32x32" in out
    row = [line for line in out.splitlines() if "backbone.aspp.branch3.conv " in line][0]
    assert row.split()[1:] == ["3", "2x2", "1/9", "11%", "<-", "a", "1x1", "conv"]
    preset = Path(__file__).parent / "fixtures" / "v3_tiny" / "preset"
    assert main(["summary", str(preset), "--size", "64", "64"]) == 0
    assert "backbone.aspp.branch1.conv" in capsys.readouterr().out


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path):
    from tinydeeplab.cli import build_parser
    from tinydeeplab.config_file import apply_config

    parser = build_parser()
    values = apply_config(parser.train, path)
    args = parser.parse_args(["train", "--config", str(path)])
    assert args.dataset == values["dataset"] and args.out


def test_a_refused_resume_leaves_the_run_config_alone(tmp_path, capsys):
    data = _folder_dataset(tmp_path / "data")
    assert main(["train", *_flags(data, tmp_path / "r")]) == 0
    before = (tmp_path / "r" / "config.toml").read_text()
    assert main(["train", *_flags(data, tmp_path / "r"), "--lr", "0.5", "--epochs", "2"]) == 2
    assert "--override lr" in capsys.readouterr().err
    assert (tmp_path / "r" / "config.toml").read_text() == before
    assert main(["train", *_flags(data, tmp_path / "r"), "--lr", "0.5", "--epochs", "2", "--override", "lr"]) == 0
    assert "lr = 0.5" in (tmp_path / "r" / "config.toml").read_text()
