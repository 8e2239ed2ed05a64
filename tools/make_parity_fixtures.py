#!/usr/bin/env python
"""Regenerate the KerasHub parity fixtures under tests/fixtures/.

This is a developer tool. It needs keras-hub and jax (keep them in a separate
virtualenv, e.g. ``python3 -m venv /work/kerasenv && /work/kerasenv/bin/pip
install keras-hub jax``). Neither the tinydeeplab package nor its tests import
it: the tests only read the files it writes (numpy + h5py + json).

Modes
-----
(default)                 build the small fixture models, write
                          tests/fixtures/<name>/{preset/, cases.npz,
                          activations.npz, activations.json, weights.json}
--full DIR                build the pascalvoc-shaped DeepLabV3+ ResNet50 (random
                          weights), print its parameter counts, write DIR/preset
                          and DIR/cases.npz (512x512 and 512x384 input/logits,
                          256x256 input/labels/logits/loss/every weight gradient)
--encoder NAME            with --full: resnet50 (default), resnet50_v2 or resnet18
                          (the encoder configs of KerasHub's resnet_50,
                          resnet_v2_50 and resnet_18 presets)
--count-only              with --full: only build and print parameter counts
--check-roundtrip DIR     load the preset directory DIR (written by anyone) with
                          DeepLabV3ImageSegmenter.from_preset, run it on the
                          stored inputs and print the max abs diff to the stored
                          logits (cases file: --cases, default DIR/../cases.npz
                          or DIR/cases.npz)
--full-efficientnet DIR   the same head on a full-size EfficientNet encoder
                          (--variant b0, lite0 or rw_t: the timm converter's
                          arguments); DIR/preset and DIR/cases.npz with a 256x256
                          input, logits, loss and every weight gradient
--full-densenet DIR       the same head on DenseNet-121 (KerasHub's densenet_121
                          config: repeats 6-12-24-16, growth 32, compression 0.5);
                          DIR/preset and DIR/cases.npz as --full-efficientnet
--full-cspnet DIR         the same head (21 classes, rates 6/12/18, P5 / P2 / 8) on
                          CSPDarkNet-53 (the timm converter's config); DIR/preset and
                          DIR/cases.npz with a --size (256) input, logits at twice
                          its size (KerasHub's, see tinydeeplab/models/cspnet.py),
                          labels, loss and every weight gradient
--verify-layout           check the HDF5 path rule documented in
                          tinydeeplab/io/keras_layout.py (re-implemented here in plain
                          Python as ``expected_weight_paths``) against what
                          Keras actually writes, for the fixture configs and
                          the --full configs.

Everything runs with KERAS_BACKEND=jax (set below unless already set).
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures")
SEED = 20240611

def _variant(cfg, *, encoder=(), backbone=(), **top):
    """A copy of ``cfg`` with some ResNetBackbone / DeepLabV3Backbone arguments and top-level keys
    changed."""
    out = copy.deepcopy(cfg)
    out["encoder"].update(encoder)
    out["backbone"].update(backbone)
    out.update(top)
    return out


# ---------------------------------------------------------------------------
# Fixture configurations
# ---------------------------------------------------------------------------
# KerasHub forces 64 filters in the first ResNet stack and 256 channels in the
# ASPP and in the segmentation-head conv; everything else is kept tiny.
FIXTURES = {
    # DeepLabV3+ shaped like the pascalvoc preset (4 stacks, ASPP on P5,
    # low-level P2, upsampling 8 then 4), but tiny. stack1 has 2 blocks so that
    # the conv2d_N / batch_normalization_N counters cross an identity block.
    "v3plus_tiny": dict(
        encoder=dict(
            input_conv_filters=[16],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 16, 8, 4],
            stackwise_num_blocks=[1, 2, 1, 1],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="bottleneck_block",
        ),
        backbone=dict(
            spatial_pyramid_pooling_key="P5",
            upsampling_size=8,
            dilation_rates=[2, 3],
            low_level_feature_key="P2",
            projection_filters=8,
        ),
        num_classes=5,
        # Preprocessor: per-channel scale/offset (ImageNet mean/std style),
        # resize to 64x64 with crop_to_aspect_ratio=True.
        converter=dict(
            image_size=(64, 64),
            scale=[1.0 / (255.0 * s) for s in (0.229, 0.224, 0.225)],
            offset=[-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
            crop_to_aspect_ratio=True,
            interpolation="bilinear",
        ),
        # (name, H, W): the first two get gradients; "odd" is a side length
        # that is not a multiple of 32 but still runs in Keras (H % 32 in
        # 29..31 or 0 for V3+), logits only.
        cases=[("sq", 64, 64), ("nsq", 64, 96), ("odd", 62, 93)],
        grad_cases=["sq", "nsq"],
        train_grad_cases=["sq"],
        act_hw=(32, 32),
    ),
    # Plain DeepLabV3 (no low-level branch), 3 stacks, ASPP on P4, one dilation
    # rate, upsampling 2 then 8. Different factors from the V3+ fixture on
    # purpose, so code that hard-codes pascalvoc numbers fails.
    "v3_tiny": dict(
        encoder=dict(
            input_conv_filters=[8],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 16, 4],
            stackwise_num_blocks=[1, 1, 2],
            stackwise_num_strides=[1, 2, 2],
            block_type="bottleneck_block",
        ),
        backbone=dict(
            spatial_pyramid_pooling_key="P4",
            upsampling_size=2,
            dilation_rates=[3],
            low_level_feature_key=None,
        ),
        num_classes=5,
        converter=dict(
            image_size=(64, 96),
            scale=1.0 / 127.5,
            offset=-1.0,
            crop_to_aspect_ratio=False,
            interpolation="bilinear",
        ),
        # V3 without the decoder runs at any size; the output is then
        # 16*ceil(H/16) x 16*ceil(W/16) here (not the input size!).
        cases=[("sq", 64, 64), ("nsq", 64, 96), ("odd", 50, 70)],
        grad_cases=["sq"],
        train_grad_cases=["sq"],
        act_hw=(32, 32),
    ),
}

# ResNet v2 (pre-activation) DeepLabV3+: every block opens with BN -> ReLU, no BN
# after the last conv / the shortcut, no ReLU after the add, -inf padding before
# the stem's max pool, and a post_bn that no pyramid output uses. stack1 has 2
# blocks so that an identity block (whose shortcut is the raw input, not the
# pre-activation) is crossed.
FIXTURES["v3plus_v2_tiny"] = _variant(
    FIXTURES["v3plus_tiny"],
    encoder=dict(input_conv_filters=[8], stackwise_num_filters=[64, 8, 4, 4], use_pre_activation=True),
    backbone=dict(dilation_rates=[2]),
    num_classes=3,
    converter=dict(image_size=(64, 64), scale=1.0 / 255.0, offset=None, crop_to_aspect_ratio=True,
                   interpolation="bilinear"),
    grad_cases=["sq"],
)
# Basic blocks (ResNet18/34 style) in a plain DeepLabV3. Stack 0 of a basic-block
# ResNet has an identity shortcut, so the stem must end with 64 channels; a
# two-conv stem (3x3/2 then 3x3) covers the stem's inner BN. stack2 has 2 blocks
# (an identity block after a projection block).
FIXTURES["v3_basic_tiny"] = _variant(
    FIXTURES["v3_tiny"],
    encoder=dict(input_conv_filters=[8, 64], input_conv_kernel_sizes=[3, 3], stackwise_num_filters=[64, 8, 8],
                 stackwise_num_blocks=[1, 1, 2], block_type="basic_block"),
    backbone=dict(upsampling_size=4, dilation_rates=[2]),
    num_classes=4,
    converter=dict(image_size=(48, 64), scale=1.0 / 127.5, offset=-1.0, crop_to_aspect_ratio=False,
                   interpolation="bilinear"),
    cases=[("sq", 64, 64), ("nsq", 48, 80), ("odd", 45, 70)],
)

# EfficientNet (KerasHub "v1" blocks, the b0 recipe of the timm converter: swish,
# BN eps 1e-5 / momentum 0.9, min_depth from the divisor, capped rounding) in a
# DeepLabV3+, tiny. Covers: expand ratio 1 and 6, kernels 3 and 5, SE and no SE,
# residual blocks (stacks 2, 4, 5), a depth coefficient that rounds 1 repeat up
# to 2, and a last-stack width so small that block5a's input_filters (8) differ
# from the channels reaching it (24): Keras sizes the expansion from the former.
# dropout 0: Keras's stochastic-depth draws cannot be reproduced.
FIXTURES["effnet_v3plus_tiny"] = dict(
    encoder_class="EfficientNetBackbone",
    encoder=dict(
        stackwise_width_coefficients=[0.25, 0.25, 0.25, 0.25, 0.0125],
        stackwise_depth_coefficients=[1.0, 1.0, 1.0, 1.0, 1.1],
        stackwise_kernel_sizes=[3, 3, 5, 3, 5],
        stackwise_num_repeats=[1, 2, 1, 2, 1],
        stackwise_input_filters=[32, 16, 24, 40, 80],
        stackwise_output_filters=[16, 24, 40, 80, 112],
        stackwise_expansion_ratios=[1, 6, 6, 6, 6],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25, 0.0, 0.25, 0.25],
        stackwise_strides=[1, 2, 2, 2, 2],
        stackwise_block_types=["v1"] * 5,
        min_depth=None,
        include_stem_padding=True,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        stem_conv_padding="valid",
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-5,
        dropout=0.0,
        activation="swish",
    ),
    backbone=dict(
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[2],
        low_level_feature_key="P2",
        projection_filters=8,
    ),
    num_classes=4,
    cases=[("sq", 64, 64), ("nsq", 64, 96), ("odd", 62, 93)],
    **{k: FIXTURES["v3_tiny"][k] for k in ("converter", "grad_cases", "train_grad_cases", "act_hw")},
)

# The lite0 recipe on the same tiny widths: relu6, no squeeze-and-excitation; a
# plain DeepLabV3 on P5 (another upsampling factor and rate).
FIXTURES["effnet_lite_v3_tiny"] = json.loads(json.dumps(FIXTURES["effnet_v3plus_tiny"]))
FIXTURES["effnet_lite_v3_tiny"]["encoder"].update(
    activation="relu6", stackwise_squeeze_and_excite_ratios=[0.0] * 5)
FIXTURES["effnet_lite_v3_tiny"].update(
    backbone=dict(spatial_pyramid_pooling_key="P5", upsampling_size=4, dilation_rates=[3],
                  low_level_feature_key=None),
    cases=[["sq", 64, 64], ["nsq", 64, 96], ["odd", 50, 70]], num_classes=3,
    # no training-mode gradients: at this size they jump at relu6/ReLU kinks (a 1e-6 relative change
    # of the input moves the head conv's gradient by ~1 %), so float32 round-off decides them
    train_grad_cases=[])

# EfficientNetV2 blocks (the rw_t recipe: cba stem stack, fused, unfused; silu,
# depth 0.9), tiny: a residual CBABlock, a fused block with expansion 4 and
# fused ones with expansion 1 (projection only), an unfused block with
# expansion 1 (k x k output conv, depthwise "same" at stride 2) and one with 6 and
# SE. KerasHub saves these blocks as nested layers (fused_mb_conv_block_1/conv1).
FIXTURES["effnetv2_v3plus_tiny"] = json.loads(json.dumps(FIXTURES["effnet_v3plus_tiny"]))
FIXTURES["effnetv2_v3plus_tiny"]["encoder"].update(
    stackwise_width_coefficients=[0.25, 0.25, 0.25, 0.25, 0.0125],
    stackwise_depth_coefficients=[0.9] * 5,
    stackwise_kernel_sizes=[3, 3, 3, 3, 5],
    stackwise_num_repeats=[2, 1, 2, 1, 1],
    stackwise_input_filters=[24, 24, 48, 64, 128],
    stackwise_output_filters=[24, 48, 64, 128, 160],
    stackwise_expansion_ratios=[1, 4, 1, 1, 6],
    stackwise_squeeze_and_excite_ratios=[0, 0, 0, 0.25, 0.25],
    stackwise_strides=[1, 2, 2, 2, 2],
    stackwise_block_types=["cba", "fused", "fused", "unfused", "unfused"],
    stackwise_force_input_filters=[0] * 5,
    activation="silu",
)
FIXTURES["effnetv2_v3plus_tiny"]["num_classes"] = 3

# DenseNet (KerasHub DenseNetBackbone: 64-filter 7x7/2 "same" stem, max pool 3x3/2 "same",
# BN-ReLU-1x1(4g)-BN-ReLU-3x3(g) conv blocks concatenated onto their input, BN-ReLU-1x1-AvgPool 2x2/2
# transitions, BN eps 1.001e-5, final BN outside the pyramid) in a DeepLabV3+, tiny: growth rate 4,
# stack2 with 2 conv blocks (the conv2d_N / batch_normalization_N counters cross a block), compression
# 0.5 (68 -> 34 channels, 25 -> 12: int() floors an odd width). The ASPP and head keep KerasHub's fixed
# 256 channels, which is most of the fixture's size: one rate, gradients of one case per BN mode.
FIXTURES["densenet_v3plus_tiny"] = dict(
    encoder_class="DenseNetBackbone",
    encoder=dict(stackwise_num_repeats=[1, 2, 1, 1], growth_rate=4, compression_ratio=0.5),
    backbone=dict(spatial_pyramid_pooling_key="P5", upsampling_size=8, dilation_rates=[2],
                  low_level_feature_key="P2", projection_filters=8),
    num_classes=3,
    cases=[("sq", 64, 64), ("nsq", 64, 96), ("odd", 62, 93)],
    converter=FIXTURES["v3_tiny"]["converter"], grad_cases=["sq"], train_grad_cases=["sq"], act_hw=(32, 32),
    drop_activations=["backbone/backbone_output_upsampling"],     # (1, 32, 32, 256): 1 MB, read by no test
)
# CSPNet (KerasHub's CSPNetBackbone in the CSPDarkNet-53 pattern of the timm converter: "csp" stages of
# "dark_block"s, expand 2 then 1, block ratio 1 then 0.5, bottleneck 0.5 then 1, down_growth, a stride-1
# "same" stem, LeakyReLU(0.01), BN eps 1e-5 / momentum 0.99), tiny: P2..P5 at 1/2..1/16. DeepLabV3+ shaped like
# pascalvoc (ASPP on P5, low level P2, upsampling 8): KerasHub's last upsampling 2**5 // 8 = 4 of the P2-sized
# head makes logits at twice the input size. "odd" (31x47) runs in Keras (ceil(H/16)*8 == ceil(H/2)) with
# 64x96 logits. Kept small (the 256-wide ASPP and head KerasHub fixes are most of it): batch 1, no
# preprocessor, one gradient set, and only the activations the parity stages read. The gradient set is
# inference-mode BN on "nsq": in training mode at batch 1 P5 is 2x2, BN normalises over 4 positions, and a
# 1e-6 relative change of the input (float32 round-off) carries a pre-activation across leaky ReLU's kink and
# moves some gradients by 4e-3 (measured in float64), so round-off would decide them; inference-mode ones
# move by < 1e-4. Training-mode logits and moving statistics are compared for every case.
FIXTURES["cspnet_v3plus_tiny"] = dict(
    encoder_class="CSPNetBackbone",
    encoder=dict(
        stem_filters=4, stem_kernel_size=3, stem_strides=1, stem_padding="same",
        stackwise_depth=[1, 2, 1, 1], stackwise_num_filters=[4, 8, 8, 8], stackwise_strides=[2, 2, 2, 2],
        bottle_ratio=(0.5, 1.0), block_ratio=(1.0, 0.5), expand_ratio=(2.0, 1.0),
        stage_type="csp", block_type="dark_block", down_growth=True,
    ),
    backbone=dict(
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[2],
        low_level_feature_key="P2",
        projection_filters=4,
    ),
    num_classes=3,
    converter=None,
    cases=[("sq", 32, 32), ("nsq", 32, 48), ("odd", 31, 47)],
    grad_cases=["nsq"],
    train_grad_cases=[],
    act_hw=(32, 32),
    batch=1,
    act_keep=r"^(encoder/(csp_stem_activation_\d+|stage_\d+_csp_transition_activation)|"
             r"backbone/(spatial_pyramid_pooling\w*|decoder_relu|segmentation_head_relu)|segmenter/.*)$",
)

FULL = dict(
    encoder=dict(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
    ),
    backbone=dict(
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[6, 12, 18],
        low_level_feature_key="P2",
        projection_filters=48,
    ),
    num_classes=21,
    converter=None,
)



# --full NAME: the pascalvoc-shaped DeepLabV3+ head on full-size encoders, with
# the encoder configs of KerasHub's resnet_50 / resnet_v2_50 / resnet_18 presets.
FULL_CONFIGS = {
    "resnet50": FULL,
    "resnet50_v2": _variant(FULL, encoder=dict(use_pre_activation=True)),
    "resnet18": _variant(FULL, encoder=dict(stackwise_num_blocks=[2, 2, 2, 2], block_type="basic_block")),
}
# (name, H, W), batch 1: logits for all; the loss and every weight gradient
# (inference-mode BN) for "grad" only, at a size where JAX's eager backward of
# ResNet50 stays within a few GB.
FULL_CASES = dict(cases=[("sq", 512, 512), ("nsq", 512, 384), ("grad", 256, 256)],
                  grad_cases=["grad"], train_grad_cases=[])

IGNORE = 255


# ---------------------------------------------------------------------------
# Model construction and randomisation
# ---------------------------------------------------------------------------
def _keras():
    import keras
    import keras_hub

    return keras, keras_hub


def build_segmenter(cfg, use_preprocessor=True):
    keras, keras_hub = _keras()
    enc = getattr(keras_hub.models, cfg.get("encoder_class", "ResNetBackbone"))(**cfg["encoder"])
    bkw = dict(cfg["backbone"])
    if bkw.get("low_level_feature_key") is None:
        bkw.pop("low_level_feature_key", None)
        bkw.pop("projection_filters", None)
    bb = keras_hub.models.DeepLabV3Backbone(image_encoder=enc, **bkw)
    pre = None
    if use_preprocessor and cfg.get("converter"):
        conv = keras_hub.layers.DeepLabV3ImageConverter(**cfg["converter"])
        pre = keras_hub.models.DeepLabV3ImageSegmenterPreprocessor(image_converter=conv)
    seg = keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=bb, num_classes=cfg["num_classes"], preprocessor=pre
    )
    return seg


def _bn_layers(model):
    keras, _ = _keras()
    # built ones only: KerasHub's MBConvBlock creates an expansion BN it never calls when expand_ratio == 1
    return [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization) and l.built]


def randomise(seg, rng, calib_x):
    """Random conv kernels (He-normal), random BN gamma/beta, and moving stats
    that are the batch statistics of a calibration batch, perturbed (mean
    +- 0.2 std, variance x U(0.6, 1.6)) so that inference-mode and
    training-mode BN differ but activations stay O(1)."""
    keras, _ = _keras()
    for v in seg.weights:
        name = v.name
        shape = tuple(v.shape)
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            v.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype("float32"))
        elif name == "gamma":
            v.assign(rng.uniform(0.5, 1.5, size=shape).astype("float32"))
        elif name == "beta":
            v.assign(rng.normal(0.0, 0.2, size=shape).astype("float32"))
        elif name == "moving_mean":
            v.assign(np.zeros(shape, "float32"))
        elif name == "moving_variance":
            v.assign(np.ones(shape, "float32"))
        elif name == "bias":
            v.assign(rng.normal(0.0, 0.1, size=shape).astype("float32"))
    # Calibrate: one training-mode forward with momentum 0 gives batch stats.
    bns = _bn_layers(seg)
    saved = [b.momentum for b in bns]
    for b in bns:
        b.momentum = 0.0
    tv = [v.value for v in seg.trainable_variables]
    ntv = [v.value for v in seg.non_trainable_variables]
    _, new_ntv = seg.stateless_call(tv, ntv, calib_x, training=True)
    for b, m in zip(bns, saved):
        b.momentum = m
    for v, val in zip(seg.non_trainable_variables, new_ntv):
        v.assign(np.asarray(val))
    for b in bns:
        mean = np.asarray(b.moving_mean.value)
        var = np.asarray(b.moving_variance.value)
        std = np.sqrt(var + b.epsilon)
        b.moving_mean.assign(
            (mean + 0.2 * std * rng.standard_normal(mean.shape)).astype("float32")
        )
        b.moving_variance.assign(
            (var * rng.uniform(0.6, 1.6, size=var.shape) + 1e-3).astype("float32")
        )


# ---------------------------------------------------------------------------
# HDF5 helpers
# ---------------------------------------------------------------------------
def h5_datasets(path):
    """{dataset path: array} of an HDF5 file (h5py iterates alphabetically)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(visit)
    return out


