"""Dataset readers, transforms, synthetic shapes and the batch loader, on tiny files written here.

No test needs a real dataset: each writes the few files it needs into ``tmp_path``.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from tinydeeplab.data import (BatchLoader, CamVid, Compose, DatasetError, FolderDataset, LoaderError, PadTo,
                              RandomCrop, RandomHorizontalFlip, RandomScale, Resize, SBDSegmentation,
                              SyntheticShapes, VOCSegmentation, to_model_input, voc_palette)
from tinydeeplab.data.sbd import _field

# --------------------------------------------------------------------------------------------- helpers


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)     # (H, W, 3)


def _save_rgb(path: Path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(path)


def _save_palette_png(path: Path, label):
    """A VOC-style label: mode "P" whose indices are the classes and whose palette gives the colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label.astype(np.uint8), "L").convert("P")
    im.putpalette(voc_palette(256).ravel().tolist())
    im.save(path)
    with Image.open(path) as check:
        assert check.mode == "P"


def _save_grey_png(path: Path, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), "L").save(path)


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------------------- VOC

VOC_LABEL = np.array([[0, 0, 15, 15, 255, 20],
                      [0, 1, 15, 15, 255, 20],
                      [0, 1, 1, 255, 255, 20],
                      [7, 7, 7, 0, 0, 0]], np.uint8)                                # (4, 6)


