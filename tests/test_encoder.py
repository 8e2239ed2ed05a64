"""The encoder protocol: a new backbone is one class plus one registry entry, and io, parity and the
recipes reach encoders only through the registry; models never import io."""
import ast
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinydeeplab
from tinydeeplab import load_keras_preset, save_keras_preset
from tinydeeplab.models import (ENCODERS, DeepLabV3Backbone, DeepLabV3ImageSegmenter, Encoder, EncoderStage,
                                register_encoder)
from tinydeeplab.models.encoder import keras_layer
from tinydeeplab.nn import Add, Conv2D, ReLU, Sequential, sum_gradients

from model_factories import randomize_batchnorm

PACKAGE = Path(tinydeeplab.__file__).parent


class ToyBackbone(Encoder):
    """Three strided 3x3 convs with bias: P1 (1/2, not a pyramid output), P2 (1/4), P3 (1/8)."""

    keras_class_name = "ToyBackbone"
    keras_module = "tests.test_encoder"

    def __init__(self, filters=(4, 6, 8), in_channels=3, seed=None):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.filters, c = list(filters), in_channels
        for i, f in enumerate(self.filters):
            setattr(self, f"conv{i + 1}", Sequential(("conv", Conv2D(c, f, 3, strides=2, use_bias=True,
                                                                     seed=int(rng.integers(2**31)))),
                                                      ("relu", ReLU())))
            c = f
        self.pyramid_channels = {"P2": self.filters[1], "P3": self.filters[2]}
        self.pyramid_strides = {"P2": 4, "P3": 8}

    def forward(self, x, training=False):
        p1 = self.conv1.forward(x, training)
        p2 = self.conv2.forward(p1, training)
        return {"P2": p2, "P3": self.conv3.forward(p2, training)}

    def backward(self, d_pyramid):
        d = d_pyramid.get("P2")
        if "P3" in d_pyramid:
            d3 = self.conv3.backward(d_pyramid["P3"])
            d = d3 if d is None else sum_gradients(d3, d)
        return self.conv1.backward(self.conv2.backward(d))

    def get_config(self):
        return {"filters": self.filters}

    @classmethod
    def from_config(cls, config, *, output_stride=None, seed=None):
        return cls(config["filters"], seed=seed)

    def keras_weight_layers(self):
        return [keras_layer(self.conv1.conv), keras_layer(self.conv2.conv), keras_layer(self.conv3.conv)]

    def stages(self):
        return [EncoderStage("conv1", "3x3/2 conv", "toy_conv1"),
                EncoderStage("conv2", "3x3/2 conv = P2", "toy_p2", "P2"),
                EncoderStage("conv3", "3x3/2 conv = P3", "toy_p3", "P3")]


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(ENCODERS, "ToyBackbone", ToyBackbone)       # removed again after the test
    assert register_encoder(ToyBackbone) is ToyBackbone


def _toy_segmenter(rng):
    backbone = DeepLabV3Backbone(ToyBackbone(seed=0), "P3", 2, [1, 2], low_level_feature_key="P2",
                                 projection_filters=4, num_channels=8, seed=1)
    model = randomize_batchnorm(DeepLabV3ImageSegmenter(backbone, 3, seed=2), rng)
    for _, mod in model.modules():                           # non-zero biases: a lost bias would show
        if "bias" in mod.params:
            mod.params["bias"] = rng.normal(0, 0.3, mod.params["bias"].shape).astype(np.float32)
    return model