def h5_group_names(path):
    """{'.../vars' group: the Keras layer name stored in its 'name' attr}."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "name" in obj.attrs:
                out[name] = str(obj.attrs["name"])

        f.visititems(visit)
    return out


def variable_paths(seg, preset_dir):
    """Map id(variable) -> (file, HDF5 path), by exact value matching (every
    variable is random, so the match is unique; asserted)."""
    files = {
        "model.weights.h5": h5_datasets(os.path.join(preset_dir, "model.weights.h5")),
        "task.weights.h5": h5_datasets(os.path.join(preset_dir, "task.weights.h5")),
    }
    mapping = {}
    used = set()
    for v in seg.weights:
        val = np.asarray(v.value)
        hits = [
            (fn, p)
            for fn, d in files.items()
            for p, a in d.items()
            if not p.startswith("optimizer/") and a.shape == val.shape and np.array_equal(a, val)
        ]
        assert len(hits) == 1, (v.path, hits)
        assert hits[0] not in used, hits
        used.add(hits[0])
        mapping[id(v)] = hits[0]
    leftover = [
        (fn, p)
        for fn, d in files.items()
        for p in d
        if (fn, p) not in used and not p.startswith("optimizer/")
    ]
    assert not leftover, leftover
    return mapping


# ---------------------------------------------------------------------------
# The documented path rule, re-implemented (used by --verify-layout)
# ---------------------------------------------------------------------------
def expected_weight_paths(cfg):
    """Return [(file, hdf5 path, shape, role)] in the order Keras writes them.

    For ResNet v1 and v2 (``use_pre_activation``) with "bottleneck_block" or
    "basic_block" and a single input conv or several (all plain convs).

    v2 differs in three places: every block starts with its
    ``pre_activation_bn`` (first in the block's BN order), the last conv of the
    residual branch and the shortcut conv have no BN, and the stem's last conv
    has none either. Its ``post_bn`` closes the ResNet but feeds no pyramid
    output, so it is not in DeepLabV3Backbone's ``functional``: Keras saves it
    with the backbone's ``image_encoder`` attribute, counted over every BN of
    the encoder (``image_encoder/layers/batch_normalization_<n>``).
    """
    enc = cfg["encoder"]
    bkw = cfg["backbone"]
    rows = []
    counters = {}

    def name(scope, cls):
        key = (scope, cls)
        n = counters.get(key, 0)
        counters[key] = n + 1
        return cls if n == 0 else f"{cls}_{n}"

    def conv(scope, prefix, shape, role, lname):
        nm = name(scope, "conv2d")
        rows.append(("model.weights.h5", f"{prefix}{nm}/vars/0", tuple(shape), role + " kernel", lname))

    def bn(scope, prefix, c, role, lname, nm=None):
        nm = nm or name(scope, "batch_normalization")
        for i, what in enumerate(["gamma", "beta", "moving_mean", "moving_variance"]):
            rows.append(("model.weights.h5", f"{prefix}{nm}/vars/{i}", (c,), f"{role} BN {what}", lname))

    R = "layers/functional/layers/"
    # Stem: conv1 [BN, ReLU, conv2 ...] BN.
    cin = 3
    ks = enc["input_conv_kernel_sizes"]
    fs = enc["input_conv_filters"]
    for i, (k, f) in enumerate(zip(ks, fs)):
        if i > 0:
            bn("enc", R, cin, f"stem conv{i}", f"conv{i}_bn")
        conv("enc", R, (k, k, cin, f), f"stem conv{i + 1} ({k}x{k}{'/2' if i == 0 else ''})", f"conv{i + 1}_conv")
        cin = f
    pre = enc.get("use_pre_activation", False)
    if not pre:
        bn("enc", R, cin, f"stem conv{len(fs)}", f"conv{len(fs)}_bn")
    bottleneck = enc["block_type"] == "bottleneck_block"
    assert enc["block_type"] in ("bottleneck_block", "basic_block")
    level_channels = {}
    for s, (f, nb, st) in enumerate(
        zip(enc["stackwise_num_filters"], enc["stackwise_num_blocks"], enc["stackwise_num_strides"])
    ):
        for b in range(nb):
            stride = st if b == 0 else 1
            shortcut = b == 0 and (bottleneck or s > 0)
            tag = f"stack{s} block{b}"
            cout = 4 * f if bottleneck else f
            if bottleneck:
                main = [
                    ((1, 1, cin, f), "conv1 1x1", 1),
                    ((3, 3, f, f), f"conv2 3x3{'/%d' % stride if stride > 1 else ''}", 2),
                    ((1, 1, f, 4 * f), "conv3 1x1", 3),
                ]
            else:
                main = [
                    ((3, 3, cin, f), f"conv1 3x3{'/%d' % stride if stride > 1 else ''}", 1),
                    ((3, 3, f, f), "conv2 3x3", 2),
                ]
            sc = ((1, 1, cin, cout), f"shortcut conv0 1x1{'/%d' % stride if stride > 1 else ''}", 0)
            # Functional layers are sorted by depth (distance to the output),
            # ties by DFS order, and the shortcut (first input of Add) is
            # visited first: so the shortcut conv/BN come right before the
            # LAST main-branch conv/BN.
            convs = main[:-1] + ([sc] if shortcut else []) + main[-1:]
            for shp, role, j in convs:
                conv("enc", R, shp, f"{tag} {role}", f"stack{s}_block{b}_{j}_conv")
            if pre:  # v2: pre-activation BN first; no BN after the shortcut and the last conv
                bn("enc", R, cin, f"{tag} pre-activation", f"stack{s}_block{b}_pre_activation_bn")
                convs = main[:-1]
            for shp, role, j in convs:
                bn("enc", R, shp[-1], f"{tag} {role.split()[0]}", f"stack{s}_block{b}_{j}_bn")
            cin = cout
        level_channels[f"P{s + 2}"] = cin
    if pre:
        n_bn = counters.get(("enc", "batch_normalization"), 0)
        bn("enc", "image_encoder/layers/", cin, "post_bn (unused by DeepLab)", "post_bn",
           nm=f"batch_normalization_{n_bn}")
    # DeepLabV3Backbone top level.
    T = "layers/"
    c_spp = level_channels[bkw["spatial_pyramid_pooling_key"]]
    low = bkw.get("low_level_feature_key")
    P = bkw.get("projection_filters", 48)
    if low:
        conv("top", T, (1, 1, level_channels[low], P), f"decoder low-level projection ({low})", "decoder_conv")
        bn("top", T, P, "decoder low-level projection", "decoder_norm")
    S = "layers/spatial_pyramid_pooling/"
    rates = bkw["dilation_rates"]
    branches = [((1, 1, c_spp, 256), "ASPP branch 0 (1x1)")]
    branches += [((3, 3, c_spp, 256), f"ASPP branch {i + 1} (3x3 rate {r})") for i, r in enumerate(rates)]
    branches += [((1, 1, c_spp, 256), f"ASPP branch {len(rates) + 1} (image pooling 1x1)")]
    for i, (shp, role) in enumerate(branches):
        seq = "sequential" if i == 0 else f"sequential_{i}"
        pre = f"{S}aspp_parallel_channels/{seq}/layers/"
        last = i == len(branches) - 1
        conv(("aspp", i), pre, shp, role, "conv_pooling" if last else f"aspp_conv_{i + 1}")
        bn(("aspp", i), pre, 256, role, "bn_pooling" if last else f"aspp_bn_{i + 1}")
    pre = f"{S}projection/layers/"
    conv("proj", pre, (1, 1, 256 * (len(rates) + 2), 256), "ASPP projection 1x1", "conv_projection")
    bn("proj", pre, 256, "ASPP projection", "bn_projection")
    cat = 256 + (P if low else 0)
    conv("top", T, (1, 1, cat, 256), "segmentation_head_conv 1x1", "segmentation_head_conv")
    bn("top", T, 256, "segmentation_head_norm", "segmentation_head_norm")
    rows.append(
        ("task.weights.h5", "layers/conv2d/vars/0", (1, 1, 256, cfg["num_classes"]),
         "segmentation_output 1x1 kernel", "segmentation_output")
    )
    return rows


def verify_layout(cfg, workdir, quiet=False):
    seg = build_segmenter(cfg, use_preprocessor=False)
    d = os.path.join(workdir, "preset")
    seg.save_to_preset(d)
    actual = {}
    for fn in ("model.weights.h5", "task.weights.h5"):
        for p, a in h5_datasets(os.path.join(d, fn)).items():
            if not p.startswith("optimizer/"):
                actual[(fn, p)] = a.shape
    exp = expected_weight_paths(cfg)
    expd = {(fn, p): shp for fn, p, shp, _, _ in exp}
    ok = expd == actual and len(exp) == len(expd)
    if not ok:
        print("  missing:", sorted(set(expd) - set(actual))[:10])
        print("  unexpected:", sorted(set(actual) - set(expd))[:10])
        print("  shape mismatch:", [k for k in expd if k in actual and expd[k] != actual[k]][:10])
    # The roles must also agree with the layer names Keras stores in attrs.
    names = {}
    for fn in ("model.weights.h5", "task.weights.h5"):
        for g, n in h5_group_names(os.path.join(d, fn)).items():
            names[(fn, g)] = n
    bad_names = [(p, ln, names.get((fn, p.rsplit("/", 1)[0]))) for fn, p, _, _, ln in exp
                 if names.get((fn, p.rsplit("/", 1)[0])) != ln]
    if bad_names:
        print("  layer-name mismatch:", bad_names[:10])
        ok = False
    if not quiet:
        for fn, p, shp, role, ln in exp:
            print(f"  {fn:17s} {p:95s} {str(shp):20s} {ln:28s} {role}")
    return ok, exp, names


# ---------------------------------------------------------------------------
# Forward / loss / gradients with JAX
# ---------------------------------------------------------------------------
def make_loss_and_grad(seg):
    import jax

    keras, _ = _keras()
    loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)

    def loss_fn(tv, ntv, x, y, training):
        logits, new_ntv = seg.stateless_call(tv, ntv, x, training=training)
        return loss_obj(y, logits), (logits, new_ntv)

    def run(x, y, training, grad=True):
        """(loss, logits, gradients of every trainable variable or None, new non-trainables)."""
        tv = [v.value for v in seg.trainable_variables]
        ntv = [v.value for v in seg.non_trainable_variables]
        if not grad:
            loss, (logits, new_ntv) = loss_fn(tv, ntv, x, y, training)
            return float(loss), np.asarray(logits), None, [np.asarray(n) for n in new_ntv]
        (loss, (logits, new_ntv)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            tv, ntv, x, y, training
        )
        return float(loss), np.asarray(logits), [np.asarray(g) for g in grads], [np.asarray(n) for n in new_ntv]

    return run


def make_labels(rng, n, h, w, k):
    y = rng.integers(0, k, size=(n, h, w)).astype("int32")
    # a few ignored pixels (Keras: ignore_class=255 -> masked, mean over the
    # remaining valid pixels)
    m = rng.random((n, h, w)) < 0.05
    y[m] = IGNORE
    return y


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------
def _inbound_names(layer):
    try:
        node = layer._inbound_nodes[0]
        return [p.operation.name for p in node.parent_nodes]
    except Exception:
        return []


def collect_activations(seg, x):
    """Inference-mode outputs of every layer (first sample only is stored by
    the caller). Returns (acts, meta) keyed 'scope/layer_name'."""
    keras, _ = _keras()
    bb = seg.backbone
    fpn = [l for l in bb.layers if isinstance(l, keras.Model)][0]
    acts, meta = {}, {}

    # 1. ResNet functional (the `functional` inside DeepLabV3Backbone).
    enc_layers = [l for l in fpn.layers]
    m = keras.Model(fpn.inputs, [l.output for l in enc_layers])
    outs = m(x, training=False)
    for l, o in zip(enc_layers, outs):
        key = f"encoder/{l.name}"
        acts[key] = np.asarray(o)
        meta[key] = dict(
            class_name=type(l).__name__, inbound=_inbound_names(l), output_shape=list(acts[key].shape)
        )
    # 2. DeepLabV3Backbone top-level layers (skip the input and the functional).
    top = [l for l in bb.layers if not isinstance(l, (keras.Model, keras.layers.InputLayer))]
    m = keras.Model(bb.inputs, [l.output for l in top])
    outs = m(x, training=False)
    for l, o in zip(top, outs):
        key = f"backbone/{l.name}"
        acts[key] = np.asarray(o)
        inb = _inbound_names(l)
        meta[key] = dict(class_name=type(l).__name__, inbound=inb, output_shape=list(acts[key].shape))
    # 3. Inside SpatialPyramidPooling (sequentials are called step by step).
    spp = [l for l in bb.layers if type(l).__name__ == "SpatialPyramidPooling"][0]
    spp_in_name = _inbound_names(spp)
    level = bb.spatial_pyramid_pooling_key
    feat = np.asarray(
        keras.Model(bb.image_encoder.inputs, bb.image_encoder.pyramid_outputs[level])(x, training=False)
    )
    branch_outs = []
    for bi, seq in enumerate(spp.aspp_parallel_channels):
        h = feat
        prev = f"(input of spatial_pyramid_pooling = {level})"
        for l in seq.layers:
            h = np.asarray(l(h, training=False))
            key = f"spp/{l.name}"
            acts[key] = h
            meta[key] = dict(
                class_name=type(l).__name__, inbound=[prev], output_shape=list(h.shape), branch=bi
            )
            prev = l.name
        branch_outs.append(h)
    H, W = feat.shape[1:3]
    branch_outs[-1] = np.broadcast_to(branch_outs[-1], branch_outs[-1].shape[:1] + (H, W) + branch_outs[-1].shape[3:])
    acts["spp/resizing"] = np.ascontiguousarray(branch_outs[-1])
    meta["spp/resizing"] = dict(
        class_name="Resizing", inbound=["activation_pooling"], output_shape=list(branch_outs[-1].shape),
        note="bilinear resize of the 1x1 pooled branch back to HxW = broadcast",
    )
    h = np.concatenate(branch_outs, axis=-1)
    acts["spp/concat"] = h
    meta["spp/concat"] = dict(
        class_name="ops.concatenate", inbound=[f"branch {i}" for i in range(len(branch_outs))],
        output_shape=list(h.shape),
    )
    prev = "spp/concat"
    for l in spp.projection.layers:
        h = np.asarray(l(h, training=False))
        key = f"spp/{l.name}"
        acts[key] = h
        meta[key] = dict(class_name=type(l).__name__, inbound=[prev], output_shape=list(h.shape))
        prev = l.name
    assert np.allclose(h, acts["backbone/" + spp.name], atol=1e-5), "SPP re-computation mismatch"
    # 4. Segmenter head.
    out = np.asarray(seg(x, training=False))
    key = "segmenter/segmentation_output"
    acts[key] = out
    meta[key] = dict(
        class_name="Conv2D", inbound=[bb.name], output_shape=list(out.shape)
    )
    return acts, meta


# ---------------------------------------------------------------------------
# Fixture generation
# ---------------------------------------------------------------------------
def case_arrays(seg, vmap, cases, rng, k, batch=2, training_mode=True):
    """Random inputs and labels for every case of ``cases`` (a dict with ``cases``, ``grad_cases`` and
    ``train_grad_cases``) and what Keras computes on them, keyed as tests/test_parity.py reads them:
    input_/labels_/logits_/loss_<case>, grad_<case>/<file>/<HDF5 path> for the gradient cases, and
    with ``training_mode`` also logits_train_/loss_train_<case>, moving_train_<case>/<path> and
    grad_train_<case>/<path>. ``vmap``: :func:`variable_paths` of ``seg``'s preset."""
    # keys "<file>/<HDF5 path>": model.weights.h5 and task.weights.h5 both have layers/conv2d/vars/0
    tpaths = ["/".join(vmap[id(v)]) for v in seg.trainable_variables]
    ntpaths = ["/".join(vmap[id(v)]) if id(v) in vmap else None for v in seg.non_trainable_variables]
    run = make_loss_and_grad(seg)
    arrays, summary = {}, {}
    for case, h, w in cases["cases"]:
        x = rng.standard_normal((batch, h, w, 3)).astype("float32")
        logits_direct = np.asarray(seg(x, training=False))
        oh, ow = logits_direct.shape[1:3]
        y = make_labels(rng, batch, oh, ow, k)
        arrays[f"input_{case}"] = x
        arrays[f"labels_{case}"] = y
        loss, logits, grads, _ = run(x, y, False, grad=case in cases["grad_cases"])
        assert np.allclose(logits, logits_direct, atol=1e-5 * max(1.0, float(np.abs(logits).max())))
        arrays[f"logits_{case}"] = logits.astype("float32")
        arrays[f"loss_{case}"] = np.float32(loss)
        for p, g in zip(tpaths, grads or []):
            arrays[f"grad_{case}/{p}"] = g.astype("float32")
        summary[case] = dict(input=list(x.shape), logits=list(logits.shape), loss=loss,
                             logits_absmax=float(np.abs(logits).max()), logits_std=float(logits.std()))
        if not training_mode:
            continue
        lt, logits_t, grads_t, new_ntv = run(x, y, True, grad=case in cases["train_grad_cases"])
        arrays[f"logits_train_{case}"] = logits_t.astype("float32")
        arrays[f"loss_train_{case}"] = np.float32(lt)
        for p, n in zip(ntpaths, new_ntv):
            if p is not None:
                arrays[f"moving_train_{case}/{p}"] = n.astype("float32")
        for p, g in zip(tpaths, grads_t or []):
            arrays[f"grad_train_{case}/{p}"] = g.astype("float32")
        summary[case]["loss_train"] = lt
    return arrays, summary


def make_fixture(name, cfg, out_root):
    keras, keras_hub = _keras()
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED + sum(map(ord, name)))
    out = os.path.join(out_root, name)
    preset = os.path.join(out, "preset")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)

    seg = build_segmenter(cfg)
    H0, W0 = cfg["cases"][0][1:]
    calib = rng.standard_normal((4, H0, W0, 3)).astype("float32")
    randomise(seg, rng, calib)
    seg.save_to_preset(preset)
    vmap = variable_paths(seg, preset)

    # Re-load from disk and use the loaded model for everything (proves the
    # preset is complete and that the stored logits are what from_preset gives).
    seg = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(preset)
    vmap_loaded = variable_paths(seg, preset)
    arrays, summary = case_arrays(seg, vmap_loaded, cfg, rng, cfg["num_classes"], batch=cfg.get("batch", 2))

    # Preprocessor case: raw 0..255 images of another size through
    # seg.preprocessor (resize/crop + scale/offset) and seg.predict().
    if seg.preprocessor is not None:
        raw = rng.integers(0, 256, size=(2, 50, 70, 3)).astype("float32")
        pre = np.asarray(seg.preprocessor(raw))
        arrays["raw_pp"] = raw
        arrays["pre_pp"] = pre.astype("float32")
        arrays["logits_pp"] = np.asarray(seg.predict(raw, verbose=0)).astype("float32")
        direct = np.asarray(seg(pre, training=False))  # bare seg(x) is not inference mode in KerasHub
        d = float(np.abs(arrays["logits_pp"] - direct).max())
        print(f"[{name}] preprocessor case: predict(raw) vs model(preprocessor(raw)) max|diff| {d:.3e}, "
              f"max|logit| {float(np.abs(direct).max()):.3f}")
        assert d <= 1e-4 * max(1.0, float(np.abs(direct).max())), "predict() disagrees with model(preprocessor())"

    np.savez_compressed(os.path.join(out, "cases.npz"), **arrays)

    # Activations (inference mode) for one small image.
    ah, aw = cfg["act_hw"]
    xa = rng.standard_normal((1, ah, aw, 3)).astype("float32")
    acts, meta = collect_activations(seg, xa)
    for key in cfg.get("drop_activations", ()):     # large maps no test reads (kept out of a small fixture)
        acts.pop(key)
        meta.pop(key)
    if cfg.get("act_keep"):                      # only the layers the parity stages compare (fixture size)
        import re

        keep = re.compile(cfg["act_keep"])
        acts = {k: v for k, v in acts.items() if keep.match(k)}
        meta = {k: v for k, v in meta.items() if keep.match(k)}
    act_arrays = {"input_act": xa}
    for key, a in acts.items():
        act_arrays[f"act/{key}"] = np.ascontiguousarray(a).astype("float32")
    np.savez_compressed(os.path.join(out, "activations.npz"), **act_arrays)
    with open(os.path.join(out, "activations.json"), "w") as f:
        json.dump(
            dict(
                note="act/<scope>/<keras layer name> in activations.npz; scopes: encoder = the "
                "ResNet functional inside DeepLabV3Backbone, backbone = DeepLabV3Backbone "
                "top-level layers, spp = inside SpatialPyramidPooling (recomputed layer by "
                "layer), segmenter = the task head. Inference mode, input act input_act.",
                layers=meta,
            ),
            f,
            indent=1,
        )

    # weights.json: every weight with file, HDF5 path, shape, Keras layer and
    # variable name, trainable flag, in seg.weights order.
    names = {}
    for fn in ("model.weights.h5", "task.weights.h5"):
        for g, n in h5_group_names(os.path.join(preset, fn)).items():
            names[(fn, g)] = n
    resnet = cfg.get("encoder_class", "ResNetBackbone") == "ResNetBackbone"   # the only family with roles
    roles = {(fn, p): role for fn, p, _, role, _ in expected_weight_paths(cfg)} if resnet else {}
    trainable_ids = {id(v) for v in seg.trainable_variables}
    wl = []
    for v in seg.weights:
        fn, p = vmap_loaded[id(v)]
        wl.append(
            dict(
                file=fn, path=p, shape=list(v.shape), layer=names.get((fn, p.rsplit("/", 1)[0])),
                variable=v.name, trainable=id(v) in trainable_ids, role=roles.get((fn, p)),
            )
        )
    with open(os.path.join(out, "weights.json"), "w") as f:
        json.dump(
            dict(
                config={k2: v2 for k2, v2 in cfg.items() if k2 in ("encoder", "backbone", "num_classes", "converter")},
                cases=cfg["cases"], grad_cases=cfg["grad_cases"], train_grad_cases=cfg["train_grad_cases"],
                ignore_class=IGNORE, summary=summary, weights=wl,
            ),
            f,
            indent=1,
        )
    sizes = {
        fn: os.path.getsize(os.path.join(out, fn))
        for fn in ("cases.npz", "activations.npz", "activations.json", "weights.json")
    }
    psize = sum(os.path.getsize(os.path.join(preset, f)) for f in os.listdir(preset))
    print(f"[{name}] params: backbone {seg.backbone.count_params():,} total {seg.count_params():,}")
    print(f"[{name}] preset {psize:,} B; " + "; ".join(f"{k2} {v2:,} B" for k2, v2 in sizes.items()))
    for case, s in summary.items():
        print(f"[{name}] {case}: {s}")
    return seg


