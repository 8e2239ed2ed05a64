"""EfficientNetBackbone: KerasHub's configs (sizes Keras reports), pyramid, config round trip, presets,
stochastic depth, and whole-model gradients (the Keras parity fixture is in test_parity.py)."""
import warnings

import numpy as np
import pytest

from tinydeeplab import load_keras_preset, save_keras_preset, use_backend
from tinydeeplab.errors import PresetError
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, EfficientNetBackbone
from tinydeeplab.nn import StochasticDepth

from model_factories import assert_atrous_holds_strided, assert_cpu_matches_reference, assert_preset_round_trip, randomize_batchnorm

# The constructor arguments KerasHub's timm converter (keras_hub/src/utils/timm/convert_efficientnet.py)
# passes for efficientnet_b0, and what Keras itself reports for them (count_params and pyramid_outputs
# of keras_hub.models.EfficientNetBackbone(**B0), measured with keras-hub in /work/kerasenv).
B0 = dict(stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3], stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
          stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
          stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
          stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6], stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
          stackwise_block_types=["v1"] * 7, min_depth=None, include_stem_padding=True,
          use_depth_divisor_as_min_depth=True, cap_round_filter_decrease=True, stem_conv_padding="valid",
          batch_norm_momentum=0.9, batch_norm_epsilon=1e-5, dropout=0, projection_activation=None,
          stackwise_width_coefficients=[1.0] * 7, stackwise_depth_coefficients=[1.0] * 7,
          stackwise_squeeze_and_excite_ratios=[0.25] * 7)
KERAS_PARAMS = {"b0": 4_049_564, "b3": 10_783_528, "lite0": 3_413_024, "rw_t": 12_743_412}
KERAS_PYRAMID = {"b0": {"P1": 16, "P2": 24, "P3": 40, "P4": 112, "P5": 1280},
                 "b3": {"P1": 24, "P2": 32, "P3": 48, "P4": 136, "P5": 1536},
                 "lite0": {"P1": 16, "P2": 24, "P3": 40, "P4": 112, "P5": 1280},
                 "rw_t": {"P1": 24, "P2": 40, "P3": 48, "P4": 128, "P5": 1024}}
B3 = {**B0, "stackwise_width_coefficients": [1.2] * 7, "stackwise_depth_coefficients": [1.4] * 7}
LITE0 = {**B0, "stackwise_squeeze_and_excite_ratios": [0] * 7, "activation": "relu6"}    # no SE, relu6
RW_T = {**B0, "stackwise_kernel_sizes": [3] * 6, "stackwise_num_repeats": [2, 4, 4, 6, 9, 15],      # EfficientNetV2
        "stackwise_input_filters": [24, 24, 48, 64, 128, 160], "stackwise_output_filters": [24, 48, 64, 128, 160, 256],
        "stackwise_expansion_ratios": [1, 4, 4, 4, 6, 6], "stackwise_strides": [1, 2, 2, 2, 1, 2],
        "stackwise_squeeze_and_excite_ratios": [0, 0, 0, 0.25, 0.25, 0.25],
        "stackwise_block_types": ["cba"] + ["fused"] * 2 + ["unfused"] * 3, "stackwise_force_input_filters": [0] * 6,
        "stackwise_nores_option": [False] * 6, "activation": "silu", "stackwise_width_coefficients": [0.8] * 6,
        "stackwise_depth_coefficients": [0.9] * 6}


def tiny(**over):
    """Three stacks of 4..6 channels: a residual expand-1 block with SE, a strided expand-2 block, a residual
    expand-2 block with SE; P1 (1/2, input of block2a) and P2 (the top, 1/4)."""
    cfg = dict(stackwise_width_coefficients=[1.0] * 2, stackwise_depth_coefficients=[1.0, 2.0],
               stackwise_kernel_sizes=[3, 5], stackwise_num_repeats=[1, 1], stackwise_input_filters=[4, 4],
               stackwise_output_filters=[4, 6], stackwise_expansion_ratios=[1, 2],
               stackwise_squeeze_and_excite_ratios=[0.5, 0.5], stackwise_strides=[1, 2],
               stackwise_block_types=["v1"] * 2, depth_divisor=2, min_depth=2, num_features=4, dropout=0.0)
    cfg.update(over)
    return EfficientNetBackbone(**cfg, seed=0)


def tiny_segmenter(**over):
    bb = DeepLabV3Backbone(tiny(**over), "P2", 2, [1], low_level_feature_key="P1", projection_filters=2,
                           num_channels=4, seed=1)
    return DeepLabV3ImageSegmenter(bb, 3, seed=2)