@pytest.fixture
def voc(tmp_path):
    """VOCdevkit/VOC2012 with train = [a, b] and val = [c]."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nb\n\n")
    (sets / "val.txt").write_text("c\n")
    for k, name in enumerate("abc"):
        _save_rgb(root / "JPEGImages" / f"{name}.jpg", _image(4, 6, k))
        _save_palette_png(root / "SegmentationClass" / f"{name}.png", np.roll(VOC_LABEL, k, axis=1))
    return root


def test_voc_reads_palette_indices_and_keeps_the_255_boundary(voc):
    for root in (voc, voc.parent, voc.parent.parent):           # VOC2012, VOCdevkit, the folder above
        ds = VOCSegmentation(root, split="train")
        assert len(ds) == 2 and ds.names == ["a", "b"]
    image, label = ds[1]
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, np.roll(VOC_LABEL, 1, axis=1))   # indices, not palette colours
    assert ds.num_classes == 21 and len(ds.class_names) == 21 and ds.class_names[15] == "person"
    assert ds.class_names[0] == "background" and ds.class_names[20] == "tvmonitor"
    assert ds.ignore_label == 255 and ds.palette.shape == (21, 3) and ds.palette.dtype == np.uint8
    np.testing.assert_array_equal(ds[-1][1], label)
    assert VOCSegmentation(voc, "val").names == ["c"]
    with pytest.raises(IndexError):
        ds[2]


def test_voc_unknown_split_lists_the_available_ones(voc):
    msg = _error(VOCSegmentation, voc, split="trainaug")
    assert "unknown split 'trainaug'" in msg and "trainaug.txt" in msg and "['train', 'val']" in msg


@pytest.mark.parametrize("subdir", ["SegmentationClass", "JPEGImages", "ImageSets/Segmentation"])
def test_voc_missing_directory_is_named(voc, subdir):
    for p in sorted((voc / subdir).iterdir()):
        p.unlink()
    (voc / subdir).rmdir()
    msg = _error(VOCSegmentation, voc)
    assert str(voc / subdir) in msg and "expected" in msg


def test_voc_missing_file_is_named(voc):
    (voc / "JPEGImages" / "b.jpg").unlink()
    msg = _error(VOCSegmentation, voc)
    assert "b.jpg" in msg and "1 of 4" in msg


def test_voc_not_a_voc_directory(tmp_path):
    (tmp_path / "something").mkdir()
    msg = _error(VOCSegmentation, tmp_path / "something")
    assert "does not look like PASCAL VOC" in msg and "JPEGImages" in msg
    assert "not found" in _error(VOCSegmentation, tmp_path / "nope")


def test_voc_label_out_of_range(voc):
    bad = VOC_LABEL.copy()
    bad[0, 0], bad[1, 0] = 21, 254
    _save_palette_png(voc / "SegmentationClass" / "b.png", bad)
    ds = VOCSegmentation(voc)
    ds[0]
    msg = _error(ds.__getitem__, 1)
    assert "b.png" in msg and "[21, 254]" in msg and "0..20" in msg


def test_voc_rgb_colour_mask_is_rejected(voc):
    _save_rgb(voc / "SegmentationClass" / "a.png", voc_palette(256)[VOC_LABEL])
    msg = _error(VOCSegmentation(voc).__getitem__, 0)
    assert "a.png" in msg and "colour image" in msg


def test_voc_image_and_label_sizes_must_match(voc):
    _save_rgb(voc / "JPEGImages" / "a.jpg", _image(5, 6))
    assert "same size" in _error(VOCSegmentation(voc).__getitem__, 0)


# ------------------------------------------------------------------------------------------------- SBD


@pytest.fixture
def sbd(tmp_path):
    root = tmp_path / "benchmark_RELEASE" / "dataset"
    root.mkdir(parents=True)
    (root / "train.txt").write_text("2008_000002\n2008_000003\n")
    (root / "val.txt").write_text("2008_000004\n")
    (root / "cls").mkdir()
    for k, name in enumerate(["2008_000002", "2008_000003", "2008_000004"]):
        _save_rgb(root / "img" / f"{name}.jpg", _image(5, 7, k))
        seg = (np.arange(35).reshape(5, 7) + k) % 21
        scipy.io.savemat(root / "cls" / f"{name}.mat",
                         {"GTcls": {"Segmentation": seg.astype(np.uint8),
                                    "CategoriesPresent": np.unique(seg)[1:].astype(np.uint8)}})
    return root


def test_sbd_reads_the_segmentation_field(sbd):
    for root in (sbd, sbd.parent):
        ds = SBDSegmentation(root, "train")
        assert ds.names == ["2008_000002", "2008_000003"]
    image, label = ds[1]
    assert image.shape == (5, 7, 3) and label.dtype == np.uint8
    np.testing.assert_array_equal(label, (np.arange(35).reshape(5, 7) + 1) % 21)
    assert ds.num_classes == 21 and ds.class_names[1] == "aeroplane" and len(SBDSegmentation(sbd, "val")) == 1


def test_sbd_field_helper_handles_both_loadmat_forms(sbd):
    path = sbd / "cls" / "2008_000002.mat"
    expected = np.arange(35).reshape(5, 7) % 21
    for kwargs in ({}, {"squeeze_me": True}, {"squeeze_me": True, "struct_as_record": False}):
        np.testing.assert_array_equal(_field(scipy.io.loadmat(path, **kwargs)["GTcls"], "Segmentation"),
                                      expected)


@pytest.mark.parametrize("content, expected", [
    ("garbage", "as a MATLAB .mat file"),
    ({"other": np.zeros((5, 7))}, "no 'GTcls' struct (variables: ['other'])"),
    ({"GTcls": {"Boundaries": np.zeros((5, 7))}}, "no field 'Segmentation'"),
    ({"GTcls": {"Segmentation": np.full((5, 7), 300.0)}}, "do not fit 0..255"),
    ({"GTcls": {"Segmentation": np.full((5, 7), 30, np.uint8)}}, "outside the classes 0..20"),
])
def test_sbd_bad_mat_files(sbd, content, expected):
    path = sbd / "cls" / "2008_000003.mat"
    if isinstance(content, str):
        path.write_bytes(b"this is not a MATLAB file at all, sorry" * 8)
    else:
        scipy.io.savemat(path, content)
    ds = SBDSegmentation(sbd)
    ds[0]
    msg = _error(ds.__getitem__, 1)
    assert "2008_000003.mat" in msg and expected in msg


def test_sbd_layout_errors(sbd, tmp_path):
    assert "available splits: ['train', 'val']" in _error(SBDSegmentation, sbd, "test")
    (sbd / "cls" / "2008_000004.mat").unlink()
    assert "2008_000004.mat" in _error(SBDSegmentation, sbd, "val")
    (tmp_path / "empty").mkdir()
    assert "does not look like SBD" in _error(SBDSegmentation, tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- CamVid


@pytest.fixture
def camvid(tmp_path):
    root = tmp_path / "camvid"
    for split, names in (("train", ["0001TP_006690", "0001TP_006720", "Seq05VD_f00000"]), ("test", ["x"])):
        for k, name in enumerate(names):
            _save_rgb(root / split / f"{name}.png", _image(6, 8, k))
            _save_grey_png(root / f"{split}annot" / f"{name}.png", (np.arange(48).reshape(6, 8) + k) % 12)
    return root


def test_camvid_maps_void_11_to_ignore(camvid):
    ds = CamVid(camvid, "train")
    assert len(ds) == 3 and ds.names == ["0001TP_006690", "0001TP_006720", "Seq05VD_f00000"]
    image, label = ds[2]
    raw = (np.arange(48).reshape(6, 8) + 2) % 12
    np.testing.assert_array_equal(label, np.where(raw == 11, 255, raw))
    np.testing.assert_array_equal(image, _image(6, 8, 2))                 # PNG: lossless
    assert ds.num_classes == 11 and ds.class_names[0] == "Sky" and ds.class_names[10] == "Bicyclist"
    assert ds.palette.shape == (11, 3) and ds.ignore_label == 255


def test_camvid_errors(camvid):
    msg = _error(CamVid, camvid, "val")
    assert "valannot" in msg and "['test', 'train']" in msg
    _save_rgb(camvid / "train" / "extra.png", _image(6, 8))
    msg = _error(CamVid, camvid, "train")
    assert "1 images without a label" in msg and "extra" in msg
    (camvid / "train" / "extra.png").unlink()
    _save_grey_png(camvid / "trainannot" / "0001TP_006720.png", np.full((6, 8), 12))
    msg = _error(CamVid(camvid).__getitem__, 1)
    assert "0001TP_006720.png" in msg and "[12]" in msg


# ---------------------------------------------------------------------------------------------- Folder


def test_folder_pairs_by_stem_and_remaps_its_ignore_value(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _save_rgb(images / "b.png", _image(3, 4, 1))
    _save_rgb(images / "a.jpg", _image(3, 4, 0))
    _save_rgb(images / "c.bmp", _image(3, 4, 2))
    (images / "notes.txt").write_text("not an image")
    for k, name in enumerate("abc"):
        _save_grey_png(masks / f"{name}.png", np.array([[0, 1, 2, 254]] * 3) if k == 1 else np.full((3, 4), k))
    ds = FolderDataset(images, masks, num_classes=3, class_names=["bg", "cat", "dog"], ignore_label=254)
    assert ds.names == ["a", "b", "c"] and ds.class_names == ["bg", "cat", "dog"] and ds.palette.shape == (3, 3)
    image, label = ds[1]
    np.testing.assert_array_equal(image, _image(3, 4, 1))
    np.testing.assert_array_equal(label, [[0, 1, 2, 255]] * 3)            # the file's 254 -> 255
    assert FolderDataset(images, masks, 3).class_names == ["class_0", "class_1", "class_2"]


def test_readers_list_each_items_files_and_read_its_label_alone(voc, sbd, camvid, tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "ma").mkdir()
    _save_rgb(tmp_path / "im" / "q.jpg", _image(4, 6))
    _save_grey_png(tmp_path / "ma" / "q.png", np.full((4, 6), 254))
    folder = FolderDataset(tmp_path / "im", tmp_path / "ma", num_classes=2, ignore_label=254)
    for ds in (VOCSegmentation(voc), SBDSegmentation(sbd), CamVid(camvid), folder):
        for i in (0, -1):
            image_path, label_path = ds.files(i)
            assert image_path.is_file() and label_path.is_file()
            assert ds.names[i] == image_path.stem == label_path.stem
            assert image_path.parent != label_path.parent
            np.testing.assert_array_equal(ds.read_label(i), ds[i][1])
    assert folder.read_label(0).max() == 255                   # the file's 254 is the protocol's 255
    with pytest.raises(IndexError):
        folder.files(1)


def test_folder_errors(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    assert "no images" in _error(FolderDataset, images, masks, 2)
    _save_rgb(images / "a.png", _image(3, 4))
    _save_rgb(images / "b.png", _image(3, 4))
    assert "no .png masks" in _error(FolderDataset, images, masks, 2)
    _save_grey_png(masks / "a.png", np.zeros((3, 4)))
    _save_grey_png(masks / "z.png", np.zeros((3, 4)))
    msg = _error(FolderDataset, images, masks, 2)
    assert "['b']" in msg and "['z']" in msg and "pair up by file stem" in msg
    (masks / "z.png").rename(masks / "b.png")
    _save_grey_png(masks / "b.png", np.array([[0, 1, 2, 255]] * 3))
    ds = FolderDataset(images, masks, 2)
    assert (ds[0][1] == 0).all()
    msg = _error(ds.__getitem__, 1)
    assert "b.png" in msg and "[2]" in msg
    assert "not found" in _error(FolderDataset, tmp_path / "nope", masks, 2)
    assert "2 class names given for 3 classes" in _error(FolderDataset, images, masks, 3, ["x", "y"])
    assert "ignore_label" in _error(FolderDataset, images, masks, 3, ignore_label=1)
    _save_rgb(images / "a.jpg", _image(3, 4))
    assert "share the name 'a'" in _error(FolderDataset, images, masks, 2)


# ------------------------------------------------------------------------------------------ transforms

# well-separated colours for labels 0..9; 255 (ignore) is drawn black
LUT = np.zeros((256, 3), np.uint8)
LUT[:10] = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
            [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [128, 128, 128]]


def _colour_coded_pair(seed=0, h=48, w=64, block=16):
    """Blocks of random labels (some ignored); each pixel's colour is the colour of its label."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 10, (h // block + 1, w // block + 1))
    blocks[rng.random(blocks.shape) < 0.1] = 255
    label = np.kron(blocks, np.ones((block, block), np.int64))[:h, :w].astype(np.uint8)   # (H, W)
    return LUT[label], label


