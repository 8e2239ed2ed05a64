"""DenseNetBackbone: KerasHub's configs (sizes Keras reports), pyramid, config round trip, presets, atrous
output strides, and whole-model gradients (the Keras parity fixtures are in test_parity.py)."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinydeeplab import load_keras_preset, save_keras_preset, use_backend
from tinydeeplab.errors import PresetError
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, DenseNetBackbone

from model_factories import assert_cpu_matches_reference, randomize_batchnorm

# count_params() and pyramid_outputs of keras_hub.models.DenseNetBackbone(stackwise_num_repeats=...)
# (keras-hub in /work/kerasenv): the presets densenet_121/169/201_imagenet use these repeats, growth 32,
# compression 0.5. The counts include the final BN that no pyramid output uses.
KERAS = {"121": ([6, 12, 24, 16], 7_037_504, {"P2": 256, "P3": 512, "P4": 1024, "P5": 1024}),
         "169": ([6, 12, 32, 32], 12_642_880, {"P2": 256, "P3": 512, "P4": 1280, "P5": 1664}),
         "201": ([6, 12, 48, 32], 18_321_984, {"P2": 256, "P3": 512, "P4": 1792, "P5": 1920})}
FIXTURES = Path(__file__).parent / "fixtures"


def tiny_segmenter(output_stride=None, **over):
    cfg = dict(growth_rate=4, compression_ratio=0.5)
    cfg.update(over)
    enc = DenseNetBackbone(cfg.pop("repeats", [1, 2, 1, 1]), **cfg, output_stride=output_stride, seed=0)
    top = max(enc.pyramid_channels)                                         # the ASPP on the last level
    bb = DeepLabV3Backbone(enc, top, 2 ** (int(top[1]) - 2), [1, 2], low_level_feature_key="P2", projection_filters=4,
                           num_channels=8, seed=1)
    return DeepLabV3ImageSegmenter(bb, 3, seed=2)


@pytest.mark.parametrize("name", sorted(KERAS))
def test_keras_configs_build_with_the_sizes_keras_reports(name):
    repeats, params, pyramid = KERAS[name]
    enc = DenseNetBackbone(repeats, seed=0)
    assert enc.num_parameters() + sum(b.size for _, b in enc.named_buffers()) == params
    assert enc.pyramid_channels == pyramid
    assert enc.pyramid_strides == {"P2": 4, "P3": 8, "P4": 16, "P5": 32}
    assert len(enc.keras_weight_layers()) + len(enc.keras_unused_weight_layers()) == 2 + 4 * sum(repeats) + 2 * 3 + 1


@pytest.mark.parametrize("size", [(64, 64), (50, 37)])
def test_pyramid_shapes(size):
    """The stem is Keras "same" (ceil), the transition pools "valid" (floor)."""
    enc = DenseNetBackbone([1, 1, 1, 1], growth_rate=4, seed=0)
    out = enc(np.random.default_rng(0).normal(size=(1, *size, 3)).astype(np.float32))
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    for level in ("P2", "P3", "P4", "P5"):
        assert out[level].shape == (1, h, w, enc.pyramid_channels[level]), level
        h, w = h // 2, w // 2


def test_config_round_trip_and_keras_keys():
    enc = DenseNetBackbone([2, 1], growth_rate=6, compression_ratio=0.25, seed=0)
    cfg = enc.get_config()
    assert cfg == {"stackwise_num_repeats": [2, 1], "compression_ratio": 0.25, "growth_rate": 6,
                   "image_shape": [None, None, 3]}
    again = DenseNetBackbone.from_config({**cfg, "name": "dense_net_backbone", "trainable": True})
    assert again.get_config() == cfg and again.state_dict().keys() == enc.state_dict().keys()
    assert DenseNetBackbone.from_config(cfg, output_stride=16).get_config()["output_stride"] == 16


@pytest.mark.parametrize("change,match", [
    (dict(stackwise_num_repeats=[]), "stackwise_num_repeats"),
    (dict(stackwise_num_repeats=[1, 0]), "stackwise_num_repeats"),
    (dict(growth_rate=0), "growth_rate"),
    (dict(compression_ratio=1.5), "compression_ratio"),
    (dict(compression_ratio=0.01), "leaves 0 channels"),
    (dict(output_stride=4), "output_stride"),
])
def test_bad_configs_are_named(change, match):
    kw = dict(stackwise_num_repeats=[1, 1], growth_rate=4)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        DenseNetBackbone(**kw)


def test_preset_round_trip_and_a_bad_config_is_one_line(tmp_path):
    model = randomize_batchnorm(tiny_segmenter(), np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                    # 8-channel head: tinydeeplab-only
        save_keras_preset(model, tmp_path / "p")
    again = load_keras_preset(tmp_path / "p")
    assert isinstance(again.backbone.image_encoder, DenseNetBackbone)
    x = np.random.default_rng(1).normal(size=(2, 32, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))
    np.testing.assert_array_equal(again.backbone.image_encoder.bn.buffers["moving_mean"],
                                  model.backbone.image_encoder.bn.buffers["moving_mean"])   # the unused top BN
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    cfg["config"]["image_encoder"]["config"]["growth_rate"] = -1
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PresetError, match="config.json.*growth_rate"):
        load_keras_preset(tmp_path / "p")


@pytest.mark.parametrize("output_stride,step", [(16, 2), (8, 4)])
def test_output_stride_is_exact_a_trous_of_the_strided_network(output_stride, step):
    """Same weights, transition strides traded for dilated pools and 3x3s: at inference the dense P5 holds the
    strided P5 on the kept grid (sides multiples of 32), and sits at 1/output_stride."""
    strided = randomize_batchnorm(DenseNetBackbone([1, 1, 2, 2], growth_rate=4, seed=0),
                                  np.random.default_rng(2)).astype(np.float64)
    dense = DenseNetBackbone([1, 1, 2, 2], growth_rate=4, output_stride=output_stride, seed=0).astype(np.float64)
    dense.load_state_dict(strided.state_dict())
    assert dense.pyramid_strides["P5"] == output_stride
    x = np.random.default_rng(1).normal(size=(1, 64, 96, 3))
    with use_backend("numpy"):
        p, q = strided.forward(x), dense.forward(x)
    assert q["P5"].shape[1:3] == (64 // output_stride, 96 // output_stride)
    np.testing.assert_allclose(q["P5"][:, ::step, ::step], p["P5"], rtol=1e-10, atol=1e-12)
    if output_stride == 8:
        np.testing.assert_allclose(q["P4"][:, ::2, ::2], p["P4"], rtol=1e-10, atol=1e-12)


def test_output_stride_on_an_odd_side_differs_only_next_to_the_border():
    """What is not exact: a 4x7 map entering the de-strided pool (the strided pool floors 7 to 3)."""
    strided = DenseNetBackbone([1, 1, 1, 1], growth_rate=4, seed=0).astype(np.float64)
    dense = DenseNetBackbone([1, 1, 1, 1], growth_rate=4, output_stride=16, seed=0).astype(np.float64)
    dense.load_state_dict(strided.state_dict())
    x = np.random.default_rng(1).normal(size=(1, 64, 112, 3))                # P4 4 x 7
    with use_backend("numpy"):
        p5, q5 = strided.forward(x)["P5"], dense.forward(x)["P5"][:, ::2, ::2]
    assert q5.shape[2] == p5.shape[2] + 1
    np.testing.assert_allclose(q5[:, :, :-2], p5[:, :, :-1], rtol=1e-10, atol=1e-12)
    assert not np.allclose(q5[:, :, -2], p5[:, :, -1])


@pytest.mark.parametrize("output_stride", [None, 8])
def test_whole_model_directional_derivative(output_stride):
    """d/dt L(theta + t v, x + t vx) at t = 0 equals <grad, v> + <dx, vx>, training-mode BN (step 1e-7: every
    unit has a ReLU, and a step of 1e-5 along all weights at once crosses some of their kinks)."""
    from test_model import directional_derivative

    rng = np.random.default_rng(4)
    model = randomize_batchnorm(tiny_segmenter(output_stride), rng).astype(np.float64)
    x, c = rng.normal(size=(2, 64, 70, 3)), rng.normal(size=(2, 64, 70, 3))   # P5 2 x 2 at OS32
    numeric, predicted = directional_derivative(model, x, c, rng, eps=1e-7)
    assert numeric == pytest.approx(predicted, rel=1e-6)


@pytest.mark.slow
def test_whole_model_gradient_every_entry():
    from test_model import _check_every_entry

    rng = np.random.default_rng(3)
    model = randomize_batchnorm(tiny_segmenter(repeats=[1, 1], growth_rate=2), rng).astype(np.float64)
    x, c = rng.normal(size=(2, 16, 12, 3)), rng.normal(size=(2, 16, 12, 3))
    with use_backend("numpy"):
        checked = _check_every_entry(model, x, c, True)
    assert checked == model.num_parameters()


@pytest.mark.parametrize("output_stride", [None, 16])
def test_cpu_backend_matches_the_reference(output_stride):
    model = randomize_batchnorm(tiny_segmenter(output_stride), np.random.default_rng(5))
    x = np.random.default_rng(6).normal(size=(2, 40, 33, 3)).astype(np.float32)
    c = np.random.default_rng(7).normal(size=(2, 40, 33, 3)).astype(np.float32)
    assert_cpu_matches_reference(model, x, c)


def test_densenet_tiny_recipe_is_os16_on_the_camvid_crop():
    from tinydeeplab.models.atrous import aspp_warning
    from tinydeeplab.models.recipes import RECIPES, build_model

    model = build_model("densenet-tiny", 11, seed=0)
    enc = model.backbone.image_encoder
    assert isinstance(enc, DenseNetBackbone) and RECIPES["densenet-tiny"]["crop"] == (256, 352)
    assert enc.pyramid_strides == {"P2": 4, "P3": 8, "P4": 16, "P5": 16}
    assert enc.transition3.pool.strides == 1 and enc.stack4.block1.conv2.conv.dilation_rate == (2, 2)
    x = np.zeros((1, 256, 352, 3), np.float32)
    assert enc(x)["P5"].shape[1:3] == (16, 22)                                       # the ASPP map
    assert aspp_warning(model, (256, 352), (360, 480)) is None                       # rates 3/6/9 all live
    assert build_model("densenet-tiny", 11, output_stride=8).backbone.image_encoder.pyramid_strides["P5"] == 8


def test_export_writes_the_encoder_config_keras_wrote(tmp_path):
    """Load the KerasHub-written fixture preset and save it again: the same encoder config (the datasets are
    compared in test_parity.py; KerasHub reloads the export: ``make_parity_fixtures.py --check-roundtrip``)."""
    src = FIXTURES / "densenet_v3plus_tiny" / "preset"
    save_keras_preset(load_keras_preset(src), tmp_path / "p")
    entry = lambda p: json.loads((p / "config.json").read_text())["config"]["image_encoder"]  # noqa: E731
    mine, keras = entry(tmp_path / "p"), entry(src)
    assert (mine["class_name"], mine["module"]) == (keras["class_name"], keras["module"])
    drop = ("name", "trainable", "dtype")
    assert {k: v for k, v in mine["config"].items() if k not in drop} == \
        {k: v for k, v in keras["config"].items() if k not in drop}


def test_a_backbone_preset_saved_alone_keeps_the_final_bn_in_its_graph(tmp_path):
    """Saved alone (KerasHub's densenet_121_imagenet layout) the final BN follows the others under ``layers/``;
    inside a DeepLabV3Backbone it lies under ``image_encoder/layers`` (checked live against KerasHub both ways:
    DenseNetBackbone.from_preset of this export, and a KerasHub-saved backbone read here, agree to 4e-6)."""
    from tinydeeplab.io.encoder_preset import load_encoder_preset, save_encoder_preset
    from tinydeeplab.io.keras_layout import encoder_weight_table

    enc = randomize_batchnorm(DenseNetBackbone([1, 2, 1], growth_rate=4, seed=0), np.random.default_rng(0))
    n_bn = 1 + 2 * 4 + 2                                          # stem, two per conv block, two transitions
    assert encoder_weight_table(enc, "layers")[(id(enc.bn), "gamma")] == f"layers/batch_normalization_{n_bn}/vars/0"
    assert encoder_weight_table(enc, "layers/functional/layers")[(id(enc.bn), "gamma")] == \
        f"image_encoder/layers/batch_normalization_{n_bn}/vars/0"
    save_encoder_preset(enc, tmp_path / "p")
    again = load_encoder_preset(tmp_path / "p")
    for key, value in enc.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value, err_msg=key)