@pytest.mark.parametrize("name,cfg", [("b0", B0), ("b3", B3), ("lite0", LITE0), ("rw_t", RW_T)])
def test_keras_configs_build_with_the_sizes_keras_reports(name, cfg):
    enc = EfficientNetBackbone(**cfg, seed=0)
    assert enc.num_parameters() + sum(b.size for _, b in enc.named_buffers()) == KERAS_PARAMS[name]
    assert enc.pyramid_channels == KERAS_PYRAMID[name]
    assert enc.pyramid_strides == {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}


@pytest.mark.parametrize("size", [(64, 64), (50, 37)])
def test_pyramid_shapes_and_strides(size):
    enc = EfficientNetBackbone(**{**B0, "stackwise_width_coefficients": [0.25] * 7,
                                  "stackwise_num_repeats": [1] * 7}, seed=0)
    out = enc(np.random.default_rng(0).normal(size=(1, *size, 3)).astype(np.float32))
    assert list(out) == ["P1", "P2", "P3", "P4", "P5"]
    for level, y in out.items():
        s = enc.pyramid_strides[level]
        # every stride-2 step is ZeroPadding(k // 2) + "valid": ceil(H / 2), as Keras "same" on the size
        assert y.shape == (1, -(-size[0] // s), -(-size[1] // s), enc.pyramid_channels[level]), level


def test_config_round_trip_and_keras_scalar_coefficients():
    enc = EfficientNetBackbone(**B0, seed=0)
    cfg = enc.get_config()
    again = EfficientNetBackbone.from_config(cfg)
    assert again.get_config() == cfg
    assert again.state_dict().keys() == enc.state_dict().keys()
    scalar = {k: v for k, v in cfg.items() if not k.startswith("stackwise_width")}
    scalar["width_coefficient"] = 1.0              # KerasHub accepts a scalar for every stack
    assert EfficientNetBackbone.from_config(scalar).get_config() == cfg


def test_preset_round_trip(tmp_path):
    model = randomize_batchnorm(tiny_segmenter(), np.random.default_rng(0))
    assert_preset_round_trip(model, tmp_path / "preset", EfficientNetBackbone, (2, 16, 24, 3))


@pytest.mark.parametrize("change,match", [
    (dict(stackwise_block_types=["v1", "mixed"]), "mixed.*not supported"),
    (dict(activation="gelu"), "gelu"),
    (dict(stackwise_strides=[1]), "stackwise_strides must be a list of 2"),
    (dict(stackwise_input_filters=[4, 6], stackwise_expansion_ratios=[1, 1]), "block2a: input filters 6"),
])
def test_bad_configs_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        tiny(**change)


def test_unsupported_block_type_in_a_preset_is_one_line(tmp_path):
    import json

    model = tiny_segmenter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_keras_preset(model, tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    cfg["config"]["image_encoder"]["config"]["stackwise_block_types"] = ["v1", "mixed"]
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PresetError, match="config.json.*mixed.*not supported"):
        load_keras_preset(tmp_path / "p")


def test_stochastic_depth_drops_whole_samples_of_the_residual_branch():
    """Training: y[n] = x[n] + keep[n] * branch(x)[n] / (1 - rate), with one draw per sample."""
    enc = tiny(dropout=0.6).astype(np.float64)
    block = enc.block2b           # block_id 2; KerasHub divides by the unrounded sum of repeats (2): rate 0.6
    assert isinstance(block.drop, StochasticDepth) and block.drop.rate == pytest.approx(0.6)
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 6))
    with use_backend("numpy"):
        block.drop.rng = np.random.default_rng(7)
        y = block.forward(x, training=True)
        keep = np.random.default_rng(7).random(8) >= 0.6
        branch = x
        for layer in block.branch()[:-1]:        # everything but the drop
            branch = layer.forward(branch, training=True)
    assert 0 < keep.sum() < 8
    np.testing.assert_allclose(y, x + keep[:, None, None, None] * branch / 0.4, rtol=1e-12)
    with use_backend("numpy"):
        np.testing.assert_array_equal(block.drop.forward(branch, training=False), branch)   # inference: identity


def _with_fixed_drops(model, seed):
    """Reseed every stochastic-depth layer before each forward, so repeated evaluations drop the same samples
    (seed 0 at rate 0.5 keeps the first sample and drops the others)."""
    for _, mod in model.modules():
        if isinstance(mod, StochasticDepth):
            plain = mod.forward

            def forward(x, training=False, mod=mod, plain=plain):
                mod.rng = np.random.default_rng(seed)
                return plain(x, training)
            object.__setattr__(mod, "forward", forward)
    return model


