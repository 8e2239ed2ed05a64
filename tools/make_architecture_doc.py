#!/usr/bin/env python
"""Write docs/architecture.md and docs/figures/architecture.png from a real forward pass.

The model is the pascalvoc-shaped DeepLabV3+ of ``tinydeeplab.models.recipes`` (recipe
``resnet50``: KerasHub's ``deeplab_v3_plus_resnet50_pascalvoc`` architecture, ResNet50 v1 encoder,
ASPP on P5 with rates 6/12/18, V3+ decoder on P2 with 48 projection filters, 21 classes) with random
weights. Every stage's output is recorded with :func:`tinydeeplab.nn.hooks.record_outputs` during
one inference forward pass on a 1x512x512x3 input, so every shape on the page and in the figure is
what the code produced, not what someone believed it produces. The same is done once more with
``output_stride=16`` (the DeepLabV3 paper's atrous encoder) for a comparison table.

Usage (about 10 s on a 2-core machine; the forward pass itself takes 1-3 s)::

    python tools/make_architecture_doc.py                 # writes docs/architecture.md + figure
    python tools/make_architecture_doc.py --check         # exit 1 if the committed table is stale

Needs only tinydeeplab (NumPy, Numba, matplotlib). The architecture is checked against the KerasHub
config that ``tools/make_parity_fixtures.py --full`` builds (its ``FULL`` dict), so the two cannot
drift apart silently.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from tinydeeplab.models.cost import part_costs  # noqa: E402
from tinydeeplab.models.recipes import build_model  # noqa: E402
from tinydeeplab.nn.hooks import record_outputs  # noqa: E402

DOC = REPO / "docs" / "architecture.md"
FIGURE = REPO / "docs" / "figures" / "architecture.png"
RECIPE, NUM_CLASSES, SIZE = "resnet50", 21, 512
TABLE_BEGIN, TABLE_END = "<!-- shapes-table:begin -->", "<!-- shapes-table:end -->"
SEPARABLE_CASES = (("medium", 11, (360, 480)), (RECIPE, NUM_CLASSES, (SIZE, SIZE)))
"""(recipe, classes, input size) of the separable-head cost table: the CamVid recipe at CamVid's size, and
the pascalvoc shape."""


# -- the model and its recorded stages ------------------------------------------------------------
def pascalvoc_model(output_stride=None):
    """The pascalvoc-shaped DeepLabV3+ (random weights) from the ``resnet50`` recipe."""
    return build_model(RECIPE, NUM_CLASSES, seed=0, output_stride=output_stride)


def check_against_keras_config(model) -> str:
    """Compare the recipe with ``FULL`` in tools/make_parity_fixtures.py (importable without Keras)."""
    spec = importlib.util.spec_from_file_location("_make_parity_fixtures", REPO / "tools" / "make_parity_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)                      # Keras is only imported inside its functions
    full = mod.FULL
    enc = model.backbone.image_encoder.get_config()
    bb = model.backbone.config
    diffs = [f"encoder.{k}: {enc.get(k)!r} != {v!r}" for k, v in full["encoder"].items() if enc.get(k) != v]
    diffs += [f"backbone.{k}: {bb.get(k)!r} != {v!r}" for k, v in full["backbone"].items() if bb.get(k) != v]
    if model.num_classes != full["num_classes"]:
        diffs.append(f"num_classes {model.num_classes} != {full['num_classes']}")
    if model.backbone.out_channels != 256:
        diffs.append(f"ASPP/head width {model.backbone.out_channels} != 256")
    if diffs:
        raise SystemExit("the resnet50 recipe no longer matches tools/make_parity_fixtures.py FULL: " + "; ".join(diffs))
    return "recipe 'resnet50' == FULL config of tools/make_parity_fixtures.py"


ENCODER = "backbone.image_encoder."


def encoder_stages(model):
    """The encoder's own :meth:`~tinydeeplab.models.encoder.Encoder.stages` (the protocol: no ResNet here)."""
    return model.backbone.image_encoder.stages()


def level_module(model, level) -> str:
    """Dotted name of the module whose output is pyramid level ``level`` ("P5")."""
    return next(ENCODER + st.module for st in encoder_stages(model) if st.level == level)


