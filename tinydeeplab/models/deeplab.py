"""DeepLabV3 / DeepLabV3+ backbone and the image segmenter, as KerasHub splits them.

Data flow (``key`` = ``spatial_pyramid_pooling_key``, ``low`` = ``low_level_feature_key``)::

    x (N, H, W, 3) -> image_encoder -> {P2, ..., P5}
    a = ASPP(P[key])                                          (N, H/2^k, W/2^k, 256)
    e = bilinear upsample a by upsampling_size                 (to P[low]'s size for V3+)
    V3+ only:  l = ReLU(BN(1x1 conv(P[low])))  (projection_filters channels)
               e = concat([e, l])
    f = ReLU(BN(1x1 conv 256 (e)))                             "segmentation head": the backbone's output
    segmenter: logits = 1x1 conv num_classes (no bias) of f, bilinear upsampled by 2^k / upsampling_size
               to (N, H, W, num_classes)  [-> activation]

KerasHub's DeepLabV3Backbone ends with that last upsampling (of f, before the classifier); here the
segmenter owns it, so that it can classify first (below), and the backbone returns f at 1/4 (V3+).

``separable=True`` (a tinydeeplab extension: KerasHub has no such option, so no KerasHub preset holds it)
is the DeepLabV3+ paper's head (Chen et al. 2018, sec. 3.1-3.2, the choice of its Table 2 and of its
reference code): the ASPP's 3x3 branches become atrous separable convolutions (:mod:`.aspp`), and for V3+
the 1x1 head conv becomes the paper's decoder, two separable 3x3 convs::

    f = sep3x3(sep3x3(e))     sep3x3 = depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 (num_channels) -> BN -> ReLU

(without a low-level key there is no decoder, and the head stays KerasHub's 1x1 conv).

KerasHub only runs when H and W are multiples of 2^k (else the concat shapes disagree); here the
upsamplings are resizes to the exact target size (the low-level map's, then the input's), which are
the same operation whenever Keras runs and extend the model to any input size.

The classifier and the last bilinear upsampling are both linear maps acting on different axes
(channels vs. space), so they commute: the segmenter classifies the 1/4-resolution features and
upsamples ``num_classes`` channels instead of 256 (``classify_before_upsample=True``; exact).
"""
from __future__ import annotations

import numpy as np

from ..backend import is_device_array, to_device, to_host
from ..nn import BatchNorm, Concatenate, Conv2D, Module, ReLU, Resize, Sequential, inference_mode, sum_gradients
from .aspp import ASPP, conv_bn_relu, separable_conv_bn_relu
from .head import predicted_labels
from .preprocessor import ImageConverter, resize

ACTIVATIONS = (None, "linear", "softmax", "sigmoid")


def _level(key: str) -> int:
    if not (isinstance(key, str) and len(key) == 2 and key[0] == "P" and key[1].isdigit()):
        raise ValueError(f'pyramid keys look like "P2".."P5", got {key!r}')
    return int(key[1])


