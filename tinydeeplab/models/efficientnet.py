"""EfficientNet image encoder with KerasHub's ``EfficientNetBackbone`` arguments and pyramid outputs P1..P5.

Structure, as KerasHub builds it for the ``"v1"`` block type (the b0..b5 and lite0 presets)::

    stem     [ZeroPadding 1] -> Conv 3x3 /2 (stem_conv_padding, no bias) -> BN -> act
    block {i}{a,b,...}   (stride and the filter change only in the stack's first block)
      expand      1x1 conv (f_in * e, no bias) -> BN -> act               (only when e != 1)
      dwconv      ZeroPadding(k // 2) -> depthwise k x k /s "valid" -> BN -> act
      se          GAP -> 1x1 conv (max(1, int(f_in * r)), bias) -> act -> 1x1 conv (bias) -> sigmoid
                  -> x * s                                                  (only when 0 < r <= 1)
      project     1x1 conv (f_out, no bias) -> BN [-> projection_activation]
      y = drop(project) + x      when s == 1 and f_in == f_out (drop: stochastic depth, training only,
                                 rate = dropout * block index / number of blocks)
    top      1x1 conv (round(num_features)) -> BN -> act

The depthwise padding is ``k // 2`` on every side, then "valid": at stride 2 on an even side that is
*not* Keras "same" (which pads (0, 1) for a 3x3), so it is done as KerasHub does it.

**Pyramid.** KerasHub taps ``P{l}`` just *before* every strided block (the input of that block), counting
``l`` from 1, and the top activation is the last level: for b0 (block strides 1, 2, 2, 2, 1, 2, 1) P1..P4
are the outputs of stacks 1, 2, 3, 5 (1/2 .. 1/16 of the input) and P5 is ``top_activation`` (1/32).

**Filters and repeats** (KerasHub's ``round_filters`` / ``round_repeats``)::

    filters = max(min_depth, int(f * width + divisor / 2) // divisor * divisor)
              (+ divisor when it fell below 0.9 * f * width and cap_round_filter_decrease)
    repeats = ceil(depth * n)

**Atrous** (``output_stride`` 16 or 8, beyond KerasHub, as for ResNet): a strided block that would take the
total stride past ``output_stride`` keeps stride 1 (and no residual add, as the strided block has none); its
k x k conv keeps the rate before it and every later k x k conv is dilated by the stride given up (explicit
pads scale with the rate). Without squeeze-and-excitation (whose global pool sees every position) and
with explicit pads, the dense network holds the strided one's outputs at the positions the stride kept.

**Batch norm.** The stem and top BNs use ``batch_norm_momentum`` and ``batch_norm_epsilon``; the BNs inside a
v1 block take only the epsilon and keep Keras's default momentum 0.99 (KerasHub passes no momentum there).
"""
from __future__ import annotations

import math

import numpy as np

from ..nn import (Activation, Add, BatchNorm, ChannelScale, Conv2D, DepthwiseConv2D, GlobalAveragePooling2D,
                  Module, Sequential, StochasticDepth, ZeroPadding2D, sum_gradients)
from ..nn.layers import ACTIVATIONS
from .encoder import Encoder, EncoderStage, KerasLayer, keras_layer

KERAS_BN_MOMENTUM = 0.99      # keras.layers.BatchNormalization's default: the v1 blocks' BNs
KERAS_BLOCK_LAYERS = {"unfused": "mb_conv_block", "fused": "fused_mb_conv_block", "cba": "cba_block"}
"""Block type -> snake-case name of the Keras layer class that holds the block (v1 blocks are inlined)."""
BLOCK_TYPES = ("v1", *KERAS_BLOCK_LAYERS)
STACKWISE = ("stackwise_kernel_sizes", "stackwise_num_repeats", "stackwise_input_filters",
             "stackwise_output_filters", "stackwise_expansion_ratios", "stackwise_squeeze_and_excite_ratios",
             "stackwise_strides", "stackwise_block_types")