# ---------------------------------------------------------------------------
# --full and --check-roundtrip
# ---------------------------------------------------------------------------
def full_mode(outdir, encoder="resnet50", count_only=False):
    keras, keras_hub = _keras()
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    cfg = FULL_CONFIGS[encoder]
    seg = build_segmenter(cfg, use_preprocessor=False)
    nb = seg.backbone.count_params()
    nt = seg.count_params()
    expect = " (pascalvoc preset metadata: 39,190,656)" if encoder == "resnet50" else ""
    print(f"full DeepLabV3+ {encoder}: backbone params {nb:,}{expect}; "
          f"head {nt - nb:,} (expect 5,376); total {nt:,}")
    if count_only:
        return
    os.makedirs(outdir, exist_ok=True)
    randomise(seg, rng, rng.standard_normal((2, 128, 128, 3)).astype("float32"))
    preset = os.path.join(outdir, "preset")
    shutil.rmtree(preset, ignore_errors=True)
    seg.save_to_preset(preset)
    arrays, summary = case_arrays(seg, variable_paths(seg, preset), FULL_CASES, rng, cfg["num_classes"],
                                  batch=1, training_mode=False)
    np.savez_compressed(os.path.join(outdir, "cases.npz"), **arrays)
    for case, info in summary.items():
        print(f"{case}: {info}")
    print("wrote", preset, "and", os.path.join(outdir, "cases.npz"))


