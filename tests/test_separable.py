"""The DeepLabV3+ paper's separable head (``separable=True``): against a plain JAX graph, its layer, its
preset round trip (tinydeeplab only), its recipes and CLI, and its cost.

``tests/fixtures/separable_jax.npz`` was written by ``tools/make_separable_fixtures.py`` (needs jax, not a
test dependency): a separable ASPP + V3+ decoder in ``jax.lax`` (depthwise convs through
``feature_group_count``), float64, batch norm in training mode, with the same weights as the model here;
the numpy, cpu and (slow, simulator) cuda backends must reproduce it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinydeeplab import functional as R
from tinydeeplab import use_backend
from tinydeeplab.cli import main
from tinydeeplab.io.keras_preset import keras_incompatibilities, load_keras_preset, save_keras_preset
from tinydeeplab.models import DeepLabV3Backbone
from tinydeeplab.models.atrous import aspp_warning, atrous_convs
from tinydeeplab.models.cost import conv_costs, part_costs
from tinydeeplab.models.encoder import Encoder
from tinydeeplab.models.recipes import build_model
from tinydeeplab.nn import BatchNorm, Conv2D, DepthwiseConv2D

from backends import NEEDS_CUDA, host, on
from model_factories import randomize_batchnorm, tiny_segmenter

FIXTURE = Path(__file__).parent / "fixtures" / "separable_jax.npz"


class GivenPyramid(Encoder):
    """An encoder whose input *is* the pyramid: ``forward({"P2": low, "P4": high})`` returns it and
    ``backward`` returns the pyramid's gradients, so the head runs on the fixture's feature maps."""

    keras_class_name = "GivenPyramid"

    def __init__(self, channels):
        super().__init__()
        self.pyramid_channels = dict(channels)
        self.pyramid_strides = {"P2": 4, "P4": 16}

    def forward(self, x, training=False):
        return dict(x)

    def backward(self, d_pyramid):
        return d_pyramid


def load_fixture():
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def fixture_head(fx, dtype):
    """The separable ``DeepLabV3Backbone`` of the fixture's config, holding the fixture's weights."""
    cfg = json.loads(str(fx["config"]))
    enc = GivenPyramid({"P2": cfg["low"][2], "P4": cfg["high"][2]})
    head = DeepLabV3Backbone(enc, "P4", 4, cfg["rates"], "P2", cfg["projection_filters"],
                             num_channels=cfg["channels"], separable=True).astype(dtype)
    head.load_state_dict({k[len("param/"):]: v.astype(dtype) for k, v in fx.items() if k.startswith("param/")})
    return head


def rel_err(actual, expected) -> float:
    """``max |actual - expected| / max |expected|`` (0 for two zero arrays)."""
    scale = float(np.abs(expected).max())
    return float(np.abs(np.asarray(actual, np.float64) - expected).max()) / (scale or 1.0)


@pytest.mark.parametrize("backend", ["numpy", "cpu", pytest.param("cuda", marks=[NEEDS_CUDA, pytest.mark.slow])])
@pytest.mark.parametrize("dtype,tolerance", [(np.float32, 1e-5), (np.float64, 1e-11)], ids=["float32", "float64"])
def test_separable_head_matches_plain_jax(backend, dtype, tolerance):
    """Output, input gradients, every weight gradient and the moving statistics after one training step
    (cuda: on Numba's simulator unless ``TINYDEEPLAB_REAL_CUDA=1``)."""
    fx = load_fixture()
    head = fixture_head(fx, dtype).to(backend)
    pyramid = {"P4": on(backend, fx["x/high"].astype(dtype)), "P2": on(backend, fx["x/low"].astype(dtype))}
    with use_backend(backend):
        y = host(head.forward(pyramid, training=True))
        d_pyramid = {k: host(v) for k, v in head.backward(on(backend, fx["dy"].astype(dtype))).items()}
    assert y.dtype == dtype
    errors = {"y": rel_err(y, fx["y"]), "grad/high": rel_err(d_pyramid["P4"], fx["grad/high"]),
              "grad/low": rel_err(d_pyramid["P2"], fx["grad/low"])}
    grads = {k: host(g) for k, g in head.named_gradients()}
    weights = [k[len("grad/"):] for k in fx if k.startswith("grad/") and k not in ("grad/high", "grad/low")]
    assert sorted(weights) == sorted(grads)                      # the fixture has every parameter, no other
    errors.update({f"grad/{k}": rel_err(grads[k], fx[f"grad/{k}"]) for k in weights})
    buffers = {k: host(b) for k, b in head.named_buffers()}
    moving = [k[len("moving/"):] for k in fx if k.startswith("moving/")]
    assert sorted(moving) == sorted(buffers)
    errors.update({f"moving/{k}": rel_err(buffers[k], fx[f"moving/{k}"]) for k in moving})
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, (worst, errors[worst])


def test_the_fixture_has_a_branch_with_dead_taps_and_they_get_no_gradient():
    """The rate-6 branch on the 5 x 6 map keeps only its centre tap: JAX computes the other 8 (zero
    gradient), tinydeeplab skips them; both agree above, and the gradient of a dead tap is exactly 0."""
    fx = load_fixture()
    cfg = json.loads(str(fx["config"]))
    assert max(cfg["rates"]) >= max(cfg["high"][:2])
    branch = f"aspp.branch{cfg['rates'].index(max(cfg['rates'])) + 1}.depthwise.kernel"
    g = fx[f"grad/{branch}"]
    assert np.all(g[1, 1] != 0) and np.count_nonzero(g) == g[1, 1].size


# -- the layer ---------------------------------------------------------------------------------------
def test_depthwise_layer_runs_the_op_and_keeps_its_gradients():
    rng = np.random.default_rng(0)
    layer = DepthwiseConv2D(3, 3, strides=2, dilation_rate=2, depth_multiplier=2, use_bias=True, seed=1)
    layer.params["bias"] = rng.normal(size=6).astype(np.float32)
    x = rng.normal(size=(2, 7, 8, 3)).astype(np.float32)
    y = layer(x)
    y_ref, cache = R.depthwise_conv2d_forward(x, layer.params["kernel"], layer.params["bias"], stride=2,
                                              dilation=2, padding="same")
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    dy = rng.normal(size=y.shape).astype(np.float32)
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = R.depthwise_conv2d_backward(dy, cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.grads["kernel"], dw_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.grads["bias"], db_ref, rtol=1e-5, atol=1e-5)
    assert layer.params["kernel"].shape == (3, 3, 3, 2) and y.shape == (2, 4, 4, 6)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_dead_taps_of_the_depthwise_layer_cost_nothing_and_learn_nothing(backend):
    """Rate 6 on a 5 x 5 map: the 8 outer taps read only padding. Changing them changes no output, and
    their gradient is exactly 0 (skipped, not computed as zeros times weights)."""
    rng = np.random.default_rng(1)
    layer = DepthwiseConv2D(4, 3, dilation_rate=6, seed=0)
    x = rng.normal(size=(2, 5, 5, 4)).astype(np.float32)
    with use_backend(backend):
        y = layer(x)
        layer.backward(np.ones_like(y))
        outer = np.ones((3, 3), bool)
        outer[1, 1] = False
        layer.params["kernel"][outer] = 1e6
        np.testing.assert_array_equal(layer(x), y)
    g = layer.grads["kernel"]
    assert np.all(g[outer] == 0) and np.all(g[1, 1] != 0)
    np.testing.assert_allclose(y, x * layer.params["kernel"][1, 1, :, 0], rtol=1e-6)   # a 1x1 (per channel) conv


# -- the model -----------------------------------------------------------------------------------------
def test_separable_model_structure():
    """Each 3x3 ASPP branch is depthwise(rate) + BN + ReLU + pointwise + BN + ReLU; the V3+ decoder is two
    separable 3x3 convs; everything else (1x1 branch, pooling, projections) is as in KerasHub."""
    model = tiny_segmenter(separable=True)
    aspp = model.backbone.aspp
    for rate, branch in zip([1, 2], aspp.branches()[1:]):
        kinds = [type(m).__name__ for _, m in branch.children()]
        assert kinds == ["DepthwiseConv2D", "BatchNorm", "ReLU", "Conv2D", "BatchNorm", "ReLU"]
        assert branch.depthwise.dilation_rate == (rate, rate)
        assert branch.depthwise.params["kernel"].shape == (3, 3, 16, 1)          # P3 of the tiny ResNet: 16
        assert branch.pointwise.params["kernel"].shape == (1, 1, 16, 4)
    assert isinstance(aspp.branch0.conv, Conv2D) and aspp.branch0.conv.params["kernel"].shape[:2] == (1, 1)
    head = dict(model.backbone.head.children())
    assert list(head) == ["conv0", "conv1"]
    assert head["conv0"].depthwise.params["kernel"].shape == (3, 3, 4 + 2, 1)   # concat: 4 ASPP + 2 projected
    assert head["conv1"].pointwise.params["kernel"].shape == (1, 1, 4, 4)
    assert sum(isinstance(m, BatchNorm) for _, m in model.backbone.head.modules()) == 4
    v3 = tiny_segmenter(separable=True, plus=False)                               # no decoder: KerasHub's 1x1 head
    assert isinstance(v3.backbone.head.conv, Conv2D) and isinstance(v3.backbone.aspp.branch1.depthwise,
                                                                     DepthwiseConv2D)
    assert model.backbone.config["separable"] and not tiny_segmenter().backbone.config["separable"]


def test_separable_preset_round_trip_in_tinydeeplab(tmp_path):
    rng = np.random.default_rng(4)
    model = randomize_batchnorm(tiny_segmenter(separable=True), rng)
    with pytest.warns(UserWarning, match="separable.*only tinydeeplab can load this preset"):
        save_keras_preset(model, tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["config"]["separable"] is True          # KerasHub's DeepLabV3Backbone has no such argument
    again = load_keras_preset(tmp_path / "p")
    assert again.backbone.config["separable"]
    x = rng.normal(size=(2, 32, 24, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert [n for n, _ in again.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert keras_incompatibilities(tiny_segmenter())[0].startswith("it has 4-channel")
    assert not any("separable" in p for p in keras_incompatibilities(tiny_segmenter()))


def test_a_reader_that_ignores_the_separable_key_fails_on_the_weights(tmp_path):
    """KerasHub ignores config.json's unknown ``separable`` key and builds its standard head (checked with
    keras-hub 0.32: "objects could not be loaded", a shape mismatch). The same happens to tinydeeplab's loader
    without the key: the weights never fit the standard head, so no reader gets a wrong model silently."""
    from tinydeeplab.io.errors import PresetError
    from tinydeeplab.io.keras_preset import build_from_configs, load_weights, read_json

    with pytest.warns(UserWarning):
        save_keras_preset(tiny_segmenter(separable=True), tmp_path / "p")
    config = read_json(tmp_path / "p" / "config.json")
    del config["config"]["separable"]
    standard = build_from_configs(config, read_json(tmp_path / "p" / "task.json"))
    with pytest.raises(PresetError, match=r"model.weights.h5: .*(has shape|missing weights|no place for)"):
        load_weights(standard, tmp_path / "p")


def test_a_bad_separable_value_in_config_json_is_one_line(tmp_path):
    from tinydeeplab.io.errors import PresetError

    with pytest.warns(UserWarning):
        save_keras_preset(tiny_segmenter(separable=True), tmp_path / "p")
    path = tmp_path / "p" / "config.json"
    config = json.loads(path.read_text())
    config["config"]["separable"] = "yes"
    path.write_text(json.dumps(config))
    with pytest.raises(PresetError, match="config.json: separable must be true or false, got 'yes'"):
        load_keras_preset(tmp_path / "p")


def test_recipes_build_the_separable_head_and_check_its_taps():
    model = build_model("small", 4, separable=True)
    rows = [r for r in atrous_convs(model, (48, 48)) if r.aspp]
    assert [r.name for r in rows] == [f"backbone.aspp.branch{i}.depthwise" for i in (1, 2, 3)]
    assert [r.live for r in rows] == [9, 9, 1]                                   # 3x3 map, rates 1/2/3
    message = aspp_warning(model, (48, 48))
    assert "backbone.aspp.branch3 (rate 3) is a 1x1 conv" in message
    assert aspp_warning(model, (96, 96), (128, 128)) is None                     # the recipe's design crop


def test_cost_of_the_separable_head_follows_the_formulas():
    """ASPP of ``medium`` (160 -> 64 channels) on its 23 x 30 map at 360 x 480: 3x3 branches cost
    ``hw (9 C F)`` standard and ``hw (9 C + C F)`` separable; the decoder (96 -> 64 channels at 90 x 120)
    goes from one 1x1 conv to two separable 3x3 convs."""
    hw, c, f, low_hw, d_in = 23 * 30, 160, 64, 90 * 120, 64 + 32
    std, sep = (part_costs(build_model("medium", 11, separable=s), (360, 480)) for s in (False, True))
    common = hw * (c * f + 5 * f * f) + c * f                     # 1x1 branch, projection, pooling (1x1 map)
    assert std["ASPP"].macs == common + hw * 3 * 9 * c * f
    assert sep["ASPP"].macs == common + hw * 3 * (9 * c + c * f)
    projection = low_hw * 32 * 32
    assert std["decoder"].macs == projection + low_hw * d_in * f
    assert sep["decoder"].macs == projection + low_hw * (9 * d_in + d_in * f + 9 * f + f * f)
    assert std["encoder"] == sep["encoder"] and std["classifier"] == sep["classifier"]
    assert sep["total"].params == build_model("medium", 11, separable=True).num_parameters()


def test_live_multiply_adds_skip_the_dead_taps():
    rows = {r.name: r for r in conv_costs(build_model("small", 4, separable=True), (48, 48))}
    dead, live = rows["backbone.aspp.branch3.depthwise"], rows["backbone.aspp.branch1.depthwise"]
    assert dead.live_taps == 1 and dead.live_macs * 9 == dead.macs
    assert live.live_taps == 9 and live.live_macs == live.macs


def test_summary_of_a_separable_recipe_and_preset_shows_the_new_layers(tmp_path, capsys):
    assert main(["summary", "tiny", "--separable", "--size", "64", "64", "--num-classes", "3"]) == 0
    text = capsys.readouterr().out
    assert "backbone.aspp.branch1.depthwise.kernel" in text and "backbone.head.conv1.pointwise.kernel" in text
    assert "backbone.aspp.branch3.depthwise" in text and "9/9" in text           # the live-tap table
    assert "multiply-adds" in text and "decoder" in text
    with pytest.warns(UserWarning):
        save_keras_preset(tiny_segmenter(separable=True), tmp_path / "p")
    assert main(["summary", str(tmp_path / "p"), "--size", "32", "32"]) == 0
    text = capsys.readouterr().out
    assert "backbone.head.conv0.depthwise.kernel" in text and "backbone.aspp.branch2.depthwise" in text
    assert main(["summary", str(tmp_path / "p"), "--separable"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--separable is an option of a recipe" in err
    assert main(["parity", str(tmp_path / "p")]) == 2                 # no KerasHub model to compare with
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "KerasHub cannot build this model" in err and "separable" in err


@pytest.mark.slow
def test_train_separable_records_it_and_writes_a_separable_preset(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "shapes", "--model", "tiny", "--separable", "--epochs", "1",
                 "--batch-size", "2", "--crop", "32", "32", "--out", str(out), "--warmup", "1"]) == 0
    assert "separable = true" in (out / "config.toml").read_text()
    assert load_keras_preset(out / "preset").backbone.config["separable"]


def test_separable_conflicts_with_an_init_preset_in_one_line(tmp_path, capsys):
    preset = Path(__file__).parent / "fixtures" / "v3_tiny" / "preset"
    assert main(["train", "--dataset", "shapes", "--init-preset", str(preset), "--separable",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--separable conflicts with --init-preset" in err
