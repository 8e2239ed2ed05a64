"""ResNet image encoder with KerasHub's ``ResNetBackbone`` arguments and pyramid outputs P2..P5.

Structure of v1 (``use_pre_activation=False``, DeepLab's default), as KerasHub builds it::

    stem     ZeroPadding((k-1)//2) -> Conv k x k /2 "valid"  [-> BN -> ReLU -> Conv k' "same"]...
             -> BN -> ReLU -> ZeroPadding(1) -> MaxPool 3x3 /2 "valid"
    stack s, block b  (stride only in block 0; 1x1 conv + BN shortcut in block 0, except for
                       basic blocks in stack 0, which keep the identity)
      bottleneck   1x1 (f) -> BN -> ReLU -> 3x3 (f, stride) -> BN -> ReLU -> 1x1 (4f) -> BN
      basic        3x3 (f, stride) -> BN -> ReLU -> 3x3 (f) -> BN
      y = ReLU(residual(x) + shortcut(x))
    P{s+2} = output of stack s       (P2 at 1/4 of the input, ... P5 at 1/32)

A strided 3x3 is ``ZeroPadding(1)`` followed by a "valid" convolution. That is *not* Keras
"same" padding on even sizes ("same" would pad (0, 1)), which is why KerasHub does it.

v2 (``use_pre_activation=True``): every block starts with BN -> ReLU ("pre-activation") that feeds
both branches when the shortcut is a convolution; convolutions are followed by BN only inside the
block, the add has no ReLU, the stem has no BN/ReLU and pads with -inf before the max pool, and a
final ``post_bn`` (unused by DeepLab's pyramid outputs) closes the network.

Beyond KerasHub, ``output_stride`` 16 or 8 turns the stride of the last one or two stacks into
dilation (DeepLab's atrous backbone): such a stack keeps stride 1 and its 3x3 convolutions use
dilation 2 (and 4), so P4/P5 stay at 1/16 or 1/8 resolution. The first block of such a stack keeps
the rate of the stack before it in its (formerly strided) 3x3, as DeepLab and torchvision do: then the
atrous network with the same weights computes exactly the strided network's outputs at the positions
the stride kept (``P5_os16[:, ::2, ::2] == P5_os32`` at inference), only denser.
"""
from __future__ import annotations

import numpy as np

from ..nn import Add, BatchNorm, Conv2D, MaxPool2D, Module, ReLU, Sequential, ZeroPadding2D, sum_gradients
from .encoder import Encoder, EncoderStage, keras_layer
from .input_channels import check_in_channels

BN_EPS, BN_MOMENTUM = 1e-5, 0.9  # KerasHub ResNet batch-norm settings
BLOCK_TYPES = ("bottleneck_block", "basic_block")


def _bn(channels):
    return BatchNorm(channels, epsilon=BN_EPS, momentum=BN_MOMENTUM)


