"""Dead-tap diagnostics (models/atrous.py), the DeepLab-shaped recipes, and their checks in the CLI."""
from __future__ import annotations

import numpy as np
import pytest

from tinydeeplab.functional.conv import conv2d_forward
from tinydeeplab.models.atrous import aspp_warning, atrous_convs, live_tap_fraction
from tinydeeplab.models.recipes import RECIPES, build_model


def _brute_force_live(h, w, rate, k=3):
    """Count the taps whose one-hot kernel gives a nonzero output somewhere on an all-ones map."""
    x = np.ones((1, h, w, 1))
    live = 0
    for a in range(k):
        for b in range(k):
            kernel = np.zeros((k, k, 1, 1))
            kernel[a, b] = 1.0
            y, _ = conv2d_forward(x, kernel, dilation=rate, padding="same")
            live += bool(np.any(y != 0))
    return live / (k * k)


def test_live_tap_fraction_equals_a_brute_force_count():
    rng = np.random.default_rng(0)
    cases = [(int(rng.integers(1, 14)), int(rng.integers(1, 14)), int(rng.integers(1, 16))) for _ in range(40)]
    cases += [(8, 11, 12), (8, 11, 8), (12, 15, 12), (1, 1, 1)]
    for h, w, rate in cases:
        assert live_tap_fraction(rate, (h, w)) == pytest.approx(_brute_force_live(h, w, rate)), (h, w, rate)


def test_atrous_convs_sees_the_aspp_map_of_the_output_stride():
    for stride in (8, 16, 32):
        model = build_model("tiny", 3, output_stride=stride, atrous_rates=[2, 5, 9])
        rows = [r for r in atrous_convs(model, (70, 100)) if r.aspp]
        assert [r.rate[0] for r in rows] == [2, 5, 9]
        side = (-(-70 // stride), -(-100 // stride))                        # ceil(H / OS), ceil(W / OS)
        assert {r.map_size for r in rows} == {side}
        dilated = [r for r in atrous_convs(model, (70, 100)) if not r.aspp]
        assert len(dilated) == {32: 0, 16: 0, 8: 1}[stride]   # tiny: one block per stack, its 3x3 at the rate before


def test_a_degenerate_aspp_is_flagged_and_a_matched_one_is_not():
    old = build_model("small", 4, output_stride=32, atrous_rates=[6, 12, 18])   # the former recipe
    message = aspp_warning(old, (96, 96), (96, 96))
    assert message.count("is a 1x1 conv") == 3 and "branch1 (rate 6)" in message
    assert "\n" not in message and "e.g. 2" in message                          # 3x3 map: a rate below 3
    assert aspp_warning(build_model("small", 4), (96, 96), (96, 96)) is None


def test_taps_that_only_come_alive_at_the_evaluation_size_are_flagged():
    mismatched = build_model("medium", 11, atrous_rates=[6, 12, 18])           # 16x22 train, 23x30 test
    message = aspp_warning(mismatched, (256, 352), (360, 480))
    assert "branch3 (rate 18)" in message and "3/9 live taps" in message and "9/9 at the 360x480" in message
    assert "branch1" not in message and "branch2" not in message
    assert aspp_warning(mismatched, (256, 352)) is None                          # not degenerate on its own
    assert aspp_warning(build_model("medium", 11), (256, 352), (360, 480)) is None


@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r["crop"] is not None])
def test_from_scratch_recipes_have_every_tap_live_at_their_crop(name):
    model = build_model(name, 5)
    crop = RECIPES[name]["crop"]
    for size in (crop, (crop[0] * 3 // 2, crop[1] * 3 // 2)):                 # and a larger evaluation size
        assert all(r.fraction == 1.0 for r in atrous_convs(model, size)), (name, size)
    assert RECIPES[name]["output_stride"] in (8, 16)


def test_an_atrous_preset_reloads_at_its_output_stride(tmp_path):
    import warnings

    from tinydeeplab.io.keras_preset import load_keras_preset, save_keras_preset

    model = build_model("tiny", 3, output_stride=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_keras_preset(model, tmp_path / "p")
    loaded = load_keras_preset(tmp_path / "p")
    assert loaded.backbone.image_encoder.output_stride == 8
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_the_v3_decoder_has_no_low_level_branch_and_full_size_logits():
    model = build_model("tiny", 3, decoder="v3")
    assert model.backbone.low_key is None and not hasattr(model.backbone, "low_level_projection")
    assert model.forward(np.zeros((2, 48, 80, 3), np.float32)).shape == (2, 48, 80, 3)
    with pytest.raises(ValueError, match="decoder must be one of"):
        build_model("tiny", 3, decoder="v4")
