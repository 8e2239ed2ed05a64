"""Reliability (issue 12): divergence never poisons a checkpoint, one writer per run directory, every
failure a one-line error with exit status 2, nothing silently wrong, complete help, clean logs."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from model_factories import tiny_segmenter
from test_cli import PRESET, _folder_dataset
from test_train import ListLoader, make_trainer, toy_data

from tinydeeplab.cli import build_parser, main
from tinydeeplab.errors import CheckpointError, DivergenceError, PresetError, TrainingError
from tinydeeplab.progress import Progress
from tinydeeplab.train import SGD, Poly, Trainer
from tinydeeplab.train import checkpoint as checkpoint_module
from tinydeeplab.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from tinydeeplab.train.rundir import RunLock

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, *needles) -> str:
    """The error: exactly one line, the last on stderr (after any progress lines), no traceback."""
    text = capsys.readouterr().err
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if ": error: " in line]
    assert len(errors) == 1 and text.rstrip("\n").splitlines()[-1] == errors[0], text
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def train_args(data, out, *extra):
    return ["train", "--dataset", "folder", "--data", str(data), "--num-classes", "2", "--model", "tiny",
            "--batch-size", "2", "--crop", "32", "32", "--out", str(out), "--lr", "0.02", "--warmup", "1",
            "--epochs", "1", *extra]


@pytest.fixture
def data(tmp_path):
    return _folder_dataset(tmp_path / "data")


def all_finite(path) -> bool:
    _, model_state, optim_state = read_checkpoint(path)
    return all(np.isfinite(a).all() for a in [*model_state.values(), *optim_state.values()])


# -- 1. divergence ------------------------------------------------------------------------------
def test_an_exploding_but_finite_loss_stops_training_and_keeps_the_good_checkpoint(tmp_path):
    """Losses of 1e9 are finite; they must still count as divergence (> 1000 x the running median)."""
    x, y = toy_data(4)
    holder = {}

    class ExplodingLoader(ListLoader):          # blows up the classifier before step 2 of epoch 3
        def __iter__(self):
            for i, (xb, yb) in enumerate(super().__iter__()):
                if self.epoch == 2 and i == 1:
                    holder["trainer"].model.output_conv.params["kernel"] *= 1e8
                yield xb, yb

    trainer = holder["trainer"] = make_trainer(tmp_path, 4, loader=ExplodingLoader(x, y, batch=1), clip_norm=5.0)
    with pytest.raises(DivergenceError, match=r"exploded.*epoch 3, step 2/4.*last good epoch \(2\).*--clip-norm"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "checkpoint.npz", tiny_segmenter(num_classes=3))["epoch"] == 2
    assert all_finite(tmp_path / "checkpoint.npz")


def test_a_state_that_became_non_finite_is_never_checkpointed(tmp_path):
    """The loss can stay finite while a BN moving statistic overflows: the state is checked before saving."""
    trainer = make_trainer(tmp_path, 2)
    trainer.fit()
    good = (tmp_path / "checkpoint.npz").read_bytes()
    trainer.epochs = 3
    bn = next(m for _, m in trainer.model.modules() if "moving_variance" in m.buffers)
    original = trainer.train_epoch

    def poisoning_epoch(epoch):
        row = original(epoch)
        bn.buffers["moving_variance"][0] = np.inf
        return row

    trainer.train_epoch = poisoning_epoch
    with pytest.raises(DivergenceError, match=r"moving_variance holds NaN or infinite values at the end of epoch 3"):
        trainer.fit()
    assert (tmp_path / "checkpoint.npz").read_bytes() == good


def test_save_checkpoint_refuses_a_non_finite_state_and_keeps_the_old_file(tmp_path):
    model = tiny_segmenter()
    path = save_checkpoint(tmp_path / "c.npz", model, epoch=1)
    before = path.read_bytes()
    name, value = next(iter(model.named_parameters()))
    value.flat[3] = np.nan
    with pytest.raises(CheckpointError, match=f"not written: model/{name} holds NaN"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_loading_a_checkpoint_with_nan_weights_names_the_first_bad_array(tmp_path):
    model = tiny_segmenter()
    path = save_checkpoint(tmp_path / "c.npz", model, epoch=1)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    bad = sorted(k for k in arrays if k.startswith("model/"))[5]
    arrays[bad] = arrays[bad] * np.nan
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=f"{bad} holds NaN or infinite values"):
        load_checkpoint(path, tiny_segmenter())


def test_a_preset_with_nan_weights_is_refused_and_predict_fails_in_one_line(tmp_path, capsys):
    import shutil

    import h5py

    preset = tmp_path / "preset"
    shutil.copytree(PRESET, preset)
    with h5py.File(preset / "model.weights.h5", "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        f[names[0]][...] = np.nan
    image = tmp_path / "im.png"
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", "--preset", str(preset), str(image), "--out", str(tmp_path / "pred")]) == 2
    one_line_error(capsys, "model.weights.h5", names[0], "NaN")
    assert not (tmp_path / "pred").exists() or not any((tmp_path / "pred").iterdir())


def test_save_keras_preset_refuses_a_diverged_model(tmp_path):
    from tinydeeplab import save_keras_preset
    model = tiny_segmenter()
    next(iter(model.named_buffers()))[1][0] = np.inf
    with pytest.raises(PresetError, match="not written.*NaN or infinite"):
        save_keras_preset(model, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_cli_divergence_is_one_line_with_advice_that_matches_the_defaults(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = train_args(data, out, "--lr", "1e6", "--epochs", "3")
    assert main(args) == 2
    err = one_line_error(capsys, "diverged", "--lr", "clipped to 5: --clip-norm", "epoch 2, step 1/2")
    if (out / "checkpoint.npz").exists():
        assert all_finite(out / "checkpoint.npz")
    assert not (out / "preset").exists()


# -- 2. one run directory, one writer -------------------------------------------------------------
HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from tinydeeplab.train.rundir import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def _holder(directory):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(directory)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_and_a_killed_writers_lock_is_recovered(data, tmp_path, capsys):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        assert main(train_args(data, out)) == 2
        one_line_error(capsys, "another tinydeeplab process", f"pid {holder.pid}")
        assert not (out / "checkpoint.npz").exists()
    finally:
        holder.send_signal(signal.SIGKILL)            # a killed run: its lock must not outlive it
        holder.wait()
    assert main(train_args(data, out)) == 0
    assert (out / "checkpoint.npz").exists()


def test_the_lock_is_exclusive_between_processes_but_reentrant_within_one(tmp_path):
    with RunLock(tmp_path):
        with RunLock(tmp_path):
            pass
        code = "import sys; from tinydeeplab.train.rundir import RunLock\nwith RunLock(sys.argv[1]): pass"
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode != 0 and "another tinydeeplab process" in r.stderr
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_resuming_with_other_hyperparameters_is_refused_unless_overridden(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0
    capsys.readouterr()
    before = (out / "checkpoint.npz").read_bytes()
    assert main(train_args(data, out, "--epochs", "2", "--lr", "0.01", "--batch-size", "1")) == 2
    one_line_error(capsys, "lr 0.02, now 0.01", "batch-size 2, now 1", "--override batch-size lr")
    assert (out / "checkpoint.npz").read_bytes() == before
    assert main(train_args(data, out, "--epochs", "2", "--lr", "0.01", "--override", "lr")) == 0
    assert read_checkpoint(out / "checkpoint.npz")[0]["meta"]["run"]["lr"] == 0.01


def test_resuming_with_fewer_epochs_than_done_says_so(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(data, out, "--epochs", "2")) == 0
    capsys.readouterr()
    assert main(train_args(data, out, "--epochs", "1")) == 2
    one_line_error(capsys, "already trained 2 epochs, more than the 1 asked for")


def test_temporaries_of_interrupted_writes_are_removed_on_the_next_start(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    leftovers = [out / ".checkpoint.npz.k3j2.tmp", out / ".metrics.csv.x.tmp"]
    for p in leftovers:
        p.write_bytes(b"x" * 1000)
    for d in (out / ".preset.new.abc123", out / "preset.new", out / ".preset.new.tmp"):
        d.mkdir()
        (d / "model.weights.h5").write_bytes(b"partial")
    assert main(train_args(data, out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp") or "preset.new" in n or n.startswith(".preset")], names


# -- 3. every failure a one-line error ------------------------------------------------------------
def test_out_that_is_a_file_is_a_one_line_error(data, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("precious")
    assert main(train_args(data, target)) == 2
    one_line_error(capsys, "--out", "not a directory")
    assert target.read_text() == "precious"


def test_disk_full_during_a_checkpoint_write_is_one_line_and_keeps_the_previous(data, tmp_path, capsys,
                                                                              monkeypatch):
    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0
    capsys.readouterr()
    before = (out / "checkpoint.npz").read_bytes()

    def full(f, **arrays):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.np, "savez", full)
    assert main(train_args(data, out, "--epochs", "2")) == 2
    one_line_error(capsys, "checkpoint.npz", "No space left on device", "unchanged")
    assert (out / "checkpoint.npz").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_disk_full_during_the_preset_write_keeps_the_old_preset(data, tmp_path, capsys, monkeypatch):
    from tinydeeplab.io import keras_preset

    out = tmp_path / "run"
    assert main(train_args(data, out)) == 0
    capsys.readouterr()
    old = (out / "preset" / "model.weights.h5").read_bytes()

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(keras_preset, "_write_json", full)
    assert main(train_args(data, out, "--epochs", "2")) == 2
    one_line_error(capsys, "No space left on device", "config.json")
    assert (out / "preset" / "model.weights.h5").read_bytes() == old
    monkeypatch.undo()
    assert main(train_args(data, out, "--epochs", "2")) == 0        # and the run completes afterwards


def test_json_output_that_is_a_directory_fails_before_evaluating(tmp_path, capsys):
    (tmp_path / "m.json").mkdir()
    assert main(["evaluate", "--preset", str(PRESET), "--dataset", "shapes", "--json", str(tmp_path / "m.json")]) == 2
    one_line_error(capsys, "--json", "is a directory")


@pytest.mark.parametrize("value,needle", [("cuda", "TINYDEEPLAB_BACKEND"), ("tpu", "TINYDEEPLAB_BACKEND")])
def test_an_unusable_backend_from_the_environment_is_one_line(value, needle, tmp_path):
    env = {**os.environ, "TINYDEEPLAB_BACKEND": value}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    r = subprocess.run([sys.executable, "-m", "tinydeeplab.cli", "summary", str(PRESET)], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    if value == "cuda" and r.returncode == 0:
        pytest.skip("this machine has a usable CUDA GPU")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


def test_parity_cases_that_are_not_an_npz_archive_are_one_line(tmp_path, capsys):
    npy = tmp_path / "cases.npy"
    np.save(npy, np.zeros(3))
    assert main(["parity", str(PRESET), "--cases", str(npy)]) == 2
    one_line_error(capsys, "--cases", "single .npy array")
    good = PRESET.parent / "cases.npz"
    if not good.exists():
        good = next(PRESET.parent.glob("*.npz"))
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert main(["parity", str(PRESET), "--cases", str(truncated)]) == 2
    one_line_error(capsys, "--cases", "cut.npz")


def test_a_systemerror_caused_by_ctrl_c_is_an_interruption(monkeypatch, capsys):
    import tinydeeplab.cli as cli

    def interrupted_in_numba(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise SystemError("<numba parallel region> returned a result with an exception set") from err

    monkeypatch.setattr(cli, "cmd_summary", interrupted_in_numba)
    assert main(["summary", "x"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_a_read_only_install_compiles_its_kernels_into_a_temporary_cache(tmp_path):
    """Numba cannot write beside read-only sources: tinydeeplab must pick a writable cache itself."""
    import shutil
    src, ro = tmp_path / "src", tmp_path / "ro"
    shutil.copytree(ROOT / "tinydeeplab", src / "tinydeeplab", ignore=shutil.ignore_patterns("__pycache__"))
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("needs a read-only bind mount (mount --bind), not permitted here")
    try:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode == 0
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, tinydeeplab; "
                "from tinydeeplab.backend import ops; print(ops('cpu').relu_forward(np.ones((1, 2, 2, 1), "
                "np.float32))[0].sum())")
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        env.update(HOME=str(ro), XDG_CACHE_HOME=str(ro / "cache"))
        r = subprocess.run([sys.executable, "-c", code, str(ro)], capture_output=True, text=True, env=env,
                           cwd=tmp_path)
        assert r.returncode == 0 and r.stdout.strip() == "4.0", r.stderr[-2000:]
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


# -- 4. nothing silently wrong --------------------------------------------------------------------
def test_init_preset_with_model_is_a_conflict(tmp_path, capsys):
    assert main(["train", "--dataset", "shapes", "--init-preset", str(PRESET), "--model", "resnet50",
                 "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, "--model resnet50 conflicts with --init-preset")


def test_evaluate_without_a_labelled_pixel_says_why_and_writes_valid_json(tmp_path, capsys):
    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / "val" / sub).mkdir(parents=True)
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "val" / "images" / "a.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(root / "val" / "masks" / "a.png")
    from tinydeeplab import load_keras_preset
    k = load_keras_preset(PRESET).num_classes
    metrics = tmp_path / "m.json"
    assert main(["evaluate", "--preset", str(PRESET), "--dataset", "folder", "--data", str(root),
                 "--num-classes", str(k), "--json", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert "no labelled pixel" in out and "mIoU nan" not in out
    saved = json.loads(metrics.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert saved["miou"] is None and saved["labelled_pixels"] == 0


def test_outputs_honour_the_umask(data, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert main(train_args(data, out)) == 0
    finally:
        os.umask(old)
    for p in [out / "checkpoint.npz", out / "metrics.csv", out / "curves.png", out / "preset",
              out / "preset" / "config.json", out / "preset" / "model.weights.h5"]:
        want = 0o755 if p.is_dir() else 0o644
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


@pytest.mark.parametrize("argv,option", [
    (["train", "--dataset", "shapes", "--out", "o", "--epochs", "0"], "--epochs"),
    (["train", "--dataset", "shapes", "--out", "o", "--crop", "0", "0"], "--crop"),
    (["train", "--dataset", "shapes", "--out", "o", "--lr", "nan"], "--lr"),
    (["train", "--dataset", "shapes", "--out", "o", "--momentum", "1"], "--momentum"),
    (["train", "--dataset", "shapes", "--out", "o", "--min-scale", "2", "--max-scale", "1"], "--min-scale"),
    (["evaluate", "--preset", "p", "--dataset", "shapes", "--scales", "nan"], "--scales"),
    (["evaluate", "--preset", "p", "--dataset", "shapes", "--window", "0", "8"], "--window"),
    (["demo", "--size", "-3"], "--size"),
])
def test_bad_option_values_name_the_option_in_one_line(argv, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    one_line_error(capsys, option)


# -- 6. complete help, clean logs -----------------------------------------------------------------
def test_every_option_of_every_command_has_help_and_shows_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        text = command.format_help()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            if action.default not in (None, False, ()) and not action.required:
                shown = (" ".join(map(str, action.default)) if isinstance(action.default, (list, tuple))
                         else str(action.default))
                flat = " ".join(text.split())
                assert f"(default: {shown})" in flat, f"{name} {action.option_strings[0]}: default {shown} not shown"


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_on_a_terminal_and_writes_whole_lines_to_a_log():
    tty, log = FakeTerminal(), io.StringIO()
    for stream in (tty, log):
        with Progress(stream=stream, interval=3600) as bar:
            for i in range(100):
                bar.show(f"step {i + 1}/100")
    assert tty.getvalue().count("\r") == 100 and tty.getvalue().endswith("step 100/100\n")
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == ["step 1/100", "step 100/100"]   # first, then at most one per interval


def test_an_error_after_a_progress_line_starts_on_its_own_line(tmp_path):
    x, y = toy_data(2)

    class Poisoned(ListLoader):
        def __iter__(self):
            for i, (xb, yb) in enumerate(super().__iter__()):
                yield (xb * np.nan if i == 1 else xb), yb

    stream = FakeTerminal()
    trainer = make_trainer(tmp_path, 1, loader=Poisoned(x, y, batch=1))
    trainer.progress, trainer.stream = True, stream
    with pytest.raises(DivergenceError):
        trainer.fit()
    assert stream.getvalue().endswith("\n")          # the progress line is closed before the error is printed


def test_permission_errors_on_a_preset_and_on_outputs_are_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import pathlib
    real_read_text = pathlib.Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "config.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    assert main(["summary", str(PRESET)]) == 2
    one_line_error(capsys, "Permission denied", "config.json")
    monkeypatch.undo()

    import tinydeeplab.atomic as atomic
    real_mkstemp = atomic.tempfile.mkstemp

    def no_write(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    image = tmp_path / "im.png"
    from PIL import Image
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    monkeypatch.setattr(atomic.tempfile, "mkstemp", no_write)
    assert main(["predict", "--preset", str(PRESET), str(image), "--out", str(tmp_path / "pred")]) == 2
    one_line_error(capsys, "Permission denied", "pred")
    monkeypatch.setattr(atomic.tempfile, "mkstemp", real_mkstemp)