def conv_unit(c_in, filters, kernel, *, strides=1, dilation=1, bn=True, relu=True, seed=None):
    """[ZeroPadding] -> Conv (no bias) [-> BN] [-> ReLU] as a Sequential named pad / conv / bn / relu.

    A strided convolution is KerasHub's ``ZeroPadding((k-1)//2)`` + "valid"; stride 1 uses "same".
    """
    layers = []
    if strides > 1 and kernel > 1:
        layers.append(("pad", ZeroPadding2D((kernel - 1) // 2)))
    layers.append(("conv", Conv2D(c_in, filters, kernel, strides=strides, dilation_rate=dilation,
                                  padding="valid" if strides > 1 else "same", seed=seed)))
    if bn:
        layers.append(("bn", _bn(filters)))
    if relu:
        layers.append(("relu", ReLU(inplace=True)))             # over the BN's / conv's fresh output
    return Sequential(*layers)


class Block(Module):
    """One residual block: ``y = ReLU(residual(x) + shortcut(x))`` (v2: ``y = residual(p) + shortcut``
    with ``p = ReLU(BN(x))`` and no final ReLU).

    Backward: through the final ReLU, then the add *copies* the gradient to both branches, and the
    two input gradients are summed where the branches split.
    """

    def __init__(self, c_in, filters, *, strides, dilation, block_type, conv_shortcut, pre_activation, rng,
                 first_dilation=None):
        super().__init__()
        d0 = dilation if first_dilation is None else first_dilation   # the (formerly strided) first 3x3
        seed = lambda: int(rng.integers(2**31))  # noqa: E731
        post = not pre_activation  # v1: BN after every conv, ReLU after the add
        if pre_activation:
            self.preact = Sequential(("bn", _bn(c_in)), ("relu", ReLU(inplace=True)))
        if block_type == "bottleneck_block":
            c_out = 4 * filters
            self.conv1 = conv_unit(c_in, filters, 1, seed=seed())
            self.conv2 = conv_unit(filters, filters, 3, strides=strides, dilation=d0, seed=seed())
            self.conv3 = conv_unit(filters, c_out, 1, bn=post, relu=False, seed=seed())
        elif block_type == "basic_block":
            c_out = filters
            self.conv1 = conv_unit(c_in, filters, 3, strides=strides, dilation=d0, seed=seed())
            self.conv2 = conv_unit(filters, filters, 3, dilation=dilation, bn=post, relu=False, seed=seed())
        else:
            raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {block_type!r}")
        self.shortcut = (conv_unit(c_in, c_out, 1, strides=strides, bn=post, relu=False, seed=seed())
                         if conv_shortcut else None)
        self.add = Add(inplace=True)                                   # r + s, over r (fresh)
        self.out_relu = ReLU(inplace=True) if post else None           # over the add's fresh output
        self.pre_activation = pre_activation
        self.out_channels = c_out

    def residual_layers(self):
        return [m for name, m in self.children() if name.startswith("conv")]

    def forward(self, x, training=False):
        p = self.preact.forward(x, training) if self.pre_activation else x
        r = p
        for layer in self.residual_layers():
            r = layer.forward(r, training)                                   # (N, H', W', C_out)
        if self.shortcut is not None:
            s = self.shortcut.forward(p, training)                           # projection of p
        else:
            s = x                                                            # identity: always x itself
        y = self.add.forward([r, s])                                         # (N, H', W', C_out)
        return self.out_relu.forward(y) if self.out_relu is not None else y

    def backward(self, dy):
        d = self.out_relu.backward(dy) if self.out_relu is not None else dy
        d_residual, d_shortcut = self.add.backward(d)                        # the add hands d to both
        for layer in reversed(self.residual_layers()):
            d_residual = layer.backward(d_residual)                          # gradient w.r.t. p
        if self.shortcut is not None:
            d_p = sum_gradients(d_residual, self.shortcut.backward(d_shortcut))   # both read p
            return self.preact.backward(d_p) if self.pre_activation else d_p
        dx = self.preact.backward(d_residual) if self.pre_activation else d_residual
        return sum_gradients(dx, d_shortcut)                                 # dx is fresh; d_shortcut is not


class _NegInfPad(ZeroPadding2D):
    """v2 stem: pad by 1 with -inf so padded cells never win the following max pool.

    Implemented as a zero pad plus a -inf border; the gradient of the border is zero (the zero pad's
    backward, inherited).
    """

    pad_value = -np.inf

    def __init__(self):
        super().__init__(1)

    def forward(self, x, training=False):
        y = self._run("zero_pad2d", x, self.padding)
        y[:, 0, :, :] = y[:, -1, :, :] = -np.inf
        y[:, :, 0, :] = y[:, :, -1, :] = -np.inf
        return y


class ResNetBackbone(Encoder):
    """ResNet encoder returning ``{"P2": ..., "P5": ...}`` (KerasHub ``ResNetBackbone`` arguments).

    >>> enc = ResNetBackbone([64], [7], [64, 16], [1, 1], [1, 2], seed=0)
    >>> {k: v.shape for k, v in enc(np.zeros((1, 64, 64, 3), np.float32)).items()}
    {'P2': (1, 16, 16, 256), 'P3': (1, 8, 8, 64)}
    """

    keras_class_name = "ResNetBackbone"
    keras_module = "keras_hub.src.models.resnet.resnet_backbone"
    REQUIRED_CONFIG = ("stackwise_num_filters", "stackwise_num_blocks", "stackwise_num_strides")

    def __init__(self, input_conv_filters=(64,), input_conv_kernel_sizes=(7,),
                 stackwise_num_filters=(64, 128, 256, 512), stackwise_num_blocks=(3, 4, 6, 3),
                 stackwise_num_strides=(1, 2, 2, 2), block_type="bottleneck_block",
                 use_pre_activation=False, in_channels=3, output_stride=None, seed=None):
        super().__init__()
        n = len(stackwise_num_filters)
        if not (len(stackwise_num_blocks) == len(stackwise_num_strides) == n) or n == 0:
            raise ValueError("stackwise_num_filters, stackwise_num_blocks and stackwise_num_strides must be "
                             f"non-empty with equal lengths, got {n}, {len(stackwise_num_blocks)}, "
                             f"{len(stackwise_num_strides)}")
        if len(input_conv_filters) != len(input_conv_kernel_sizes) or not input_conv_filters:
            raise ValueError("input_conv_filters and input_conv_kernel_sizes must be non-empty with equal lengths")
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {block_type!r} "
                             "(the ResNet-vd blocks are not supported)")
        self.config = dict(input_conv_filters=list(input_conv_filters),
                           input_conv_kernel_sizes=list(input_conv_kernel_sizes),
                           stackwise_num_filters=list(stackwise_num_filters),
                           stackwise_num_blocks=list(stackwise_num_blocks),
                           stackwise_num_strides=list(stackwise_num_strides),
                           block_type=block_type, use_pre_activation=bool(use_pre_activation))
        self.output_stride, self.in_channels = output_stride, check_in_channels(in_channels, "image_shape[-1]")
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        strides, dilations = atrous_schedule(list(stackwise_num_strides), output_stride)

        # Stem: strided first conv, then stride-1 convs, each conv followed by BN -> ReLU (v1).
        stem, c = [], in_channels
        for i, (f, k) in enumerate(zip(input_conv_filters, input_conv_kernel_sizes)):
            last = i == len(input_conv_filters) - 1
            post = not (last and use_pre_activation)
            stem.append((f"conv{i + 1}", conv_unit(c, f, k, strides=2 if i == 0 else 1, bn=post, relu=post,
                                                   seed=seed_())))
            c = f
        stem.append(("pool_pad", _NegInfPad() if use_pre_activation else ZeroPadding2D(1)))
        stem.append(("pool", MaxPool2D(3, 2, "valid")))
        self.stem = Sequential(*stem)

        for s, (f, nb) in enumerate(zip(stackwise_num_filters, stackwise_num_blocks)):
            blocks = []
            first_shortcut = block_type != "basic_block" or s > 0
            previous = dilations[s - 1] if s else 1         # a stack that gave up its stride: its first 3x3
            for b in range(nb):                             # keeps the rate before it (exact "a trous")
                block = Block(c, f, strides=strides[s] if b == 0 else 1, dilation=dilations[s],
                              first_dilation=previous if b == 0 else None,
                              block_type=block_type, conv_shortcut=first_shortcut and b == 0,
                              pre_activation=use_pre_activation, rng=rng)
                blocks.append((f"block{b}", block))
                c = block.out_channels
            setattr(self, f"stack{s}", Sequential(*blocks))
        if use_pre_activation:
            self.post_bn = _bn(c)  # KerasHub keeps it after the last stack; not part of P2..P5
        self.pyramid_channels = {f"P{s + 2}": self.blocks(s)[-1].out_channels for s in range(n)}
        self.pyramid_strides = {f"P{s + 2}": 4 * int(np.prod(strides[:s + 1])) for s in range(n)}

    @property
    def num_stacks(self) -> int:
        return len(self.config["stackwise_num_filters"])

    def blocks(self, s):
        return [m for _, m in getattr(self, f"stack{s}").children()]

    def forward(self, x, training=False):
        """``x`` (N, H, W, C) -> ``{"P2": (N, H/4, W/4, C2), ..., "P5": (N, H/32, W/32, C5)}``."""
        outputs = {}
        x = self.stem.forward(x, training)
        for s in range(self.num_stacks):
            x = getattr(self, f"stack{s}").forward(x, training)
            outputs[f"P{s + 2}"] = x
        return outputs

    def backward(self, d_pyramid):
        """``d_pyramid``: gradients for some P levels; a stack gets the sum of what flows down from
        the stack above and the gradient of its own pyramid output."""
        dx = None
        for s in reversed(range(self.num_stacks)):
            g = d_pyramid.get(f"P{s + 2}")
            if g is not None:
                dx = g if dx is None else sum_gradients(dx, g)                        # over the stack's dx
            if dx is not None:
                dx = getattr(self, f"stack{s}").backward(dx)
        if dx is None:
            raise ValueError(f"backward needs a gradient for at least one of {list(self.pyramid_channels)}")
        return self.stem.backward(dx)

    # -- the encoder protocol: Keras config, weight order, named stages --------------------------------
    def get_config(self) -> dict:
        """KerasHub's config; an atrous encoder adds ``output_stride`` (a tinydeeplab extension, so that
        a preset or checkpoint rebuilds at the stride it was trained at; KerasHub-shaped encoders omit it)."""
        atrous = {} if self.output_stride in (None, 32) else {"output_stride": int(self.output_stride)}
        return {**self.config, "image_shape": [None, None, self.in_channels], **atrous}

    @classmethod
    def from_config(cls, config: dict, *, output_stride=None, seed=None) -> "ResNetBackbone":
        """KerasHub's ``ResNetBackbone`` config -> a ResNetBackbone (``name``, ``dtype``, ... ignored).
        ``output_stride`` defaults to the config's own (tinydeeplab extension), else KerasHub's 32.

        >>> cfg = ResNetBackbone([64], [7], [64, 16], [1, 1], [1, 2], seed=0).get_config()
        >>> ResNetBackbone.from_config(cfg).get_config() == cfg
        True
        """
        missing = [k for k in cls.REQUIRED_CONFIG if k not in config]
        if missing:
            raise ValueError(f"image_encoder: missing keys {missing}")
        image_shape = config.get("image_shape") or [None, None, 3]
        return cls(input_conv_filters=config.get("input_conv_filters", [64]),
                   input_conv_kernel_sizes=config.get("input_conv_kernel_sizes", [7]),
                   stackwise_num_filters=config["stackwise_num_filters"],
                   stackwise_num_blocks=config["stackwise_num_blocks"],
                   stackwise_num_strides=config["stackwise_num_strides"],
                   block_type=config.get("block_type", "bottleneck_block"),
                   use_pre_activation=config.get("use_pre_activation", False),
                   in_channels=image_shape[-1] or 3,
                   output_stride=output_stride if output_stride is not None else config.get("output_stride"),
                   seed=seed)

    def keras_weight_layers(self):
        """Conv2D and BatchNorm layers in Keras's order. Inside a functional graph Keras orders layers
        by decreasing depth, ties broken by a depth-first walk from the outputs that visits an ``Add``'s
        inputs as ``[shortcut, residual]``; for a block that puts the shortcut's conv (and BN) right
        before the *last* unit of the residual branch::

            v1 bottleneck:  1_conv 1_bn 2_conv 2_bn 0_conv 3_conv 0_bn 3_bn   -> conv order 1, 2, 0, 3
            v1 basic:       1_conv 1_bn 0_conv 2_conv 0_bn 2_bn               -> conv order 1, 0, 2
        """
        units = [unit for _, unit in self.stem.children() if hasattr(unit, "conv")]
        preacts = {}
        for s in range(self.num_stacks):
            for block in self.blocks(s):
                residual = block.residual_layers()
                if block.shortcut is not None:
                    residual = residual[:-1] + [block.shortcut, residual[-1]]
                if block.pre_activation:
                    preacts[id(residual[0])] = block.preact.bn
                units += residual
        layers = []
        for unit in units:
            if id(unit) in preacts:
                layers.append(keras_layer(preacts[id(unit)]))                # v2: the block's first BN
            layers += [keras_layer(m) for m in (unit.conv, getattr(unit, "bn", None)) if m is not None]
        return layers

    def stages(self):
        """The stem, then every block (KerasHub's ``stack{s}_block{b}_out``: the ReLU after the add in v1,
        the add itself in v2); the last block of stack ``s`` outputs ``P{s+2}``."""
        cfg = self.config
        k = cfg["input_conv_kernel_sizes"][0]
        out = [EncoderStage("stem.conv1", f"stem: {k}x{k}/2 conv (ZeroPadding {(k - 1) // 2} + valid) -> BN -> ReLU"),
               EncoderStage("stem", "stem: ZeroPadding 1 -> 3x3/2 max pool", "pool1_pool",
                            box=("stem", f"{k}×{k}/2 conv, BN, ReLU; 3×3/2 max pool"))]
        bottleneck = cfg["block_type"] == "bottleneck_block"
        for s in range(self.num_stacks):
            f, blocks = cfg["stackwise_num_filters"][s], self.blocks(s)
            first = lambda blk: blk.conv2.conv if bottleneck else blk.conv1.conv   # noqa: E731  the 3x3 that strides
            st, dil = first(blocks[0]).strides[0], first(blocks[-1]).dilation_rate[0]   # the stack's stride, rate
            for b, block in enumerate(blocks):
                rate = first(block).dilation_rate[0]
                rate2 = block.conv2.conv.dilation_rate[0] if not bottleneck else rate
                what = (f"bottleneck 1x1 {f} -> 3x3 {f}" if bottleneck else f"basic 3x3 {f}") + \
                    (f" /{st}" if b == 0 and st > 1 else "") + (f" rate {rate}" if rate > 1 else "") + \
                    (f" -> 1x1 {4 * f}" if bottleneck else f" -> 3x3 {f}" + (f" rate {rate2}" if rate2 > 1 else "")) + \
                    (", projection shortcut" if block.shortcut is not None else "")
                level = f"P{s + 2}" if b == len(blocks) - 1 else None
                how = (f"{len(blocks)} {'bottlenecks' if bottleneck else 'basic blocks'} "
                       f"{f}→{block.out_channels}" + (f", /{st}" if st > 1 else "") + (f", rate {dil}" if dil > 1 else ""))
                out.append(EncoderStage(f"stack{s}.block{b}", f"stack{s} block{b}: {what}" +
                                        (f" = **{level}**" if level else ""), f"stack{s}_block{b}_out", level,
                                        (f"stack{s} → {level}", how) if level else None))
        return out


def atrous_schedule(strides, output_stride):
    """Per-stack strides and dilations reaching ``output_stride`` (None keeps KerasHub's strides).

    The stem already divides by 4. A stack whose stride would push the total past
    ``output_stride`` keeps stride 1 and multiplies the dilation instead.

    >>> atrous_schedule([1, 2, 2, 2], 8)
    ([1, 2, 1, 1], [1, 1, 2, 4])
    """
    dilations = [1] * len(strides)
    if output_stride is None:
        return strides, dilations
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    total, dilation = 4, 1
    for s, st in enumerate(strides):
        if total * st > output_stride:
            dilation *= st
            strides[s] = 1
        else:
            total *= st
        dilations[s] = dilation
    return strides, dilations