class DeepLabV3Backbone(Module):
    """ASPP on one pyramid level, optional V3+ low-level decoder, segmentation head.

    ``image_encoder`` is any :class:`~tinydeeplab.models.encoder.Encoder`. The output is the head's
    features (N, h', w', num_channels), at the low-level map's size for V3+ (1/4 of the input) and at
    ``upsampling_size`` times the ASPP map's otherwise.

    >>> from tinydeeplab.models import ResNetBackbone
    >>> enc = ResNetBackbone([64], [7], [64, 8, 8, 8], [1, 1, 1, 1], [1, 2, 2, 2], seed=0)
    >>> net = DeepLabV3Backbone(enc, "P5", 8, [1, 2], low_level_feature_key="P2", projection_filters=8,
    ...                         num_channels=16, seed=0)
    >>> net(np.zeros((1, 64, 64, 3), np.float32)).shape
    (1, 16, 16, 16)
    >>> sep = DeepLabV3Backbone(enc, "P5", 8, [1, 2], low_level_feature_key="P2", projection_filters=8,
    ...                         num_channels=16, separable=True, seed=0)
    >>> [name for name, _ in sep.head.children()], sep(np.zeros((1, 64, 64, 3), np.float32)).shape
    (['conv0', 'conv1'], (1, 16, 16, 16))
    """

    def __init__(self, image_encoder, spatial_pyramid_pooling_key, upsampling_size, dilation_rates,
                 low_level_feature_key=None, projection_filters=48, *, num_channels=256, separable=False, seed=None):
        super().__init__()
        rng = np.random.default_rng(seed)
        seed_ = lambda: int(rng.integers(2**31))  # noqa: E731
        channels = image_encoder.pyramid_channels
        for key in (spatial_pyramid_pooling_key, low_level_feature_key):
            if key is not None and key not in channels:
                raise ValueError(f"pyramid key {key!r} is not an output of the image encoder "
                                 f"(it has {sorted(channels)})")
        self.level = _level(spatial_pyramid_pooling_key)
        up = upsampling_size if isinstance(upsampling_size, int) else int(upsampling_size[0])
        if up < 1 or 2 ** self.level % up:
            raise ValueError(f"upsampling_size must divide 2**{self.level}, got {upsampling_size!r}")
        self.config = dict(spatial_pyramid_pooling_key=spatial_pyramid_pooling_key, upsampling_size=up,
                           dilation_rates=list(dilation_rates), low_level_feature_key=low_level_feature_key,
                           projection_filters=projection_filters, separable=bool(separable))
        self.image_encoder = image_encoder
        # KerasHub's final upsampling 2**level // upsampling_size assumes P{level} at 1/2**level: an encoder
        # whose levels sit elsewhere (CSPNet's P2 at 1/2) makes logits at output_scale x the input size
        self.output_scale = image_encoder.keras_output_scale(spatial_pyramid_pooling_key)
        self.aspp = ASPP(channels[spatial_pyramid_pooling_key], dilation_rates, num_channels, seed=seed_(),
                         separable=separable)
        self.encoder_upsample = Resize()
        head_in = num_channels
        if low_level_feature_key is not None:
            self.low_level_projection = conv_bn_relu(channels[low_level_feature_key], projection_filters, 1,
                                                     seed=seed_())
            self.concat = Concatenate()
            head_in += projection_filters
        # KerasHub fixes both ASPP and head widths at 256; ``num_channels`` shrinks them for small models
        if separable and low_level_feature_key is not None:          # the paper's decoder: two separable 3x3
            self.head = Sequential(("conv0", separable_conv_bn_relu(head_in, num_channels, 3, seed=seed_())),
                                   ("conv1", separable_conv_bn_relu(num_channels, num_channels, 3, seed=seed_())))
        else:
            self.head = Sequential(("conv", Conv2D(head_in, num_channels, 1, seed=seed_())),
                                   ("bn", BatchNorm(num_channels)), ("relu", ReLU(inplace=True)))
        self.out_channels = num_channels

    @property
    def low_key(self):
        return self.config["low_level_feature_key"]

    def forward(self, x, training=False):
        """``x`` (N, H, W, 3) -> the head's features (N, H/4, W/4, num_channels) for V3+."""
        pyramid = self.image_encoder.forward(x, training)
        a = self.aspp.forward(pyramid[self.config["spatial_pyramid_pooling_key"]], training)  # (N, h, w, 256)
        if self.low_key is not None:
            low = pyramid[self.low_key]                                              # (N, H/4, W/4, C2)
            e = self.encoder_upsample.forward(a, size=low.shape[1:3])
            e = self.concat.forward([e, self.low_level_projection.forward(low, training)])
        else:
            up = self.config["upsampling_size"]
            e = self.encoder_upsample.forward(a, size=(a.shape[1] * up, a.shape[2] * up))
        return self.head.forward(e, training)                                        # (N, h', w', 256)

    def backward(self, dy):
        d = self.head.backward(dy)
        d_pyramid = {}
        if self.low_key is not None:
            d, d_low = self.concat.backward(d)                                       # split the concat
            d_pyramid[self.low_key] = self.low_level_projection.backward(d_low)
        d_a = self.encoder_upsample.backward(d)
        key = self.config["spatial_pyramid_pooling_key"]
        d_key = self.aspp.backward(d_a)
        d_pyramid[key] = sum_gradients(d_key, d_pyramid[key]) if key in d_pyramid else d_key  # over fresh d_key
        return self.image_encoder.backward(d_pyramid)


