"""ONNX export: the exported graph, run in ONNX Runtime, against tinydeeplab's own logits.

ONNX Runtime is an independent implementation of every op in the graph (convolution, batch norm, pad,
max pool, half-pixel resize, ...), so agreement within float32 round-off is cross-implementation
evidence for both sides, in the spirit of the KerasHub round trip. Needs the ``onnx`` extra
(``pip install -e '.[dev,onnx]'``).
"""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from model_factories import randomize_batchnorm, tiny_segmenter  # noqa: E402
from test_encoder import _toy_segmenter  # noqa: E402

from tinydeeplab import load_keras_preset, parity, use_backend  # noqa: E402
from tinydeeplab.cli import main  # noqa: E402
from tinydeeplab.errors import OptionError  # noqa: E402
from tinydeeplab.io.onnx_export import export_onnx, onnx_model, require_onnx  # noqa: E402
from tinydeeplab.models.recipes import build_model  # noqa: E402
from tinydeeplab.nn import (BatchNorm, Conv2D, MaxPool2D, Module, OpLayer, ReLU, Resize, Sequential,  # noqa: E402
                            ZeroPadding2D)

FIXTURES = Path(__file__).parent / "fixtures"
REL_TOL = 1e-5                    # max|onnx - tinydeeplab| / max|tinydeeplab|, as tinydeeplab.parity defines it


