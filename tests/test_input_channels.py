"""Inputs that are not RGB: C-channel encoders, RGB presets adapted to C channels, C-channel presets."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinydeeplab import load_keras_preset, save_keras_preset, use_backend
from tinydeeplab.errors import OptionError, PresetError
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
from tinydeeplab.models.input_channels import adapt_input_kernel
from tinydeeplab.models.preprocessor import ImageConverter

from model_factories import randomize_batchnorm
from test_model import _check_every_entry

FIXTURES = Path(__file__).parent / "fixtures"


def _segmenter(in_channels=3, seed=0, blocks=(1, 2)):
    """A small two-stack ResNet DeepLabV3+ reading ``in_channels`` channels (7x7 stem, as KerasHub's)."""
    enc = ResNetBackbone([4], [7], [4, 4], list(blocks), [1, 2], in_channels=in_channels, seed=seed)
    bb = DeepLabV3Backbone(enc, "P3", 2, [1, 2], low_level_feature_key="P2", projection_filters=2,
                           num_channels=4, seed=seed + 1)
    return randomize_batchnorm(DeepLabV3ImageSegmenter(bb, 3, seed=seed + 2), np.random.default_rng(seed))


def _save(model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                          # narrow head: a tinydeeplab-only preset
        save_keras_preset(model, path)
    return path


@pytest.fixture(scope="module")
def rgb_preset(tmp_path_factory):
    """An RGB preset with per-channel scale and offset (so the converter's channel mapping is exercised)."""
    model = _segmenter()
    model.preprocessor = ImageConverter(scale=[1 / 60.0, 1 / 70.0, 1 / 80.0], offset=[-2.0, -1.5, -1.0])
    return _save(model, tmp_path_factory.mktemp("rgb") / "preset")


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(np.abs(b).max()))


# -- the kernel schemes, against their equations written out independently ---------------------------
def test_repeat_for_a_multiple_of_three_is_the_rgb_kernel_tiled_and_scaled_by_three_over_c():
    w = np.random.default_rng(0).normal(size=(7, 7, 3, 5)).astype(np.float32)
    for c in (3, 6, 9):
        np.testing.assert_allclose(adapt_input_kernel(w, c, "repeat"),
                                   np.concatenate([w] * (c // 3), axis=2) * 3 / c, rtol=1e-6)


def test_repeat_for_other_counts_divides_each_copy_by_its_number_of_uses():
    w = np.random.default_rng(1).normal(size=(3, 3, 3, 2))
    out = adapt_input_kernel(w, 4, "repeat")                         # channels R G B R: R used twice
    np.testing.assert_allclose(out, np.stack([w[:, :, 0] / 2, w[:, :, 1], w[:, :, 2], w[:, :, 0] / 2], axis=2))


def test_mean_and_zero_kernels():
    w = np.random.default_rng(2).normal(size=(3, 3, 3, 2))
    np.testing.assert_allclose(adapt_input_kernel(w, 1, "mean")[:, :, 0], w[:, :, 0] + w[:, :, 1] + w[:, :, 2])
    five = adapt_input_kernel(w, 5, "mean")
    for c in range(5):
        np.testing.assert_allclose(five[:, :, c], (w[:, :, 0] + w[:, :, 1] + w[:, :, 2]) / 5)
    zero = adapt_input_kernel(w, 5, "zero")
    np.testing.assert_array_equal(zero[:, :, :3], w)
    assert not zero[:, :, 3:].any()


# -- what each scheme preserves, through the whole loaded model -----------------------------------------
@pytest.mark.parametrize("c", [6, 9, 4, 5])
def test_an_rgb_image_repeated_into_c_channels_gives_the_rgb_logits_under_repeat(rgb_preset, c):
    rgb = load_keras_preset(rgb_preset)
    adapted = load_keras_preset(rgb_preset, in_channels=c, adapt="repeat")
    assert adapted.in_channels == c
    assert adapted.backbone.image_encoder.input_conv().params["kernel"].shape == (7, 7, c, 4)
    image = np.random.default_rng(c).integers(0, 256, size=(40, 36, 3)).astype(np.uint8)
    x_rgb, _ = rgb.preprocessor(image)                                   # (1, 40, 36, 3)
    x_c, _ = adapted.preprocessor(image[:, :, np.arange(c) % 3])         # (1, 40, 36, C): per-channel tiled
    _close(x_c, x_rgb[..., np.arange(c) % 3])
    _close(adapted.forward(x_c), rgb.forward(x_rgb))


@pytest.mark.parametrize("c", [1, 2, 5])
def test_mean_gives_the_rgb_logits_of_the_grey_image_of_the_channel_mean(rgb_preset, c):
    rgb = load_keras_preset(rgb_preset)
    adapted = load_keras_preset(rgb_preset, in_channels=c, adapt="mean")
    x = np.random.default_rng(10 + c).normal(size=(2, 32, 40, c)).astype(np.float32)
    grey = np.repeat(x.mean(axis=-1, keepdims=True), 3, axis=-1)       # (2, 32, 40, 3)
    _close(adapted.forward(x), rgb.forward(grey))


@pytest.mark.parametrize("c", [4, 7])
def test_zero_gives_the_rgb_logits_whatever_the_extra_channels_hold(rgb_preset, c):
    rgb = load_keras_preset(rgb_preset)
    adapted = load_keras_preset(rgb_preset, in_channels=c, adapt="zero")
    x = np.random.default_rng(20 + c).normal(size=(1, 33, 31, c)).astype(np.float32)
    _close(adapted.forward(x), rgb.forward(x[..., :3].copy()))


def test_three_channels_load_as_stored_whatever_the_scheme(rgb_preset):
    rgb = load_keras_preset(rgb_preset)
    for scheme in (None, "mean"):
        again = load_keras_preset(rgb_preset, in_channels=3, adapt=scheme)
        for (k, a), (_, b) in zip(again.named_parameters(), rgb.named_parameters()):
            np.testing.assert_array_equal(a, b, err_msg=k)


# -- a C-channel model: gradients and its own preset ----------------------------------------------------
@pytest.mark.slow
def test_c_channel_model_gradient_every_entry():
    rng = np.random.default_rng(4)
    model = _segmenter(in_channels=4, blocks=(1, 1)).astype(np.float64)
    x, c = rng.normal(size=(1, 10, 9, 4)), rng.normal(size=(1, 10, 9, 3))
    with use_backend("numpy"):
        assert _check_every_entry(model, x, c, training=True) == model.num_parameters()


def test_a_four_channel_preset_saves_and_reloads_exactly(tmp_path):
    model = _segmenter(in_channels=4, seed=3)
    model.preprocessor = ImageConverter(scale=[0.01, 0.02, 0.03, 0.5], offset=[-1, -2, -3, 0.25])
    path = _save(model, tmp_path / "four")
    config = json.loads((path / "config.json").read_text())
    assert config["config"]["image_shape"] == [None, None, 4]
    assert config["config"]["image_encoder"]["config"]["image_shape"] == [None, None, 4]
    again = load_keras_preset(path)
    assert again.in_channels == 4
    np.testing.assert_array_equal(again.preprocessor.scale, model.preprocessor.scale)
    image = np.random.default_rng(5).integers(0, 65536, size=(24, 20, 4)).astype(np.uint16)
    x, _ = again.preprocessor(image)
    np.testing.assert_array_equal(x, model.preprocessor(image)[0])
    np.testing.assert_array_equal(again.forward(x), model.forward(x))
    assert again.segment(image).shape == (24, 20)
    six = load_keras_preset(path, in_channels=6, adapt="zero")            # a 4-channel preset adapts too
    y = np.random.default_rng(6).normal(size=(1, 16, 16, 6)).astype(np.float32)
    _close(six.forward(y), again.forward(y[..., :4].copy()))


def test_a_four_channel_export_runs_in_keras_with_the_same_logits(tmp_path):
    """KerasHub read the 4-channel preset that tinydeeplab exported (tools/make_multichannel_fixture.py):
    its ResNetBackbone took the 4 of image_shape, and its logits are stored; the same model here agrees."""
    fixture = FIXTURES / "v3plus_tiny"
    cases = np.load(fixture / "cases_4ch.npz")
    model = load_keras_preset(fixture / "preset", in_channels=4, adapt="repeat")
    again = load_keras_preset(_save(model, tmp_path / "four"))              # the exported files, reloaded
    logits = again.forward(cases["input"])
    assert np.abs(logits - cases["logits"]).max() <= 1e-5 * np.abs(cases["logits"]).max()


# -- bad input: one line, naming what is wrong -----------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(in_channels=4, adapt="tile"), r"'tile' is unknown; choose one of repeat, mean, zero"),
    (dict(in_channels=4), r"reads 3 channels, the model 4: choose how to adapt it"),
    (dict(in_channels=0, adapt="mean"), r"in_channels must be a whole number of image channels >= 1, got 0"),
    (dict(in_channels=2.5, adapt="mean"), r"got 2.5"),
    (dict(in_channels=2, adapt="repeat"), r"'repeat' needs at least the kernel's 3 channels.*use 'mean'"),
    (dict(in_channels=1, adapt="zero"), r"'zero' needs at least"),
])
def test_bad_adaptations_are_refused_in_one_line(rgb_preset, kwargs, message):
    with pytest.raises(PresetError, match=message) as info:
        load_keras_preset(rgb_preset, **kwargs)
    assert "\n" not in str(info.value) and str(rgb_preset) in str(info.value)


def test_wrong_channel_counts_at_inference_are_named(rgb_preset):
    model = load_keras_preset(rgb_preset, in_channels=4, adapt="mean")
    with pytest.raises(ValueError, match=r"images must be \(N, H, W, 4\).*got shape \(1, 8, 8, 3\)"):
        model.predict(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="scale has 4 values .* the images have 3 channels"):
        model.preprocessor(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(OptionError, match="one per channel"):
        ImageConverter(scale=[[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"\(H, W, 1\) for grey"):
        model.preprocessor(np.zeros((8, 8), np.uint8))
