"""MobileNetV3 image encoder with KerasHub's ``MobileNetBackbone`` arguments, and a P2..P5 pyramid.

KerasHub's ``MobileNetBackbone`` (``keras_hub/src/models/mobilenet/mobilenet_backbone.py``) builds::

    stem       ZeroPadding 1 -> Conv 3x3/2 "valid" (adjust(input_num_filters)) -> BN -> input_activation
    block_0    DepthwiseConvBlock: ZeroPadding 1 -> depthwise 3x3 /depthwise_stride "valid" -> BN -> ReLU
               [-> SE(adjust(C * squeeze_and_excite))] -> 1x1 (depthwise_filters) -> BN [+ x if depthwise_residual]
    block_s_b  InvertedResidualBlock (stack s = 1.., block b), activation a = stackwise_activation[s-1][b]:
               1x1 (adjust(expansion)) -> BN -> a -> ZeroPadding p -> depthwise k x k /stride "valid" -> BN -> a
               [-> SE(adjust(E * se_ratio))] -> 1x1 (adjust(filters)) -> BN  [+ x if stride 1 and C_in == C_out]
    last       ConvBnActBlock: 1x1 (adjust(last_layer_filter)) -> BN -> hard_swish

with ``adjust`` = KerasHub's ``adjust_channels`` (round to a multiple of 8, never 10 % below), BN epsilon
1e-5 and momentum 0.9, SE = :class:`~tinydeeplab.nn.SqueezeExcite` with a ReLU squeeze and a hard-sigmoid
gate (``relu6(x + 3) / 6``), and every depthwise convolution a Keras ``Conv2D(groups=C)`` (kernel stored as
``(k, k, 1, C)``). ``output_num_filters`` and ``output_activation`` are recorded but unused, as in KerasHub.

**The pyramid (a tinydeeplab definition; KerasHub's MobileNet has no ``pyramid_outputs``).** ``P{l}`` is
the output of the *last* unit (stem, block or the final ConvBnAct) whose output has stride ``2**l``, for
``l`` = 2..5 where the config reaches that stride. For the KerasHub presets this is

=========  =====================================  ==========================================
level      MobileNetV3 Large (``*_large_100``)    MobileNetV3 Small (``*_small_050/100``)
=========  =====================================  ==========================================
P2 (/4)    ``block_1_1``                          ``block_0_0``
P3 (/8)    ``block_2_2``                          ``block_1_1``
P4 (/16)   ``block_4_1``                          ``block_3_1``
P5 (/32)   ``block_6_0`` (1x1 conv, hard_swish)   ``block_5_0`` (1x1 conv, hard_swish)
=========  =====================================  ==========================================

**Atrous option** (``output_stride`` 16 or 8, beyond KerasHub): a block whose stride would take the total
past ``output_stride`` keeps stride 1 and multiplies the rate; its depthwise convolution keeps the rate
before it (and padding ``p * rate``), later blocks use the new rate, as ResNet's stacks do. Without
squeeze-and-excitation in the dilated part this computes the strided network's outputs exactly at the
positions the stride kept (``P5_os16[:, ::2, ::2] == P5_os32``); an SE block averages over the denser map,
so there it is close, not equal.
"""
from __future__ import annotations

import numpy as np

from ..nn import (Activation, Add, BatchNorm, Conv2D, GroupedDepthwiseConv2D, Module, Sequential, SqueezeExcite,
                  ZeroPadding2D, sum_gradients)
from .encoder import CONV_VARS, Encoder, EncoderStage, KerasLayer, keras_layer

BN_EPS, BN_MOMENTUM = 1e-5, 0.9  # KerasHub MobileNet batch-norm settings
STACKWISE = ("stackwise_expansion", "stackwise_num_filters", "stackwise_kernel_size", "stackwise_num_strides",
             "stackwise_se_ratio", "stackwise_activation", "stackwise_padding")