def test_a_toy_encoder_round_trips_through_a_preset(tmp_path, toy_registered):
    rng = np.random.default_rng(0)
    model = _toy_segmenter(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # 8-channel head: a tinydeeplab-only preset
        save_keras_preset(model, tmp_path / "preset")
    again = load_keras_preset(tmp_path / "preset")
    assert isinstance(again.backbone.image_encoder, ToyBackbone)
    assert again.state_dict().keys() == model.state_dict().keys()
    x = rng.normal(size=(2, 24, 40, 3)).astype(np.float32)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


def test_a_toy_encoder_trains_and_lists_its_parity_stages(toy_registered):
    from tinydeeplab.parity import stage_names, tinydeeplab_stages

    model = _toy_segmenter(np.random.default_rng(1))
    x = np.random.default_rng(2).normal(size=(1, 16, 24, 3)).astype(np.float32)
    logits = model.forward(x, training=True)
    assert logits.shape == (1, 16, 24, 3)
    assert model.backward(np.ones_like(logits)).shape == x.shape
    assert np.abs(dict(model.named_gradients())["backbone.image_encoder.conv1.conv.kernel"]).sum() > 0
    names = stage_names(model)
    assert names[:3] == [("backbone.image_encoder.conv1", "encoder", "toy_conv1"),
                         ("backbone.image_encoder.conv2", "encoder", "toy_p2"),
                         ("backbone.image_encoder.conv3", "encoder", "toy_p3")]
    stages = tinydeeplab_stages(model, x)
    assert stages["backbone.image_encoder.conv2"].shape == (1, 4, 6, 6)       # P2 at 1/4
    assert stages["backbone.image_encoder.conv3"].shape == (1, 2, 3, 8)       # P3 at 1/8


def test_an_unregistered_encoder_class_is_named_in_the_error(tmp_path, toy_registered):
    model = _toy_segmenter(np.random.default_rng(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_keras_preset(model, tmp_path / "preset")
    del ENCODERS["ToyBackbone"]
    with pytest.raises(tinydeeplab.errors.PresetError, match="ToyBackbone.*supports .*ResNetBackbone"):
        load_keras_preset(tmp_path / "preset")


# -- dependency direction: read the sources -------------------------------------------------------------
def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return out


def test_models_never_import_io():
    offenders = {f"{p.relative_to(PACKAGE.parent)}: {m}" for p in (PACKAGE / "models").glob("*.py")
                 for m in _imports(p) if m == "tinydeeplab.io" or m.startswith("tinydeeplab.io.")}
    assert not offenders, sorted(offenders)


def _defined_names(path: Path) -> set[str]:
    """Methods, class-level (annotated) attributes and ``self.<name> = ...`` attributes of every class in
    ``path`` (the Encoder protocol's ``pyramid_channels: dict[str, int]`` counts as defined there)."""
    names = set()
    for cls in (n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.ClassDef)):
        names |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return names


def _resnet_only_names() -> set[str]:
    """What only the ResNet module defines: not the Encoder protocol, not Module, not ASPP or DeepLab."""
    others = set(dir(Encoder)) | set(Encoder.__annotations__) | _defined_names(PACKAGE / "models" / "encoder.py")
    # (the annotated protocol attributes, pyramid_channels and pyramid_strides, are set by each encoder)
    for name in ("aspp.py", "deeplab.py"):
        others |= _defined_names(PACKAGE / "models" / name)
    return _defined_names(PACKAGE / "models" / "resnet.py") - others


@pytest.mark.parametrize("module", ["io/keras_preset.py", "io/keras_layout.py", "parity.py", "models/recipes.py",
                                    "../tools/make_architecture_doc.py"])
def test_io_parity_recipes_and_docs_reach_encoders_only_through_the_protocol(module):
    path = (PACKAGE / module).resolve()
    imported = _imports(path) if path.is_relative_to(PACKAGE) else []
    imported += [m for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module for m in [n.module]]
    direct = [m for m in imported if m.startswith("tinydeeplab.models.resnet") or m.endswith(".ResNetBackbone")]
    assert not direct, f"{module} imports the ResNet encoder directly: {direct}"
    resnet_only = _resnet_only_names()
    assert {"num_stacks", "blocks", "stem", "shortcut"} <= resnet_only          # the check sees ResNet's names
    used = {n.attr for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Attribute)}
    assert not used & resnet_only, f"{module} reaches into ResNet internals: {sorted(used & resnet_only)}"


def test_add_layer_writes_over_its_first_input_and_hands_the_gradient_to_both():
    a, b = np.full((1, 2, 2, 3), 1.5, np.float32), np.full((1, 2, 2, 3), 2.0, np.float32)
    add = Add(inplace=True)
    y = add.forward([a, b])
    assert y is a and np.all(y == 3.5)
    dy = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    da, db = add.backward(dy)
    np.testing.assert_array_equal(da, dy)
    np.testing.assert_array_equal(db, dy)
    with pytest.raises(RuntimeError, match="before forward"):
        Add().backward(dy)
