"""DenseNet image encoder with KerasHub's ``DenseNetBackbone`` arguments and pyramid outputs P2..P5.

Structure, as KerasHub builds it (Huang et al. 2017, DenseNet-BC)::

    stem        Conv 7x7 /2 "same" (64 filters, no bias) -> BN -> ReLU -> MaxPool 3x3 /2 "same"
    stack s     (s = 1 .. S) a dense block of ``stackwise_num_repeats[s-1]`` conv blocks; each one
      block b     h = Conv 3x3 "same" (g) (ReLU(BN(Conv 1x1 (4g) (ReLU(BN(x))))))     g = growth_rate
                  y = concat([x, h])                   (channels grow by g per block)
    P{s+1} = output of stack s
    transition s  (after every stack but the last)
                  BN -> ReLU -> Conv 1x1 (int(C * compression_ratio), no bias) -> AvgPool 2x2 /2 "valid"
    top         BN -> ReLU after the last stack (KerasHub's ``bn`` / ``relu``): no pyramid output uses it

Every BN has epsilon 1.001e-5 and Keras's default momentum 0.99; no convolution has a bias. With four
stacks the pyramid is P2 (1/4) .. P5 (1/32): the stem divides by 4 and every transition halves. The
"valid" 2x2 pools floor odd sides (a 7-wide map becomes 3).

**Atrous** (``output_stride`` 16 or 8, beyond KerasHub, as for ResNet): a transition whose pool would take
the total stride past ``output_stride`` pools 2x2 with stride 1, dilation ``r`` (the rate of the map it
reads, 1 at OS16) and padding ``(0, r)`` after, so it keeps the map's size; every 3x3 of the stacks after it
is dilated by the stride given up (``r * 2``; 2 at OS16, 2 and 4 at OS8). At inference the atrous network
with the same weights then holds the strided one's outputs on the grid the strides kept
(``P5_os16[:, ::2, ::2] == P5_os32``) whenever every map entering a de-strided pool has even sides
(inputs whose sides are multiples of 32, the only sizes KerasHub runs at). Not exact: on an odd side the
stride-1 pool also averages the last row or column alone, where the strided pool floored it away, and the
dilated 3x3 next to that border reads it; training-mode batch statistics are those of the denser map.
"""
from __future__ import annotations

import numpy as np

from ..nn import AveragePooling2D, BatchNorm, Concatenate, Conv2D, MaxPool2D, Module, ReLU, Sequential, sum_gradients
from .encoder import Encoder, EncoderStage, keras_layer
from .input_channels import check_in_channels

BN_EPSILON, BN_MOMENTUM = 1.001e-5, 0.99     # KerasHub's densenet BN_EPSILON; Keras's default momentum
STEM_FILTERS = 64                            # fixed in KerasHub's DenseNetBackbone


def _bn(channels):
    return BatchNorm(channels, epsilon=BN_EPSILON, momentum=BN_MOMENTUM)


def bn_relu_conv(c_in, filters, kernel, *, dilation=1, seed=None):
    """BN -> ReLU -> Conv (no bias, "same") as a Sequential named bn / relu / conv (DenseNet's pre-activation unit)."""
    return Sequential(("bn", _bn(c_in)), ("relu", ReLU(inplace=True)),       # over the BN's fresh output
                      ("conv", Conv2D(c_in, filters, kernel, dilation_rate=dilation, padding="same", seed=seed)))


class ConvBlock(Module):
    """One layer of a dense block: ``y = concat([x, conv2(conv1(x))])`` (KerasHub's ``{stack}_block{b}``).

    ``conv1`` = BN -> ReLU -> 1x1 (4g), ``conv2`` = BN -> ReLU -> 3x3 (g, ``dilation``). Backward: the concat
    splits ``dy`` into the part of ``x`` (which goes straight through) and that of the new features, whose
    gradient comes back through the two units; ``x`` gets the sum.
    """

    def __init__(self, c_in, growth_rate, *, dilation=1, rng):
        super().__init__()
        seed = lambda: int(rng.integers(2**31))  # noqa: E731
        self.conv1 = bn_relu_conv(c_in, 4 * growth_rate, 1, seed=seed())
        self.conv2 = bn_relu_conv(4 * growth_rate, growth_rate, 3, dilation=dilation, seed=seed())
        self.concat = Concatenate()
        self.out_channels = c_in + growth_rate

    def forward(self, x, training=False):
        h = self.conv2.forward(self.conv1.forward(x, training), training)   # (N, H, W, g)
        return self.concat.forward([x, h])                                  # (N, H, W, C + g)

    def backward(self, dy):
        dx_direct, dh = self.concat.backward(dy)
        dx = self.conv1.backward(self.conv2.backward(dh))                   # fresh
        return sum_gradients(dx, dx_direct)