def round_filters(filters, width_coefficient, min_depth, depth_divisor, use_depth_divisor_as_min_depth,
                  cap_round_filter_decrease) -> int:
    """KerasHub's filter rounding: scale by the width, round to a multiple of ``depth_divisor``.

    >>> round_filters(32, 1.0, None, 8, True, True), round_filters(1280, 1.1, None, 8, True, True)
    (32, 1408)
    >>> round_filters(16, 0.25, 8, 8, False, False)        # 4 rounds to 8 at least (min_depth)
    8
    """
    filters *= width_coefficient
    if use_depth_divisor_as_min_depth:
        min_depth = depth_divisor
    if min_depth is None:
        raise ValueError("min_depth is None and use_depth_divisor_as_min_depth is False")
    new = max(min_depth, int(filters + depth_divisor / 2) // depth_divisor * depth_divisor)
    if cap_round_filter_decrease and new < 0.9 * filters:
        new += depth_divisor
    return int(new)


def round_repeats(repeats, depth_coefficient) -> int:
    """``ceil(depth_coefficient * repeats)``.

    >>> round_repeats(3, 1.1)
    4
    """
    return int(math.ceil(depth_coefficient * repeats))


def _activation(name):
    return Activation(name)


class SqueezeExcite(Module):
    """``y = x * sigmoid(W2 act(W1 GAP(x) + b1) + b2)`` (per sample, per channel).

    Backward: the scale hands ``dx = dy * s`` to ``x`` directly and ``ds`` to the gate branch, whose
    gradient reaches ``x`` again through the global average pool; the two are summed.
    """

    def __init__(self, channels, squeezed, activation, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.squeeze = GlobalAveragePooling2D()
        self.reduce = Conv2D(channels, squeezed, 1, use_bias=True, seed=int(rng.integers(2**31)))
        self.reduce_act = _activation(activation)
        self.expand = Conv2D(squeezed, channels, 1, use_bias=True, seed=int(rng.integers(2**31)))
        self.gate = Activation("sigmoid")
        self.excite = ChannelScale()

    def gate_layers(self):
        return [self.squeeze, self.reduce, self.reduce_act, self.expand, self.gate]

    def forward(self, x, training=False):
        s = x
        for layer in self.gate_layers():
            s = layer.forward(s, training)                     # (N, 1, 1, C) after the pool
        return self.excite.forward([x, s])                     # (N, H, W, C)

    def backward(self, dy):
        dx, ds = self.excite.backward(dy)
        for layer in reversed(self.gate_layers()):
            ds = layer.backward(ds)                            # ends as the pool's gradient w.r.t. x
        return sum_gradients(dx, ds)


class MBConvBlock(Module):
    """One KerasHub EfficientNet block of ``block_type`` (see the module docstring); children ``expand``,
    ``dwconv``, ``se``, ``project`` (those the type has), then ``drop`` / ``add`` on a residual block.

    ========== ================================================================ ===================
    type       branch                                                           BN momentum
    ========== ================================================================ ===================
    v1         [1x1 expand] -> pad k//2 + depthwise valid -> [SE] -> 1x1 [-> proj act]  0.99 (Keras default)
    unfused    [1x1 expand] -> depthwise "same" -> [SE] -> 1x1 (k x k when e == 1)     batch_norm_momentum
    fused      pad k//2 + k x k conv valid -> [SE] -> 1x1 [-> proj act when e == 1]  batch_norm_momentum
    cba        pad k//2 + k x k conv valid (f_out) -> BN -> act                    batch_norm_momentum
    ========== ================================================================ ===================

    The residual add needs stride 1 and ``f_in == f_out`` (and, except for v1, ``nores`` False).
    """

    def __init__(self, c_in, filters_in, filters_out, *, block_type="v1", kernel_size, strides, expand_ratio,
                 se_ratio, activation, projection_activation, dropout, bn_epsilon, bn_momentum=0.9, nores=False,
                 dilation=1, first_dilation=None, seed, name="block"):
        super().__init__()
        gave_up_stride = first_dilation is not None and first_dilation != dilation   # atrous: was strided
        residual = (strides == 1 and not gave_up_stride and filters_in == filters_out
                    and (block_type == "v1" or not nores))
        if c_in != filters_in and (expand_ratio == 1 or residual or block_type == "cba"):
            # Keras sizes the layers from filters_in but reads c_in channels: its graph would not build
            raise ValueError(f"{name}: input filters {filters_in} differ from the {c_in} channels reaching it "
                             "(check stackwise_input_filters / stackwise_force_input_filters)")
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        momentum = KERAS_BN_MOMENTUM if block_type == "v1" else bn_momentum
        bn = lambda c: ("bn", BatchNorm(c, epsilon=bn_epsilon, momentum=momentum))  # noqa: E731
        act = lambda name_=activation: ("act", _activation(name_))  # noqa: E731
        d0 = dilation if first_dilation is None else first_dilation    # the (formerly) strided k x k conv
        pad = [("pad", ZeroPadding2D(d0 * (kernel_size // 2)))]        # keeps the size at any rate
        filters = filters_in * expand_ratio
        if filters != int(filters):
            raise ValueError(f"{name}: input filters {filters_in} x expand ratio {expand_ratio} is not a whole number")
        filters = int(filters)
        self.block_type = block_type
        if block_type == "cba":
            self.expand = Sequential(*pad, ("conv", Conv2D(c_in, filters_out, kernel_size, strides=strides,
                                                           dilation_rate=d0, padding="valid", seed=seed_())),
                                     bn(filters_out), act())
        elif block_type == "fused":
            self.expand = Sequential(*pad, ("conv", Conv2D(c_in, filters, kernel_size, strides=strides,
                                                           dilation_rate=d0, padding="valid", seed=seed_())),
                                     bn(filters), act())
        elif expand_ratio != 1:
            self.expand = Sequential(("conv", Conv2D(c_in, filters, 1, seed=seed_())), bn(filters), act())
        if block_type in ("v1", "unfused"):
            same = block_type == "unfused"
            self.dwconv = Sequential(*([] if same else pad),
                                     ("conv", DepthwiseConv2D(filters, kernel_size, strides=strides, dilation_rate=d0,
                                                              padding="same" if same else "valid", seed=seed_())),
                                     bn(filters), act())
        if block_type != "cba" and 0 < se_ratio <= 1:
            self.se = SqueezeExcite(filters, max(1, int(filters_in * se_ratio)), activation, seed_())
        if block_type != "cba":
            k = kernel_size if block_type == "unfused" and expand_ratio == 1 else 1
            project = ([("pad", ZeroPadding2D(dilation * (k // 2)))] if k > 1 else []) + [
                ("conv", Conv2D(filters, filters_out, k, dilation_rate=dilation, padding="valid", seed=seed_())),
                bn(filters_out)]
            if projection_activation and (block_type == "v1" or (block_type == "fused" and expand_ratio == 1)):
                project.append(act(projection_activation))
            self.project = Sequential(*project)
        self.residual = residual
        if self.residual:
            if dropout > 0:
                self.drop = StochasticDepth(dropout, seed=seed_())
            self.add = Add(inplace=True)                       # over the branch's fresh output
        self.out_channels = filters_out

    def branch(self):
        return [m for name, m in self.children() if name in ("expand", "dwconv", "se", "project", "drop")]

    def forward(self, x, training=False):
        y = x
        for layer in self.branch():
            y = layer.forward(y, training)
        return self.add.forward([y, x]) if self.residual else y

    def backward(self, dy):
        d = dy
        for layer in reversed(self.branch()):
            d = layer.backward(d)                              # a fresh array: the branch's dx
        return sum_gradients(d, dy) if self.residual else d    # the add sent dy to both

    def keras_layers(self) -> list[KerasLayer]:
        """v1: its weighted layers, inlined in the backbone's graph, in data-flow order. The other types are
        one Keras layer each (``CBABlock``, ``FusedMBConvBlock``, ``MBConvBlock``), which saves its sublayers
        under their attribute names: ``fused_mb_conv_block_3/conv1/vars/0``."""
        parts = dict(self.children())
        units = []                                             # (Keras attribute, our layer)
        if "expand" in parts:
            units += [("conv1", parts["expand"].conv), ("bn1", parts["expand"].bn)]
        if "dwconv" in parts:
            units += [("depthwise", parts["dwconv"].conv), ("bn2", parts["dwconv"].bn)]
        if "se" in parts:
            units += [("se_conv1", parts["se"].reduce), ("se_conv2", parts["se"].expand)]
        if "project" in parts:
            units += [("output_conv", parts["project"].conv), ("bn3" if "dwconv" in parts else "bn2",
                                                               parts["project"].bn)]
        if self.block_type == "v1":
            return [keras_layer(m) for _, m in units]
        inner = tuple((attr, m, keras_layer(m).var_names) for attr, m in units)
        return [KerasLayer(KERAS_BLOCK_LAYERS[self.block_type], None, (), inner)]


class EfficientNetBackbone(Encoder):
    """EfficientNet encoder returning ``{"P1": ..., "P5": ...}`` (KerasHub ``EfficientNetBackbone`` arguments).

    >>> enc = EfficientNetBackbone(stackwise_width_coefficients=[0.25] * 3, stackwise_depth_coefficients=[1.0] * 3,
    ...     stackwise_kernel_sizes=[3, 3, 5], stackwise_num_repeats=[1, 2, 1], stackwise_input_filters=[32, 16, 24],
    ...     stackwise_output_filters=[16, 24, 40], stackwise_expansion_ratios=[1, 6, 6],
    ...     stackwise_squeeze_and_excite_ratios=[0.25] * 3, stackwise_strides=[1, 2, 2],
    ...     stackwise_block_types=["v1"] * 3, num_features=64, seed=0)
    >>> {k: v.shape for k, v in enc(np.zeros((1, 32, 32, 3), np.float32)).items()}
    {'P1': (1, 16, 16, 8), 'P2': (1, 8, 8, 8), 'P3': (1, 4, 4, 16)}
    """

    keras_class_name = "EfficientNetBackbone"
    keras_module = "keras_hub.src.models.efficientnet.efficientnet_backbone"

    def __init__(self, *, stackwise_width_coefficients=None, stackwise_depth_coefficients=None,
                 stackwise_kernel_sizes, stackwise_num_repeats, stackwise_input_filters, stackwise_output_filters,
                 stackwise_expansion_ratios, stackwise_squeeze_and_excite_ratios, stackwise_strides,
                 stackwise_block_types, stackwise_force_input_filters=None, dropout=0.2, depth_divisor=8,
                 min_depth=8, activation="swish", include_stem_padding=True, use_depth_divisor_as_min_depth=False,
                 cap_round_filter_decrease=False, stem_conv_padding="valid", batch_norm_momentum=0.9,
                 batch_norm_epsilon=1e-5, projection_activation=None, num_features=1280, stackwise_nores_option=None,
                 in_channels=3,
                 output_stride=None, seed=None):
        super().__init__()
        n = len(stackwise_kernel_sizes)
        stackwise = dict(stackwise_kernel_sizes=stackwise_kernel_sizes, stackwise_num_repeats=stackwise_num_repeats,
                         stackwise_input_filters=stackwise_input_filters,
                         stackwise_output_filters=stackwise_output_filters,
                         stackwise_expansion_ratios=stackwise_expansion_ratios,
                         stackwise_squeeze_and_excite_ratios=stackwise_squeeze_and_excite_ratios,
                         stackwise_strides=stackwise_strides, stackwise_block_types=stackwise_block_types,
                         stackwise_width_coefficients=stackwise_width_coefficients,
                         stackwise_depth_coefficients=stackwise_depth_coefficients,
                         stackwise_force_input_filters=stackwise_force_input_filters or [0] * 7)
        for key, value in stackwise.items():      # KerasHub's default force list has 7 entries: longer is fine
            if value is None or n == 0 or len(value) < n or (len(value) > n and key != "stackwise_force_input_filters"):
                raise ValueError(f"{key} must be a list of {n} values (one per stack, as stackwise_kernel_sizes), "
                                 f"got {value!r}")
        bad = sorted({t for t in stackwise_block_types if t not in BLOCK_TYPES})
        if bad:
            raise ValueError(f"stackwise_block_types: {bad} not supported (tinydeeplab supports {list(BLOCK_TYPES)})")
        for name in (activation, projection_activation):
            if name and name not in ACTIVATIONS:
                raise ValueError(f"activation {name!r} not supported (tinydeeplab supports {sorted(ACTIVATIONS)})")
        if stem_conv_padding not in ("valid", "same"):
            raise ValueError(f"stem_conv_padding must be 'valid' or 'same', got {stem_conv_padding!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.config = {**{k: list(v) for k, v in stackwise.items()},
                       "dropout": dropout, "depth_divisor": depth_divisor, "min_depth": min_depth,
                       "activation": activation, "include_stem_padding": bool(include_stem_padding),
                       "use_depth_divisor_as_min_depth": bool(use_depth_divisor_as_min_depth),
                       "cap_round_filter_decrease": bool(cap_round_filter_decrease),
                       "stem_conv_padding": stem_conv_padding, "batch_norm_momentum": batch_norm_momentum,
                       "batch_norm_epsilon": batch_norm_epsilon, "projection_activation": projection_activation}
        self.num_features, self.in_channels, self.output_stride = int(num_features), int(in_channels), output_stride
        self.nores = [bool(v) for v in (stackwise_nores_option or [False] * n)][:n]
        if len(self.nores) != n:
            raise ValueError(f"stackwise_nores_option must have {n} values, got {stackwise_nores_option!r}")
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        width = stackwise_width_coefficients
        rf = lambda f, w: round_filters(f, w, min_depth, depth_divisor, use_depth_divisor_as_min_depth,  # noqa: E731
                                        cap_round_filter_decrease)
        bn = lambda c: BatchNorm(c, epsilon=batch_norm_epsilon, momentum=batch_norm_momentum)  # noqa: E731

        c = rf(stackwise_input_filters[0], width[0])
        stem = [("pad", ZeroPadding2D(1))] if include_stem_padding else []
        stem += [("conv", Conv2D(in_channels, c, 3, strides=2, padding=stem_conv_padding, seed=seed_())),
                 ("bn", bn(c)), ("act", _activation(activation))]
        self.stem = Sequential(*stem)

        self.block_names, self.taps = [], []        # taps: (level, name of the block whose input it is)
        total = float(sum(stackwise_num_repeats))
        block_id, stride, channels, strides_of, rate = 0, 2, {}, {}, 1
        for i in range(n):
            f_in, f_out = rf(stackwise_input_filters[i], width[i]), rf(stackwise_output_filters[i], width[i])
            for j in range(round_repeats(stackwise_num_repeats[i], stackwise_depth_coefficients[i])):
                strides = stackwise_strides[i] if j == 0 else 1
                if j > 0:
                    f_in = f_out
                force = self.config["stackwise_force_input_filters"][i]
                if force > 0:
                    f_in = rf(force, width[i])
                name = f"block{i + 1}{chr(97 + j)}"
                first_rate = rate
                if strides != 1:
                    level = f"P{len(self.taps) + 1}"
                    self.taps.append((level, name))
                    channels[level], strides_of[level] = c, stride
                    if output_stride and stride * strides > output_stride:
                        rate, strides = rate * strides, 1       # atrous: trade this stride for dilation
                    else:
                        stride *= strides
                block = MBConvBlock(c, f_in, f_out, name=name, block_type=stackwise_block_types[i],
                                    kernel_size=stackwise_kernel_sizes[i], strides=strides,
                                    expand_ratio=stackwise_expansion_ratios[i],
                                    se_ratio=stackwise_squeeze_and_excite_ratios[i], activation=activation,
                                    projection_activation=projection_activation,
                                    dropout=dropout * block_id / total, bn_epsilon=batch_norm_epsilon,
                                    bn_momentum=batch_norm_momentum, nores=self.nores[i], dilation=rate,
                                    first_dilation=first_rate, seed=seed_())
                setattr(self, name, block)
                self.block_names.append(name)
                c = f_out
                block_id += 1
        top = rf(num_features, width[-1])
        self.top = Sequential(("conv", Conv2D(c, top, 1, seed=seed_())), ("bn", bn(top)),
                              ("act", _activation(activation)))
        self.top_level = f"P{len(self.taps) + 1}"
        channels[self.top_level], strides_of[self.top_level] = top, stride
        self.pyramid_channels, self.pyramid_strides = channels, strides_of

    def blocks(self):
        return [getattr(self, name) for name in self.block_names]

    def forward(self, x, training=False):
        """``x`` (N, H, W, C) -> ``{"P1": (N, H/2, W/2, C1), ..., "P5": (N, H/32, W/32, C5)}`` (b0's strides)."""
        tap_of = {name: level for level, name in self.taps}
        outputs = {}
        x = self.stem.forward(x, training)
        for name, block in zip(self.block_names, self.blocks()):
            if name in tap_of:
                outputs[tap_of[name]] = x                      # the input of a strided block
            x = block.forward(x, training)
        outputs[self.top_level] = self.top.forward(x, training)
        return outputs

    def backward(self, d_pyramid):
        """A tapped tensor gets the gradient flowing down from the block it feeds plus its level's own."""
        self.check_level_gradients(d_pyramid)
        tap_of = {name: level for level, name in self.taps}
        dx = d_pyramid.get(self.top_level)
        if dx is not None:
            dx = self.top.backward(dx)
        for name, block in reversed(list(zip(self.block_names, self.blocks()))):
            if dx is not None:
                dx = block.backward(dx)
            g = d_pyramid.get(tap_of.get(name))
            if g is not None:
                dx = g if dx is None else sum_gradients(dx, g)  # dx is a fresh backward output
        return self.stem.backward(dx)

    # -- the encoder protocol ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        """KerasHub's ``EfficientNetBackbone.get_config()`` keys. KerasHub's own get_config omits
        ``num_features`` (its presets rebuild with the default 1280); another value is written too, a key
        KerasHub's constructor accepts, so such a preset also loads in KerasHub."""
        top = {} if self.num_features == 1280 else {"num_features": self.num_features}
        top.update({} if self.output_stride in (None, 32) else {"output_stride": int(self.output_stride)})
        nores = {"stackwise_nores_option": self.nores} if any(self.nores) else {}       # idem
        return {**self.config, "input_shape": [None, None, self.in_channels], **top, **nores}

    @classmethod
    def from_config(cls, config: dict, *, output_stride=None, seed=None) -> "EfficientNetBackbone":
        """KerasHub's config -> an EfficientNetBackbone (``name``, ``dtype``, ... ignored); a scalar
        ``width_coefficient`` / ``depth_coefficient`` applies to every stack, as in KerasHub.

        >>> cfg = EfficientNetBackbone(stackwise_width_coefficients=[0.25], stackwise_depth_coefficients=[1.0],
        ...     stackwise_kernel_sizes=[3], stackwise_num_repeats=[1], stackwise_input_filters=[32],
        ...     stackwise_output_filters=[16], stackwise_expansion_ratios=[1],
        ...     stackwise_squeeze_and_excite_ratios=[0.25], stackwise_strides=[2], stackwise_block_types=["v1"],
        ...     num_features=16, seed=0).get_config()
        >>> EfficientNetBackbone.from_config(cfg).get_config() == cfg
        True
        """
        missing = [k for k in STACKWISE if k not in config]
        if missing:
            raise ValueError(f"image_encoder: missing keys {missing}")
        kw = {k: config[k] for k in STACKWISE}
        n = len(kw["stackwise_kernel_sizes"])
        for key in ("width", "depth"):
            scalar = config.get(f"{key}_coefficient")
            stackwise = config.get(f"stackwise_{key}_coefficients")
            if scalar is not None:
                stackwise = list(scalar) if isinstance(scalar, (list, tuple)) else [scalar] * n
            kw[f"stackwise_{key}_coefficients"] = stackwise
        for key in ("stackwise_force_input_filters", "dropout", "depth_divisor", "min_depth", "activation",
                    "include_stem_padding", "use_depth_divisor_as_min_depth", "cap_round_filter_decrease",
                    "stem_conv_padding", "batch_norm_momentum", "batch_norm_epsilon", "projection_activation",
                    "num_features", "stackwise_nores_option"):
            if key in config:
                kw[key] = config[key]
        shape = config.get("input_shape") or config.get("image_shape") or [None, None, 3]
        return cls(**kw, in_channels=int(shape[-1] or 3), seed=seed,
                   output_stride=output_stride if output_stride is not None else config.get("output_stride"))

    def keras_weight_layers(self):
        """Data-flow order: the graph has no parallel weighted branches (the SE gate and the residual add
        rejoin a chain), so Keras's depth order is the order the layers run in."""
        layers = [keras_layer(self.stem.conv), keras_layer(self.stem.bn)]
        for block in self.blocks():
            layers += block.keras_layers()
        return layers + [keras_layer(self.top.conv), keras_layer(self.top.bn)]

    def stages(self):
        """The stem, every block (KerasHub's ``block{i}{x}_add`` or ``..._project_bn``) and the top; each
        tapped level is the output of the block before the strided block that reads it."""
        level_after = {}
        for level, name in self.taps:
            i = self.block_names.index(name)
            level_after[self.block_names[i - 1] if i else "stem"] = level
        act = self.config["activation"]
        pad = "ZeroPadding 1 + " if self.config["include_stem_padding"] else ""
        out = []

        def add(module, what, keras_name, box_title):
            level = level_after.get(module) if module != "top" else self.top_level
            c = self.pyramid_channels.get(level)
            out.append(EncoderStage(module, what + (f" = **{level}**" if level else ""), keras_name, level,
                                    (f"{box_title} → {level}", f"{c} channels, 1/{self.pyramid_strides[level]}")
                                    if level else None))

        add("stem", f"stem: {pad}3x3/2 conv -> BN -> {act}", "stem_activation", "stem")
        for name, block in zip(self.block_names, self.blocks()):
            parts = dict(block.children())
            first = (parts.get("dwconv") or parts["expand"]).conv
            k, s = first.params["kernel"].shape[0], first.strides[0]
            kind = "depthwise" if "dwconv" in parts else ("fused conv" if "project" in parts else "conv")
            what = (f"{name} ({block.block_type}): " + ("1x1 expand -> " if "dwconv" in parts and "expand" in parts
                                                        else "") + f"{kind} {k}x{k}" + (f"/{s}" if s > 1 else "") +
                    (" -> SE" if "se" in parts else "") + (f" -> 1x1 {block.out_channels}" if "project" in parts
                                                           else f" {block.out_channels}") +
                    (", residual" if block.residual else ""))
            if block.block_type != "v1":
                keras_name = f"{name}_"                        # the block is one Keras layer
            else:
                keras_name = f"{name}_" + ("add" if block.residual else "projection_activation"
                                           if "act" in dict(block.project.children()) else "project_bn")
            add(name, what, keras_name, name)
        add("top", f"top: 1x1 conv {self.pyramid_channels[self.top_level]} -> BN -> {act}", "top_activation", "top")
        return out
