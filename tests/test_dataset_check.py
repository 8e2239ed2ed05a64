"""Checking a dataset before training (validate_dataset and its cache), and one-line errors for an item
that breaks after the check (mid-epoch), in the loader and in ``tinydeeplab train``."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.cli import main
from tinydeeplab.data import (BatchLoader, DatasetError, FolderDataset, LoaderError, SyntheticShapes,
                              validate_dataset)

NAMES = ("a", "b", "c", "d")


def _labels(n=len(NAMES), size=(6, 8)):
    """Label k: class k % 3 on the left half, ignore (255) on the right half of its last row."""
    out = []
    for k in range(n):
        label = np.full(size, k % 3, np.uint8)                             # (H, W)
        label[-1, size[1] // 2:] = 255
        out.append(label)
    return out


def _folder(root: Path, labels=None, image_format="png") -> FolderDataset:
    labels = _labels() if labels is None else labels
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, label in zip(NAMES, labels):
        image = rng.integers(0, 256, label.shape + (3,), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.{image_format}")
        Image.fromarray(label).save(root / "masks" / f"{name}.png")
    return FolderDataset(root / "images", root / "masks", num_classes=3)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _touch_later(path)


def _touch_later(path: Path) -> None:
    """Move the mtime a second on: a rewrite within the file system's clock tick is still seen."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _check_error(*args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        validate_dataset(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_a_good_dataset_passes_and_its_valid_pixels_are_counted(tmp_path):
    ds = _folder(tmp_path)
    r = validate_dataset(ds)
    expected = sum(int((lab != 255).sum()) for lab in _labels())
    assert (r.items, r.checked, r.cached, r.valid_pixels, r.all_ignore) == (4, 4, 0, expected, False)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,expected", [
    ("truncated label", "not a readable label"),
    ("truncated jpg image", "not a readable image"),
    ("truncated png image", "not a readable image"),
    ("flipped png image", "not a readable image"),
    ("label value", "values [7]"),
    ("sizes", "same size"),
])
def test_a_bad_item_is_named_in_one_line(tmp_path, damage, expected):
    ds = _folder(tmp_path, image_format="jpg" if "jpg" in damage else "png")
    image, mask = ds.files(2)
    if damage == "truncated label":
        _truncate(mask)
    elif damage.startswith("truncated"):
        _truncate(image)
    elif damage.startswith("flipped"):
        _flip_a_byte(image)
        with pytest.raises(DatasetError):                                # the epoch would fail too
            ds[2]
    elif damage == "label value":
        Image.fromarray(np.full((6, 8), 7, np.uint8)).save(mask)
    else:
        Image.fromarray(np.zeros((5, 8), np.uint8)).save(mask)
    msg = _check_error(ds, name="folder train")
    assert msg.startswith("folder train item 2 ('c'): ") and expected in msg
    bad = [image, mask] if damage == "sizes" else [mask] if "label" in damage else [image]
    assert all(str(p) in msg for p in bad), msg


def test_the_cache_skips_unchanged_items_and_rechecks_changed_ones(tmp_path):
    ds = _folder(tmp_path / "data")
    cache = tmp_path / "run" / ".dataset-check.json"                       # its folder does not exist yet
    first = validate_dataset(ds, cache)
    assert cache.is_file() and (first.checked, first.cached) == (4, 0)
    again = validate_dataset(ds, cache)
    assert (again.checked, again.cached, again.valid_pixels) == (0, 4, first.valid_pixels)
    mask = ds.files(1)[1]
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(mask)                 # now all valid: 4 more pixels
    _touch_later(mask)
    changed = validate_dataset(ds, cache)
    assert (changed.checked, changed.cached, changed.valid_pixels) == (1, 3, first.valid_pixels + 4)
    _truncate(mask)
    assert str(mask) in _check_error(ds, cache)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]        # no temporary file left


def test_items_before_a_bad_one_stay_cached(tmp_path):
    ds = _folder(tmp_path / "data")
    cache = tmp_path / "check.json"
    _truncate(ds.files(2)[1])
    _check_error(ds, cache)
    Image.fromarray(_labels()[2]).save(ds.files(2)[1])                     # fixed
    r = validate_dataset(ds, cache)
    assert (r.checked, r.cached) == (2, 2)                                 # items c and d read now


@pytest.mark.parametrize("content", [
    "{not json", "[1, 2]", '{"format": "something else", "items": {}}', "\xff\xfe binary",
])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path, content):
    ds = _folder(tmp_path / "data")
    cache = tmp_path / "check.json"
    cache.write_text(content, encoding="latin-1")
    assert validate_dataset(ds, cache).checked == 4
    assert validate_dataset(ds, cache).cached == 4                         # rewritten as a good cache


