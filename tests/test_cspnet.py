"""CSPNetBackbone: KerasHub's CSPDarkNet-53 config (the size Keras reports), pyramid and strides, the 2x logits of
a KerasHub DeepLabV3 on a stride-1 stem, config and preset round trips, every stage / block type against
central differences, the CPU backend, and output stride by dilation (the Keras parity fixtures are in
test_parity.py)."""
import numpy as np
import pytest

from tinydeeplab import use_backend
from tinydeeplab.models import CSPNetBackbone, DeepLabV3Backbone, DeepLabV3ImageSegmenter
from tinydeeplab.nn import LeakyReLU

from model_factories import assert_atrous_holds_strided, assert_cpu_matches_reference, assert_preset_round_trip, randomize_batchnorm

# KerasHub's timm converter (keras_hub/src/utils/timm/convert_cspnet.py) for "cspdarknet53", and what Keras
# reports for keras_hub.models.CSPNetBackbone(**CSPDARKNET53) (measured in /work/kerasenv, keras-hub 0.32.0):
# count_params() (trainable + BN moving statistics), the trainable part alone, and pyramid_outputs' channels.
CSPDARKNET53 = dict(stem_filters=32, stem_kernel_size=3, stem_strides=1, stackwise_depth=[1, 2, 8, 8, 4],
                    stackwise_num_filters=[64, 128, 256, 512, 1024], bottle_ratio=(0.5, 1.0),
                    block_ratio=(1.0, 0.5), expand_ratio=(2.0, 1.0), stage_type="csp", block_type="dark_block",
                    stackwise_strides=[2, 2, 2, 2, 2], down_growth=True, stem_pooling=None, stem_padding="same",
                    avg_down=False, cross_linear=False, groups=1)
KERAS_PARAMS, KERAS_TRAINABLE = 26_652_512, 26_617_184
KERAS_PYRAMID = {"P2": 64, "P3": 128, "P4": 256, "P5": 512, "P6": 1024}


def tiny(**over):
    """Three stages of 4..8 channels in CSPDarkNet's pattern (stage 0 expands 2x, later ones split into
    half-width blocks, bottleneck 0.5 then 1), a stride-1 stem: P2 at 1/2, P3 at 1/4, P4 at 1/8."""
    cfg = dict(stem_filters=4, stem_kernel_size=3, stem_strides=1, stackwise_depth=[1, 2, 1],
               stackwise_num_filters=[4, 8, 8], bottle_ratio=(0.5, 1.0), block_ratio=(1.0, 0.5),
               expand_ratio=(2.0, 1.0), stage_type="csp", block_type="dark_block", down_growth=True,
               stackwise_strides=2)
    cfg.update(over)
    return CSPNetBackbone(**cfg, seed=0)


STAGE_VARIANTS = {   # stage type -> the ratios its blocks' residual adds allow
    "csp": {}, "cs3": dict(expand_ratio=2.0, block_ratio=1.0), "dark": dict(block_ratio=1.0, expand_ratio=1.0)}


def tiny_segmenter(plus=True, **over):
    bb = DeepLabV3Backbone(tiny(**over), "P4", 2 if plus else 4, [1, 2], low_level_feature_key="P3" if plus else None,
                           projection_filters=2, num_channels=4, seed=1)
    return DeepLabV3ImageSegmenter(bb, 3, seed=2)


def test_cspdarknet53_builds_with_the_size_keras_reports():
    enc = CSPNetBackbone(**CSPDARKNET53, seed=0)
    assert enc.num_parameters() == KERAS_TRAINABLE
    assert enc.num_parameters() + sum(b.size for _, b in enc.named_buffers()) == KERAS_PARAMS
    assert enc.pyramid_channels == KERAS_PYRAMID
    assert enc.pyramid_strides == {"P2": 2, "P3": 4, "P4": 8, "P5": 16, "P6": 32}
    assert len(enc.keras_weight_layers()) == 2 * (1 + 5 * 4 + 2 * sum(CSPDARKNET53["stackwise_depth"]))
    assert all(bn.epsilon == 1e-5 and bn.momentum == 0.99
               for bn in (layer.module for layer in enc.keras_weight_layers()) if hasattr(bn, "epsilon"))
    slopes = {m.kwargs["negative_slope"] for _, m in enc.modules() if isinstance(m, LeakyReLU)}
    assert slopes == {0.01}


