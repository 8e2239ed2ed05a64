"""Colour-coded masks: colour maps (JSON / CSV), exact conversion, unknown colours, the CLI options."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.cli import main
from tinydeeplab.data import DatasetError, FolderDataset, validate_dataset
from tinydeeplab.data.colour_map import ColourMap, read_colour_mask

FIXTURES = Path(__file__).parent / "fixtures"
TABLE = {"background": (0, 0, 0), "road": (128, 64, 128), "car": (64, 0, 128), "sky": (128, 128, 128),
         "tree": (128, 128, 0)}                                          # 5 classes, as the v3_tiny preset
NAMES, COLOURS = list(TABLE), np.array(list(TABLE.values()), np.uint8)   # (5, 3): the test's own lookup


def _write_json(path, table=TABLE):
    path.write_text(json.dumps({k: list(v) for k, v in table.items()}, indent=1))
    return path


def _write_csv(path, table=TABLE, header=True):
    rows = ["name,r,g,b"] if header else []
    path.write_text("\n".join(rows + [f"{k},{r},{g},{b}" for k, (r, g, b) in table.items()]) + "\n")
    return path


def _labels(rng, h=24, w=32):
    return rng.integers(0, len(TABLE), (h, w)).astype(np.uint8)        # every class, at random


def _colour_dataset(root, n=2, h=24, w=32, seed=0):
    """root/{images,masks}: random images and RGB masks painted from the test's own TABLE; returns labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    labels = []
    for i in range(n):
        label = _labels(rng, h, w)
        Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(COLOURS[label]).save(root / "masks" / f"{i}.png")            # RGB
        labels.append(label)
    return labels


# ------------------------------------------------------------------------------------------ reading maps
@pytest.mark.parametrize("write", [_write_json, _write_csv, lambda p: _write_csv(p, header=False)],
                         ids=["json", "csv", "csv-no-header"])
def test_json_and_csv_give_the_table_in_file_order(tmp_path, write):
    suffix = ".json" if write is _write_json else ".csv"
    cm = ColourMap.read(write(tmp_path / f"classes{suffix}"))
    assert cm.names == NAMES
    assert cm.palette.tolist() == COLOURS.tolist()


def test_round_trip_labels_colours_labels_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    for path in (_write_json(tmp_path / "c.json"), _write_csv(tmp_path / "c.csv")):
        cm = ColourMap.read(path)
        labels = _labels(rng, 40, 50)
        labels[0, :3] = 255                                              # the ignore label survives too
        colours = cm.colours(labels)                                     # (40, 50, 3)
        valid = labels != 255
        assert np.array_equal(colours[valid], COLOURS[labels[valid]])   # the file's colours, by index
        assert np.array_equal(cm.labels(colours, "mask.png", unknown="ignore"), labels)
        assert np.array_equal(cm.labels(colours[1:], "mask.png"), labels[1:])       # no ignore: no error


def test_ignore_colour_is_the_first_grey_no_class_uses():
    cm = ColourMap(["a", "b", "c"], [(0, 0, 0), (1, 1, 1), (3, 3, 3)])
    assert cm.ignore_colour == (2, 2, 2)
    assert cm.colours(np.array([[255]]))[0, 0].tolist() == [2, 2, 2]


def test_unknown_colour_is_refused_in_one_line_naming_file_pixel_and_colour(tmp_path):
    cm = ColourMap.read(_write_json(tmp_path / "classes.json"))
    mask = COLOURS[_labels(np.random.default_rng(2))]                    # (24, 32, 3)
    mask[7, 11] = (1, 2, 3)                                              # first unknown in reading order
    mask[20, 3] = (1, 2, 3)
    mask[21, 30] = (250, 0, 0)
    with pytest.raises(DatasetError) as info:
        cm.labels(mask, "masks/a.png")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("masks/a.png: pixel (row 7, col 11) has colour (1, 2, 3)")
    assert str(tmp_path / "classes.json") in msg and "3 pixels of 2 unknown colours" in msg
    assert "--unknown-colour ignore" in msg
    labels = cm.labels(mask, "masks/a.png", unknown="ignore")
    assert labels[7, 11] == labels[20, 3] == labels[21, 30] == 255
    keep = np.ones(mask.shape[:2], bool)
    keep[[7, 20, 21], [11, 3, 30]] = False
    assert np.array_equal(COLOURS[labels[keep]], mask[keep])            # every other pixel exact