def check_roundtrip(preset_dir, cases_path=None, tol=1e-4):
    keras, keras_hub = _keras()
    if cases_path is None:
        for c in (os.path.join(os.path.dirname(os.path.abspath(preset_dir.rstrip("/"))), "cases.npz"),
                  os.path.join(preset_dir, "cases.npz")):
            if os.path.exists(c):
                cases_path = c
                break
    if cases_path is None:
        sys.exit("no cases.npz found; pass --cases")
    seg = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(preset_dir)
    data = np.load(cases_path, allow_pickle=False)
    worst = 0.0
    for key in sorted(data.files):
        if not key.startswith("input_") or key == "input_act":
            continue
        case = key[len("input_"):]
        ref = data.get(f"logits_{case}")
        if ref is None:
            continue
        got = np.asarray(seg(data[key], training=False))
        if got.shape != ref.shape:
            print(f"{case}: SHAPE MISMATCH {got.shape} vs {ref.shape}")
            worst = np.inf
            continue
        d = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max())
        worst = max(worst, d / max(scale, 1.0))
        print(f"{case}: input {data[key].shape} max|diff| {d:.3e} (max|ref| {scale:.3f})")
    print(f"worst relative diff {worst:.3e} -> {'OK' if worst <= tol else 'FAIL'}")
    return 0 if worst <= tol else 1


