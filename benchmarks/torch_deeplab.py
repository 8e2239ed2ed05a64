"""The pascalvoc-shaped DeepLabV3+ written in plain PyTorch: the GPU benchmark's reference model.

Benchmark use only (``benchmarks/bench_gpu.py``); tinydeeplab never imports torch. The network is the
one ``tinydeeplab.models.recipes.build_model("resnet50", 21)`` builds, layer for layer, with the same
module names, so :func:`load_from_tinydeeplab` copies a tinydeeplab model's weights by name::

    tinydeeplab (NHWC activations)                 torch (NCHW activations)
    <conv>.kernel            (KH, KW, C_in, C_out)  <conv>.weight       (C_out, C_in, KH, KW)
    <bn>.gamma / .beta                              <bn>.weight / .bias
    <bn>.moving_mean / .moving_variance             <bn>.running_mean / .running_var

Equivalences the translation relies on (all exact):

- a strided k x k conv after ``ZeroPadding((k-1)//2)`` is ``Conv2d(padding=(k-1)//2)``; a stride-1
  "same" conv with odd k and dilation d pads ``d * (k-1) / 2`` on each side;
- the stem's ``ZeroPadding(1)`` + 3x3/2 max pool reads a ReLU output (>= 0), so zero padding and
  PyTorch's -inf padding pick the same maxima;
- Keras BN ``momentum`` m is PyTorch's ``1 - m`` (ResNet: eps 1e-5, momentum 0.9; DeepLab head: eps 1e-3,
  momentum 0.99);
- bilinear resizing with half-pixel centres is ``interpolate(mode="bilinear", align_corners=False)``
  (no antialiasing: every resize here upsamples);
- as in tinydeeplab, the 1x1 classifier runs at 1/4 resolution and its logits are upsampled (both
  linear, so this equals classifying the upsampled features).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def conv_unit(c_in, filters, kernel, *, stride=1, dilation=1, bn=True, relu=True, eps=1e-5, momentum=0.1):
    """Conv (no bias) [-> BN] [-> ReLU] named conv / bn / relu, like tinydeeplab's units."""
    layers = [("conv", nn.Conv2d(c_in, filters, kernel, stride=stride, padding=dilation * (kernel - 1) // 2,
                                 dilation=dilation, bias=False))]
    if bn:
        layers.append(("bn", nn.BatchNorm2d(filters, eps=eps, momentum=momentum)))
    if relu:
        layers.append(("relu", nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


def head_unit(c_in, filters, kernel=1, dilation=1):
    """DeepLab head conv -> BN (Keras defaults: eps 1e-3, momentum 0.99) -> ReLU."""
    return conv_unit(c_in, filters, kernel, dilation=dilation, eps=1e-3, momentum=0.01)


class Bottleneck(nn.Module):
    """``y = ReLU(conv3(conv2(conv1(x))) + shortcut(x))`` with 1x1 (f), 3x3 (f, stride), 1x1 (4f)."""

    def __init__(self, c_in, filters, stride, conv_shortcut):
        super().__init__()
        self.conv1 = conv_unit(c_in, filters, 1)
        self.conv2 = conv_unit(filters, filters, 3, stride=stride)
        self.conv3 = conv_unit(filters, 4 * filters, 1, relu=False)
        self.shortcut = conv_unit(c_in, 4 * filters, 1, stride=stride, relu=False) if conv_shortcut else None

    def forward(self, x):                                                 # (N, C, H, W)
        s = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + s, inplace=True)


class ResNet50Encoder(nn.Module):
    """KerasHub ResNet50 v1: stem 7x7/2 + max pool, stacks of 3-4-6-3 bottlenecks; returns P2 and P5."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict([("conv1", conv_unit(3, 64, 7, stride=2)),
                                               ("pool", nn.MaxPool2d(3, 2, padding=1))]))
        c = 64
        for s, (f, n, stride) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3], [1, 2, 2, 2])):
            blocks = []
            for b in range(n):
                blocks.append((f"block{b}", Bottleneck(c, f, stride if b == 0 else 1, conv_shortcut=b == 0)))
                c = 4 * f
            setattr(self, f"stack{s}", nn.Sequential(OrderedDict(blocks)))

    def forward(self, x):
        x = self.stem(x)
        p2 = self.stack0(x)                                               # (N, 256, H/4, W/4)
        return p2, self.stack3(self.stack2(self.stack1(p2)))              # P5: (N, 2048, H/32, W/32)


class ASPP(nn.Module):
    """1x1 branch, three 3x3 atrous branches (6, 12, 18), image pooling; concat -> 1x1 projection."""

    def __init__(self, c_in=2048, rates=(6, 12, 18), channels=256):
        super().__init__()
        self.branch0 = head_unit(c_in, channels)
        for i, r in enumerate(rates):
            setattr(self, f"branch{i + 1}", head_unit(c_in, channels, 3, r))
        self.n_branches = 1 + len(rates)
        self.pooling = head_unit(c_in, channels)
        self.projection = head_unit((2 + len(rates)) * channels, channels)

    def forward(self, x):                                                 # (N, C, h, w)
        outs = [getattr(self, f"branch{i}")(x) for i in range(self.n_branches)]
        pooled = self.pooling(x.mean(dim=(2, 3), keepdim=True))           # (N, 256, 1, 1)
        outs.append(pooled.expand(-1, -1, *x.shape[2:]))                  # bilinear from 1x1 = broadcast
        return self.projection(torch.cat(outs, dim=1))


class Backbone(nn.Module):
    def __init__(self, channels=256, projection_filters=48):
        super().__init__()
        self.image_encoder = ResNet50Encoder()
        self.aspp = ASPP(channels=channels)
        self.low_level_projection = head_unit(256, projection_filters)
        self.head = head_unit(channels + projection_filters, channels)

    def forward(self, x):
        p2, p5 = self.image_encoder(x)
        a = F.interpolate(self.aspp(p5), size=p2.shape[2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([a, self.low_level_projection(p2)], dim=1))   # (N, 256, H/4, W/4)


class DeepLabV3Plus(nn.Module):
    """``(N, 3, H, W)`` -> logits ``(N, num_classes, H, W)``."""

    def __init__(self, num_classes=21):
        super().__init__()
        self.backbone = Backbone()
        self.output_conv = nn.Conv2d(256, num_classes, 1, bias=False)

    def forward(self, x):
        z = self.output_conv(self.backbone(x))                            # classify at 1/4, then upsample
        return F.interpolate(z, size=x.shape[2:], mode="bilinear", align_corners=False)


TORCH_NAMES = {"kernel": "weight", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var"}


def torch_name(tdl_name: str) -> str:
    """``backbone.head.conv.kernel`` -> ``backbone.head.conv.weight`` (stem pads have no weights)."""
    stem, leaf = tdl_name.rsplit(".", 1)
    return f"{stem}.{TORCH_NAMES[leaf]}"


def to_torch_layout(tdl_name: str, value: np.ndarray) -> np.ndarray:
    """HWIO conv kernels become OIHW; vectors pass through."""
    return value.transpose(3, 2, 0, 1) if tdl_name.endswith(".kernel") else value


def load_from_tinydeeplab(net: DeepLabV3Plus, state: dict[str, np.ndarray]) -> None:
    """Copy a tinydeeplab ``state_dict`` into ``net``; every tensor of ``net`` must be covered."""
    target = net.state_dict()
    wanted = {k for k in target if not k.endswith("num_batches_tracked")}
    seen = set()
    for name, value in state.items():
        key = torch_name(name)
        if key not in target:
            raise KeyError(f"{name} -> {key}: no such tensor in the torch model")
        v = torch.from_numpy(np.ascontiguousarray(to_torch_layout(name, np.asarray(value))))
        if tuple(v.shape) != tuple(target[key].shape):
            raise ValueError(f"{name}: shape {tuple(v.shape)} vs torch {tuple(target[key].shape)}")
        target[key].copy_(v)
        seen.add(key)
    missing = wanted - seen
    if missing:
        raise KeyError(f"torch tensors not covered by the tinydeeplab state: {sorted(missing)[:5]} ...")


def gradients_as_tinydeeplab(net: DeepLabV3Plus, names) -> dict[str, np.ndarray]:
    """The ``.grad`` of each torch parameter, keyed and laid out like tinydeeplab's gradients."""
    params = dict(net.named_parameters())
    out = {}
    for name in names:
        g = params[torch_name(name)].grad.detach().cpu().numpy()
        out[name] = g.transpose(2, 3, 1, 0) if name.endswith(".kernel") else g   # OIHW -> HWIO
    return out


def make_step(net: DeepLabV3Plus, x: np.ndarray, y: np.ndarray, kind: str, *, device: str = "cpu",
              channels_last: bool = False, lr: float = 0.01, momentum: float = 0.9, ignore_index: int = 255):
    """A zero-argument callable running one benchmark call of ``net`` on ``device``, from NHWC ``x``
    (N, H, W, 3) float32 and labels ``y`` (N, H, W):

    - ``kind="infer"``: eval mode, ``inference_mode``, the input already on the device (NCHW, or NHWC
      memory under ``channels_last``); returns the logits (N, K, H, W) tensor, left on the device;
    - ``kind="train"``: the images and labels copied to the device (as a training loop does), forward in
      training mode, mean softmax cross-entropy over the pixels not labelled ``ignore_index``, backward,
      SGD with ``momentum``; returns the loss (a float).
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt)
    x_host = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).contiguous(memory_format=fmt)
    y_host = torch.from_numpy(y.astype(np.int64))
    expected = (x.shape[0], net.output_conv.out_channels, *x.shape[1:3])
    if kind == "infer":
        xd = x_host.to(device)
        net.eval()

        def infer():
            with torch.inference_mode():
                out = net(xd)                                             # (N, K, H, W)
            assert tuple(out.shape) == expected, tuple(out.shape)
            return out
        return infer

    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def train():
        xd, yd = x_host.to(device), y_host.to(device)
        loss = F.cross_entropy(net(xd), yd, ignore_index=ignore_index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        assert value == value, "loss is NaN"
        return value
    return train