@pytest.mark.parametrize("name,text,expected", [
    ("dup.json", '{"road": [1, 2, 3],\n "car": [1, 2, 3]}', "key 'car': colour (1, 2, 3) already given to class 'road' (key 'road')"),
    ("dupkey.json", '{"road": [1, 2, 3], "road": [4, 5, 6]}', "key 'road': class name given twice"),
    ("big.json", '{"road": [1, 2, 256]}', "key 'road': expected integers 0..255 for r, g, b, got [1, 2, 256]"),
    ("neg.json", '{"road": [-1, 2, 3]}', "key 'road': expected integers 0..255"),
    ("float.json", '{"road": [1.0, 2, 3]}', "key 'road': expected integers 0..255"),
    ("bool.json", '{"road": [true, 2, 3]}', "key 'road': expected integers 0..255"),
    ("two.json", '{"road": [1, 2]}', "key 'road': expected integers 0..255 for r, g, b, got [1, 2]"),
    ("str.json", '{"road": "#ff0000"}', "key 'road': expected [r, g, b]"),
    ("broken.json", '{"road": [1, 2, 3],\n "car": [4, 5 6]}', "line 2 column"),
    ("list.json", '[[1, 2, 3]]', "expected a JSON object"),
    ("empty.json", '{}', "expected a JSON object"),
    ("dup.csv", "name,r,g,b\nroad,1,2,3\ncar,1,2,3\n", "line 3: colour (1, 2, 3) already given to class 'road' (line 2)"),
    ("dupname.csv", "road,1,2,3\nroad,4,5,6\n", "line 2: class name 'road' already given to class 'road' (line 1)"),
    ("big.csv", "road,1,2,3\ncar,300,0,0\n", "line 2: expected integers 0..255 for r, g, b, got [300, 0, 0]"),
    ("text.csv", "road,1,2,x\n", "line 1: expected integers 0..255 for r, g, b, got 1,2,x"),
    ("fields.csv", "road,1,2,3\n\ncar,1,2\n", "line 3: expected 4 fields name,r,g,b, got 3"),
    ("noname.csv", " ,1,2,3\n", "line 1: empty class name"),
    ("header.csv", "name,r,g,b\n", "no classes"),
    ("table.txt", "road,1,2,3\n", "must be a .json or .csv file"),
])
def test_bad_colour_map_files_are_refused_in_one_line_naming_file_and_place(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        ColourMap.read(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and expected in msg, msg


def test_a_missing_colour_map_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="colour map file not found"):
        ColourMap.read(tmp_path / "nope.json")


# ----------------------------------------------------------------------------------- the folder reader
def test_folder_dataset_reads_rgb_masks_exactly(tmp_path):
    labels = _colour_dataset(tmp_path / "d")
    for path in (_write_json(tmp_path / "c.json"), _write_csv(tmp_path / "c.csv")):
        ds = FolderDataset(tmp_path / "d" / "images", tmp_path / "d" / "masks", colour_map=path)
        assert ds.num_classes == 5 and ds.class_names == NAMES and ds.palette.tolist() == COLOURS.tolist()
        for i, want in enumerate(labels):
            image, label = ds[i]
            assert label.dtype == np.uint8 and np.array_equal(label, want)


def test_folder_dataset_reads_palette_and_rgba_masks_by_their_colours(tmp_path):
    cm = ColourMap(NAMES, COLOURS)
    labels = _labels(np.random.default_rng(3))
    p_image = Image.fromarray(labels, mode="L").convert("P")
    flat = np.zeros((256, 3), np.uint8)
    flat[:5] = COLOURS
    p_image.putpalette(flat.ravel().tolist())                            # index k shows COLOURS[k]
    p_image.save(tmp_path / "p.png")
    rgba = np.concatenate([COLOURS[labels], np.full(labels.shape + (1,), 200, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    for name in ("p.png", "rgba.png"):
        assert np.array_equal(cm.labels(read_colour_mask(tmp_path / name), name), labels), name


def test_folder_dataset_option_errors(tmp_path):
    _colour_dataset(tmp_path / "d")
    images, masks, cmap = tmp_path / "d" / "images", tmp_path / "d" / "masks", _write_json(tmp_path / "c.json")
    with pytest.raises(DatasetError, match="num_classes 4 but the colour map .* has 5 classes"):
        FolderDataset(images, masks, 4, colour_map=cmap)
    with pytest.raises(DatasetError, match="unknown_colour must be one of"):
        FolderDataset(images, masks, colour_map=cmap, unknown_colour="nearest")
    with pytest.raises(DatasetError, match="needs num_classes"):
        FolderDataset(images, masks)
    with pytest.raises(DatasetError, match="is a RGB colour image"):          # RGB masks without a map
        FolderDataset(images, masks, 5).read_label(0)


def test_the_dataset_check_is_redone_when_the_colour_map_changes(tmp_path):
    _colour_dataset(tmp_path / "d")
    images, masks, cache = tmp_path / "d" / "images", tmp_path / "d" / "masks", tmp_path / "check.json"
    validate_dataset(FolderDataset(images, masks, colour_map=_write_json(tmp_path / "a.json")), cache)
    fewer = dict(TABLE)
    del fewer["tree"]
    smaller = FolderDataset(images, masks, colour_map=_write_json(tmp_path / "b.json", fewer))
    with pytest.raises(DatasetError, match=r"has colour \(128, 128, 0\), which is not in the colour map"):
        validate_dataset(smaller, cache)                                 # not answered from the cache


# ------------------------------------------------------------------------------------ the command line
PRESET = FIXTURES / "v3_tiny" / "preset"                                # 5 classes, no centre crop
CROP_PRESET = FIXTURES / "v3plus_tiny" / "preset"                       # 5 classes, crop to 1:1


def test_evaluate_with_a_colour_map_counts_the_mapped_labels(tmp_path, capsys):
    labels = _colour_dataset(tmp_path / "data" / "val")
    cmap = _write_csv(tmp_path / "classes.csv")
    metrics = tmp_path / "m.json"
    assert main(["evaluate", "--preset", str(PRESET), "--dataset", "folder", "--data", str(tmp_path / "data"),
                 "--colour-map", str(cmap), "--json", str(metrics)]) == 0
    saved = json.loads(metrics.read_text())
    assert saved["class_names"] == NAMES
    rows = np.asarray(saved["confusion"]).sum(1)                          # labelled pixels per class
    assert rows.tolist() == np.bincount(np.concatenate([x.ravel() for x in labels]), minlength=5).tolist()
    assert "background" in capsys.readouterr().out


def test_evaluate_unknown_colour_error_and_ignore(tmp_path, capsys):
    labels = _colour_dataset(tmp_path / "data" / "val")
    mask_path = tmp_path / "data" / "val" / "masks" / "1.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[5, 9] = (9, 9, 9)
    Image.fromarray(mask).save(mask_path)
    args = ["evaluate", "--preset", str(PRESET), "--dataset", "folder", "--data", str(tmp_path / "data"),
            "--colour-map", str(_write_json(tmp_path / "classes.json"))]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{mask_path}: pixel (row 5, col 9) has colour (9, 9, 9)" in err
    metrics = tmp_path / "m.json"
    assert main([*args, "--unknown-colour", "ignore", "--json", str(metrics)]) == 0
    total = int(np.sum(json.loads(metrics.read_text())["confusion"]))
    assert total == sum(x.size for x in labels) - 1                      # the one unknown pixel is ignored


@pytest.mark.parametrize("extra,expected", [
    (["--dataset", "shapes", "--colour-map", "c.json"], "--colour-map is for --dataset folder"),
    (["--dataset", "shapes", "--unknown-colour", "ignore"], "--unknown-colour ignore needs --colour-map"),
    (["--dataset", "folder", "--data", "DATA"], "needs --num-classes (or --colour-map FILE"),
])
def test_colour_map_options_are_checked(tmp_path, capsys, extra, expected):
    extra = [str(tmp_path / e) if e in ("c.json", "DATA") else e for e in extra]
    assert main(["evaluate", "--preset", str(PRESET), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_train_with_a_colour_map(tmp_path, capsys):
    _colour_dataset(tmp_path / "data" / "train", n=2, h=32, w=32)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data", str(tmp_path / "data"), "--colour-map",
                 str(_write_json(tmp_path / "classes.json")), "--model", "tiny", "--epochs", "1",
                 "--batch-size", "2", "--crop", "32", "32", "--warmup", "0", "--out", str(out)]) == 0
    assert (out / "checkpoint.npz").is_file()
    assert f'colour-map = "{tmp_path / "classes.json"}"' in (out / "config.toml").read_text()


def test_predict_writes_colour_masks_with_the_table(tmp_path, capsys):
    image = np.random.default_rng(4).integers(0, 256, (40, 60, 3)).astype(np.uint8)     # not square
    Image.fromarray(image).save(tmp_path / "photo.png")
    cmap = _write_json(tmp_path / "classes.json")
    assert main(["predict", "--preset", str(CROP_PRESET), str(tmp_path / "photo.png"), "--out",
                 str(tmp_path / "out"), "--colour-map", str(cmap)]) == 0
    labels = np.asarray(Image.open(tmp_path / "out" / "photo_labels.png"))
    colours_png = Image.open(tmp_path / "out" / "photo_colours.png")
    assert colours_png.mode == "RGB" and colours_png.size == (60, 40)
    colours = np.asarray(colours_png)
    inside = labels != 255                                               # the preset sees the centre 40x40
    assert inside.sum() == 40 * 40 and (~inside).sum() == 40 * 20
    assert np.array_equal(colours[inside], COLOURS[labels[inside]])
    assert (colours[~inside] == 1).all()                                 # (0, 0, 0) is a class: grey 1
    printed = capsys.readouterr().out
    assert "photo_colours.png" in printed and "not labelled 33 %" in printed
    assert any(name in printed for name in NAMES)


def test_predict_refuses_a_colour_map_of_another_class_count(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    small = _write_csv(tmp_path / "c.csv", {"a": (1, 2, 3), "b": (4, 5, 6)})
    assert main(["predict", "--preset", str(PRESET), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                 "--colour-map", str(small)]) == 2
    assert "has 2 classes, the model predicts 5" in capsys.readouterr().err