def full_efficientnet(outdir, variant):
    """``--full-efficientnet DIR --variant b0|lite0|rw_t``: the pascalvoc-shaped DeepLabV3+ head (ASPP on
    P5, low-level P2) on the full-size encoder config of KerasHub's timm converter, random weights,
    written to DIR/preset, with DIR/cases.npz holding a 256x256 input, its labels, the inference-mode
    logits and loss, and the gradient of every trainable weight (keys as in the small fixtures)."""
    keras, _ = _keras()
    from keras_hub.src.utils.timm.convert_efficientnet import convert_backbone_config

    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    arch = {"rw_t": "efficientnetv2_rw_t"}.get(variant, f"efficientnet_{variant}")
    cfg = dict(FULL, encoder_class="EfficientNetBackbone", encoder=convert_backbone_config({"architecture": arch}))
    full_gradient_case(outdir, cfg, f"EfficientNet {variant}", rng)


DENSENET_121 = dict(stackwise_num_repeats=[6, 12, 24, 16], growth_rate=32, compression_ratio=0.5)
"""The encoder config of KerasHub's densenet_121_imagenet preset (7,037,504 parameters)."""


def full_densenet(outdir):
    """``--full-densenet DIR``: the pascalvoc-shaped DeepLabV3+ head (ASPP on P5 with rates 6/12/18,
    low-level P2, 21 classes) on DenseNet-121, random weights; DIR/preset and DIR/cases.npz as
    :func:`full_efficientnet` writes them. Compare with ``tinydeeplab parity DIR/preset --cases DIR/cases.npz``."""
    keras, _ = _keras()
    keras.utils.set_random_seed(SEED)
    full_gradient_case(outdir, dict(FULL, encoder_class="DenseNetBackbone", encoder=DENSENET_121), "DenseNet-121",
                       np.random.default_rng(SEED))