def adjust_channels(x, divisor=8, min_value=None) -> int:
    """KerasHub's channel rounding: the nearest multiple of ``divisor`` (at least ``min_value``, default
    ``divisor``), one step up when that falls more than 10 % below ``x``.

    >>> [adjust_channels(v) for v in (2.0, 12, 20, 36, 57.6)]
    [8, 16, 24, 40, 56]
    """
    min_value = divisor if min_value is None else min_value
    new_x = max(min_value, int(x + divisor / 2) // divisor * divisor)
    return new_x + divisor if new_x < 0.9 * x else new_x


def _bn(channels):
    return BatchNorm(channels, epsilon=BN_EPS, momentum=BN_MOMENTUM)


def _conv1x1(c_in, filters, rng):
    return Conv2D(c_in, filters, 1, seed=rng)


def _depthwise(channels, kernel, stride, dilation, pad, rng):
    """KerasHub's ``ZeroPadding(pad)`` -> ``Conv2D(groups=C)`` "valid": a Sequential pad / conv."""
    return Sequential(("pad", ZeroPadding2D(pad)),
                      ("conv", GroupedDepthwiseConv2D(channels, kernel, strides=stride, dilation_rate=dilation,
                                                      padding="valid", seed=rng)))


def _se(channels, ratio, rng):
    return SqueezeExcite(channels, adjust_channels(channels * ratio), squeeze_activation="relu",
                         excite_activation="hard_sigmoid", seed=rng) if ratio else None


class MobileBlock(Module):
    """One KerasHub block, ``y = [x +] bn_last(conv_last(se(units(x))))``: the DepthwiseConvBlock
    (``expand`` absent) or an InvertedResidualBlock. ``units`` are Sequentials run in order; the
    residual add, when present, hands ``dy`` to both the branch and ``x``."""

    def __init__(self, c_in, filters, *, kernel, stride, dilation, pad, expansion, se_ratio, activation,
                 residual, rng):
        super().__init__()
        if expansion is None:                                       # DepthwiseConvBlock: ReLU, no expansion
            mid = c_in
            act = "relu"
        else:
            mid = adjust_channels(expansion)
            act = activation
            self.expand = Sequential(("conv", _conv1x1(c_in, mid, rng)), ("bn", _bn(mid)), ("act", Activation(act)))
        self.depthwise = _depthwise(mid, kernel, stride, dilation, pad, rng)
        self.depthwise_bn = Sequential(("bn", _bn(mid)), ("act", Activation(act)))
        se = _se(mid, se_ratio, rng)
        if se is not None:
            self.se = se
        self.project = Sequential(("conv", _conv1x1(mid, filters, rng)), ("bn", _bn(filters)))
        if residual:
            self.add = Add(inplace=True)                            # over the projection's fresh output
        self.out_channels, self.residual = filters, residual

    def units(self):
        return [m for name, m in self.children() if name != "add"]

    def forward(self, x, training=False):
        y = x
        for unit in self.units():
            y = unit.forward(y, training)                           # (N, H', W', C')
        return self.add.forward([y, x]) if self.residual else y

    def backward(self, dy):
        d = self.add.backward(dy)[0] if self.residual else dy
        for unit in reversed(self.units()):
            d = unit.backward(d)
        return sum_gradients(d, dy) if self.residual else d         # x feeds the branch and the add

    def keras_layers(self, prefix):
        """This block's weighted layers under ``prefix`` (its Keras path), named by KerasHub's attributes:
        InvertedResidualBlock ``conv1`` (expand), ``conv2`` (depthwise), ``squeeze_excite``, ``conv3``;
        DepthwiseConvBlock ``conv1`` (depthwise), ``se_layer``, ``conv2``; each conv's BN ``batch_normalization<i>``."""
        inverted = hasattr(self, "expand")
        convs = ([self.expand] if inverted else []) + [self.depthwise, self.project]
        bns = ([self.expand.bn] if inverted else []) + [self.depthwise_bn.bn, self.project.bn]
        named = []
        for i, (unit, bn) in enumerate(zip(convs, bns), start=1):
            named += [(f"conv{i}", unit.conv), (f"batch_normalization{i}", bn)]
        if hasattr(self, "se"):
            se = "squeeze_excite" if inverted else "se_layer"
            named += [(f"{se}/conv_reduce", self.se.conv_reduce), (f"{se}/conv_expand", self.se.conv_expand)]
        return [_keras_layer(f"{prefix}/{name}", m) for name, m in named]


def _keras_layer(path, module):
    """A :class:`KerasLayer` with an explicit Keras path (a Conv2D's variables for the grouped depthwise kernel)."""
    grouped = isinstance(module, GroupedDepthwiseConv2D)
    return KerasLayer(path, module, CONV_VARS if grouped else keras_layer(module).var_names)


class MobileNetBackbone(Encoder):
    """MobileNetV3 encoder returning ``{"P2": ..., "P5": ...}`` (KerasHub ``MobileNetBackbone`` arguments).

    >>> enc = MobileNetBackbone([[16], [24]], [1, 1], [[8], [16]], [[3], [5]], [[2], [2]], [[None], [0.25]],
    ...                         [["relu"], ["hard_swish"]], [[1], [2]], 32, 8, 2, False, 32, seed=0)
    >>> {k: v.shape for k, v in enc(np.zeros((1, 64, 64, 3), np.float32)).items()}
    {'P2': (1, 16, 16, 8), 'P3': (1, 8, 8, 8), 'P4': (1, 4, 4, 32)}
    """

    keras_class_name = "MobileNetBackbone"
    keras_module = "keras_hub.src.models.mobilenet.mobilenet_backbone"
    REQUIRED_CONFIG = ("stackwise_num_blocks", *STACKWISE, "depthwise_filters", "depthwise_stride",
                       "depthwise_residual", "last_layer_filter")

    def __init__(self, stackwise_expansion, stackwise_num_blocks, stackwise_num_filters, stackwise_kernel_size,
                 stackwise_num_strides, stackwise_se_ratio, stackwise_activation, stackwise_padding,
                 output_num_filters, depthwise_filters, depthwise_stride, depthwise_residual, last_layer_filter,
                 squeeze_and_excite=None, input_activation="hard_swish", output_activation="hard_swish",
                 input_num_filters=16, in_channels=3, output_stride=None, seed=None):
        super().__init__()
        blocks = [int(b) for b in stackwise_num_blocks]
        lists = dict(zip(STACKWISE, (stackwise_expansion, stackwise_num_filters, stackwise_kernel_size,
                                     stackwise_num_strides, stackwise_se_ratio, stackwise_activation,
                                     stackwise_padding)))
        for key, value in lists.items():
            if len(value) != len(blocks) or any(len(v) != b for v, b in zip(value, blocks)):
                raise ValueError(f"{key} must have one list per stack with stackwise_num_blocks = {blocks} "
                                 f"entries, got {value!r}")
        if not blocks:
            raise ValueError("stackwise_num_blocks must not be empty")
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.config = {"stackwise_num_blocks": blocks, **{k: [list(v) for v in lists[k]] for k in STACKWISE},
                       "input_num_filters": input_num_filters, "output_num_filters": output_num_filters,
                       "depthwise_filters": int(depthwise_filters), "depthwise_stride": int(depthwise_stride),
                       "depthwise_residual": bool(depthwise_residual), "last_layer_filter": last_layer_filter,
                       "squeeze_and_excite": squeeze_and_excite, "input_activation": input_activation,
                       "output_activation": output_activation}
        self.output_stride, self.in_channels = output_stride, int(in_channels)
        rng = np.random.default_rng(seed)

        # every strided unit in order (block_0, then the inverted residual blocks): stride -> (stride, rate)
        strides = [int(depthwise_stride)] + [int(s) for row in stackwise_num_strides for s in row]
        total, rate, schedule = 2, 1, []
        for st in strides:
            if output_stride is not None and total * st > output_stride:
                schedule.append((1, rate, rate * st))                 # (stride, first rate, rate after)
                rate *= st
            else:
                schedule.append((st, rate, rate))
                total *= st

        c = adjust_channels(input_num_filters)
        self.stem = Sequential(("pad", ZeroPadding2D(1)),
                               ("conv", Conv2D(in_channels, c, 3, strides=2, padding="valid", seed=rng)),
                               ("bn", _bn(c)), ("act", Activation(input_activation)))
        units = [("stem", self.stem)]
        st, r0, _ = schedule[0]
        if depthwise_residual and (st != 1 or c != int(depthwise_filters)):
            raise ValueError("depthwise_residual needs depthwise_stride 1 and depthwise_filters == "
                             f"adjust_channels(input_num_filters) = {c}")
        self.block_0_0 = MobileBlock(c, int(depthwise_filters), kernel=3, stride=st, dilation=r0, pad=r0,
                                     expansion=None, se_ratio=squeeze_and_excite, activation="relu",
                                     residual=bool(depthwise_residual), rng=rng)
        units.append(("block_0_0", self.block_0_0))
        c, i = int(depthwise_filters), 1
        for s, nb in enumerate(blocks):
            for b in range(nb):
                st, rate_here, _ = schedule[i]          # a formerly strided block keeps the rate before it
                f = adjust_channels(lists["stackwise_num_filters"][s][b])
                pad = int(lists["stackwise_padding"][s][b]) * rate_here
                block = MobileBlock(c, f, kernel=int(lists["stackwise_kernel_size"][s][b]), stride=st,
                                    dilation=rate_here, pad=pad, expansion=lists["stackwise_expansion"][s][b],
                                    se_ratio=lists["stackwise_se_ratio"][s][b],
                                    activation=lists["stackwise_activation"][s][b],
                                    residual=st == 1 and self.config["stackwise_num_strides"][s][b] == 1 and c == f,
                                    rng=rng)
                name = f"block_{s + 1}_{b}"
                setattr(self, name, block)
                units.append((name, block))
                c, i = f, i + 1
        last = adjust_channels(last_layer_filter)
        name = f"block_{len(blocks) + 1}_0"
        setattr(self, name, Sequential(("conv", _conv1x1(c, last, rng)), ("bn", _bn(last)),
                                       ("act", Activation("hard_swish"))))
        units.append((name, getattr(self, name)))
        self._units = units

        # the pyramid: the last unit at each nominal stride 4..32 (nominal: the strides KerasHub builds)
        nominal, actual, taps = [2], [2], {}
        for (st_nom, (st_act, _, _)) in zip(strides, schedule):
            nominal.append(nominal[-1] * st_nom)
            actual.append(actual[-1] * st_act)
        nominal.append(nominal[-1])
        actual.append(actual[-1])
        for u, stride in enumerate(nominal):
            if stride in (4, 8, 16, 32):
                taps[f"P{int(np.log2(stride))}"] = u
        chans = [self.stem.conv.params["kernel"].shape[-1]] + \
            [u.out_channels for _, u in units[1:-1]] + [last]
        self.taps = dict(sorted(taps.items()))                        # level -> unit index
        self.pyramid_channels = {lv: int(chans[u]) for lv, u in self.taps.items()}
        self.pyramid_strides = {lv: int(actual[u]) for lv, u in self.taps.items()}
        if not self.taps:
            raise ValueError("the config never reaches stride 4: no pyramid level P2..P5")

    def forward(self, x, training=False):
        """``x`` (N, H, W, C) -> ``{"P2": (N, H/4, W/4, C2), ...}`` (the levels the config reaches)."""
        out, last = {}, max(self.taps.values())
        at = {u: lv for lv, u in self.taps.items()}
        for u, (_, unit) in enumerate(self._units[:last + 1]):
            x = unit.forward(x, training)
            if u in at:
                out[at[u]] = x
        return out

    def backward(self, d_pyramid):
        """Gradients of some levels -> dx: a unit gets the gradient from above plus its own level's."""
        at = {u: lv for lv, u in self.taps.items()}
        dx = None
        for u in reversed(range(max(self.taps.values()) + 1)):
            g = d_pyramid.get(at.get(u)) if u in at else None
            if g is not None:
                dx = g if dx is None else sum_gradients(dx, g)
            if dx is not None:
                dx = self._units[u][1].backward(dx)
        if dx is None:
            raise ValueError(f"backward needs a gradient for at least one of {list(self.pyramid_channels)}")
        return dx

    # -- the encoder protocol ---------------------------------------------------------------------------------
    def get_config(self) -> dict:
        """KerasHub's config; an atrous encoder adds ``output_stride`` (tinydeeplab extension)."""
        atrous = {} if self.output_stride in (None, 32) else {"output_stride": int(self.output_stride)}
        return {**self.config, "image_shape": [None, None, self.in_channels], **atrous}

    @classmethod
    def from_config(cls, config: dict, *, output_stride=None, seed=None) -> "MobileNetBackbone":
        """KerasHub's ``MobileNetBackbone`` config -> a MobileNetBackbone (``name``, ``dtype``, ... ignored).

        >>> from tinydeeplab.models.recipes import MOBILENET_V3_SMALL
        >>> cfg = MobileNetBackbone.from_config(MOBILENET_V3_SMALL, output_stride=16).get_config()
        >>> cfg["output_stride"], MobileNetBackbone.from_config(cfg).get_config() == cfg
        (16, True)
        """
        missing = [k for k in cls.REQUIRED_CONFIG if k not in config]
        if missing:
            raise ValueError(f"image_encoder: missing keys {missing}")
        image_shape = config.get("image_shape") or [None, None, 3]
        kwargs = {k: config[k] for k in cls.REQUIRED_CONFIG}
        for k, default in (("output_num_filters", None), ("squeeze_and_excite", None),
                           ("input_activation", "hard_swish"), ("output_activation", "hard_swish"),
                           ("input_num_filters", 16)):
            kwargs[k] = config.get(k, default)
        return cls(**kwargs, in_channels=int(image_shape[-1] or 3),
                   output_stride=output_stride if output_stride is not None else config.get("output_stride"),
                   seed=seed)

    def keras_weight_layers(self):
        """Weighted layers in the order of the HDF5 file. KerasHub's blocks are custom layers (not nested
        functional models), saved as ``<block class in snake case>[_i]/<attribute>``, e.g.
        ``inverted_residual_block_3/squeeze_excite/conv_reduce``: the names here carry their counters."""
        layers = [keras_layer(self.stem.conv), keras_layer(self.stem.bn)]
        layers += self.block_0_0.keras_layers("depthwise_conv_block")
        for i, (_, unit) in enumerate(self._units[2:-1]):
            layers += unit.keras_layers("inverted_residual_block" + (f"_{i}" if i else ""))
        last = self._units[-1][1]
        layers += [_keras_layer("conv_bn_act_block/conv", last.conv),
                   _keras_layer("conv_bn_act_block/batch_normalization", last.bn)]
        return layers

    def stages(self):
        """Stem, every block (KerasHub layer ``block_s_b``) and the final 1x1 ConvBnAct."""
        at = {u: lv for lv, u in self.taps.items()}
        out = [EncoderStage("stem", f"stem: ZeroPadding 1 + 3x3/2 conv -> BN -> {self.config['input_activation']}",
                            None, at.get(0), ("stem", "3×3/2 conv, BN") if 0 in at else None)]
        for u, (name, unit) in enumerate(self._units[1:], start=1):
            level = at.get(u)
            if isinstance(unit, MobileBlock):
                conv = unit.depthwise.conv
                k, st, rate = conv.params["kernel"].shape[0], conv.strides[0], conv.dilation_rate[0]
                what = (("inverted residual" if hasattr(unit, "expand") else "depthwise block") +
                        f" {k}x{k}" + (f" /{st}" if st > 1 else "") + (f" rate {rate}" if rate > 1 else "") +
                        (", SE" if hasattr(unit, "se") else "") + f" -> {unit.out_channels}" +
                        (", residual" if unit.residual else ""))
            else:
                what = f"1x1 conv -> BN -> hard_swish ({unit.conv.params['kernel'].shape[-1]})"
            out.append(EncoderStage(name, f"{name}: {what}" + (f" = **{level}**" if level else ""), name, level,
                                    (f"{name} → {level}", what) if level else None))
        return out

