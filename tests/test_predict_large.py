"""Large images: streaming tiled segmentation (exact single tile, blending rule, bounded memory) and
the predict command's options around it (--window/--overlap/--full-image, same-stem outputs)."""
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.cli import main
from tinydeeplab.io.keras_preset import load_keras_preset, save_keras_preset
from tinydeeplab.models.preprocessor import resize
from tinydeeplab.models.recipes import build_model
from tinydeeplab.nn import inference_mode
from tinydeeplab.train import segment_tiled


def image_of(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def plain_starts(size, window, stride):
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else starts + [size - window]


def plain_weight(n, overlap):
    """The documented ramp, one value at a time."""
    return np.array([min(1.0, (i + 1) / (overlap + 1), (n - i) / (overlap + 1)) for i in range(n)], np.float32)


def reference_scores(model, x, window, overlap):
    """Full-size accumulation of ramp-weighted tile probabilities over a model-ready x (1, H, W, 3)."""
    _, H, W, _ = x.shape
    (wh, ww), (oh, ow) = window, overlap
    acc, total = 0.0, np.zeros((H, W, 1), np.float32)
    for t in plain_starts(H, wh, wh - oh):
        for l in plain_starts(W, ww, ww - ow):
            with inference_mode():
                p = softmax(model.forward(x[:, t:t + wh, l:l + ww])[0])               # (wh, ww, K)
            w = plain_weight(wh, oh)[:, None, None] * plain_weight(ww, ow)[None, :, None]
            acc = acc + np.pad(w * p, ((t, H - t - wh), (l, W - l - ww), (0, 0)))
            total += np.pad(w, ((t, H - t - wh), (l, W - l - ww), (0, 0)))
    return acc / total                                                                  # (H, W, K)


@pytest.mark.parametrize("image_size", [None, (48, 64)])
def test_one_tile_gives_exactly_the_whole_image_labels(rng, image_size):
    model = build_model("tiny", num_classes=5, seed=3, image_size=image_size)
    image = image_of(rng, 70, 130)                              # the (48, 64) preset crops it
    expected = model.segment(image)
    assert np.array_equal(segment_tiled(model, image), expected)
    assert np.array_equal(segment_tiled(model, image, window=(500, 500), overlap=7), expected)


def test_blended_labels_equal_a_plain_full_size_accumulation(rng):
    model = build_model("tiny", num_classes=6, seed=1)
    image = image_of(rng, 75, 101)
    window, overlap = (32, 40), (8, 12)
    x, _ = model.preprocessor(image)                                                    # (1, 75, 101, 3)
    expected = reference_scores(model, x, window, overlap).argmax(-1)
    got = segment_tiled(model, image, window=window, overlap=overlap)
    assert np.array_equal(got, expected)
    from tinydeeplab.train.evaluate import softmax
    whole = softmax(model.forward(x))[0]                                                 # (75, 101, K)
    assert not np.allclose(reference_scores(model, x, window, overlap), whole, atol=1e-4)   # tiling changes scores


def test_blending_with_a_resizing_preset_matches_the_plain_reference(rng):
    model = build_model("tiny", num_classes=4, seed=2, image_size=(64, 96))
    image = image_of(rng, 90, 110)
    x, (top, left, ch, cw) = model.preprocessor(image)                                  # (1, 64, 96, 3)
    scores = np.log(reference_scores(model, x, (32, 32), (8, 8)))                        # (64, 96, K)
    expected = np.full(image.shape[:2], 255, np.uint8)
    expected[top:top + ch, left:left + cw] = resize(scores[None], (ch, cw))[0].argmax(-1)
    assert np.array_equal(segment_tiled(model, image, window=(32, 32), overlap=8), expected)


def test_memory_stays_within_one_row_of_tiles(rng):
    """Peak traced allocation on a tall image is that of one tile row plus a band's slack, far
    below one full (H, W, K) float32 array; every forward sees at most one window."""
    model = build_model("tiny", num_classes=8, seed=0)
    window, overlap, W, K = (64, 64), 16, 256, 8
    seen = []
    forward = model.forward
    model.forward = lambda x, *a, **k: (seen.append(x.shape), forward(x, *a, **k))[1]

    def peak(image):
        segment_tiled(model, image[:64, :64], window=window, overlap=overlap)    # warm-up (caches)
        tracemalloc.start()
        try:
            segment_tiled(model, image, window=window, overlap=overlap)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    tall = image_of(rng, 1024, W)
    one_row = peak(tall[:64])
    band = window[0] * W * K * 4
    full = tall.shape[0] * W * K * 4
    got = peak(tall)
    assert got < one_row + band < full / 3, (got, one_row, band, full)
    assert {s[1:3] for s in seen} == {window}


# -- the predict command ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                          # tiny is narrower than KerasHub
        save_keras_preset(build_model("tiny", 4, seed=0), root / "plain")
        save_keras_preset(build_model("tiny", 4, seed=0, image_size=(64, 64)), root / "square")
    return root


def labels_png(path):
    return np.asarray(Image.open(path))


def test_same_stem_in_different_folders_gets_separate_outputs(tmp_path, rng, presets):
    images = {}
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        images[folder] = image_of(rng, 40, 48)
        Image.fromarray(images[folder]).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    assert main(["predict", "--preset", str(presets / "plain"), str(tmp_path / "a" / "x.png"),
                 str(tmp_path / "b" / "x.png"), "--out", str(out)]) == 0
    model = load_keras_preset(presets / "plain")
    for folder in ("a", "b"):
        assert np.array_equal(labels_png(out / folder / "x_labels.png"), model.segment(images[folder]))
        assert (out / folder / "x_overlay.png").exists()


def test_the_same_image_twice_is_a_one_line_error(tmp_path, rng, presets, capsys):
    Image.fromarray(image_of(rng, 20, 20)).save(tmp_path / "x.png")
    code = main(["predict", "--preset", str(presets / "plain"), str(tmp_path / "x.png"),
                 str(tmp_path / "." / "x.png"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "given twice" in err and len(err.strip().splitlines()) == 1


def test_full_image_labels_every_pixel_at_the_presets_scale(tmp_path, rng, presets):
    image = image_of(rng, 50, 80)                                # the preset crops a 50x50 square
    Image.fromarray(image).save(tmp_path / "wide.png")
    preset = str(presets / "square")
    assert main(["predict", "--preset", preset, str(tmp_path / "wide.png"), "--out", str(tmp_path / "crop")]) == 0
    assert main(["predict", "--preset", preset, str(tmp_path / "wide.png"), "--out", str(tmp_path / "full"),
                 "--full-image"]) == 0
    cropped, full = labels_png(tmp_path / "crop" / "wide_labels.png"), labels_png(tmp_path / "full" / "wide_labels.png")
    assert (cropped == 255).sum() == 50 * 30 and (full < 4).all()
    model = load_keras_preset(presets / "square")               # 64/50 of the image: (64, 102)
    x = resize(image[None].astype(np.float32), (64, 102)) * model.preprocessor.scale + model.preprocessor.offset
    with inference_mode():
        expected = resize(model.forward(x.astype(np.float32)), (50, 80))[0].argmax(-1)
    assert np.array_equal(full, expected)


def test_help_documents_the_crop_and_the_new_options(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    description, options = text.split("options:")
    assert "crop" in description and "255" in description and "--full-image" in description
    for option in ("--overlap N", "--full-image"):
        assert "default" in options.split(option, 1)[1][:240]


@pytest.mark.parametrize("extra, option", [(["--window", "0", "8"], "--window"),
                                           (["--window", "32", "32", "--overlap", "32"], "--overlap"),
                                           (["--overlap", "-1"], "--overlap")])
def test_bad_window_or_overlap_is_a_one_line_error(tmp_path, rng, presets, capsys, extra, option):
    Image.fromarray(image_of(rng, 20, 20)).save(tmp_path / "x.png")
    code = main(["predict", "--preset", str(presets / "plain"), str(tmp_path / "x.png"),
                 "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and option in err and len(err.strip().splitlines()) == 1


def test_a_large_image_is_tiled_automatically_and_says_so(tmp_path, rng, presets, capsys, monkeypatch):
    from tinydeeplab.train import tiling

    monkeypatch.setattr(tiling, "STREAM_ABOVE", 60 * 60)
    monkeypatch.setattr(tiling, "DEFAULT_WINDOW", (32, 32))
    image = image_of(rng, 64, 72)
    Image.fromarray(image).save(tmp_path / "big.png")
    assert main(["predict", "--preset", str(presets / "plain"), str(tmp_path / "big.png"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "tiling in 32x32 windows" in capsys.readouterr().err
    model = load_keras_preset(presets / "plain")
    x, _ = model.preprocessor(image)
    expected = reference_scores(model, x, (32, 32), (8, 8)).argmax(-1)
    assert np.array_equal(labels_png(tmp_path / "out" / "big_labels.png"), expected)
