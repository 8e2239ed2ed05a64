"""MobileNetV3 encoder (KerasHub ``MobileNetBackbone``): pyramid, config round trip, atrous option, whole-model
gradients, preset round trip, and feature parity with KerasHub's own layer outputs (tests/fixtures/mobilenet_tiny)."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinydeeplab import load_keras_preset, save_keras_preset, use_backend
from tinydeeplab.errors import PresetError
from tinydeeplab.io.encoder_preset import load_encoder_preset
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, MobileNetBackbone, encoder_class
from tinydeeplab.models.mobilenet import adjust_channels
from tinydeeplab.models.recipes import MOBILENET_V3_LARGE, MOBILENET_V3_SMALL

from backends import BACKENDS
from model_factories import randomize_batchnorm
from test_model import _check_every_entry


def tiny_config(**changes):
    """Two-to-three blocks a stack, every block kind: SE in the depthwise block and in inverted residuals,
    a residual add, relu and hard_swish, kernels 3 and 5."""
    cfg = dict(stackwise_num_blocks=[2, 1, 1], stackwise_expansion=[[8, 16], [16], [16]],
               stackwise_num_filters=[[8, 8], [8], [8]], stackwise_kernel_size=[[3, 5], [3], [5]],
               stackwise_num_strides=[[2, 1], [2], [2]], stackwise_se_ratio=[[None, 0.25], [None], [0.25]],
               stackwise_activation=[["relu", "hard_swish"], ["hard_swish"], ["relu"]],
               stackwise_padding=[[1, 2], [1], [2]], output_num_filters=16, depthwise_filters=8,
               depthwise_stride=2, depthwise_residual=False, last_layer_filter=8, squeeze_and_excite=0.5,
               input_activation="hard_swish", output_activation="hard_swish", input_num_filters=8)
    return {**cfg, **changes}


# -- structure -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config,channels,params", [
    (MOBILENET_V3_SMALL, {"P2": 16, "P3": 24, "P4": 48, "P5": 576}, 939_120),
    (MOBILENET_V3_LARGE, {"P2": 24, "P3": 40, "P4": 112, "P5": 960}, 2_996_352)])
def test_keras_hub_configs_have_the_presets_size_and_a_p2_to_p5_pyramid(config, channels, params):
    """Weights + BN statistics equal the ``params`` KerasHub's mobilenet_presets.py lists for the preset."""
    enc = MobileNetBackbone.from_config(config, seed=0)
    assert enc.num_parameters() + sum(b.size for _, b in enc.named_buffers()) == params
    assert enc.pyramid_channels == channels
    assert enc.pyramid_strides == {"P2": 4, "P3": 8, "P4": 16, "P5": 32}
    x = np.random.default_rng(0).normal(size=(1, 64, 96, 3)).astype(np.float32)
    out = enc(x)
    assert {k: v.shape for k, v in out.items()} == {k: (1, 64 // s, 96 // s, channels[k])
                                                     for k, s in enc.pyramid_strides.items()}


def test_taps_are_the_last_block_at_each_stride():
    small = MobileNetBackbone.from_config(MOBILENET_V3_SMALL)
    large = MobileNetBackbone.from_config(MOBILENET_V3_LARGE)
    named = lambda enc: {s.level: s.keras_layer for s in enc.stages() if s.level}   # noqa: E731
    assert named(small) == {"P2": "block_0_0", "P3": "block_1_1", "P4": "block_3_1", "P5": "block_5_0"}
    assert named(large) == {"P2": "block_1_1", "P3": "block_2_2", "P4": "block_4_1", "P5": "block_6_0"}


def test_adjust_channels_is_keras_hubs_rounding():
    # round to a multiple of 8 (x + 4 floored), at least 8, one step up when more than 10 % below: 11.9 -> 8 -> 16
    assert [adjust_channels(v) for v in (1, 4.0, 11.9, 12, 83, 100, 0.25 * 72)] == [8, 8, 16, 16, 80, 104, 24]


def test_config_round_trip_and_registry():
    assert encoder_class("MobileNetBackbone") is MobileNetBackbone
    for os_ in (None, 16, 8):
        enc = MobileNetBackbone.from_config(tiny_config(), output_stride=os_, seed=0)
        cfg = enc.get_config()
        assert ("output_stride" in cfg) == (os_ is not None)
        again = MobileNetBackbone.from_config(cfg, seed=0)
        assert again.get_config() == cfg and again.pyramid_strides == enc.pyramid_strides
        x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype(np.float32)
        np.testing.assert_array_equal(again(x)["P5"], enc(x)["P5"])


@pytest.mark.parametrize("changes,match", [
    (dict(stackwise_num_blocks=[2, 1]), "one list per stack"),
    (dict(stackwise_kernel_size=[[3], [3], [5]]), "stackwise_kernel_size"),
    (dict(stackwise_activation=[["gelu", "relu"], ["relu"], ["relu"]]), "activation must be one of"),
    (dict(depthwise_residual=True), "depthwise_residual needs depthwise_stride 1"),
])
def test_bad_configs_raise_one_line_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        MobileNetBackbone.from_config(tiny_config(**changes))
    with pytest.raises(ValueError, match="missing keys.*depthwise_filters"):
        MobileNetBackbone.from_config({k: v for k, v in tiny_config().items() if k != "depthwise_filters"})


@pytest.mark.parametrize("os_,strides", [(16, {"P2": 4, "P3": 8, "P4": 16, "P5": 16}),
                                         (8, {"P2": 4, "P3": 8, "P4": 8, "P5": 8})])
def test_output_stride_is_exact_a_trous_without_squeeze_excite(os_, strides):
    """Same weights, the last strides turned into rates: the dense P5 holds the strided one at every
    (32 / os)-th position (exact where no SE averages over the denser map)."""
    cfg = tiny_config(stackwise_se_ratio=[[None, 0.25], [None], [None]])
    strided = randomize_batchnorm(MobileNetBackbone.from_config(cfg, seed=0), np.random.default_rng(0))
    strided = strided.astype(np.float64)
    dense = MobileNetBackbone.from_config(cfg, output_stride=os_, seed=0).astype(np.float64)
    dense.load_state_dict(strided.state_dict())
    assert dense.pyramid_strides == strides
    x = np.random.default_rng(1).normal(size=(1, 64, 96, 3))
    with use_backend("numpy"):
        p, q = strided.forward(x), dense.forward(x)
    step = 32 // os_
    assert q["P5"].shape[1:3] == (64 // os_, 96 // os_)
    np.testing.assert_allclose(q["P5"][:, ::step, ::step], p["P5"], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(q["P3"], p["P3"])


# -- gradients -------------------------------------------------------------------------------------------------
GRADIENT_CONFIG = tiny_config(
    stackwise_num_blocks=[2, 1], stackwise_expansion=[[8, 16], [16]], stackwise_num_filters=[[8, 8], [8]],
    stackwise_kernel_size=[[3, 5], [3]], stackwise_num_strides=[[2, 1], [2]], stackwise_se_ratio=[[None, 0.25], [0.25]],
    stackwise_activation=[["relu", "hard_swish"], ["hard_swish"]], stackwise_padding=[[1, 2], [1]])
"""Fewer blocks (every kind still there), pyramid up to P4: every-entry central differences in about a minute."""


def tiny_segmenter(seed=0, output_stride=8, config=None, key="P5"):
    enc = MobileNetBackbone.from_config(config or tiny_config(), output_stride=output_stride, seed=seed)
    bb = DeepLabV3Backbone(enc, key, 2, [1, 2], low_level_feature_key="P2", projection_filters=2,
                           num_channels=4, seed=seed + 1)
    model = randomize_batchnorm(DeepLabV3ImageSegmenter(bb, 3, seed=seed + 2), np.random.default_rng(seed))
    for _, mod in model.modules():                    # non-zero biases (SE convs) so a lost bias gradient shows
        if "bias" in mod.params:
            mod.params["bias"] = np.random.default_rng(7).normal(0, 0.3, mod.params["bias"].shape).astype(np.float32)
    return model


@pytest.mark.parametrize("kind", ["inverted_residual", "depthwise_block"])
@pytest.mark.parametrize("training", [False, True])
def test_block_gradient_every_entry(kind, training):
    """One block, float64 central differences on every entry: an inverted residual (dilated 3x3, SE with
    hard-sigmoid gate, hard_swish, residual add) and the depthwise block (strided, SE, ReLU)."""
    from tinydeeplab.models.mobilenet import MobileBlock

    rng = np.random.default_rng(11)
    args = (dict(kernel=3, stride=1, dilation=2, pad=2, expansion=16, activation="hard_swish", residual=True)
            if kind == "inverted_residual" else
            dict(kernel=3, stride=2, dilation=1, pad=1, expansion=None, activation="relu", residual=False))
    block = MobileBlock(8, 8, se_ratio=0.25, rng=rng, **args)
    block = randomize_batchnorm(block, rng)
    for _, mod in block.modules():
        if "bias" in mod.params:
            mod.params["bias"] = rng.normal(0, 0.5, mod.params["bias"].shape).astype(np.float32)
    block = block.astype(np.float64)
    x = rng.normal(size=(2, 5, 6, 8))
    c = rng.normal(size=block.forward(x).shape)
    with use_backend("numpy"):
        checked = _check_every_entry(block, x, c, training)
    assert checked == block.num_parameters()


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_whole_model_gradient_every_entry(training):
    """DeepLabV3+ (ASPP on P4 at OS8: dilated depthwise convs) on a tiny MobileNet: float64 central
    differences on every input pixel and every parameter (about a minute each on a loaded machine)."""
    rng = np.random.default_rng(5)
    model = tiny_segmenter(config=GRADIENT_CONFIG, key="P4").astype(np.float64)
    x, c = rng.normal(size=(2, 8, 16, 3)), rng.normal(size=(2, 8, 16, 3))
    with use_backend("numpy"):
        checked = _check_every_entry(model, x, c, training)
    assert checked == model.num_parameters()


@pytest.mark.slow
def test_kernel_backend_gradients_match_the_reference():
    """The default (Numba) backend's forward and backward through every MobileNet layer agree with NumPy's
    (float64, so that round-off amplified by training-mode BN on 4x6 maps cannot hide a difference)."""
    model = tiny_segmenter().astype(np.float64)
    x = np.random.default_rng(2).normal(size=(2, 32, 48, 3))
    results = {}
    for backend in ("numpy", "cpu"):
        with use_backend(backend):
            y = model.forward(x, training=True)
            dx = model.backward(np.ones_like(y))
            results[backend] = (y, dx, {k: g.copy() for k, g in model.named_gradients()})
    (y0, dx0, g0), (y1, dx1, g1) = results["numpy"], results["cpu"]
    np.testing.assert_allclose(y1, y0, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-9, atol=1e-10)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-8, atol=1e-10, err_msg=k)


# -- presets ---------------------------------------------------------------------------------------------------
def test_deeplab_preset_round_trip(tmp_path):
    model = tiny_segmenter(output_stride=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # 4-channel head: a tinydeeplab-only preset
        save_keras_preset(model, tmp_path / "preset")
    again = load_keras_preset(tmp_path / "preset")
    assert isinstance(again.backbone.image_encoder, MobileNetBackbone)
    x = np.random.default_rng(3).normal(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


# -- feature parity with KerasHub (fixture: tools/make_mobilenet_fixtures.py) -----------------------------------
FIXTURE = Path(__file__).parent / "fixtures" / "mobilenet_tiny"


def _max_relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def keras_fixture():
    outputs = dict(np.load(FIXTURE / "outputs.npz", allow_pickle=False))
    meta = json.loads((FIXTURE / "outputs.json").read_text())
    return load_encoder_preset(FIXTURE / "preset"), outputs, meta


def test_keras_preset_loads_with_keras_taps_and_size(keras_fixture):
    enc, _, meta = keras_fixture
    assert {s.level: s.keras_layer for s in enc.stages() if s.level} == meta["taps"]   # chosen in Keras
    assert enc.num_parameters() + sum(b.size for _, b in enc.named_buffers()) == meta["parameters"]
    assert [s.keras_layer for s in enc.stages() if s.keras_layer] == meta["layers"]


@pytest.mark.parametrize("training", [False, True])
def test_every_block_matches_keras_hub(keras_fixture, training):
    """Every block output (inference) and every tap (training mode: batch statistics) against KerasHub's own
    layer outputs, float32: max relative error <= 1e-5."""
    enc, outputs, meta = keras_fixture
    from tinydeeplab.nn.hooks import record_outputs

    wanted = {s.module: s.keras_layer for s in enc.stages() if s.keras_layer}
    mode = "train" if training else "infer"
    with record_outputs(enc, list(wanted)) as seen:
        pyramid = enc.forward(outputs["x"], training=training)
    compared = 0
    for module, layer in wanted.items():
        if f"{mode}/{layer}" in outputs:
            err = _max_relative_error(seen[module], outputs[f"{mode}/{layer}"])
            assert err <= 1e-5, f"{layer}: max relative error {err:.2e}"
            compared += 1
    assert compared == (len(meta["layers"]) if not training else 4)
    for level, layer in meta["taps"].items():
        assert _max_relative_error(pyramid[level], outputs[f"{mode}/{layer}"]) <= 1e-5, level


def test_bad_encoder_preset_is_a_one_line_error(tmp_path):
    import shutil

    from tinydeeplab.errors import PresetError

    shutil.copytree(FIXTURE / "preset", tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    cfg["config"]["stackwise_num_blocks"] = [2, 3, 2]
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PresetError, match="config.json: stackwise_expansion must have one list per stack"):
        load_encoder_preset(tmp_path / "p")
    cfg["config"]["stackwise_num_blocks"] = [2, 3, 2, 2]
    cfg["config"]["last_layer_filter"] = 48
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PresetError, match="conv_bn_act_block/conv/vars/0.*has shape"):
        load_encoder_preset(tmp_path / "p")


# -- from-scratch recipes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,last_dilated", [("mobilenetv3-small", "block_4_1"), ("mobilenetv3-large", "block_5_1")])
def test_mobilenet_recipes_are_os16_on_the_camvid_crop(name, last_dilated):
    from tinydeeplab.models.recipes import RECIPES, build_model

    model = build_model(name, 11, seed=0)
    enc = model.backbone.image_encoder
    assert isinstance(enc, MobileNetBackbone) and RECIPES[name]["crop"] == (256, 352)
    assert enc.pyramid_strides == {"P2": 4, "P3": 8, "P4": 16, "P5": 16}
    assert getattr(enc, last_dilated).depthwise.conv.dilation_rate == (2, 2)       # the last stage is atrous
    x = np.zeros((1, 256, 352, 3), np.float32)
    assert enc(x)["P5"].shape[1:3] == (16, 22)                                       # the ASPP map
    assert model.forward(x).shape == (1, 256, 352, 11)
    assert build_model(name, 11, output_stride=8).backbone.image_encoder.pyramid_strides["P5"] == 8


@pytest.mark.parametrize("name", BACKENDS)
def test_a_block_runs_on_every_backend(name):
    """An inverted residual block (dilated depthwise conv, SE, hard_swish, residual) in training mode on each
    kernel backend (cuda: on device arrays; the simulator in CI) against the NumPy reference, float64."""
    from tinydeeplab import backend
    from tinydeeplab.models.mobilenet import MobileBlock

    rng = np.random.default_rng(4)
    block = MobileBlock(8, 8, kernel=3, stride=1, dilation=2, pad=2, expansion=16, se_ratio=0.25,
                        activation="hard_swish", residual=True, rng=rng)
    block = randomize_batchnorm(block, rng).astype(np.float64)
    x, c = rng.normal(size=(2, 3, 4, 8)), rng.normal(size=(2, 3, 4, 8))
    results = {}
    for b in ("numpy", name):
        with use_backend(b):
            ops = backend.ops()
            block.to(b)
            y = block.forward(ops.to_device(x), training=True)
            dx = block.backward(ops.to_device(c))
            results[b] = [backend.to_numpy(y), backend.to_numpy(dx)] + \
                [backend.to_numpy(g) for _, g in sorted(block.named_gradients())]
            block.to("numpy")
    for want, got in zip(results["numpy"], results[name]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_encoder_preset_export_round_trip(tmp_path, keras_fixture):
    """save_encoder_preset writes KerasHub's config (compared with the one Keras wrote) and weights that
    load back bit for bit (KerasHub loading them: tools/make_mobilenet_fixtures.py --check on the export)."""
    from tinydeeplab.io.encoder_preset import save_encoder_preset

    enc, outputs, _ = keras_fixture
    save_encoder_preset(enc, tmp_path / "export")
    mine = json.loads((tmp_path / "export" / "config.json").read_text())
    keras = json.loads((FIXTURE / "preset" / "config.json").read_text())
    assert {k: mine[k] for k in ("module", "class_name", "registered_name")} == \
        {k: keras[k] for k in ("module", "class_name", "registered_name")}
    assert mine["config"] == keras["config"]
    again = load_encoder_preset(tmp_path / "export")
    for level, y in enc.forward(outputs["x"]).items():
        np.testing.assert_array_equal(again.forward(outputs["x"])[level], y)
    with pytest.raises(PresetError, match="exists and is not empty"):
        save_encoder_preset(enc, tmp_path / "export")