def _uniform_neighbourhood(label, r=2):
    """Pixels whose (2r+1)^2 neighbourhood has one label (away from edges between blocks)."""
    h, w = label.shape
    padded = np.pad(label.astype(np.int32), r, constant_values=-1)
    same = np.ones((h, w), bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= padded[dy:dy + h, dx:dx + w] == label
    return same


def test_augmentation_keeps_labels_on_their_pixels():
    image, label = _colour_coded_pair()
    train = Compose([RandomScale(0.5, 2.0), RandomCrop(48), RandomHorizontalFlip()])
    flips = sizes = 0
    for seed in range(12):
        x, y = train(image, label, np.random.default_rng(seed))
        assert x.shape == (48, 48, 3) and y.shape == (48, 48) and x.dtype == y.dtype == np.uint8
        valid = y != 255
        # away from block edges the bilinear image is exactly the label's colour
        interior = _uniform_neighbourhood(y) & valid
        assert interior.sum() > 50
        np.testing.assert_allclose(x[interior].astype(int), LUT[y[interior]].astype(int), atol=2)
        # and nearly every labelled pixel's colour is closest to its own label's colour
        nearest = np.argmin(((x[valid, None, :].astype(int) - LUT[None, :10].astype(int)) ** 2).sum(-1), axis=1)
        assert (nearest == y[valid]).mean() > 0.9
        # replay the same draws step by step to see which branches ran
        rng = np.random.default_rng(seed)
        _, scaled = train.transforms[0](image, label, rng)
        train.transforms[1](*train.transforms[0](image, label, np.random.default_rng(seed)), rng)
        sizes += min(scaled.shape) < 48          # the crop had to pad
        flips += rng.random() < 0.5
    assert 0 < flips < 12 and sizes > 0                  # both flip branches and padding were exercised


def test_crop_and_flip_move_labels_with_pixels_exactly():
    h, w = 20, 30
    rows, cols = np.mgrid[0:h, 0:w]
    label = ((rows * 7 + cols * 3) % 200).astype(np.uint8)                         # (H, W)
    image = np.stack([rows, cols, label], -1).astype(np.uint8)                      # (H, W, 3) position-coded
    t = Compose([RandomCrop((16, 24)), RandomHorizontalFlip(p=1.0)])
    x, y = t(image, label, np.random.default_rng(3))
    np.testing.assert_array_equal(x[..., 2], y)
    assert (np.diff(x[0, :, 1].astype(int)) == -1).all()                           # columns reversed
    assert (np.diff(x[:, 0, 0].astype(int)) == 1).all()                            # rows kept
    x2, y2 = t(image, label, np.random.default_rng(3))
    np.testing.assert_array_equal(x, x2)                                            # same rng, same crop
    np.testing.assert_array_equal(y, y2)
    x0, _ = RandomHorizontalFlip(p=0.0)(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(x0, image)


def test_crop_pads_with_the_ignore_label():
    image, label = np.full((10, 12, 3), 200, np.uint8), np.full((10, 12), 3, np.uint8)
    for seed in range(5):
        x, y = RandomCrop(16)(image, label, np.random.default_rng(seed))
        assert x.shape == (16, 16, 3) and y.shape == (16, 16)
        assert (y == 3).sum() == 120 and set(np.unique(y)) == {3, 255}      # all of the image, once
        np.testing.assert_array_equal(x[y == 255], 0)
        np.testing.assert_array_equal(x[y == 3], 200)
    _, y = RandomCrop((16, 8), ignore_label=9)(image, label, np.random.default_rng(0))
    assert y.shape == (16, 8) and set(np.unique(y)) == {3, 9}


def test_eval_transforms():
    image, label = _colour_coded_pair(1, 30, 45)
    x, y = Resize((20, 33))(image, label)
    assert x.shape == (20, 33, 3) and y.shape == (20, 33) and set(np.unique(y)) <= set(np.unique(label))
    x, y = PadTo(multiple=16)(image, label)
    assert x.shape == (32, 48, 3) and (y[30:] == 255).all() and (y[:, 45:] == 255).all()
    np.testing.assert_array_equal(y[:30, :45], label)
    np.testing.assert_array_equal(x[:30, :45], image)
    assert (x[30:] == 0).all()
    assert PadTo((40, 20), multiple=8)(image, label)[1].shape == (40, 48)
    with pytest.raises(ValueError):
        PadTo()
    with pytest.raises(ValueError, match="label must be"):
        Resize(8)(image, label[:-1])


def test_random_scale_sizes_and_steps():
    image, label = _colour_coded_pair(0, 40, 56)
    for seed in range(5):
        x, y = RandomScale(0.5, 2.0, step=0.25)(image, label, np.random.default_rng(seed))
        assert x.shape[:2] == y.shape and x.shape[0] % 10 == 0                      # 40 * (k / 4)
        assert x.shape[0] / 40 == x.shape[1] / 56 and 0.5 <= x.shape[0] / 40 <= 2
        assert set(np.unique(y)) <= set(np.unique(label))                          # labels never blended


def test_to_model_input():
    x = to_model_input(np.array([[[[0, 127, 255]]]], np.uint8))
    assert x.dtype == np.float32 and x.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(x.ravel(), [-1, 127 / 127.5 - 1, 1], atol=1e-6)
    np.testing.assert_array_equal(to_model_input(np.zeros((2, 3, 3), np.uint8) + 9, 1, 0), np.full((1, 2, 3, 3), 9))


# ------------------------------------------------------------------------------------- synthetic shapes


def test_synthetic_shapes_are_deterministic_and_cover_all_classes():
    ds = SyntheticShapes(length=10, size=(64, 80), seed=5)
    later_first = [ds[i] for i in (3, 0)]
    again = SyntheticShapes(length=10, size=(64, 80), seed=5)
    for (image, label), i in zip(later_first, (3, 0)):
        np.testing.assert_array_equal(image, again[i][0])
        np.testing.assert_array_equal(label, again[i][1])
    assert not np.array_equal(ds[0][0], SyntheticShapes(10, (64, 80), seed=6)[0][0])
    assert not np.array_equal(ds[0][1], ds[1][1])
    seen = set()
    fractions = []
    for i in range(8):
        image, label = ds[i]
        assert image.shape == (64, 80, 3) and image.dtype == np.uint8 and label.shape == (64, 80)
        assert set(np.unique(label)) <= {0, 1, 2, 3} and (label > 0).any()
        seen |= set(np.unique(label).tolist())
        fractions.append((label > 0).mean())
    assert seen == {0, 1, 2, 3}
    assert 0.1 < np.mean(fractions) < 0.7                              # shapes are large but not everything
    assert ds.class_names == ["background", "circle", "square", "triangle"] and ds.num_classes == 4
    assert len(ds.names) == 10 and len(set(ds.names)) == 10


def test_synthetic_shape_colour_does_not_give_away_the_class():
    ds = SyntheticShapes(length=30, size=(48, 48))
    means = {1: [], 2: [], 3: []}
    for i in range(30):
        image, label = ds[i]
        for c in means:
            if (label == c).sum() > 30:
                means[c].append(image[label == c].mean(0))
    for c, ms in means.items():
        assert len(ms) >= 3 and np.std(np.array(ms), axis=0).min() > 30          # colours vary a lot


# ------------------------------------------------------------------------------------------------ loader


class _Flaky:
    """A dataset whose item ``bad`` raises."""

    def __init__(self, n=10, bad=5, size=(8, 8)):
        self.inner, self.bad, self.names = SyntheticShapes(n, size), bad, [f"item{i}" for i in range(n)]

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == self.bad:
            raise KeyError("broken file")
        return self.inner[i]


def test_loader_shapes_dtypes_and_content():
    ds = SyntheticShapes(7, size=(12, 10))
    loader = BatchLoader(ds, batch_size=3, shuffle=False)
    assert len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2
    for b, (x, y) in enumerate(batches):
        assert x.shape == (3, 12, 10, 3) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1 + 1e-6
        assert y.shape == (3, 12, 10) and y.dtype == np.int32
        for k in range(3):
            image, label = ds[3 * b + k]
            np.testing.assert_allclose(x[k], to_model_input(image)[0], atol=1e-6)
            np.testing.assert_array_equal(y[k], label)
    full = BatchLoader(ds, 3, drop_last=False, scale=None, offset=None)
    assert len(full) == 3
    sizes = [x.shape[0] for x, _ in full]
    assert sizes == [3, 3, 1] and next(iter(full))[0].dtype == np.uint8


def test_loader_is_reproducible_per_seed_and_epoch():
    ds = SyntheticShapes(9, size=(20, 20))
    aug = Compose([RandomScale(0.75, 1.5), RandomCrop(16), RandomHorizontalFlip()])

    def run(seed, epoch, prefetch=2):
        loader = BatchLoader(ds, 4, transform=aug, seed=seed, prefetch=prefetch, drop_last=False)
        loader.set_epoch(epoch)
        return list(loader)

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(p, q) for (xa, ya), (xb, yb) in zip(a, b)
                                        for p, q in ((xa, xb), (ya, yb)))

    reference = run(0, 1)
    assert same(reference, run(0, 1)) and same(reference, run(0, 1, prefetch=0))
    assert not same(reference, run(0, 2)) and not same(reference, run(1, 1))
    loader = BatchLoader(ds, 4, shuffle=True)
    orders = [np.concatenate(loader.batches(e)) for e in range(3)]
    assert all(len(set(o.tolist())) == 8 and o.max() < 9 for o in orders)      # no item twice
    assert not np.array_equal(orders[0], orders[1])
    first, second = list(loader), list(loader)                 # iterating advances the epoch
    assert loader.epoch == 2 and not same(first, second)


def test_loader_reraises_worker_errors_with_the_item_index():
    for prefetch in (2, 0):
        loader = BatchLoader(_Flaky(), batch_size=2, shuffle=False, prefetch=prefetch)
        got = []
        with pytest.raises(LoaderError, match=r"item 5 \('item5'\).*batch 2.*KeyError.*broken file") as info:
            for batch in loader:
                got.append(batch)
        assert len(got) == 2 and info.value.index == 5 and isinstance(info.value.__cause__, KeyError)


def test_loader_rejects_mixed_sizes_and_empty_epochs():
    class Mixed(_Flaky):
        def __getitem__(self, i):
            return SyntheticShapes(1, (8 + i % 2, 8))[0]

    with pytest.raises(DatasetError, match="same size.*RandomCrop"):
        list(BatchLoader(Mixed(), batch_size=2, shuffle=False))
    x, _ = next(iter(BatchLoader(Mixed(), batch_size=2, transform=PadTo((12, 8)))))
    assert x.shape == (2, 12, 8, 3)
    with pytest.raises(DatasetError, match="fewer than batch_size"):
        BatchLoader(SyntheticShapes(3, (8, 8)), batch_size=4)


def test_loader_prefetches_in_the_background_and_stops_on_break():
    class Slow(_Flaky):
        calls: list = []

        def __getitem__(self, i):
            self.calls.append(threading.current_thread().name)
            time.sleep(0.01)
            return self.inner[i]

    ds = Slow(n=40, bad=-1)
    loader = BatchLoader(ds, batch_size=2, prefetch=2)
    for _ in loader:
        time.sleep(0.1)                                         # the consumer "computes"; the worker fills up
        break
    assert all(name.startswith("BatchLoader") for name in ds.calls)
    assert len(ds.calls) >= 4                                   # more than the one batch consumed
    time.sleep(0.3)
    n = len(ds.calls)
    time.sleep(0.2)
    assert len(ds.calls) == n < 40                              # the worker stopped after the break
    assert not [t for t in threading.enumerate() if t.name.startswith("BatchLoader")]


def test_the_loader_normalises_with_the_models_converter_per_channel():
    """Training batches and inference inputs go through the same normalisation, per-channel values included."""
    from tinydeeplab.models.preprocessor import ImageConverter
    conv = ImageConverter(scale=[1 / 58.4, 1 / 57.1, 1 / 57.4], offset=[-2.12, -2.04, -1.80])
    ds = SyntheticShapes(4, size=(16, 16))
    x, _ = next(iter(BatchLoader(ds, 2, shuffle=False, converter=conv, prefetch=0)))
    for k in range(2):
        np.testing.assert_array_equal(x[k], conv(ds[k][0])[0][0])


def test_camvid_display_colours_are_far_apart():
    """Overlays must tell classes apart: the SegNet legend drew road, car and fence alike (distance < 70)."""
    from tinydeeplab.data.camvid import CAMVID_PALETTE, SEGNET_PALETTE
    def closest(palette):
        p = palette.astype(float)
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)) + np.eye(len(p)) * 1e9
        return d.min()
    assert closest(SEGNET_PALETTE) < 70 < 85 <= closest(CAMVID_PALETTE)
