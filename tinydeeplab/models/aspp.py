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
"""
from __future__ import annotations

import numpy as np

from ..nn import (BatchNorm, Concatenate, Conv2D, Dropout, GlobalAveragePooling2D, Module, ReLU, Resize,
                  Sequential, sum_gradients)


def conv_bn_relu(c_in, filters, kernel=1, dilation=1, *, seed=None):
    """Conv (no bias) -> BN (eps 1e-3, momentum 0.99) -> ReLU, Keras defaults."""
    return Sequential(("conv", Conv2D(c_in, filters, kernel, dilation_rate=dilation, seed=seed)),
                      ("bn", BatchNorm(filters)), ("relu", ReLU(inplace=True)))


class ASPP(Module):
    """``ASPP(in_channels, dilation_rates)``: (N, h, w, in_channels) -> (N, h, w, num_channels).

    >>> aspp = ASPP(8, [1, 2], num_channels=4, seed=0)
    >>> aspp(np.ones((2, 5, 6, 8), np.float32)).shape
    (2, 5, 6, 4)
    """

    def __init__(self, in_channels, dilation_rates, num_channels=256, dropout=0.0, seed=None):
        super().__init__()
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        self.dilation_rates = list(dilation_rates)
        self.branch0 = conv_bn_relu(in_channels, num_channels, 1, seed=seed_())
        for i, rate in enumerate(self.dilation_rates):
            setattr(self, f"branch{i + 1}", conv_bn_relu(in_channels, num_channels, 3, rate, seed=seed_()))
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