@pytest.mark.parametrize("size", [(64, 64), (50, 37)])
def test_pyramid_shapes_follow_kerass_valid_stem_and_padded_strides(size):
    """Stem 3x3 "valid" at stride 1 drops one pixel on every side; each stage's ZeroPadding(1) + 3x3/2 "valid"
    gives ceil(h / 2)."""
    enc = tiny()
    out = enc(np.random.default_rng(0).normal(size=(1, *size, 3)).astype(np.float32))
    h, w = size[0] - 2, size[1] - 2
    for level in ("P2", "P3", "P4"):
        h, w = -(-h // 2), -(-w // 2)
        assert out[level].shape == (1, h, w, enc.pyramid_channels[level]), level
    same = tiny(stem_padding="same")(np.zeros((1, 64, 64, 3), np.float32))
    assert same["P2"].shape[1:3] == (32, 32)


def test_keras_deeplab_on_a_stride_1_stem_makes_logits_at_twice_the_input_size():
    """KerasHub upsamples by 2**level // upsampling_size, as if P4 were at 1/16: it is at 1/8 here."""
    model = tiny_segmenter()
    assert model.backbone.output_scale == 2
    x = np.random.default_rng(0).normal(size=(1, 32, 64, 3)).astype(np.float32)
    assert model.forward(x).shape == (1, 64, 128, 3)
    assert tiny_segmenter(plus=False).forward(x).shape == (1, 64, 128, 3)
    stride2 = DeepLabV3ImageSegmenter(DeepLabV3Backbone(tiny(stem_strides=2), "P4", 2, [1], low_level_feature_key="P3",
                                                        projection_filters=2, num_channels=4, seed=1), 3, seed=2)
    assert stride2.backbone.output_scale == 1 and stride2.forward(x).shape == (1, 32, 64, 3)


def test_config_round_trip():
    enc = CSPNetBackbone(**CSPDARKNET53, seed=0)
    cfg = enc.get_config()
    again = CSPNetBackbone.from_config(cfg)
    assert again.get_config() == cfg
    assert again.state_dict().keys() == enc.state_dict().keys()
    assert CSPNetBackbone.from_config(cfg, output_stride=16).get_config()["output_strides"] == 16


@pytest.mark.parametrize("stage_type", sorted(STAGE_VARIANTS))
def test_preset_round_trip(tmp_path, stage_type):
    model = randomize_batchnorm(tiny_segmenter(stage_type=stage_type, **STAGE_VARIANTS[stage_type]),
                                np.random.default_rng(0))
    assert_preset_round_trip(model, tmp_path / "preset", CSPNetBackbone, (2, 32, 64, 3))


@pytest.mark.parametrize("change,match", [
    (dict(stage_type=None), "stage_type must be one of"),
    (dict(block_type="res_block"), "block_type must be one of"),
    (dict(groups=2), "groups=2"),
    (dict(stem_pooling="max"), "stem_pooling"),
    (dict(avg_down=True), "avg_down"),
    (dict(activation="gelu"), "gelu"),
    (dict(output_strides=4), "output_strides must be 8, 16 or 32"),
    (dict(expand_ratio=(1.5, 1.0)), "stage_0: blocks of .* = 4 channels on a half of 3"),
    (dict(expand_ratio=(1.25, 1.0)), "= 5 must be even"),
    (dict(stage_type="dark"), "block_ratio 1"),
    (dict(stackwise_num_filters=[4, 8]), "one value per stage"),
])
def test_bad_configs_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        tiny(**change)


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_whole_model_gradient_every_entry(training):
    from test_model import _check_every_entry

    rng = np.random.default_rng(3)
    model = randomize_batchnorm(tiny_segmenter(stackwise_depth=[1, 1, 1]), rng).astype(np.float64)
    x, c = rng.normal(size=(2, 10, 9, 3)), rng.normal(size=(2, 20, 18, 3))
    with use_backend("numpy"):
        checked = _check_every_entry(model, x, c, training)
    assert checked == model.num_parameters()


@pytest.mark.parametrize("stage_type", sorted(STAGE_VARIANTS))
@pytest.mark.parametrize("block_type", ["dark_block", "edge_block", "bottleneck_block"])
def test_whole_model_directional_derivative(stage_type, block_type):
    """d/dt L(theta + t v, x + t vx) at t = 0 equals <grad, v> + <dx, vx> (training mode). Step 1e-7, not the
    ResNet tests' 1e-5: leaky ReLU's slope jumps from 0.01 to 1 at 0, and a step that carries pre-activations
    across 0 errs by O(step) (csp / dark_block: 1e-1 relative at 1e-5, 5e-3 at 1e-6, 3e-12 at 1e-7)."""
    from test_model import directional_derivative

    rng = np.random.default_rng(4)
    segmenter = tiny_segmenter(stage_type=stage_type, block_type=block_type, **STAGE_VARIANTS[stage_type])
    model = randomize_batchnorm(segmenter, rng).astype(np.float64)
    x, c = rng.normal(size=(2, 21, 18, 3)), rng.normal(size=(2, 42, 36, 3))
    numeric, predicted = directional_derivative(model, x, c, rng, eps=1e-7)
    assert numeric == pytest.approx(predicted, rel=1e-6)


def test_cross_linear_drops_the_expansion_activation():
    enc = tiny(cross_linear=True)
    assert [name for name, _ in enc.stage0.exp.children()] == ["conv", "bn"]
    assert [name for name, _ in tiny().stage0.exp.children()] == ["conv", "bn", "act"]


@pytest.mark.parametrize("stage_type", ["csp", "cs3"])
def test_cpu_backend_matches_the_reference(stage_type):
    model = randomize_batchnorm(tiny_segmenter(stage_type=stage_type, **STAGE_VARIANTS[stage_type]),
                                np.random.default_rng(5))
    x = np.random.default_rng(6).normal(size=(2, 20, 17, 3)).astype(np.float32)
    c = np.random.default_rng(7).normal(size=(2, 40, 34, 3)).astype(np.float32)
    assert_cpu_matches_reference(model, x, c)


@pytest.mark.parametrize("output_strides,step", [(16, 2), (8, 4)])
def test_output_stride_is_exact_a_trous_of_the_strided_network(output_strides, step):
    """Same weights, strides traded for dilation: the dense last level holds the strided one at every
    ``step``-th position. Four stride-2 stages after a stride-2 stem put P5 at 1/32."""
    cfg = dict(stem_strides=2, stackwise_depth=[1, 1, 1, 2], stackwise_num_filters=[4, 8, 8, 8])
    strided = tiny(**cfg).astype(np.float64)
    dense = tiny(**cfg, output_strides=output_strides).astype(np.float64)
    assert_atrous_holds_strided(strided, dense, output_strides, step)


def test_architecture_page_has_the_current_cspnet_section():
    """docs/architecture.md's CSPNet section is what tools/make_architecture_doc.py writes from the model now."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_architecture_doc", root / "tools" / "make_architecture_doc.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    section = tool.cspnet_section()
    assert "`(1, 256, 256, 64)`" in section and f"{KERAS_TRAINABLE:,}" in section
    assert section in (root / "docs" / "architecture.md").read_text(encoding="utf-8"), \
        "docs/architecture.md is stale; regenerate it with: python tools/make_architecture_doc.py"


def test_cspnet_tiny_recipe_is_os16_with_logits_at_the_input_size():
    from tinydeeplab.models.recipes import RECIPES, build_model

    model = build_model("cspnet-tiny", 11, seed=0)
    enc = model.backbone.image_encoder
    assert isinstance(enc, CSPNetBackbone) and model.num_parameters() == 743_680
    assert enc.pyramid_strides == {"P2": 4, "P3": 8, "P4": 16, "P5": 16} and model.backbone.output_scale == 1
    h, w = RECIPES["cspnet-tiny"]["crop"]
    assert max(RECIPES["cspnet-tiny"]["atrous_rates"]) < min(h, w) // 16        # every ASPP tap live at the crop
    x = np.zeros((1, 48, 80, 3), np.float32)
    assert model.forward(x).shape == (1, 48, 80, 11)
    assert enc.forward(x)["P5"].shape == (1, 3, 5, 160)
