"""Atrous Spatial Pyramid Pooling (ASPP), as KerasHub's ``SpatialPyramidPooling`` layer.

Five parallel branches look at the same feature map ``x`` (N, h, w, C) with growing context::

    branch 0   1x1 conv -> BN -> ReLU
    branch r   3x3 conv, dilation r, "same" -> BN -> ReLU        for r in dilation_rates
    pooling    global average -> 1x1 conv -> BN -> ReLU -> bilinear resize back to (h, w)
    output     concat(branches, pooling) -> 1x1 conv -> BN -> ReLU -> Dropout

All convolutions have no bias; BNs use Keras defaults (epsilon 1e-3, momentum 0.99).

A 3x3 tap at dilation r reads ``x[i + r*a, j + r*b]`` for a, b in {-1, 0, 1}: when r >= h and
r >= w only the centre tap ever lands inside the map, and the branch degenerates to a 1x1 conv
(the DeepLabV3 paper's reason for adding the image-pooling branch).

``separable=True`` (a tinydeeplab extension, no KerasHub preset has it) is the DeepLabV3+ paper's
*atrous separable convolution* (Chen et al. 2018, sec. 3.1): each 3x3 branch becomes::

    branch r   depthwise 3x3, dilation r, "same" -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU

which factors the ``9 C F`` weights of a 3x3 conv into ``9 C + C F`` (C = in_channels, F = num_channels).
The 1x1 branch, the pooling branch and the projection stay as they are (the depthwise conv
skips dead taps as the 3x3 conv does).
"""
from __future__ import annotations

import numpy as np

from ..nn import (BatchNorm, Concatenate, Conv2D, DepthwiseConv2D, Dropout, GlobalAveragePooling2D, Module, ReLU,
                  Resize, Sequential, sum_gradients)


def conv_bn_relu(c_in, filters, kernel=1, dilation=1, *, seed=None):
    """Conv (no bias) -> BN (eps 1e-3, momentum 0.99) -> ReLU, Keras defaults."""
    return Sequential(("conv", Conv2D(c_in, filters, kernel, dilation_rate=dilation, seed=seed)),
                      ("bn", BatchNorm(filters)), ("relu", ReLU(inplace=True)))


def separable_conv_bn_relu(c_in, filters, kernel=3, dilation=1, *, seed=None):
    """Atrous separable convolution (the DeepLabV3+ paper's, sec. 3.1): depthwise ``kernel`` x ``kernel``
    conv at ``dilation`` -> BN -> ReLU -> pointwise 1x1 conv to ``filters`` -> BN -> ReLU; no biases, Keras
    BN defaults. ``(N, h, w, c_in) -> (N, h, w, filters)``.

    >>> block = separable_conv_bn_relu(8, 4, 3, 2, seed=0)
    >>> [name for name, _ in block.children()]
    ['depthwise', 'depthwise_bn', 'depthwise_relu', 'pointwise', 'pointwise_bn', 'pointwise_relu']
    >>> block.num_parameters()                     # 3*3*8 + 2*8 (BN) + 8*4 + 2*4, against 3*3*8*4 + 2*4 = 296
    128
    """
    seed_dw, seed_pw = np.random.default_rng(seed).integers(2**31, size=2)
    return Sequential(("depthwise", DepthwiseConv2D(c_in, kernel, dilation_rate=dilation, seed=int(seed_dw))),
                      ("depthwise_bn", BatchNorm(c_in)), ("depthwise_relu", ReLU(inplace=True)),
                      ("pointwise", Conv2D(c_in, filters, 1, seed=int(seed_pw))),
                      ("pointwise_bn", BatchNorm(filters)), ("pointwise_relu", ReLU(inplace=True)))


class ASPP(Module):
    """``ASPP(in_channels, dilation_rates)``: (N, h, w, in_channels) -> (N, h, w, num_channels).

    >>> aspp = ASPP(8, [1, 2], num_channels=4, seed=0)
    >>> aspp(np.ones((2, 5, 6, 8), np.float32)).shape
    (2, 5, 6, 4)
    >>> sep = ASPP(8, [1, 2], num_channels=4, separable=True, seed=0)
    >>> sep(np.ones((2, 5, 6, 8), np.float32)).shape, sep.num_parameters() < aspp.num_parameters()
    ((2, 5, 6, 4), True)
    """

    def __init__(self, in_channels, dilation_rates, num_channels=256, dropout=0.0, seed=None, *, separable=False):
        super().__init__()
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        self.dilation_rates = list(dilation_rates)
        self.separable = bool(separable)
        atrous = separable_conv_bn_relu if self.separable else conv_bn_relu
        self.branch0 = conv_bn_relu(in_channels, num_channels, 1, seed=seed_())
        for i, rate in enumerate(self.dilation_rates):
            setattr(self, f"branch{i + 1}", atrous(in_channels, num_channels, 3, rate, seed=seed_()))
        self.pooling = Sequential(("gap", GlobalAveragePooling2D()),
                                  *conv_bn_relu(in_channels, num_channels, 1, seed=seed_()).children())
        self.pooling_resize = Resize()
        self.concat = Concatenate()
        n_in = (2 + len(self.dilation_rates)) * num_channels
        self.projection = Sequential(*conv_bn_relu(n_in, num_channels, 1, seed=seed_()).children(),
                                     ("dropout", Dropout(dropout, seed=seed_())))

    def branches(self):
        return [m for name, m in self.children() if name.startswith("branch")]

    def forward(self, x, training=False):
        h, w = x.shape[1:3]
        outs = [b.forward(x, training) for b in self.branches()]                  # each (N, h, w, F)
        pooled = self.pooling.forward(x, training)                                # (N, 1, 1, F)
        outs.append(self.pooling_resize.forward(pooled, size=(h, w)))            # (N, h, w, F)
        return self.projection.forward(self.concat.forward(outs), training)       # (N, h, w, F)

    def backward(self, dy):
        d_parts = self.concat.backward(self.projection.backward(dy))             # one slice per branch
        d_pooled = self.pooling.backward(self.pooling_resize.backward(d_parts[-1]))
        dx = d_pooled                                                             # every branch read x:
        for branch, d in zip(self.branches(), d_parts[:-1]):                      # their gradients add up
            dx = sum_gradients(branch.backward(d), dx)                            # over the branch's fresh dx
        return dx
