"""CSPNet image encoder with KerasHub's ``CSPNetBackbone`` arguments and pyramid outputs P2..P{n+1}.

Structure, as KerasHub builds it (``keras_hub/src/models/cspnet/cspnet_backbone.py``); every conv has no bias,
every BN has epsilon 1e-5 and Keras's default momentum 0.99, and ``act`` is ``LeakyReLU(0.01)`` for
``activation="leaky_relu"`` (KerasHub's default; *not* Keras's 0.2 / 0.3) or ``Activation(name)``::

    stem     for each of stem_filters: [ZeroPadding (k-1)//2 when strided] -> Conv k x k (/2 for the first
             when stem_strides > 1; stem_padding for the first, "valid" after) -> BN -> act
    stage i  ("csp", Cross Stage Partial; f = stackwise_num_filters[i], e = round(f * expand_ratio),
              b = round(f * block_ratio))
      down        [ZeroPadding 1 when strided] -> Conv 3x3 /s "valid" (f if down_growth else C_in) -> BN -> act
                  (only when s != 1 or the stage is dilated)
      exp         1x1 conv e -> BN [-> act unless cross_linear]
      split       x -> (xs, xb), two halves of e / 2 channels (keras.ops.split)
      blocks      xb -> block_0 -> ... -> block_{depth-1}      (each keeps b = e / 2 channels)
      transition_b  1x1 conv e / 2 -> BN -> act
      concat      [xs, xb] -> transition: 1x1 conv f -> BN -> act
    ("cs3": no transition_b; the blocks run on the *first* half, concat [x1, x2], transition to e / 2 channels;
     "dark": down (always, f channels) then the blocks, no split)
    blocks   dark_block:       y = x + act(BN(conv3x3 b (act(BN(conv1x1 round(b * bottle_ratio) (x))))))
             edge_block:       y = x + act(BN(conv1x1 b (act(BN(conv3x3 round(b * bottle_ratio) (x))))))
             bottleneck_block: y = act(x + BN(conv1x1 b (act(BN(conv3x3 h (act(BN(conv1x1 h (x))))))))),
                               h = round(b * bottle_ratio)
             (the 3x3 convs are Keras "same", dilated by the stage's rate)

**Split and concat.** The stage's channels are split in two: one half crosses the stage untouched and is
concatenated back after the blocks (the "partial" in CSP); backward hands the concat's gradient slices to the
two paths and :class:`~tinydeeplab.nn.Split` stacks them again (``dx = [dxs | dxb]``).

**Pyramid.** ``P{i + 2}`` is the output of stage ``i`` whatever the stem's stride: with ``stem_strides=1``
(CSPDarkNet-53) P2 is at 1/2 of the input, P3 at 1/4, ..., P6 at 1/32. KerasHub's DeepLabV3Backbone upsamples
its output by ``2**level // upsampling_size`` as if ``P{l}`` were at ``1/2**l``, so a DeepLabV3 on such an
encoder returns logits at *twice* the input size; :meth:`CSPNetBackbone.keras_output_scale` says by how much
and the segmenter reproduces it: the pascalvoc-shaped head (ASPP on P5 at 1/16, low level P2 at 1/2,
``upsampling_size`` 8) ends with an upsampling by ``2**5 // 8 = 4`` of a 1/2-resolution map. KerasHub's timm
converter gives CSPDarkNet-53 ``stem_padding="same"``; with the constructor's default ``"valid"`` a stride-1
stem drops a border of ``(k - 1) // 2`` pixels, so P2 is ``H/2 - 1`` for a multiple of 32 (then P3 ``H/4``) and
KerasHub's V3+ can take P3..P6 as its low-level key, not P2.

**Atrous** (``output_strides`` 16 or 8; KerasHub's argument, whose own code fails for values below 32:
``create_csp_stages`` overwrites its list of strides with an int): as timm does it, a stage whose stride
would take the total past ``output_strides`` keeps stride 1, multiplies the rate by the stride given up,
and its down conv gets rate ``1 if rate in (1, 2) else 2`` with a padding of that rate (size kept); the blocks
run at the rate. The dense map holds the strided one's outputs at the positions the stride kept.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..nn import Activation, Add, BatchNorm, Concatenate, Conv2D, LeakyReLU, Module, Sequential, Split, ZeroPadding2D
from ..nn import sum_gradients
from ..nn.layers import ACTIVATIONS
from .encoder import Encoder, EncoderStage, keras_layer

BN_EPSILON = 1e-5             # every CSPNet BatchNormalization (momentum: Keras's default 0.99)
LEAKY_SLOPE = 0.01            # KerasHub's LeakyReLU(negative_slope=0.01) for activation="leaky_relu"
STAGE_TYPES = ("csp", "cs3", "dark")
BLOCK_TYPES = ("dark_block", "edge_block", "bottleneck_block")
STAGE_PREFIX = {"csp": "csp", "cs3": "cs3", "dark": "dark"}
"""Stage type -> the prefix of its Keras layer names (``stage_0_csp_conv_down_1``)."""


def _act(activation):
    return LeakyReLU(LEAKY_SLOPE) if activation == "leaky_relu" else Activation(activation)


def conv_bn_act(c_in, filters, kernel_size, *, activation, strides=1, dilation=1, padding="valid", pad=0,
                act=True, seed=None):
    """``[ZeroPadding pad] -> Conv (no bias) -> BN (eps 1e-5) [-> act]``, children ``pad``, ``conv``, ``bn``, ``act``."""
    layers = [("pad", ZeroPadding2D(pad))] if pad else []
    layers += [("conv", Conv2D(c_in, filters, kernel_size, strides=strides, dilation_rate=dilation, padding=padding,
                               seed=seed)), ("bn", BatchNorm(filters, epsilon=BN_EPSILON))]
    if act:
        layers.append(("act", _act(activation)))
    return Sequential(*layers)


def _pad_arg(value, n):
    """KerasHub's ``_pad_arg``: a scalar or a list, cut or padded with its last value to ``n`` entries.

    >>> _pad_arg(2, 3), _pad_arg([0.5, 1.0], 4), _pad_arg([1, 2, 3], 2)
    ([2, 2, 2], [0.5, 1.0, 1.0, 1.0], [1, 2])
    """
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    if not value:
        raise ValueError("an empty list where one value per stage (or a scalar) was expected")
    return (value + [value[-1]] * (n - len(value)))[:n]


class CSPBlock(Module):
    """One residual block of ``block_type`` on ``channels`` channels (see the module docstring); children
    ``conv1``, ``conv2`` [, ``conv3``], ``add`` [, ``act``: bottleneck_block only, after the add]."""

    def __init__(self, channels, *, block_type, bottle_ratio, dilation, activation, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        hidden = int(round(channels * bottle_ratio))
        if hidden < 1:
            raise ValueError(f"bottle_ratio {bottle_ratio} leaves no channels in a block of {channels}")
        def same3(c_in, c_out):                           # Keras "same" 3x3 at the stage's rate
            return conv_bn_act(c_in, c_out, 3, dilation=dilation, padding="same", activation=activation, seed=seed_())

        def one(c_in, c_out, act=True):
            return conv_bn_act(c_in, c_out, 1, act=act, activation=activation, seed=seed_())
        self.block_type = block_type
        if block_type == "dark_block":
            self.conv1, self.conv2 = one(channels, hidden), same3(hidden, channels)
        elif block_type == "edge_block":
            self.conv1, self.conv2 = same3(channels, hidden), one(hidden, channels)
        else:
            self.conv1, self.conv2 = one(channels, hidden), same3(hidden, hidden)
            self.conv3 = one(hidden, channels, act=False)
        self.add = Add(inplace=True)                      # over the branch's fresh output
        if block_type == "bottleneck_block":
            self.act = _act(activation)

    def branch(self):
        return [m for name, m in self.children() if name.startswith("conv")]

    def forward(self, x, training=False):
        y = x
        for layer in self.branch():
            y = layer.forward(y, training)
        y = self.add.forward([y, x])
        return self.act.forward(y) if self.block_type == "bottleneck_block" else y

    def backward(self, dy):
        if self.block_type == "bottleneck_block":
            dy = self.act.backward(dy)
        d = dy
        for layer in reversed(self.branch()):
            d = layer.backward(d)                         # a fresh array: the branch's dx
        return sum_gradients(d, dy)                       # the add sent dy to the shortcut too

    def keras_layers(self):
        return [keras_layer(m) for conv in self.branch() for m in (conv.conv, conv.bn)]


class CSPStage(Module):
    """One stage of ``stage_type`` (see the module docstring); children ``down`` (when present), ``exp``,
    ``split``, ``block0..``, ``transition_b`` (csp), ``concat``, ``transition`` (csp, cs3)."""

    def __init__(self, c_in, filters, *, stage_type, block_type, depth, strides, dilation, first_dilation,
                 traded, block_ratio, bottle_ratio, expand_ratio, down_growth, cross_linear, activation, seed,
                 name="stage"):
        super().__init__()
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        self.stage_type, self.depth = stage_type, int(depth)
        block_channels = int(round(filters * block_ratio))
        # the down conv: Keras pads 1 before a strided one; a dilated one (tinydeeplab's atrous) pads its rate
        pad = 1 if strides > 1 else (first_dilation if (traded or dilation > 1) else 0)
        down_kw = dict(strides=strides, dilation=first_dilation, pad=pad, activation=activation)
        if stage_type == "dark":
            self.down = conv_bn_act(c_in, filters, 3, **down_kw, seed=seed_())
            c = filters
            if block_channels != c:
                raise ValueError(f"{name}: a dark stage's blocks need block_ratio 1 ({filters} x {block_ratio} "
                                 f"= {block_channels} channels, the residual adds need {c})")
        else:
            c = c_in
            if strides != 1 or first_dilation != dilation:
                c = filters if down_growth else c_in
                self.down = conv_bn_act(c_in, c, 3, **down_kw, seed=seed_())
            expand = int(round(filters * expand_ratio))
            if expand < 2 or expand % 2:
                raise ValueError(f"{name}: round(filters x expand_ratio) = {expand} must be even (split in two halves)")
            self.exp = conv_bn_act(c, expand, 1, act=not cross_linear, activation=activation, seed=seed_())
            self.split = Split(2)
            half = expand // 2
            if depth and block_channels != half:
                raise ValueError(f"{name}: blocks of round(filters x block_ratio) = {block_channels} channels on "
                                 f"a half of {half} channels (the residual adds need them equal)")
            c = half
        for i in range(self.depth):
            setattr(self, f"block{i}", CSPBlock(c, block_type=block_type, bottle_ratio=bottle_ratio,
                                                dilation=dilation, activation=activation, seed=seed_()))
        if stage_type == "csp":
            self.transition_b = conv_bn_act(half, half, 1, activation=activation, seed=seed_())
            self.concat = Concatenate()
            self.transition = conv_bn_act(2 * half, filters, 1, activation=activation, seed=seed_())
            self.out_channels = filters
        elif stage_type == "cs3":
            self.concat = Concatenate()
            self.transition = conv_bn_act(2 * half, half, 1, activation=activation, seed=seed_())
            self.out_channels = half
        else:
            self.out_channels = filters

    def blocks(self):
        return [getattr(self, f"block{i}") for i in range(self.depth)]

    def _run_blocks(self, x, training):
        for block in self.blocks():
            x = block.forward(x, training)
        return x

    def _back_blocks(self, d):
        for block in reversed(self.blocks()):
            d = block.backward(d)
        return d

    def forward(self, x, training=False):
        """``x`` (N, H, W, C_in) -> (N, H/s, W/s, out_channels)."""
        if "down" in dict(self.children()):
            x = self.down.forward(x, training)
        if self.stage_type == "dark":
            return self._run_blocks(x, training)
        a, b = self.split.forward(self.exp.forward(x, training))          # two (N, h, w, e/2)
        if self.stage_type == "csp":                                       # blocks on the second half
            b = self.transition_b.forward(self._run_blocks(b, training), training)
        else:                                                              # cs3: on the first
            a = self._run_blocks(a, training)
        return self.transition.forward(self.concat.forward([a, b]), training)

    def backward(self, dy):
        has_down = "down" in dict(self.children())
        if self.stage_type == "dark":
            d = self._back_blocks(dy)
        else:
            da, db = self.concat.backward(self.transition.backward(dy))   # slices of the concat's gradient
            if self.stage_type == "csp":
                db = self._back_blocks(self.transition_b.backward(db))
            else:
                da = self._back_blocks(da)
            d = self.exp.backward(self.split.backward([da, db]))          # [da | db]
        return self.down.backward(d) if has_down else d

    def keras_layers(self):
        """Data-flow order (the crossing half has no weighted layer): down, exp, blocks, transition_b, transition."""
        parts = dict(self.children())
        out = []
        for name in ("down", "exp"):
            if name in parts:
                out += [keras_layer(parts[name].conv), keras_layer(parts[name].bn)]
        for block in self.blocks():
            out += block.keras_layers()
        for name in ("transition_b", "transition"):
            if name in parts:
                out += [keras_layer(parts[name].conv), keras_layer(parts[name].bn)]
        return out


class CSPNetBackbone(Encoder):
    """CSPNet encoder returning ``{"P2": ..., "P{n+1}": ...}``, one level per stage (KerasHub ``CSPNetBackbone``
    arguments; see the module docstring).

    >>> enc = CSPNetBackbone(stem_filters=4, stem_kernel_size=3, stem_strides=1, stackwise_depth=[1, 1],
    ...                      stackwise_strides=2, stackwise_num_filters=[8, 8], block_type="dark_block",
    ...                      stage_type="csp", expand_ratio=[2.0, 1.0], block_ratio=[1.0, 0.5],
    ...                      bottle_ratio=[0.5, 1.0], down_growth=True, seed=0)
    >>> {k: v.shape for k, v in enc(np.zeros((1, 32, 32, 3), np.float32)).items()}
    {'P2': (1, 15, 15, 8), 'P3': (1, 8, 8, 8)}
    >>> enc.pyramid_strides, enc.keras_output_scale("P3")
    ({'P2': 2, 'P3': 4}, Fraction(2, 1))
    """

    keras_class_name = "CSPNetBackbone"
    keras_module = "keras_hub.src.models.cspnet.cspnet_backbone"

    def __init__(self, *, stem_filters, stem_kernel_size, stem_strides, stackwise_depth, stackwise_strides,
                 stackwise_num_filters, block_type, groups=1, stage_type=None, activation="leaky_relu",
                 output_strides=32, bottle_ratio=(1.0,), block_ratio=(1.0,), expand_ratio=(1.0,),
                 stem_padding="valid", stem_pooling=None, avg_down=False, down_growth=False, cross_linear=False,
                 in_channels=3, seed=None):
        super().__init__()
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"block_type must be one of {list(BLOCK_TYPES)}, got {block_type!r}")
        if stage_type not in STAGE_TYPES:
            raise ValueError(f"stage_type must be one of {list(STAGE_TYPES)} (KerasHub rejects None too), "
                             f"got {stage_type!r}")
        if activation != "leaky_relu" and activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} not supported (tinydeeplab supports {sorted(ACTIVATIONS)})")
        if groups != 1:
            raise ValueError(f"groups={groups}: grouped convolutions are not supported (CSPResNeXt); use groups=1")
        if stem_pooling is not None:
            raise ValueError(f"stem_pooling={stem_pooling!r} is not supported (only None)")
        if avg_down:
            raise ValueError("avg_down=True is not supported (only False)")
        if stem_padding not in ("valid", "same"):
            raise ValueError(f"stem_padding must be 'valid' or 'same', got {stem_padding!r}")
        if stem_strides not in (1, 2, 4):
            raise ValueError(f"stem_strides must be 1, 2 or 4, got {stem_strides!r}")
        if output_strides not in (8, 16, 32):
            raise ValueError(f"output_strides must be 8, 16 or 32, got {output_strides!r}")
        k = stem_kernel_size
        if isinstance(k, (list, tuple)):
            if len(k) != 2 or k[0] != k[1]:
                raise ValueError(f"stem_kernel_size must be an int or a square [k, k], got {k!r}")
            k = k[0]
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"stem_kernel_size must be a positive int, got {stem_kernel_size!r}")
        n = len(stackwise_depth)
        if n == 0 or len(stackwise_num_filters) < n:
            raise ValueError(f"stackwise_num_filters must have one value per stage ({n}), "
                             f"got {stackwise_num_filters!r}")
        strides = _pad_arg(stackwise_strides, n)
        ratios = {name: _pad_arg(v, n) for name, v in
                  (("bottle_ratio", bottle_ratio), ("block_ratio", block_ratio), ("expand_ratio", expand_ratio))}
        stem = list(stem_filters) if isinstance(stem_filters, (list, tuple)) else [stem_filters]
        self.config = dict(stem_filters=stem_filters, stem_kernel_size=stem_kernel_size, stem_strides=stem_strides,
                           stackwise_depth=list(stackwise_depth), stackwise_strides=stackwise_strides,
                           stackwise_num_filters=list(stackwise_num_filters), stage_type=stage_type,
                           block_type=block_type, output_strides=int(output_strides), groups=groups,
                           activation=activation, bottle_ratio=_listed(bottle_ratio),
                           block_ratio=_listed(block_ratio), expand_ratio=_listed(expand_ratio),
                           stem_padding=stem_padding, stem_pooling=stem_pooling, avg_down=bool(avg_down),
                           down_growth=bool(down_growth), cross_linear=bool(cross_linear))
        self.in_channels, self.output_stride = int(in_channels), int(output_strides)
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731

        units, c, stem_stride = [], self.in_channels, 1
        for i, chs in enumerate(stem):
            s = 2 if (i == 0 and stem_strides > 1) or (i == len(stem) - 1 and stem_strides > 2) else 1
            units.append((f"conv{i}", conv_bn_act(c, chs, k, strides=s, pad=(k - 1) // 2 if s > 1 else 0,
                                                  padding=stem_padding if i == 0 else "valid",
                                                  activation=activation, seed=seed_())))
            c, stem_stride = chs, stem_stride * s
        self.stem = Sequential(*units)

        net, dilation = stem_stride, 1
        self.pyramid_channels, self.pyramid_strides, self._keras_strides = {}, {}, {}
        keras_net = stem_stride
        for i in range(n):
            s, traded = int(strides[i]), False
            if net >= output_strides and s > 1:                 # atrous: trade the stride for dilation
                dilation, s, traded = dilation * s, 1, True
            net *= s
            keras_net *= int(strides[i])
            stage = CSPStage(c, int(stackwise_num_filters[i]), stage_type=stage_type, block_type=block_type,
                             depth=stackwise_depth[i], strides=s, dilation=dilation,
                             first_dilation=1 if dilation in (1, 2) else 2, traded=traded,
                             block_ratio=ratios["block_ratio"][i], bottle_ratio=ratios["bottle_ratio"][i],
                             expand_ratio=ratios["expand_ratio"][i], down_growth=down_growth,
                             cross_linear=cross_linear, activation=activation, seed=seed_(), name=f"stage_{i}")
            setattr(self, f"stage{i}", stage)
            c = stage.out_channels
            level = f"P{i + 2}"
            self.pyramid_channels[level], self.pyramid_strides[level] = c, net
            self._keras_strides[level] = keras_net
        self.num_stages = n

    def stages_list(self):
        return [getattr(self, f"stage{i}") for i in range(self.num_stages)]

    def forward(self, x, training=False):
        """``x`` (N, H, W, C) -> ``{"P2": (N, ~H/2, ~W/2, C2), ...}`` (CSPDarkNet-53's strides)."""
        x = self.stem.forward(x, training)
        out = {}
        for i, stage in enumerate(self.stages_list()):
            x = stage.forward(x, training)
            out[f"P{i + 2}"] = x
        return out

    def backward(self, d_pyramid):
        """Each level's gradient joins the one flowing down from the stages above it."""
        self.check_pyramid_gradients(d_pyramid)
        dx = None
        for i in reversed(range(self.num_stages)):
            g = d_pyramid.get(f"P{i + 2}")
            if g is not None:
                dx = g if dx is None else sum_gradients(dx, g)     # dx is a fresh backward output
            if dx is not None:
                dx = getattr(self, f"stage{i}").backward(dx)
        return self.stem.backward(dx)

    def keras_output_scale(self, key) -> Fraction:
        """KerasHub's DeepLabV3Backbone ends with an upsampling by ``2**level // upsampling_size``, as if ``P{l}``
        were at ``1/2**l``; ``P{l}`` of this encoder sits at ``1/_keras_strides[l]`` (without dilation), so the
        logits come out at ``2**l / stride`` times the input size: 2 for a stride-1 stem (CSPDarkNet-53)."""
        return Fraction(2 ** int(key[1:]), self._keras_strides[key])

    # -- the encoder protocol ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        """KerasHub's ``CSPNetBackbone.get_config()`` keys (``image_shape`` with the input channels,
        ``data_format`` channels_last)."""
        return {**self.config, "image_shape": [None, None, self.in_channels], "data_format": "channels_last"}

    @classmethod
    def from_config(cls, config: dict, *, output_stride=None, seed=None) -> "CSPNetBackbone":
        """KerasHub's config -> a CSPNetBackbone (``name``, ``dtype``, ``trainable`` ignored); ``output_stride``
        replaces the config's ``output_strides``.

        >>> cfg = CSPNetBackbone(stem_filters=4, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1],
        ...                      stackwise_strides=2, stackwise_num_filters=[8], block_type="bottleneck_block",
        ...                      stage_type="cs3", expand_ratio=2.0, seed=0).get_config()
        >>> CSPNetBackbone.from_config(cfg).get_config() == cfg
        True
        """
        required = ("stem_filters", "stem_kernel_size", "stem_strides", "stackwise_depth", "stackwise_strides",
                    "stackwise_num_filters", "block_type")
        missing = [k for k in required if k not in config]
        if missing:
            raise ValueError(f"image_encoder: missing keys {missing}")
        if config.get("data_format") not in (None, "channels_last"):
            raise ValueError(f"data_format {config['data_format']!r} is not supported (only channels_last)")
        kw = {k: config[k] for k in required}
        for key in ("groups", "stage_type", "activation", "output_strides", "bottle_ratio", "block_ratio",
                    "expand_ratio", "stem_padding", "stem_pooling", "avg_down", "down_growth", "cross_linear"):
            if key in config:
                kw[key] = config[key]
        if output_stride is not None:
            kw["output_strides"] = int(output_stride)
        shape = config.get("image_shape") or [None, None, 3]
        return cls(**kw, in_channels=int(shape[-1] or 3), seed=seed)

    def keras_weight_layers(self):
        """Data-flow order: the stem's convs, then every stage's (see :meth:`CSPStage.keras_layers`)."""
        layers = [keras_layer(m) for _, unit in self.stem.children() for m in (unit.conv, unit.bn)]
        for stage in self.stages_list():
            layers += stage.keras_layers()
        return layers

    def stages(self):
        """The stem and every stage (KerasHub's ``stage_{i}_csp_transition_activation`` ...), each a level."""
        act = self.config["activation"]
        act_name = f"LeakyReLU({LEAKY_SLOPE})" if act == "leaky_relu" else act
        n_stem = len(list(self.stem.children()))
        out = [EncoderStage("stem", f"stem: {n_stem} x (conv {self.config['stem_kernel_size']} -> BN -> {act_name})"
                            f", stride {self.config['stem_strides']}", f"csp_stem_activation_{n_stem - 1}")]
        kind = self.config["stage_type"]
        last = {"csp": "csp_transition_activation", "cs3": "cs3_activation_3"}
        for i, stage in enumerate(self.stages_list()):
            level = f"P{i + 2}"
            c = self.pyramid_channels[level]
            what = (f"stage{i} ({kind}, {stage.depth} x {self.config['block_type']}): "
                    + ("down 3x3 -> " if "down" in dict(stage.children()) else "")
                    + ("" if kind == "dark" else "1x1 expand -> split -> blocks -> concat -> 1x1 ")
                    + f"{c} = **{level}**")
            block = self.config["block_type"]
            keras_name = (f"stage_{i}_{last[kind]}" if kind in last else f"stage_{i}_block_{stage.depth - 1}_"
                          + (f"{block}_activation_4" if block == "bottleneck_block" else f"{block}_add"))
            out.append(EncoderStage(f"stage{i}", what, keras_name, level,
                                    (f"stage {i} → {level}", f"{c} channels, 1/{self.pyramid_strides[level]}")))
        return out


def _listed(value):
    """A ratio as KerasHub keeps it: a list (tuples become lists in config.json), a scalar stays a scalar."""
    return list(value) if isinstance(value, (list, tuple)) else value
