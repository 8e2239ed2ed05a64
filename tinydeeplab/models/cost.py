"""What a segmenter costs: parameters and multiply-adds per convolution and per part of the model.

A convolution with kernel (KH, KW, C_in, C_out) on an output of h x w pixels does, per image,

    MACs = h * w * KH * KW * C_in * C_out

multiply-adds, whatever its dilation and padding; a depthwise one with kernel (KH, KW, C, M) does
``h * w * KH * KW * C * M``: in both cases the output pixels times the kernel's size. Batch norm, ReLU,
resizes, pooling and adds do a few operations per value and are not counted (the usual convention: the
ResNet50 DeepLabV3+ of KerasHub is 26.8 G multiply-adds at 512 x 512 by this count).

``live`` multiply-adds count only the taps that read the map for some output pixel
(:func:`~tinydeeplab.functional.conv.conv2d_plan`): what tinydeeplab's ops compute, since they skip the
taps that land only in zero padding (an ASPP branch whose rate exceeds its map does 1/9 of its nominal
work). The shapes come from one forward pass of a zero image in inference mode.

Parts (:data:`PARTS`): the image encoder, the ASPP, the decoder (V3+ low-level projection and the head
after the concat; the head alone for V3) and the classifier.

>>> from tinydeeplab.models.recipes import build_model
>>> parts = part_costs(build_model("tiny", 4), (64, 64))
>>> aspp = parts["ASPP"]            # 64 -> 32 channels on the 4x4 map: 1x1, three 3x3, pooling 1x1, projection
>>> aspp.macs == 16 * (64 * 32 + 3 * 9 * 64 * 32 + 5 * 32 * 32) + 64 * 32, aspp.live_macs == aspp.macs
(True, True)
>>> parts["classifier"].macs == 16 * 16 * 32 * 4                              # 1x1 conv at 1/4 of 64 x 64
True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..functional.conv import conv2d_plan
from ..nn import Conv2D, DepthwiseConv2D, inference_mode
from ..nn.hooks import record_shapes

PARTS = {"encoder": ("backbone.image_encoder",), "ASPP": ("backbone.aspp",),
         "decoder": ("backbone.low_level_projection", "backbone.head"), "classifier": ("output_conv",)}
"""Part name -> the dotted module prefixes it covers (a segmenter's own names)."""


@dataclass(frozen=True)
class ConvCost:
    """One convolution at one input size."""

    name: str                          # dotted module name, e.g. backbone.aspp.branch1.depthwise
    depthwise: bool
    kernel: tuple[int, int, int, int]  # (KH, KW, C_in, C_out) or (KH, KW, C, M)
    in_shape: tuple[int, ...]          # (1, h, w, C) it reads
    out_shape: tuple[int, ...]         # (1, h', w', C') it writes
    live_taps: int                     # taps that read the map for some output pixel

    @property
    def macs(self) -> int:
        """Multiply-adds per image: output pixels x kernel size."""
        return int(np.prod(self.out_shape[1:3])) * int(np.prod(self.kernel))

    @property
    def live_macs(self) -> int:
        """Multiply-adds of the live taps only (what the ops compute)."""
        return self.macs * self.live_taps // (self.kernel[0] * self.kernel[1])


@dataclass(frozen=True)
class PartCost:
    params: int                        # trainable parameters (convolutions and batch-norm gamma / beta)
    macs: int
    live_macs: int


def conv_costs(model, size) -> list[ConvCost]:
    """A :class:`ConvCost` for every convolution (:class:`Conv2D`, :class:`DepthwiseConv2D`) of ``model``
    that runs on an input of ``size`` (H, W), in module order.

    >>> from tinydeeplab.models.recipes import build_model
    >>> c = {r.name: r for r in conv_costs(build_model("tiny", 4, separable=True), (64, 64))}
    >>> r = c["backbone.aspp.branch1.depthwise"]
    >>> r.kernel, r.out_shape, r.macs == 4 * 4 * 9 * 64
    ((3, 3, 64, 1), (1, 4, 4, 64), True)
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    convs = [(name, m) for name, m in model.modules() if isinstance(m, (Conv2D, DepthwiseConv2D))]
    with record_shapes(model, [name for name, _ in convs]) as seen, inference_mode():
        model.forward(np.zeros((1, h, w, 3), np.float32))
    out = []
    for name, conv in convs:
        if name not in seen:
            continue
        x_shape, y_shape = seen[name]
        kernel = tuple(int(s) for s in conv.params["kernel"].shape)
        plan = conv2d_plan(x_shape, kernel, conv.strides, conv.dilation_rate, conv.padding)
        out.append(ConvCost(name, isinstance(conv, DepthwiseConv2D), kernel, x_shape, y_shape, len(plan.taps)))
    return out


def _part(name: str) -> str | None:
    return next((part for part, prefixes in PARTS.items()
                 if any(name == p or name.startswith(p + ".") for p in prefixes)), None)


def part_costs(model, size) -> dict[str, PartCost]:
    """``{part: PartCost}`` for the parts of :data:`PARTS` (in that order) and ``"total"``."""
    params = dict.fromkeys(PARTS, 0)
    for name, p in model.named_parameters():
        part = _part(name)
        if part is not None:
            params[part] += int(p.size)
    macs, live = dict.fromkeys(PARTS, 0), dict.fromkeys(PARTS, 0)
    for c in conv_costs(model, size):
        part = _part(c.name)
        macs[part] += c.macs
        live[part] += c.live_macs
    out = {part: PartCost(params[part], macs[part], live[part]) for part in PARTS}
    out["total"] = PartCost(model.num_parameters(), sum(macs.values()), sum(live.values()))
    return out


def format_cost_table(model, size) -> str:
    """A text table of :func:`part_costs` (parameters, multiply-adds and live multiply-adds per part).

    >>> from tinydeeplab.models.recipes import build_model
    >>> print(format_cost_table(build_model("tiny", 4), (64, 64)).splitlines()[3])
      ASPP                    64,896        1,001,472        1,001,472
    """
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    lines = [f"cost at input {h}x{w}, per image (convolutions only; live: dead taps skipped, as the ops do):",
             f"  {'part':12s} {'parameters':>17s} {'multiply-adds':>16s} {'live mult-adds':>16s}"]
    for part, c in part_costs(model, (h, w)).items():
        lines.append(f"  {part:12s} {c.params:>17,d} {c.macs:>16,d} {c.live_macs:>16,d}")
    return "\n".join(lines)