def full_gradient_case(outdir, cfg, title, rng, size=256):
    """Build ``cfg`` (random weights, perturbed BN statistics), save it to DIR/preset, reload it, and write
    DIR/cases.npz: one ``size`` x ``size`` input, labels at Keras's output size, the inference-mode logits and
    loss, and the gradient of every trainable weight (keys as in the small fixtures)."""
    _, keras_hub = _keras()
    seg = build_segmenter(cfg, use_preprocessor=False)
    print(f"full DeepLabV3+ {title}: backbone params {seg.backbone.count_params():,}, "
          f"encoder {seg.backbone.image_encoder.count_params():,}")
    randomise(seg, rng, rng.standard_normal((2, 128, 128, 3)).astype("float32"))
    preset = os.path.join(outdir, "preset")
    shutil.rmtree(preset, ignore_errors=True)
    os.makedirs(outdir, exist_ok=True)
    seg.save_to_preset(preset)
    seg = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(preset)
    vmap = variable_paths(seg, preset)
    x = rng.standard_normal((1, size, size, 3)).astype("float32")
    oh, ow = np.asarray(seg(x, training=False)).shape[1:3]             # the input's size, or 2x it (CSPNet)
    y = make_labels(rng, 1, oh, ow, cfg["num_classes"])
    loss, logits, grads, _ = make_loss_and_grad(seg)(x, y, False)
    arrays = {"input_grad": x, "labels_grad": y, "logits_grad": logits, "loss_grad": np.float32(loss)}
    for v, g in zip(seg.trainable_variables, grads):
        arrays["grad_grad/" + "/".join(vmap[id(v)])] = g.astype("float32")
    np.savez_compressed(os.path.join(outdir, "cases.npz"), **arrays)
    print("wrote", preset, "and", os.path.join(outdir, "cases.npz"),
          f"(input {x.shape}, logits {logits.shape}, loss {loss:.6f})")