def run_onnx(path, x):
    """What docs/guides/onnx.md shows: one ONNX Runtime session on the CPU, NHWC float32 in, logits out."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": x})[0]


def _relative(got, want):
    row, = parity.compare({"logits": got}, {"logits": want})
    assert got.shape == want.shape, row
    return row


def assert_same_logits(got, model, x):
    """ONNX Runtime's float32 logits ``got`` against tinydeeplab's:

    * within REL_TOL of tinydeeplab's float64 logits (the model cast to float64, NumPy reference ops),
      which is what each float32 implementation can be held to (both are measured at <= 7e-6);
    * within 2 * REL_TOL of tinydeeplab's own float32 logits (two float32 round-offs: the triangle
      inequality; measured up to 1.2e-5 on the v3plus_tiny fixture);
    * the same arg-max as tinydeeplab's float32 logits wherever their top-2 margin is wider than twice the
      largest difference (elsewhere a round-off may legitimately swap a near-tie).
    """
    mine = model.forward(x)
    try:                                          # float32 -> float64 -> float32 restores every weight exactly
        with use_backend("numpy"):
            exact = model.astype(np.float64).forward(x.astype(np.float64))
    finally:
        model.astype(np.float32)
    row = _relative(got, exact)
    assert row["relative"] <= REL_TOL, row
    row = _relative(got, mine)
    assert row["relative"] <= 2 * REL_TOL, row
    top2 = np.sort(mine, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) > 2 * row["max_abs"]
    assert decided.mean() > 0.9, "too few decided pixels for the arg-max check to mean anything"
    np.testing.assert_array_equal(got.argmax(-1)[decided], mine.argmax(-1)[decided])


def _inputs(shapes, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(np.float32) for s in shapes]


def _export_and_compare(model, tmp_path, shapes, size=None):
    path = export_onnx(model, tmp_path / "model.onnx", size=size)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    for x in _inputs(shapes):
        assert_same_logits(run_onnx(path, x), model, x)
    return path


# -- the committed KerasHub fixtures, any size -------------------------------------------------------------
@pytest.mark.parametrize("name", ["v3_tiny", "v3plus_tiny", "effnet_v3plus_tiny", "effnetv2_v3plus_tiny",
                                  "effnet_lite_v3_tiny"])
def test_fixture_presets_run_in_onnx_runtime_at_any_size_and_batch(name, tmp_path):
    """ResNet, and the EfficientNet b0 (swish, sigmoid squeeze-and-excitation), rw_t (fused MBConv) and lite0
    (relu6) fixtures."""
    model = load_keras_preset(FIXTURES / name / "preset")
    _export_and_compare(model, tmp_path, [(2, 64, 96, 3), (1, 50, 70, 3), (3, 33, 47, 3)])


def test_a_four_channel_model_runs_in_onnx_runtime(tmp_path):
    """An RGB fixture adapted to 4 input channels (docs/guides/multichannel.md): the graph reads NHWC with C = 4."""
    model = load_keras_preset(FIXTURES / "v3plus_tiny" / "preset", in_channels=4, adapt="zero")
    path = _export_and_compare(model, tmp_path, [(2, 64, 96, 4), (1, 33, 47, 4)])
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[3].dim_value == 4


def test_fixture_preset_agrees_with_the_stored_keras_logits(tmp_path):
    """The exported graph against Keras itself (the fixture's logits), at the parity suite's tolerance."""
    name = "v3plus_tiny"
    path = export_onnx(load_keras_preset(FIXTURES / name / "preset"), tmp_path / "m.onnx")
    with np.load(FIXTURES / name / "cases.npz", allow_pickle=False) as data:
        x, want = data["input_nsq"], data["logits_nsq"]
    row, = parity.compare({"logits": run_onnx(path, x)}, {"logits": want})
    assert row["relative"] <= 1e-4 and row["argmax"] >= 0.9999, row


def test_an_output_stride_8_preset_with_dilation(tmp_path):
    model = load_keras_preset(FIXTURES / "v3plus_tiny" / "preset", output_stride=8)
    assert any(m.dilation_rate != (1, 1) for _, m in model.backbone.image_encoder.modules() if isinstance(m, Conv2D))
    _export_and_compare(model, tmp_path, [(2, 64, 96, 3), (1, 45, 59, 3)])


def test_a_fixed_size_graph(tmp_path):
    model = load_keras_preset(FIXTURES / "v3_tiny" / "preset")
    path = _export_and_compare(model, tmp_path, [(2, 50, 70, 3)], size=(50, 70))
    dims = [d.dim_value or d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 50, 70, 3]


# -- other model trees: v2 blocks, basic blocks, V3 decoder, upsample-then-classify, a non-ResNet encoder ---
@pytest.mark.parametrize("build", [
    lambda rng: tiny_segmenter(pre_activation=True, seed=3),                       # ResNet v2: -inf pad, preact
    lambda rng: tiny_segmenter(block_type="basic_block", output_stride=8, seed=4),
    lambda rng: build_model("tiny", 4, decoder="v3"),                              # DeepLabV3, OS16 recipe
    lambda rng: _toy_segmenter(rng),                                               # strided "same" convs, biases
    lambda rng: tiny_segmenter(separable=True, seed=5),                            # depthwise convs (group = C)
    lambda rng: build_model("tiny", 4, separable=True),                            # the paper's head, OS16
    lambda rng: build_model("mobilenetv3-small", 4),     # hard-swish, hard-sigmoid SE, grouped-layout depthwise
], ids=["resnet_v2", "basic_os8", "recipe_v3", "toy_encoder", "separable", "recipe_separable", "mobilenetv3"])
def test_other_model_trees(build, rng, tmp_path):
    model = randomize_batchnorm(build(rng), rng)
    _export_and_compare(model, tmp_path, [(2, 64, 96, 3), (1, 37, 51, 3)])


@pytest.mark.parametrize("size", [None, (47, 64)], ids=["dynamic", "fixed"])
def test_asymmetric_padding_any_module(size, tmp_path):
    """Any module tree exports, not only segmenters. Pads that differ on all four sides: an explicit
    ZeroPadding2D, and Keras "same" at stride 2 (odd H: (1, 1), even W: (0, 1); with a fixed size these
    are explicit pads, with dynamic sizes SAME_UPPER), also in a max pool."""
    model = Sequential(ZeroPadding2D(((0, 1), (2, 3))), Conv2D(3, 4, 3, strides=2, padding="same", seed=0),
                       MaxPool2D(3, 2, "same"), Conv2D(4, 5, 3, strides=2, dilation_rate=1, padding="same", seed=1))
    _export_and_compare(model, tmp_path, [(2, 47, 64, 3)] if size else [(2, 47, 64, 3), (1, 64, 47, 3)], size=size)


class _Resampler(Module):
    """A conv, then bilinear resizes to sizes that are no multiple of anything: shrinking by a non-integer
    factor, then growing by one."""

    def __init__(self):
        super().__init__()
        self.conv, self.down, self.up = Conv2D(3, 4, 1, use_bias=True, seed=0), Resize(), Resize()

    def forward(self, x, training=False):
        h, w = x.shape[1:3]
        y = self.down.forward(self.conv.forward(x), size=(h * 2 // 5 + 1, w * 3 // 7 + 1))
        return self.up.forward(y, size=(h * 3 // 2 + 1, w + 3))


def test_bilinear_resize_matches_when_shrinking_and_at_odd_factors(tmp_path):
    model = _Resampler()
    _export_and_compare(model, tmp_path, [(2, 47, 64, 3)], size=(47, 64))
    with pytest.raises(OptionError, match=r"^ONNX export: down: the resize target is not a multiple"):
        onnx_model(model)                                   # dynamic H/W: the target has no source tensor


def test_the_classifier_stays_where_the_model_computes_it(rng, tmp_path):
    for before in (True, False):
        model = randomize_batchnorm(tiny_segmenter(plus=False, seed=5), rng)
        model.classify_before_upsample = before
        path = _export_and_compare(model, tmp_path, [(1, 40, 56, 3)])
        ops = [n.op_type for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Resize")]
        assert ops[-2:] == (["Conv", "Resize"] if before else ["Resize", "Conv"])
        path.unlink()


def test_graph_contents(tmp_path):
    model = load_keras_preset(FIXTURES / "v3plus_tiny" / "preset")
    graph = onnx.load(str(export_onnx(model, tmp_path / "m.onnx"))).graph
    count = lambda op: sum(n.op_type == op for n in graph.node)  # noqa: E731
    assert count("Conv") == sum(isinstance(m, Conv2D) for _, m in model.modules())
    assert count("BatchNormalization") == sum(isinstance(m, BatchNorm) for _, m in model.modules())
    for node in (n for n in graph.node if n.op_type == "Resize"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"mode": b"linear", "coordinate_transformation_mode": b"half_pixel"}
    shape = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert shape(graph.input[0]) == ["batch", "height", "width", 3]
    assert shape(graph.output[0]) == ["batch", "height", "width", 5]


# -- what cannot be exported, and the command line -----------------------------------------------------------
class _Double(OpLayer):
    def forward(self, x, training=False):
        return 2 * x


class _Outside(Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu = Conv2D(3, 2, 1, seed=0), ReLU()

    def forward(self, x, training=False):
        return self.relu.forward(self.conv.forward(x) * 2)


def test_a_layer_without_conversion_or_work_outside_the_layers_is_named():
    with pytest.raises(OptionError, match=r"^ONNX export: 1 \(_Double\) has no ONNX conversion"):
        onnx_model(Sequential(Conv2D(3, 2, 1, seed=0), _Double()))
    with pytest.raises(OptionError, match=r"^ONNX export: relu \(ReLU\) reads a tensor that no traced layer made"):
        onnx_model(_Outside())


def test_missing_onnx_is_one_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)            # import onnx -> ImportError
    with pytest.raises(OptionError, match=r"pip install 'tinydeeplab\[onnx\]'"):
        require_onnx()


def test_cli_exports_and_refuses_to_overwrite(tmp_path, capsys):
    preset, out = str(FIXTURES / "v3_tiny" / "preset"), tmp_path / "m.onnx"
    assert main(["export-onnx", preset, str(out), "--size", "64", "96"]) == 0
    assert "wrote" in capsys.readouterr().out
    x, = _inputs([(1, 64, 96, 3)])
    assert_same_logits(run_onnx(out, x), load_keras_preset(preset), x)
    before = out.read_bytes()
    assert main(["export-onnx", preset, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; give --force" in err
    assert out.read_bytes() == before
    assert main(["export-onnx", preset, str(out), "--force"]) == 0                   # now with dynamic H, W
    assert out.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]                         # no temporaries left


def test_cli_bad_preset_is_one_line(tmp_path, capsys):
    assert main(["export-onnx", str(tmp_path / "nope"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and not (tmp_path / "m.onnx").exists()
