"""Dead taps of atrous convolutions: which taps of a dilated kernel ever read the feature map.

A k x k convolution with dilation ``d``, stride 1 and "same" padding reads, for output pixel ``i``,
the inputs ``x[i + d (a - c)]`` for taps ``a = 0 .. k-1`` (``c = (k-1) // 2``, the centre). Output
positions cover the whole map ``0 <= i < h``, so tap ``a`` reads a real pixel for some output iff

    |d (a - c)| < h            (per axis; a 2-D tap is live iff it is live along both axes)

A 3x3 conv therefore has ``(1 + 2 [d < h]) (1 + 2 [d < w])`` live taps of 9: with ``d >= h`` and
``d >= w`` only the centre is live, the branch is a 1x1 convolution and the 8 outer taps never receive
a gradient. Training at one size and evaluating at a larger one can switch on taps that were never
trained (CamVid: rate 12 on an 8x11 training map, 12x15 at test time).

:func:`atrous_convs` lists every dilated convolution of a model (the ASPP branches, the dilated encoder
convolutions) with its rate, the map it sees for an input of size (H, W) and its live taps;
:func:`aspp_warning` is the one-line check ``tinydeeplab train`` prints at start.

>>> live_taps(18, 8), live_taps(6, 8)         # along one axis: rate 18 on a side of 8 keeps the centre only
(1, 3)
>>> live_tap_fraction(12, (8, 11))             # 12 >= 8 and 12 >= 11: a 1x1 conv
0.1111111111111111
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..nn import Conv2D, DepthwiseConv2D, inference_mode
from ..nn.hooks import record_shapes
from .aspp import ASPP


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def live_taps(rate: int, side: int, kernel: int = 3) -> int:
    """Live taps along one axis of a ``kernel``-tap conv with dilation ``rate`` ("same", stride 1) on
    a map of ``side`` pixels: the taps ``a`` with ``|rate (a - c)| < side``."""
    c = (kernel - 1) // 2
    return sum(abs(rate * (a - c)) < side for a in range(kernel))


def live_tap_fraction(rate, size, kernel=3) -> float:
    """Fraction of the ``kernel`` x ``kernel`` taps that read the map of ``size`` (h, w) for some output."""
    (dh, dw), (h, w), (kh, kw) = _pair(rate), _pair(size), _pair(kernel)
    return live_taps(dh, h, kh) * live_taps(dw, w, kw) / (kh * kw)


@dataclass(frozen=True)
class AtrousConv:
    """One dilated convolution of a model at one input size."""

    name: str                    # dotted module name, e.g. backbone.aspp.branch2.conv
    rate: tuple[int, int]        # dilation (dh, dw)
    kernel: tuple[int, int]      # (kh, kw)
    map_size: tuple[int, int]    # the (h, w) of the map it reads
    aspp: bool                   # an ASPP branch (vs a dilated encoder conv)

    @property
    def live(self) -> int:
        """Live taps of ``kh * kw``."""
        return live_taps(self.rate[0], self.map_size[0], self.kernel[0]) * \
            live_taps(self.rate[1], self.map_size[1], self.kernel[1])

    @property
    def fraction(self) -> float:
        return self.live / (self.kernel[0] * self.kernel[1])

    @property
    def degenerate(self) -> bool:
        """Only the centre tap is live: the conv acts as a 1x1 convolution."""
        return self.live == 1 < self.kernel[0] * self.kernel[1]


def atrous_convs(model, size) -> list[AtrousConv]:
    """Every convolution of ``model`` with dilation > 1 or inside an ASPP branch, for an input of
    ``size`` (H, W), in forward order.

    The map sizes come from one forward pass of a zero image (1, H, W, C) in inference mode, each
    convolution recording the shape of what it reads.

    >>> from tinydeeplab.models.recipes import build_model
    >>> for c in atrous_convs(build_model("small", 4, output_stride=8), (96, 96)):
    ...     print(c.name, c.rate[0], c.map_size, c.live, c.aspp)
    backbone.image_encoder.stack3.block0.conv2.conv 2 (12, 12) 9 False
    backbone.aspp.branch1.conv 1 (12, 12) 9 True
    backbone.aspp.branch2.conv 2 (12, 12) 9 True
    backbone.aspp.branch3.conv 3 (12, 12) 9 True

    (At OS8 the last stack's block keeps rate 2, the rate of the stack before it, which gave up its stride
    too; at the recipe's OS16 no encoder conv is dilated: the one block of the last stack keeps rate 1.)
    A separable ASPP branch (``separable=True``) is listed by its depthwise conv, which holds its taps:

    >>> for c in atrous_convs(build_model("small", 4, separable=True), (48, 48)):
    ...     print(c.name, c.rate[0], c.map_size, c.live)
    backbone.aspp.branch1.depthwise 1 (3, 3) 9
    backbone.aspp.branch2.depthwise 2 (3, 3) 9
    backbone.aspp.branch3.depthwise 3 (3, 3) 1
    """
    h, w = _pair(size)
    spatial = (Conv2D, DepthwiseConv2D)                  # a separable branch's spatial conv is its depthwise one
    aspp_names = {f"{name}.{child}.{sub}" for name, module in model.modules() if isinstance(module, ASPP)
                  for child, branch in module.children() if child.startswith("branch")
                  for sub, conv in branch.children()
                  if isinstance(conv, spatial) and conv.params["kernel"].shape[0] > 1}       # not the 1x1s
    convs = [(name, m) for name, m in model.modules()
             if isinstance(m, spatial) and (max(m.dilation_rate) > 1 or name in aspp_names)]
    with record_shapes(model, [name for name, _ in convs]) as seen, inference_mode():
        model.forward(np.zeros((1, h, w, model.in_channels), np.float32))
    return [AtrousConv(name, _pair(conv.dilation_rate), tuple(conv.params["kernel"].shape[:2]), seen[name][0][1:3],
                       name in aspp_names) for name, conv in convs if name in seen]


def format_atrous_table(rows: list[AtrousConv], size) -> str:
    """A text table of :func:`atrous_convs`'s rows (one line per convolution)."""
    h, w = _pair(size)
    if not rows:
        return f"no atrous convolutions (input {h}x{w})"
    lines = [f"atrous convolutions at input {h}x{w} (a tap is live when it reads the map for some output pixel):",
             f"  {'convolution':50s} {'rate':>5s} {'map':>9s} {'live taps':>10s}"]
    for r in rows:
        rate = str(r.rate[0]) if r.rate[0] == r.rate[1] else f"{r.rate[0]}x{r.rate[1]}"
        flag = "  <- a 1x1 conv" if r.degenerate else ""
        lines.append(f"  {r.name:50s} {rate:>5s} {r.map_size[0]:>4d}x{r.map_size[1]:<4d} "
                     f"{r.live:>2d}/{r.kernel[0] * r.kernel[1]} {r.fraction:4.0%}{flag}")
    return "\n".join(lines)


def aspp_warning(model, train_size, eval_size=None) -> str | None:
    """One line naming every ASPP branch that is a 1x1 conv at ``train_size`` (H, W), or whose live
    taps differ between ``train_size`` and ``eval_size``, with a rate that keeps all its taps live at
    both; None when every branch is fine.

    >>> from tinydeeplab.models.recipes import build_model
    >>> aspp_warning(build_model("small", 4), (96, 96), (128, 128)) is None
    True
    >>> print(aspp_warning(build_model("small", 4, atrous_rates=[1, 2, 6]), (96, 96)))
    ASPP: backbone.aspp.branch3 (rate 6) is a 1x1 conv at the 96x96 training crop (6x6 map); use a rate below 6, e.g. 5
    """
    train = [c for c in atrous_convs(model, train_size) if c.aspp]
    evals = {c.name: c for c in atrous_convs(model, eval_size) if c.aspp} if eval_size is not None else {}
    problems = []
    for c in train:
        e = evals.get(c.name)
        if not (c.degenerate or (e is not None and e.live != c.live)):
            continue
        sides = c.map_size + (e.map_size if e is not None else ())
        good = max(1, min(sides) - 1)                  # every tap live on every map seen
        branch = c.name.rsplit(".", 1)[0]
        rate = c.rate[0] if c.rate[0] == c.rate[1] else f"{c.rate[0]}x{c.rate[1]}"
        where = f"the {_size(train_size)} training crop ({_size(c.map_size)} map)"
        if c.degenerate:
            what = f"is a 1x1 conv at {where}"
        else:
            what = f"has {c.live}/9 live taps at {where}"
        if e is not None and e.live != c.live:
            what += f" but {e.live}/9 at the {_size(eval_size)} evaluation size ({_size(e.map_size)} map)"
        problems.append(f"{branch} (rate {rate}) {what}; use a rate below {good + 1}, e.g. {good}")
    return "ASPP: " + "; ".join(problems) if problems else None


def _size(s) -> str:
    h, w = _pair(s)
    return f"{h}x{w}"