def test_a_cache_entry_is_used_only_when_it_is_well_formed_and_of_the_same_rules(tmp_path):
    ds = _folder(tmp_path / "data")
    cache = tmp_path / "check.json"
    validate_dataset(ds, cache)
    data = json.loads(cache.read_text())
    key = "\n".join(str(p) for p in ds.files(0))
    data["items"][key]["valid"] = "lots"                                   # malformed
    cache.write_text(json.dumps(data))
    assert validate_dataset(ds, cache).checked == 1
    # the same files read with other label rules (2 classes: class 2 is now out of range) are rechecked
    two = FolderDataset(ds.images_dir, ds.masks_dir, num_classes=2)
    assert "outside the classes 0..1" in _check_error(two, cache)


def test_all_ignore_labels_warn_in_one_line(tmp_path):
    ds = _folder(tmp_path, labels=[np.full((6, 8), 255, np.uint8)] * 4)
    with pytest.warns(UserWarning) as record:
        r = validate_dataset(ds, name="folder train")
    assert r.all_ignore and r.valid_pixels == 0
    (w,) = record
    assert "\n" not in str(w.message) and "folder train" in str(w.message) and "ignore" in str(w.message)


def test_train_on_all_ignore_labels_warns_in_one_line(tmp_path, capsys):
    _folder(tmp_path / "data", labels=[np.full((6, 8), 255, np.uint8)] * 4)
    _train(tmp_path / "data", tmp_path / "run")
    warned = [line for line in capsys.readouterr().err.splitlines() if "entirely ignore" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: folder train: "), warned


def test_progress_lines_and_a_summary_on_long_passes(tmp_path):
    stream = io.StringIO()
    validate_dataset(_folder(tmp_path), name="folder train", progress=stream, interval=0.0)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("checking folder train: 1/4 items")
    assert lines[-1].startswith("checked folder train: 4 items") and len(lines) == 5
    quiet = io.StringIO()
    validate_dataset(_folder(tmp_path), progress=quiet, interval=3600.0)
    assert quiet.getvalue() == ""


def test_generated_datasets_have_no_files_and_are_not_read(tmp_path):
    ds = SyntheticShapes(5, (16, 16))
    assert ds.files(0) == () and validate_dataset(ds, tmp_path / "check.json").checked == 0
    assert not (tmp_path / "check.json").exists()


def test_a_protocol_dataset_without_files_is_loaded_and_checked():
    class Bare:
        num_classes, ignore_label, names = 2, 255, ["x", "y"]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 5 * i, np.uint8)

    msg = _check_error(Bare())
    assert msg.startswith("Bare item 1 ('y')") and "[5]" in msg


# -------------------------------------------------------------------- an item that breaks mid-epoch

def test_a_label_corrupted_after_the_check_is_one_loader_error_naming_item_and_file(tmp_path):
    ds = _folder(tmp_path)
    validate_dataset(ds)
    _truncate(ds.files(1)[1])
    with pytest.raises(LoaderError) as info:
        list(BatchLoader(ds, batch_size=2, shuffle=False, prefetch=1))
    msg = str(info.value)
    assert "\n" not in msg and "item 1 ('b')" in msg and str(ds.files(1)[1]) in msg and "truncated" in msg
    assert info.value.index == 1


def test_a_foreign_failure_is_one_line_with_the_item_files(tmp_path):
    class Broken(FolderDataset):
        def _label(self, i):
            raise RuntimeError("decoder exploded:\n  frame 1\n  frame 2\n" + "x" * 2000)

    base = _folder(tmp_path)
    ds = Broken(base.images_dir, base.masks_dir, num_classes=3)
    with pytest.raises(LoaderError) as info:
        next(iter(BatchLoader(ds, batch_size=2, shuffle=False, prefetch=0)))
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 1000
    assert "RuntimeError: decoder exploded: frame 1 frame 2" in msg
    assert str(ds.files(0)[0]) in msg and str(ds.files(0)[1]) in msg


# ----------------------------------------------------------------------------------------- the CLI

def _train(data: Path, out: Path) -> int:
    return main(["train", "--dataset", "folder", "--data", str(data), "--num-classes", "3", "--model", "tiny",
                 "--epochs", "1", "--batch-size", "2", "--crop", "6", "8", "--out", str(out)])


def test_train_reports_a_bad_label_before_training(tmp_path, capsys):
    ds = _folder(tmp_path / "data")
    Image.fromarray(np.full((6, 8), 9, np.uint8)).save(ds.files(3)[1])
    assert _train(tmp_path / "data", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "item 3 ('d')" in err[0] and str(ds.files(3)[1]) in err[0], err
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
    assert (tmp_path / "run" / ".dataset-check.json").is_file()            # a, b, c are not read again


def test_train_meeting_a_corrupt_label_mid_epoch_exits_with_one_line(tmp_path, capsys, monkeypatch):
    import tinydeeplab.data.validate as validate

    ds = _folder(tmp_path / "data")
    _truncate(ds.files(0)[1])
    monkeypatch.setattr(validate, "validate_dataset", lambda *a, **k: None)   # changed after the check
    assert _train(tmp_path / "data", tmp_path / "run") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and str(ds.files(0)[1]) in err[0] and "('a')" in err[0], err