class Transition(Sequential):
    """BN -> ReLU -> 1x1 conv (``int(C * compression_ratio)``) -> 2x2 average pool (/2 "valid"; atrous:
    /1, dilation ``pool_dilation``, padding ``(0, pool_dilation)``). Children bn / relu / conv / pool."""

    def __init__(self, c_in, compression_ratio, *, strided=True, pool_dilation=1, seed=None):
        c_out = int(c_in * compression_ratio)
        if c_out < 1:
            raise ValueError(f"compression_ratio {compression_ratio} leaves {c_out} channels of {c_in} in a transition")
        r = pool_dilation
        pool = (AveragePooling2D(2, 2, "valid") if strided else
                AveragePooling2D(2, 1, ((0, r), (0, r)), dilation_rate=r))
        super().__init__(("bn", _bn(c_in)), ("relu", ReLU(inplace=True)),
                         ("conv", Conv2D(c_in, c_out, 1, seed=seed)), ("pool", pool))
        self.out_channels = c_out


class DenseNetBackbone(Encoder):
    """DenseNet encoder returning ``{"P2": ..., "P5": ...}`` (KerasHub ``DenseNetBackbone`` arguments).

    >>> enc = DenseNetBackbone([1, 2], growth_rate=4, seed=0)
    >>> {k: v.shape for k, v in enc(np.zeros((1, 32, 32, 3), np.float32)).items()}
    {'P2': (1, 8, 8, 68), 'P3': (1, 4, 4, 42)}
    """

    keras_class_name = "DenseNetBackbone"
    keras_module = "keras_hub.src.models.densenet.densenet_backbone"

    def __init__(self, stackwise_num_repeats=(6, 12, 24, 16), *, compression_ratio=0.5, growth_rate=32,
                 in_channels=3, output_stride=None, seed=None):
        super().__init__()
        repeats = list(stackwise_num_repeats) if isinstance(stackwise_num_repeats, (list, tuple)) else None
        if not repeats or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in repeats):
            raise ValueError(f"stackwise_num_repeats must be a non-empty list of ints >= 1, got {stackwise_num_repeats!r}")
        if isinstance(growth_rate, bool) or not isinstance(growth_rate, (int, np.integer)) or growth_rate < 1:
            raise ValueError(f"growth_rate must be an int >= 1, got {growth_rate!r}")
        if not isinstance(compression_ratio, (int, float)) or not 0 < compression_ratio <= 1:
            raise ValueError(f"compression_ratio must be in (0, 1], got {compression_ratio!r}")
        if output_stride not in (None, 8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.config = dict(stackwise_num_repeats=[int(n) for n in repeats], compression_ratio=compression_ratio,
                           growth_rate=int(growth_rate))
        self.in_channels = check_in_channels(in_channels, "image_shape[-1]")
        self.output_stride = output_stride
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731

        self.stem = Sequential(("conv", Conv2D(self.in_channels, STEM_FILTERS, 7, strides=2, padding="same",
                                               seed=seed_())),
                               ("bn", _bn(STEM_FILTERS)), ("relu", ReLU(inplace=True)),
                               ("pool", MaxPool2D(3, 2, "same")))
        c, stride, rate = STEM_FILTERS, 4, 1
        self.pyramid_channels, self.pyramid_strides = {}, {}
        n = len(repeats)
        for s in range(n):
            blocks = []
            for b in range(repeats[s]):
                block = ConvBlock(c, self.config["growth_rate"], dilation=rate, rng=rng)
                blocks.append((f"block{b + 1}", block))
                c = block.out_channels
            setattr(self, f"stack{s + 1}", Sequential(*blocks))
            self.pyramid_channels[f"P{s + 2}"], self.pyramid_strides[f"P{s + 2}"] = c, stride
            if s < n - 1:
                strided = not (output_stride and stride * 2 > output_stride)
                trans = Transition(c, compression_ratio, strided=strided, pool_dilation=rate, seed=seed_())
                if strided:
                    stride *= 2
                else:
                    rate *= 2                    # atrous: the stride given up becomes dilation downstream
                setattr(self, f"transition{s + 1}", trans)
                c = trans.out_channels
        self.bn = _bn(c)                         # KerasHub's final BN (and ReLU): outside the pyramid

    @property
    def num_stacks(self) -> int:
        return len(self.config["stackwise_num_repeats"])

    def blocks(self, s):
        """The conv blocks of stack ``s`` (1-based, as KerasHub names them)."""
        return [m for _, m in getattr(self, f"stack{s}").children()]

    def forward(self, x, training=False):
        """``x`` (N, H, W, C) -> ``{"P2": (N, H/4, W/4, C2), ..., "P5": (N, H/32, W/32, C5)}`` (floors at odd sides)."""
        outputs = {}
        x = self.stem.forward(x, training)                                  # (N, H/4, W/4, 64)
        for s in range(1, self.num_stacks + 1):
            x = getattr(self, f"stack{s}").forward(x, training)
            outputs[f"P{s + 1}"] = x
            if s < self.num_stacks:
                x = getattr(self, f"transition{s}").forward(x, training)
        return outputs

    def backward(self, d_pyramid):
        """A stack's output gets the gradient coming back through the transition above it plus its level's own."""
        self.check_pyramid_gradients(d_pyramid)
        dx = None
        for s in reversed(range(1, self.num_stacks + 1)):
            if dx is not None:
                dx = getattr(self, f"transition{s}").backward(dx)
            g = d_pyramid.get(f"P{s + 1}")
            if g is not None:
                dx = g if dx is None else sum_gradients(dx, g)              # dx is a fresh backward output
            if dx is not None:
                dx = getattr(self, f"stack{s}").backward(dx)
        return self.stem.backward(dx)

    # -- the encoder protocol ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        """KerasHub's ``DenseNetBackbone.get_config()`` keys; an atrous encoder adds ``output_stride`` (a
        tinydeeplab extension, as for ResNet)."""
        atrous = {} if self.output_stride in (None, 32) else {"output_stride": int(self.output_stride)}
        return {**self.config, "image_shape": [None, None, self.in_channels], **atrous}

    @classmethod
    def from_config(cls, config: dict, *, output_stride=None, seed=None) -> "DenseNetBackbone":
        """KerasHub's config -> a DenseNetBackbone (``name``, ``dtype``, ... ignored).

        >>> cfg = DenseNetBackbone([1, 1], growth_rate=4).get_config()
        >>> DenseNetBackbone.from_config(cfg).get_config() == cfg
        True
        """
        if "stackwise_num_repeats" not in config:
            raise ValueError("image_encoder: missing keys ['stackwise_num_repeats']")
        shape = config.get("image_shape") or [None, None, 3]
        return cls(config["stackwise_num_repeats"], compression_ratio=config.get("compression_ratio", 0.5),
                   growth_rate=config.get("growth_rate", 32), in_channels=shape[-1] or 3, seed=seed,
                   output_stride=output_stride if output_stride is not None else config.get("output_stride"))

    def keras_weight_layers(self):
        """Data-flow order: stem conv, stem BN, then per conv block 1_bn, 1_conv, 2_bn, 2_conv and per
        transition bn, conv. Every weighted layer lies on the one chain (the concat's other input is the
        block's own input), so Keras's depth order is the order they run in."""
        layers = [keras_layer(self.stem.conv), keras_layer(self.stem.bn)]
        for s in range(1, self.num_stacks + 1):
            for block in self.blocks(s):
                layers += [keras_layer(m) for unit in (block.conv1, block.conv2) for m in (unit.bn, unit.conv)]
            if s < self.num_stacks:
                trans = getattr(self, f"transition{s}")
                layers += [keras_layer(trans.bn), keras_layer(trans.conv)]
        return layers

    def keras_unused_weight_layers(self):
        """KerasHub's final ``bn`` after the last stack, which no pyramid output uses."""
        return [keras_layer(self.bn)]

    def stages(self):
        """The stem (KerasHub's ``pool1``), every conv block (``stack{s}_block{b}_concat``; the last of stack
        ``s`` is ``P{s+1}``) and every transition (``transition{s}_pool``)."""
        g = self.config["growth_rate"]
        out = [EncoderStage("stem", "stem: 7x7/2 conv 64 (same) -> BN -> ReLU -> 3x3/2 max pool (same)", "pool1",
                            box=("stem", "7×7/2 conv 64, BN, ReLU; 3×3/2 max pool"))]
        for s in range(1, self.num_stacks + 1):
            blocks = self.blocks(s)
            rate = blocks[0].conv2.conv.dilation_rate[0]
            for b, block in enumerate(blocks, start=1):
                level = f"P{s + 1}" if b == len(blocks) else None
                what = (f"stack{s} block{b}: BN-ReLU-1x1 {4 * g} -> BN-ReLU-3x3 {g}" + (f" rate {rate}" if rate > 1 else "")
                        + f", concat -> {block.out_channels}" + (f" = **{level}**" if level else ""))
                how = f"{len(blocks)} conv blocks, growth {g} → {block.out_channels}" + (f", rate {rate}" if rate > 1 else "")
                out.append(EncoderStage(f"stack{s}.block{b}", what, f"stack{s}_block{b}_concat", level,
                                        (f"stack{s} → {level}", how) if level else None))
            if s < self.num_stacks:
                trans = getattr(self, f"transition{s}")
                pool = trans.pool
                kind = "2x2/2 avg pool" if pool.strides == 2 else f"2x2/1 avg pool (dilation {pool.dilation_rate[0]})"
                out.append(EncoderStage(f"transition{s}", f"transition{s}: BN -> ReLU -> 1x1 conv "
                                        f"{trans.out_channels} -> {kind}", f"transition{s}_pool"))
        return out