class DeepLabV3ImageSegmenter(Module):
    """Backbone + 1x1 classifier (no bias): ``forward`` returns logits (N, H, W, num_classes).

    ``predict`` applies the preset's ``activation`` (None / "softmax" / "sigmoid") like Keras's
    ``predict``; ``forward`` / ``backward`` always work on the logits, which the loss takes.
    """

    def __init__(self, backbone: DeepLabV3Backbone, num_classes: int, activation=None, *,
                 classify_before_upsample: bool = True, seed=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.backbone = backbone
        self.output_conv = Conv2D(backbone.out_channels, num_classes, 1, seed=seed)
        self.output_upsample = Resize()                                    # to the input's size
        self.num_classes, self.activation = num_classes, activation
        self.classify_before_upsample = classify_before_upsample
        self.preprocessor = ImageConverter()  # identity; presets bring their own

    @property
    def in_channels(self) -> int:
        """Channels of the images the model reads (3 for RGB)."""
        return self.backbone.image_encoder.in_channels

    def input_kernel_name(self) -> str:
        """The parameter name of the kernel that reads the image (``...stem.conv1.conv.kernel`` for ResNet)."""
        conv = self.backbone.image_encoder.input_conv()
        return next(f"{name}.kernel" for name, module in self.modules() if module is conv)

    def forward(self, x, training=False):
        """``x`` (N, H, W, C) model-ready float32 -> logits (N, H, W, num_classes).

        On a device backend a host (NumPy) ``x`` goes to the device and the logits come back: host in, host
        out, which is what ``predict``, ``segment`` and evaluation use; device in, device out for training.
        """
        if not is_device_array(x):
            return to_host(self._logits(to_device(x), training))
        return self._logits(x, training)

    def output_size(self, size) -> tuple[int, int]:
        """The logits' (H', W') for an input of ``size`` (H, W): the input's, times the backbone's
        ``output_scale`` where KerasHub's upsampling overshoots it (2 for CSPNet's stride-1 stem)."""
        scale = getattr(self.backbone, "output_scale", 1)
        return tuple(int(s * scale) for s in size)

    def _logits(self, x, training):
        f = self.backbone.forward(x, training)                                        # (N, H/4, W/4, 256)
        size = self.output_size(x.shape[1:3])
        if not self.classify_before_upsample:
            return self.output_conv.forward(self.output_upsample.forward(f, size=size))
        z = self.output_conv.forward(f)                                               # (N, H/4, W/4, K)
        return self.output_upsample.forward(z, size=size)                            # (N, H, W, K)

    def backward(self, dlogits):
        if not self.classify_before_upsample:
            return self.backbone.backward(self.output_upsample.backward(self.output_conv.backward(dlogits)))
        dz = self.output_upsample.backward(dlogits)
        return self.backbone.backward(self.output_conv.backward(dz))

    def predict(self, images, batch_size: int = 4):
        """Model-ready NHWC float32 images -> Keras ``predict`` output (logits or activation)."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        c = self.in_channels
        if images.ndim != 4 or images.shape[-1] != c:
            raise ValueError(f"images must be (N, H, W, {c}) or (H, W, {c}) for this {c}-channel model, "
                             f"got shape {images.shape}")
        images = images.astype(np.float32, copy=False)
        with inference_mode():                         # keeps no caches: activations freed as they are used
            out = np.concatenate([self.forward(images[i:i + batch_size])
                                  for i in range(0, len(images), batch_size)])
        if self.activation == "softmax":
            out = np.exp(out - out.max(-1, keepdims=True))
            out /= out.sum(-1, keepdims=True)
        elif self.activation == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-out))
        return out

    def segment(self, images, *, outside_label: int = 255):
        """Raw RGB images -> label maps at each image's own size.

        ``images``: one (H, W, 3) array, a list of them (sizes may differ) or an (N, H, W, 3) array,
        uint8 0..255 as read from disk. Each goes through ``self.preprocessor`` (the preset's crop,
        resize, scale and offset); the logits are resized back onto the crop and arg-maxed (a binary head,
        ``num_classes=1``: foreground where the logit is > 0, see :mod:`.head`). Pixels
        outside a centred aspect-ratio crop were never seen by the model and get ``outside_label``.
        Returns a uint8 array (H, W) for one image, else a list of them.
        """
        single = isinstance(images, np.ndarray) and images.ndim == 3
        batch = [images] if single else list(images)
        out = []
        for image in batch:
            x, (top, left, ch, cw) = self.preprocessor(image)                        # (1, h, w, 3)
            with inference_mode():
                logits = self.forward(x)                                              # (1, h, w, K)
            if logits.shape[1:3] != (ch, cw):
                logits = resize(logits, (ch, cw))                                     # (1, ch, cw, K)
            labels = np.full(image.shape[:2], outside_label, np.int32 if self.num_classes > 255 else np.uint8)
            labels[top:top + ch, left:left + cw] = predicted_labels(logits[0])      # argmax, or z > 0 if K = 1
            out.append(labels)
        return out[0] if single else out