def stages(model):
    """``[(module name, description)]`` in data-flow order; "" = the segmenter's logits."""
    bb = model.backbone
    rows = [(ENCODER + st.module, st.description) for st in encoder_stages(model)]
    rates = bb.aspp.dilation_rates
    rows.append(("backbone.aspp.branch0", "ASPP branch 0: 1x1 conv -> BN -> ReLU"))
    for i, r in enumerate(rates):
        rows.append((f"backbone.aspp.branch{i + 1}", f"ASPP branch {i + 1}: 3x3 conv rate {r} -> BN -> ReLU"))
    rows += [("backbone.aspp.pooling", "ASPP image pooling: global average -> 1x1 conv -> BN -> ReLU"),
             ("backbone.aspp.pooling_resize", "ASPP image pooling: bilinear resize back"),
             ("backbone.aspp.concat", f"ASPP concat of {len(rates) + 2} branches"),
             ("backbone.aspp", "ASPP projection: 1x1 conv -> BN -> ReLU (-> Dropout)"),
             ("backbone.encoder_upsample", f"bilinear upsample to {bb.low_key}'s size"),
             ("backbone.low_level_projection",
              f"decoder: 1x1 conv {bb.config['projection_filters']} -> BN -> ReLU on {bb.low_key}"),
             ("backbone.concat", "decoder: concat [ASPP features, projected low-level]"),
             ("backbone.head", "decoder head: 1x1 conv 256 -> BN -> ReLU"),
             ("output_conv", f"classifier: 1x1 conv {model.num_classes}, no bias (at 1/4 resolution)"),
             ("", "bilinear upsample to the input size = **logits**")]
    return rows