V2_TYPES = [["cba", "fused"], ["fused", "unfused"], ["cba", "unfused"]]   # EfficientNetV2 block layers


@pytest.mark.slow
@pytest.mark.parametrize("training,types", [(False, ["v1"] * 2), (True, ["v1"] * 2), (True, ["fused", "unfused"])])
def test_whole_model_gradient_every_entry(training, types):
    from test_model import _check_every_entry

    rng = np.random.default_rng(3)
    model = _with_fixed_drops(randomize_batchnorm(tiny_segmenter(dropout=0.5, stackwise_block_types=types), rng),
                              0).astype(np.float64)
    x, c = rng.normal(size=(2, 12, 9, 3)), rng.normal(size=(2, 12, 9, 3))
    with use_backend("numpy"):
        checked = _check_every_entry(model, x, c, training)
    assert checked == model.num_parameters()


@pytest.mark.parametrize("activation,types", [("swish", ["v1"] * 2), ("relu6", ["v1"] * 2)] +
                         [("silu", t) for t in V2_TYPES])
def test_whole_model_directional_derivative(activation, types):
    """d/dt L(theta + t v, x + t vx) at t = 0 equals <grad, v> + <dx, vx>, training mode with drops."""
    from test_model import directional_derivative

    rng = np.random.default_rng(4)
    segmenter = tiny_segmenter(dropout=0.5, activation=activation, stackwise_block_types=types)
    model = _with_fixed_drops(randomize_batchnorm(segmenter, rng), 0).astype(np.float64)
    x, c = rng.normal(size=(4, 23, 18, 3)), rng.normal(size=(4, 23, 18, 3))
    numeric, predicted = directional_derivative(model, x, c, rng)
    assert numeric == pytest.approx(predicted, rel=1e-6)


@pytest.mark.parametrize("types", [["v1"] * 2, ["fused", "unfused"]])
def test_cpu_backend_matches_the_reference(types):
    model = randomize_batchnorm(tiny_segmenter(stackwise_block_types=types), np.random.default_rng(5))
    x = np.random.default_rng(6).normal(size=(2, 20, 17, 3)).astype(np.float32)
    c = np.random.default_rng(7).normal(size=(2, 20, 17, 3)).astype(np.float32)
    assert_cpu_matches_reference(model, x, c)       # project_bn betas: exactly 0 in training mode, float32 noise


@pytest.mark.parametrize("output_stride,step", [(16, 2), (8, 4)])
def test_output_stride_is_exact_a_trous_of_the_strided_network(output_stride, step):
    """Same weights, strides traded for dilation (no SE: its pool averages over the denser map): the dense
    P5 holds the strided P5 at its even positions, and P5 sits at 1/output_stride."""
    cfg = {**B0, "stackwise_width_coefficients": [0.25] * 7, "stackwise_num_repeats": [1, 1, 1, 1, 2, 2, 1],
           "stackwise_squeeze_and_excite_ratios": [0] * 7}
    strided = EfficientNetBackbone(**cfg, seed=0).astype(np.float64)
    dense = EfficientNetBackbone(**cfg, output_stride=output_stride, seed=0).astype(np.float64)
    assert_atrous_holds_strided(strided, dense, output_stride, step)


@pytest.mark.parametrize("name", ["effnet_v3plus_tiny", "effnetv2_v3plus_tiny"])
def test_export_writes_the_datasets_and_config_keras_wrote(tmp_path, name):
    """Load a KerasHub-written preset, save it again: the same HDF5 datasets with the same values and the
    same encoder config (KerasHub loads such an export and reproduces the stored logits exactly:
    ``tools/make_parity_fixtures.py --check-roundtrip``)."""
    import json
    from pathlib import Path

    import h5py

    src = Path(__file__).parent / "fixtures" / name / "preset"
    save_keras_preset(load_keras_preset(src), tmp_path / "p")

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
        return {k: v for k, v in out.items() if not k.startswith("optimizer")}
    ours, theirs = datasets(tmp_path / "p" / "model.weights.h5"), datasets(src / "model.weights.h5")
    assert ours.keys() == theirs.keys()
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    config = lambda p: json.loads((p / "config.json").read_text())["config"]["image_encoder"]["config"]  # noqa: E731
    mine, keras = config(tmp_path / "p"), config(src)
    assert mine.keys() == keras.keys()
    assert {k: mine[k] for k in keras if k not in ("name", "trainable", "dtype")} == \
        {k: v for k, v in keras.items() if k not in ("name", "trainable", "dtype")}