def full_cspnet(outdir, size=256):
    """``--full-cspnet DIR``: the pascalvoc-shaped DeepLabV3+ head (21 classes, ASPP rates 6/12/18 on P5, low-level
    P2, upsampling 8) on CSPDarkNet-53 (the config of KerasHub's timm converter, random weights), written to
    DIR/preset, with DIR/cases.npz holding a ``size`` x ``size`` input, labels at Keras's output size (twice the
    input: CSPNet's P2 is at 1/2, KerasHub's last upsampling assumes 1/4), the inference-mode logits and loss,
    and every trainable weight's gradient (keys as in the small fixtures). Compare with
    ``tinydeeplab parity DIR/preset --cases DIR/cases.npz``."""
    keras, _ = _keras()
    from keras_hub.src.utils.timm.convert_cspnet import convert_backbone_config

    keras.utils.set_random_seed(SEED)
    cfg = dict(FULL, encoder_class="CSPNetBackbone", encoder=convert_backbone_config({"architecture": "cspdarknet53"}))
    full_gradient_case(outdir, cfg, "CSPDarkNet-53", np.random.default_rng(SEED), size)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture root (default tests/fixtures)")
    ap.add_argument("--only", nargs="*", choices=sorted(FIXTURES), help="fixtures to build")
    ap.add_argument("--full", metavar="DIR", help="build the pascalvoc-shaped model into DIR")
    ap.add_argument("--encoder", default="resnet50", choices=sorted(FULL_CONFIGS),
                    help="with --full: the ResNet of the full-size model (default resnet50, the pascalvoc preset's)")
    ap.add_argument("--count-only", action="store_true", help="with --full: only print parameter counts")
    ap.add_argument("--check-roundtrip", metavar="DIR", help="load preset DIR and compare to stored logits")
    ap.add_argument("--cases", help="cases.npz for --check-roundtrip")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--verify-layout", action="store_true", help="check the documented HDF5 path rule")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--full-efficientnet", metavar="DIR", help="full-size EfficientNet DeepLabV3+ into DIR")
    ap.add_argument("--variant", default="b0", choices=["b0", "lite0", "rw_t"], help="with --full-efficientnet")
    ap.add_argument("--full-densenet", metavar="DIR", help="full-size DenseNet-121 DeepLabV3+ into DIR")
    ap.add_argument("--full-cspnet", metavar="DIR", help="full-size CSPDarkNet-53 DeepLabV3+ into DIR")
    ap.add_argument("--size", type=int, default=256, help="with --full-cspnet: input side (default 256)")
    args = ap.parse_args(argv)
    if args.full_densenet:
        full_densenet(args.full_densenet)
        return 0
    if args.full_cspnet:
        full_cspnet(args.full_cspnet, args.size)
        return 0
    if args.full_efficientnet:
        full_efficientnet(args.full_efficientnet, args.variant)
        return 0

    if args.check_roundtrip:
        return check_roundtrip(args.check_roundtrip, args.cases, args.tol)
    if args.full:
        full_mode(args.full, args.encoder, args.count_only)
        return 0
    if args.verify_layout:
        cfgs = dict(FIXTURES)
        cfgs.update({f"{n}_v3plus_pascalvoc_shape": c for n, c in FULL_CONFIGS.items()})
        r18 = _variant(FULL_CONFIGS["resnet18"], backbone=dict(spatial_pyramid_pooling_key="P4", upsampling_size=4,
                                                              low_level_feature_key="P3"))
        cfgs["resnet18_basic_v3plus_P4_P3"] = r18
        allok = True
        for n, c in cfgs.items():
            with tempfile.TemporaryDirectory() as td:
                ok, exp, _ = verify_layout(c, td, quiet=args.quiet or n not in FIXTURES)
            print(f"verify-layout {n}: {len(exp)} datasets, {'OK' if ok else 'MISMATCH'}")
            allok &= ok
        return 0 if allok else 1
    os.makedirs(args.out, exist_ok=True)
    for name in args.only or sorted(FIXTURES):
        make_fixture(name, FIXTURES[name], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