def record(model, size=SIZE, seed=0, repeats=2):
    """Run inference forward passes; returns ({module name: output, "": logits}, best seconds)."""
    names = [n for n, _ in stages(model) if n]
    x = np.random.default_rng(seed).normal(size=(1, size, size, 3)).astype(np.float32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.forward(x, training=False)
        times.append(time.perf_counter() - t0)
    with record_outputs(model, names) as seen:
        logits = model.forward(x, training=False)
    return {**seen, "": logits}, min(times, default=float("nan"))


def n_params(model, name) -> int:
    if name == "":
        return 0
    # a row counts what its module holds beyond the rows nested inside it (the ASPP row: its projection)
    modules = dict(model.modules())
    inner = [n for n, _ in stages(model) if n.startswith(name + ".")]
    return modules[name].num_parameters() - sum(modules[n].num_parameters() for n in inner)


def stride_of(shape, size=SIZE) -> str:
    h = shape[1]
    if h == 1:
        return "global"
    return f"{size // h}" if size % h == 0 else f"{size / h:.3g}"


def shape_rows(model, outputs, size=SIZE):
    """``[(stage, module, shape, stride, params)]`` for the table."""
    rows = [("input", "—", (1, size, size, 3), "1", 0)]
    for name, what in stages(model):
        y = outputs[name]
        rows.append((what, name or "(segmenter output)", tuple(y.shape), stride_of(y.shape, size),
                     n_params(model, name)))
    return rows


def table_markdown(rows, numbered=True) -> str:
    head = "| stage | module | output shape | stride | parameters |"
    rule = "| --- | --- | --- | ---: | ---: |"
    out = ["| # " + head, "| ---: " + rule] if numbered else [head, rule]
    for i, (what, name, shape, stride, p) in enumerate(rows):
        mod = f"`{name}`" if name not in ("—", "(segmenter output)") else name
        num = f"| {i} " if numbered else ""
        out.append(f"{num}| {what} | {mod} | `{shape}` | {stride} | {f'{p:,}' if p else '–'} |")
    return "\n".join(out)


def live_tap_fraction(size: int, rate: int, kernel: int = 3) -> float:
    """Fraction of a dilated kernel's taps that land inside a size x size map ("same" padding)."""
    half = kernel // 2
    per_axis = sum(1 for i in range(size) for a in range(-half, half + 1) if 0 <= i + rate * a < size)
    return (per_axis / (kernel * size)) ** 2


# -- the figure ------------------------------------------------------------------------------------
def _hwc(shape) -> str:
    return "×".join(str(v) for v in shape[1:])


def draw_figure(model, outputs, path, size=SIZE):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    bb = model.backbone
    colours = {"input": "#e0e0e0", "encoder": "#cfe2f3", "aspp": "#fce5cd", "decoder": "#d9ead3",
               "head": "#e6d7f0"}
    fig, ax = plt.subplots(figsize=(16, 10.5))
    ax.set_xlim(0, 16)
    ax.set_ylim(-0.1, 11.1)
    ax.axis("off")
    boxes = {}

    def box(key, x, y, title, detail, shape, group, w=2.8, h=0.95):
        shape = tuple(getattr(shape, "shape", shape))
        patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                               fc=colours[group], ec="#444444", lw=1.0)
        ax.add_patch(patch)
        ax.text(x, y + h * 0.24, title, ha="center", va="center", fontsize=9.5, weight="bold")
        ax.text(x, y - 0.02, detail, ha="center", va="center", fontsize=8)
        stride = stride_of(shape, size)
        ax.text(x, y - h * 0.28, f"{_hwc(shape)}   (stride {stride})" if stride != "global" else _hwc(shape),
                ha="center", va="center", fontsize=8.5, family="monospace", color="#1a3d7c")
        boxes[key] = (x, y, w, h)

    def anchor(key, side):
        x, y, w, h = boxes[key]
        return {"top": (x, y + h / 2), "bottom": (x, y - h / 2), "left": (x - w / 2, y),
                "right": (x + w / 2, y)}[side]

    def arrow(a, sa, b, sb, label=None, rad=0.0, **kw):
        p, q = anchor(a, sa), anchor(b, sb)
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=12, lw=1.1, color="#333333",
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2, **kw))
        if label:
            ax.text((p[0] + q[0]) / 2 + 0.08, (p[1] + q[1]) / 2, label, fontsize=8, style="italic",
                    ha="left", va="center", color="#7a2e00")

    o = outputs
    # encoder column
    xe = 1.7
    box("input", xe, 9.9, "input image", "model-ready float32", (1, size, size, 3), "input")
    prev, y = "input", 8.55
    for st in encoder_stages(model):            # the stages the encoder asks the figure to draw
        if st.box is None:
            continue
        key = st.level or st.module
        box(key, xe, y, *st.box, o[ENCODER + st.module], "encoder")
        arrow(prev, "bottom", key, "top")
        prev, y = key, y - 1.35
    spp = bb.config["spatial_pyramid_pooling_key"]
    low = bb.low_key

    # ASPP branches (column 2)
    xa = 5.6
    rates = bb.aspp.dilation_rates
    branch_keys = ["b0"] + [f"b{i + 1}" for i in range(len(rates))] + ["pool"]
    ys = np.linspace(4.65, 0.55, len(branch_keys))
    box("b0", xa, ys[0], "ASPP 1×1 conv", "conv 256, BN, ReLU", o["backbone.aspp.branch0"], "aspp", h=0.8)
    for i, r in enumerate(rates):
        y = o[f"backbone.aspp.branch{i + 1}"]
        box(f"b{i + 1}", xa, ys[i + 1], f"ASPP 3×3 conv, rate {r}",
            f"live taps at {y.shape[1]}×{y.shape[2]}: {live_tap_fraction(y.shape[1], r):.0%}", y, "aspp", h=0.8)
    pooled = o["backbone.aspp.pooling"]
    box("pool", xa, ys[-1], "image pooling",
        f"GAP → 1×1 conv → {_hwc(pooled.shape)} → resize", o["backbone.aspp.pooling_resize"], "aspp", h=0.8)
    ax.add_patch(FancyBboxPatch((xa - 1.65, ys[-1] - 0.55), 3.3, ys[0] - ys[-1] + 1.1,
                                boxstyle="round,pad=0.02,rounding_size=0.15", fc="none", ec="#c07a2c",
                                lw=1.2, ls="--"))
    ax.text(xa, ys[0] + 0.62, f"ASPP on {spp}", ha="center", fontsize=10, weight="bold", color="#9a5b12")
    for k in branch_keys:
        ax.add_patch(FancyArrowPatch(anchor(spp, "right"), anchor(k, "left"), arrowstyle="-|>", mutation_scale=10,
                                     lw=0.9, color="#555555", shrinkA=2, shrinkB=2))

    # ASPP merge (column 3)
    xm = 9.3
    box("aconcat", xm, ys[2], "concat", f"{len(branch_keys)} × 256 channels", o["backbone.aspp.concat"], "aspp")
    for k in branch_keys:
        ax.add_patch(FancyArrowPatch(anchor(k, "right"), anchor("aconcat", "left"), arrowstyle="-|>",
                                     mutation_scale=10, lw=0.9, color="#555555", shrinkA=2, shrinkB=2))
    box("aproj", xm, 0.75, "ASPP projection", "1×1 conv 256, BN, ReLU", o["backbone.aspp"], "aspp")
    arrow("aconcat", "bottom", "aproj", "top")
    up1 = o["backbone.encoder_upsample"]
    f1 = up1.shape[1] // o["backbone.aspp"].shape[1]
    xd = 13.0
    box("up1", xd, 0.75, f"bilinear upsample ×{f1}", f"to {low}'s size", up1, "decoder")
    arrow("aproj", "right", "up1", "left")

    # decoder (column 4) and the low-level branch (row of P2)
    yl = boxes[low][1]
    box("llp", xa, yl, "low-level projection", f"1×1 conv {bb.config['projection_filters']}, BN, ReLU on {low}",
        o["backbone.low_level_projection"], "decoder")
    arrow(low, "right", "llp", "left")
    box("dconcat", xd, yl, "concat", "[upsampled ASPP, low-level]", o["backbone.concat"], "decoder")
    arrow("llp", "right", "dconcat", "left")
    arrow("up1", "top", "dconcat", "bottom")
    box("head", xd, yl + 1.35, "decoder head", "1×1 conv 256, BN, ReLU", o["backbone.head"], "decoder")
    arrow("dconcat", "top", "head", "bottom")
    box("cls", xd, yl + 2.7, "classifier", f"1×1 conv {model.num_classes} (no bias)", o["output_conv"], "head")
    arrow("head", "top", "cls", "bottom")
    logits = o[""]
    f2 = logits.shape[1] // o["output_conv"].shape[1]
    box("logits", xm, yl + 2.7, "logits", f"bilinear upsample ×{f2} to the input size", logits, "head")
    arrow("cls", "left", "logits", "right")

    ax.text(0.2, 11.05, f"DeepLabV3+ ResNet50 (the KerasHub deeplab_v3_plus_resnet50_pascalvoc architecture), "
            f"input 1×{size}×{size}×3\nevery shape recorded from tinydeeplab's forward pass "
            f"by tools/make_architecture_doc.py", fontsize=11, va="top")
    ax.text(0.3, 1.45, "shapes: H×W×C (batch 1)\nstride: input side / output side\n"
            "the classifier runs at 1/4 resolution:\n1×1 conv and bilinear resize commute,\n"
            "so this equals KerasHub's\nupsample-then-classify", fontsize=8.5, ha="left", va="top",
            bbox=dict(fc="white", ec="#999999"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


# -- the page ----------------------------------------------------------------------------------------
def os16_rows(model, outputs, size=SIZE):
    names = [n for n, _ in stages(model)]
    p4, p5 = level_module(model, "P4"), level_module(model, "P5")
    after_p4 = names[names.index(p4) + 1]          # the first stage that trades its stride for dilation
    keep = [p4, after_p4, p5, "backbone.aspp.branch3", "backbone.aspp", "backbone.encoder_upsample",
            "(segmenter output)"]
    return [r for r in shape_rows(model, outputs, size) if r[1] in keep]


def _m(n: int) -> str:
    return f"{n / 1e6:,.1f} M"


def separable_section(cases=SEPARABLE_CASES) -> str:
    """The "separable head" section: parameters and multiply-adds of the standard and the separable head,
    counted by :func:`tinydeeplab.models.cost.part_costs` (one inference forward pass per model)."""
    lines = ["| recipe, input | head | ASPP parameters | ASPP mult-adds | decoder parameters | decoder mult-adds "
             "| ASPP + decoder: parameters | mult-adds (live) | whole model: parameters | mult-adds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    commands = []
    for recipe, classes, (h, w) in cases:
        costs = {}
        for separable in (False, True):
            c = costs[separable] = part_costs(build_model(recipe, classes, separable=separable), (h, w))
            head_p, head_m = c["ASPP"].params + c["decoder"].params, c["ASPP"].macs + c["decoder"].macs
            head_live = c["ASPP"].live_macs + c["decoder"].live_macs
            lines.append(f"| `{recipe}` ({classes} classes), {h}×{w} | {'separable' if separable else 'standard'} "
                         f"| {c['ASPP'].params:,} | {_m(c['ASPP'].macs)} | {c['decoder'].params:,} "
                         f"| {_m(c['decoder'].macs)} | {head_p:,} | {_m(head_m)} ({_m(head_live)}) "
                         f"| {c['total'].params:,} | {_m(c['total'].macs)} |")
        std, sep = costs[False], costs[True]
        def ratio(field, *parts):
            return sum(getattr(sep[p], field) for p in parts) / sum(getattr(std[p], field) for p in parts)
        lines.append(f"| | separable / standard | {ratio('params', 'ASPP'):.3f} | {ratio('macs', 'ASPP'):.3f} "
                     f"| {ratio('params', 'decoder'):.2f} | {ratio('macs', 'decoder'):.2f} "
                     f"| {ratio('params', 'ASPP', 'decoder'):.3f} | {ratio('macs', 'ASPP', 'decoder'):.3f} "
                     f"| {ratio('params', 'total'):.3f} | {ratio('macs', 'total'):.3f} |")
        commands.append(f"tinydeeplab summary {recipe} --num-classes {classes} --size {h} {w} [--separable]")
    table = "\n".join(lines)
    shown = "\n".join(commands)
    return f"""## The paper's head: atrous separable convolution (`separable=True`)

KerasHub's DeepLabV3Backbone uses plain 3×3 convolutions in the ASPP and a single 1×1 conv as the
decoder's head. The DeepLabV3+ paper (Chen et al. 2018, sec. 3.1-3.2) factors every 3×3 conv of the ASPP
and of the decoder into an *atrous separable convolution*: a depthwise 3×3 conv at the branch's rate
(one filter per channel) → BN → ReLU → a pointwise 1×1 conv → BN → ReLU, which replaces the 9·C·F
weights and multiply-adds per pixel of a 3×3 conv by 9·C + C·F. Its decoder is two such 3×3 convs (256
channels) after the concatenation. tinydeeplab builds that head with `separable=True`
(`build_model(..., separable=True)`, `DeepLabV3Backbone(..., separable=True)`, `tinydeeplab train
--separable`): the 1×1 branch, the image pooling, the projections and the encoder are unchanged; without
the V3+ decoder (`decoder="v3"`) only the ASPP changes. The depthwise convs skip the taps that land only
in zero padding exactly as the 3×3 convs do (`tinydeeplab summary --size` lists their live taps).

It is a tinydeeplab extension: no KerasHub preset has it. Exported presets record `"separable": true`
in config.json and store the depthwise kernels as Keras would name them (`depthwise_conv2d`);
tinydeeplab reloads them (presets and checkpoints); KerasHub cannot: its `DeepLabV3Backbone` ignores
the unknown `separable` key, builds the standard head and fails on the weights ("objects could not be
loaded": 1×1 pointwise kernels where it expects 3×3 ones), so it never loads one as a wrong model.
`save_keras_preset` warns on export. The evidence is a plain JAX graph of
the same head with the same weights (`tools/make_separable_fixtures.py`, depthwise convs through
`lax.conv_general_dilated(feature_group_count=C)`), which `tests/test_separable.py` compares with
tinydeeplab: output, input and weight gradients and moving statistics of a training step agree to
1e-5 in float32 (1e-11 in float64); `tests/test_model.py` checks the separable model's gradients
against float64 central differences on every entry.

What it saves, per image (multiply-adds of the convolutions only, M = 10^6; "live" skips the dead taps
as the ops do; "decoder" is the low-level projection plus the head after the concatenation). Each 3×3
ASPP branch shrinks to (9 + F) / (9·F) of its weights and work (F = the ASPP width: 0.12 for 256, 0.13
for 64); the 1×1 and pooling branches and the projection stay. The decoder grows: KerasHub's head is one
1×1 conv, the paper's two separable 3×3 convs, both at 1/4 of the input size, where most of the
separable head's work now is. (At 512×512 the rate-18 branch sees a 16×16 map and keeps only its centre
tap: the standard head's live count drops most of that branch, the separable one only its cheap
depthwise part.)

{table}

Printed (parameters and multiply-adds per part, with and without `--separable`) by:

```
{shown}
```
"""


def densenet_section() -> str:
    """The DenseNet encoder family in short, with DenseNet-121's numbers from :class:`DenseNetBackbone`
    (no forward pass: the level sides at 512x512 follow from the strides, the stem ceiling and the
    transition pools' floor, all exact at 512)."""
    from tinydeeplab.models import DenseNetBackbone

    enc, enc16 = DenseNetBackbone([6, 12, 24, 16], seed=0), DenseNetBackbone([6, 12, 24, 16], output_stride=16, seed=0)
    params = enc.num_parameters() + sum(b.size for _, b in enc.named_buffers())
    levels = ", ".join(f"{k} `(1, {SIZE // v}, {SIZE // v}, {enc.pyramid_channels[k]})`"
                       for k, v in enc.pyramid_strides.items())
    return f"""## DenseNet encoders (`DenseNetBackbone`)

KerasHub's DenseNet (Huang et al. 2017, DenseNet-BC) replaces the residual add with a concatenation:
every layer of a *dense block* reads all the feature maps before it and adds `growth_rate` (g) new ones.

* **Stem**: 7×7/2 conv 64 ("same", no bias) → BN → ReLU → 3×3/2 max pool ("same"): 1/4 of the input.
* **Conv block** (one layer of a dense block): BN → ReLU → 1×1 conv 4g → BN → ReLU → 3×3 conv g, then
  `concat([x, new])`, so a block of n layers turns C channels into C + n·g. In the backward pass the concat
  splits the gradient: the first C channels go straight to `x`, the last g back through the two convs, and
  `x` receives their sum.
* **Transition** (between dense blocks): BN → ReLU → 1×1 conv to `int(C · compression_ratio)` → 2×2/2
  average pool ("valid", so an odd side is floored). It halves the side and (at 0.5) the channels.
* **Pyramid**: P2..P5 are the outputs of dense blocks 1..4, *before* the transition that follows each;
  the BN → ReLU after the last block is not a pyramid output (its BN is saved outside the DeepLab graph,
  `image_encoder/layers/batch_normalization_<n>`). BN epsilon 1.001e-5, momentum 0.99 everywhere.

DenseNet-121 (blocks 6-12-24-16, g = 32): {params:,} parameters with the moving statistics, exactly
Keras's `count_params()`; at {SIZE}×{SIZE}: {levels}.

**Output stride** (`output_stride=16` / `8`, tinydeeplab's extension): the transition before a dilated block
keeps stride 1, its pool becomes a 2×2 window with dilation r (the rate of the map it reads) and padding
(0, r), and every 3×3 in the blocks after it is dilated by the stride given up (OS16: P5 at 1/16, rate 2;
OS8: P4 and P5 at 1/8, rates 2 and 4). Same weights and parameter count ({enc16.num_parameters():,}
trainable); at inference the atrous network holds the strided one's values on the grid the strides kept
when every de-strided map has even sides (inputs that are multiples of 32); an odd side differs next to the
border, and training-mode BN statistics are those of the denser map (tests/test_densenet.py).

"""


CSPDARKNET53 = dict(stem_filters=32, stem_kernel_size=3, stem_strides=1, stem_padding="same",
                    stackwise_depth=[1, 2, 8, 8, 4], stackwise_num_filters=[64, 128, 256, 512, 1024],
                    stackwise_strides=[2, 2, 2, 2, 2], bottle_ratio=[0.5, 1.0], block_ratio=[1.0, 0.5],
                    expand_ratio=[2.0, 1.0], stage_type="csp", block_type="dark_block", down_growth=True)
"""KerasHub's timm converter's CSPDarkNet-53 (``keras_hub/src/utils/timm/convert_cspnet.py``)."""


def cspnet_section(size=SIZE) -> str:
    """The CSPNet encoder section: the cross-stage block, and CSPDarkNet-53's pyramid from its config (no
    forward pass: shapes from the strides, parameters counted)."""
    from tinydeeplab.models import CSPNetBackbone

    enc = CSPNetBackbone(**CSPDARKNET53, seed=0)
    rows = ["| level | stage | channels | stride | shape at {0}×{0} | stage parameters |".format(size),
            "| --- | --- | ---: | ---: | --- | ---: |"]
    modules = dict(enc.modules())
    for st in enc.stages():                       # the Encoder protocol: named stages, each stage a level
        if st.level is None:
            continue
        s, c = enc.pyramid_strides[st.level], enc.pyramid_channels[st.level]
        what = st.description.split(":")[0]
        rows.append(f"| {st.level} | `{st.module}` {what.split(' ', 1)[1]} | {c} | {s} | "
                    f"`(1, {size // s}, {size // s}, {c})` | {modules[st.module].num_parameters():,} |")
    table = "\n".join(rows)
    n_all = enc.num_parameters() + sum(b.size for _, b in enc.named_buffers())
    return f"""## CSPNet encoder (`CSPNetBackbone`)

KerasHub's `CSPNetBackbone` (CSPDarkNet-53: `csp` stages of `dark_block`s; `tinydeeplab/models/cspnet.py`) is a
cross-stage-partial network. Each stage downsamples (ZeroPadding 1 + 3×3/2 conv), expands with a 1×1 conv,
and **splits** the channels in two halves (`keras.ops.split`, `nn.Split`): one half runs through the residual
blocks (1×1 → 3×3, `x + f(x)`) and a 1×1 transition, the other crosses the stage untouched; the two are
**concatenated** and mixed by a last 1×1 conv. Backward is the mirror: the concat's gradient is sliced
into the two halves, the block path's gradient comes back through the blocks, and the split stacks the two
again (`dx = [dxs | dxb]`). Every conv has no bias, every BN ε = 1e-5 (momentum 0.99), and the activation is
`LeakyReLU(0.01)` (not Keras's default 0.2 / 0.3). Encoder: {enc.num_parameters():,} weights, {n_all:,} with
the BN statistics (Keras's `count_params`).

**The stride-2 pyramid and the 2× logits.** The stem is a stride-1 3×3 conv, so the first stage's output
`P2` is at 1/2 of the input, not 1/4, and `P5` at 1/16:

{table}

KerasHub's `DeepLabV3Backbone` ends with an upsampling by `2**level // upsampling_size`, which assumes
`P{{l}}` at 1/2^l. With the pascalvoc head (ASPP on P5, decoder on P2, `upsampling_size` 8) the head's 1/2-size
map is upsampled ×4: the logits are **twice the input size** ({2 * size}×{2 * size} for a {size}×{size}
image). tinydeeplab reproduces that (`Encoder.keras_output_scale`, `DeepLabV3ImageSegmenter.output_size`),
so the logits and the loss match Keras's; labels must then be given at twice the input size
(`segment()` resizes the logits back onto the image). The `cspnet-tiny` recipe uses a stride-2 stem instead:
P2..P5 at 1/4..1/32 and logits at the input size.
"""


def page(rows, rows16, model, model16, seconds, seconds16, load=None) -> str:
    enc = model.backbone.image_encoder
    total = model.num_parameters()
    stats = sum(b.size for _, b in model.named_buffers())
    enc_p = enc.num_parameters()
    aspp_p = model.backbone.aspp.num_parameters()
    dec_p = model.backbone.num_parameters() - enc_p - aspp_p
    cls_p = model.output_conv.num_parameters()
    p5 = [r for r in rows if r[1] == level_module(model, "P5")][0][2]
    p5_16 = [r for r in rows16 if r[1] == level_module(model16, "P5")][0][2]
    rates = model.backbone.aspp.dilation_rates
    live = ", ".join(f"rate {r}: {live_tap_fraction(p5[1], r):.0%}" for r in rates)
    live16 = ", ".join(f"rate {r}: {live_tap_fraction(p5_16[1], r):.0%}" for r in rates)
    up1 = [r for r in rows if r[1] == "backbone.encoder_upsample"][0][2][1] // p5[1]
    up1_16 = [r for r in rows16 if r[1] == "backbone.encoder_upsample"][0][2][1] // p5_16[1]
    t16 = table_markdown(rows16, numbered=False)
    return f"""# Architecture: DeepLabV3+ with a ResNet50 encoder

This page is generated by `python tools/make_architecture_doc.py` (do not edit it by hand). It builds
the model that KerasHub's `deeplab_v3_plus_resnet50_pascalvoc` preset describes — the `resnet50`
recipe of `tinydeeplab.models.recipes`, checked against the Keras config that
`tools/make_parity_fixtures.py --full` builds — with random weights, runs **one inference forward
pass on a 1×{SIZE}×{SIZE}×3 input**, and records the output of every stage with
`tinydeeplab.nn.hooks.record_outputs`. Every shape below, and in the figure, is what the code
produced. The forward pass took {seconds:.1f} s on the machine that generated this page (Numba CPU
backend, {os.cpu_count()} cores{'' if load is None else f', load average {load:.1f} while measuring'};
{seconds16:.1f} s with output stride 16): a rough figure, the best of two passes on a shared machine.
The benchmarked speed of the same model (an otherwise idle machine, warm-up calls, the median of
repeated runs) is in [performance.md](performance.md): about 0.33 s for this inference.

![DeepLabV3+ data flow with recorded shapes](figures/architecture.png)

Parameters: {total:,} trainable (encoder {enc_p:,}, ASPP {aspp_p:,}, decoder and head {dec_p:,},
classifier {cls_p:,}) + {stats:,} batch-norm moving statistics = {total + stats:,}, the number
Keras's `count_params()` reports for the preset (backbone 39,190,656 + head 5,376).

## Stage by stage

"Stride" is input side / output side; "parameters" counts the trainable arrays of that module
only (for the ASPP row: its projection; the branches have their own rows). Module names are the
dotted names of `model.modules()`; pass them to `record_outputs` to look at any of them yourself.

{TABLE_BEGIN}
{table_markdown(rows)}
{TABLE_END}

## What each part does, and why

**The encoder** is KerasHub's ResNet50 v1: a 7×7 stride-2 stem and a 3×3 stride-2 max pool bring the
image to 1/4 resolution, then four stacks of bottleneck blocks (1×1 reduce, 3×3, 1×1 expand ×4, plus
a shortcut; 3, 4, 6 and 3 blocks) produce the feature pyramid P2..P5 at strides 4, 8, 16 and 32. A
classification network wants its last features small; segmentation needs a label for every pixel,
and each halving of resolution throws away where things are. The DeepLab answer has two parts:
keep the resolution higher with atrous convolution, and recover detail with a decoder.

**Atrous (dilated) convolution** spreads a 3×3 kernel's taps `rate` pixels apart: it sees a
(2·rate+1)² window with the same 9 weights and the same cost, so the receptive field grows without
downsampling. **Output stride** is the ratio of input to feature-map size where the ASPP runs. The
pascalvoc preset runs at output stride 32 (P5 is {_hwc(p5)} for a {SIZE}×{SIZE} input), exactly as
KerasHub builds it. The DeepLabV3 paper trains at output stride 16 instead: the last stack keeps
stride 1 and uses dilation 2, so the same weights produce a 2× larger map (P5 becomes {_hwc(p5_16)})
at about 4× the cost of that stack and of the ASPP. tinydeeplab offers this as
`build_model("resnet50", 21, output_stride=16)` or `load_keras_preset(dir, output_stride=16)`
(beyond KerasHub; the outputs then differ from Keras by design). The table at the end shows the
shapes that change.

**ASPP (atrous spatial pyramid pooling)** looks at the same P5 map through parallel branches with
growing context: a 1×1 conv, three 3×3 convs at rates {', '.join(map(str, rates))}, and image pooling
(global average → 1×1 conv → broadcast back), each with 256 channels, BN and ReLU. Their
concatenation (1,280 channels) is projected back to 256 by a 1×1 conv. Large rates on a small map
waste taps: a tap that lands in the zero padding contributes nothing. Fraction of live taps on the
{p5[1]}×{p5[2]} P5 map: {live}; at output stride 16 ({p5_16[1]}×{p5_16[2]}): {live16}. At rate 18 on
16×16 only the centre tap ever reads the map — the branch degenerates into a 1×1 conv, which is why
the paper adds the image-pooling branch to supply the global context, and why these rates were
chosen for output stride 16.

**The V3+ decoder** adds back spatial detail that output stride 16 or 32 cannot hold. The ASPP output
is upsampled bilinearly ×{up1} (×{up1_16} at output stride 16) to the size of the low-level feature
map P2 (stride 4). P2 has 256 channels of fine, low-level features; a 1×1 conv reduces it to 48 so that it
does not drown the 256 semantic channels, the two are concatenated (304 channels), and the
segmentation head mixes them (KerasHub: one 1×1 conv 256 → BN → ReLU; the paper's decoder uses
3×3 convs here). A 1×1 classifier with 21 outputs (no bias) gives the logits, upsampled ×4 to the
input size.

**Classify before upsampling.** KerasHub upsamples the 256-channel head output to {SIZE}×{SIZE} and then
applies the 1×1 classifier. Both maps are linear and act on different axes (channels vs. space), so
they commute: tinydeeplab classifies at 1/4 resolution and upsamples 21 channels instead of 256
(`DeepLabV3ImageSegmenter(classify_before_upsample=True)`, the default), which is exact up to
float32 round-off and saves about 12× work and memory in the last stage (see
[parity.md](parity.md) for the agreement with Keras).

**Any input size.** KerasHub upsamples by fixed factors and fails when the input side is not (close
to) a multiple of 32; tinydeeplab resizes to the exact target sizes (P2's size, then the input's), which is
the same operation wherever Keras runs.

## Output stride 16 (`output_stride=16`)

With `output_stride=16` the last stack trades its stride for dilation 2 (same weights, same
parameter count). P4 for reference, then the stages whose shape changes; from the upsampled ASPP
features on, everything is as above:

{t16}

{separable_section()}
{densenet_section()}{cspnet_section()}
See also: [ops.md](ops.md) for the op contract, [api.md](api.md) for `ResNetBackbone`, `ASPP`,
`DeepLabV3Backbone` and `DeepLabV3ImageSegmenter`, and [performance.md](performance.md) for speed.
"""


def generate(doc=DOC, figure=FIGURE, draw=True, quiet=False, repeats=2):
    model = pascalvoc_model()
    note = check_against_keras_config(model)
    outputs, seconds = record(model, repeats=repeats)
    model16 = pascalvoc_model(output_stride=16)
    outputs16, seconds16 = record(model16, repeats=repeats)         # timing: the best of 2 runs (the first compiles)
    rows, rows16 = shape_rows(model, outputs), os16_rows(model16, outputs16)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    text = page(rows, rows16, model, model16, seconds, seconds16, load)
    if doc is not None:
        Path(doc).write_text(text, encoding="utf-8")
    if draw and figure is not None:
        draw_figure(model, outputs, figure)
    if not quiet:
        print(note)
        print(f"forward 1x{SIZE}x{SIZE}x3: {seconds:.2f} s (output stride 32), {seconds16:.2f} s (output stride 16)")
        print(f"logits {tuple(outputs[''].shape)}; {model.num_parameters():,} trainable parameters")
    return text


def table_block(text: str) -> str:
    return text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare the shapes table with docs/architecture.md")
    ap.add_argument("--doc", default=str(DOC))
    ap.add_argument("--figure", default=str(FIGURE))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.check:
        fresh = table_block(generate(doc=None, figure=None, draw=False, quiet=True, repeats=0))
        ok = fresh == table_block(Path(args.doc).read_text(encoding="utf-8"))
        print("docs/architecture.md shapes table is up to date" if ok else
              "docs/architecture.md is stale: run python tools/make_architecture_doc.py")
        return 0 if ok else 1
    generate(args.doc, args.figure)
    print(f"wrote {args.doc} and {args.figure} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
