"""The image-encoder protocol and the registry of encoders, keyed by their KerasHub class name.

An encoder turns an image batch into a feature pyramid, the ``pyramid_outputs`` of a KerasHub
``FeaturePyramidBackbone``::

    forward(x)            x (N, H, W, C)  ->  {"P2": (N, H/4, W/4, C2), ..., "P5": (N, H/32, W/32, C5)}
    backward(d_pyramid)   {"P3": dP3, ...} (any subset of the levels)  ->  dx (N, H, W, C)

``P{l}`` has stride ``2**l`` unless the encoder trades strides for dilation (``output_stride``).
Everything else in tinydeeplab reaches an encoder only through this class:

==============================  =====================================================================
``pyramid_channels``            ``{"P2": C2, ...}``: the levels and their channels (set in ``__init__``)
``pyramid_strides``             ``{"P2": 4, ...}``: input side / level side
``keras_class_name``            the KerasHub class (``"ResNetBackbone"``): the registry key
``keras_module``                the Python module KerasHub records for it in config.json
``get_config()``                the ``config`` dict of its config.json entry (KerasHub's argument names)
``from_config(cfg, ...)``       the inverse: a fresh encoder (random weights) from that dict
``keras_weight_layers()``       its weighted layers in the order Keras saves them (the HDF5 layout)
``keras_unused_weight_layers()``  weighted layers no pyramid output uses (default: none)
``stages()``                    named intermediate outputs: parity report rows and architecture docs
``in_channels``                 channels of the images it reads: KerasHub's ``image_shape[-1]`` (3)
``input_conv()``                the Conv2D that reads the image (its kernel is adapted to C channels)
``keras_output_scale(key)``     KerasHub's DeepLabV3 output size / input size (1 unless levels sit elsewhere)
==============================  =====================================================================

:func:`register_encoder` adds a class to ``ENCODERS``; the preset reader and writer, the
recipes, the parity report and the architecture page look encoders up there by class name.
"""

from fractions import Fraction
from typing import NamedTuple

from ..nn import BatchNorm, Conv2D, DepthwiseConv2D, Module

CONV_VARS = ("kernel", "bias")                                   # Keras Conv2D: vars/0, vars/1
BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")    # Keras BatchNormalization: vars/0..3


class KerasLayer(NamedTuple):
    """One weighted layer as Keras saves it: ``layers/<name>_<i>/vars/<j>`` holds ``module``'s
    array ``var_names[j]``; ``name`` is the snake-case Keras class name (``"conv2d"``).

    A Keras layer made of sublayers (KerasHub's ``FusedMBConvBlock``) has ``module`` None and ``inner``
    ``((attribute, module, var_names), ...)``: ``layers/<name>_<i>/<attribute>/vars/<j>``."""

    name: str
    module: Module | None
    var_names: tuple[str, ...]
    inner: tuple = ()


class EncoderStage(NamedTuple):
    """A named intermediate output of an encoder.

    ``module``: dotted name under the encoder (``"stack0.block2"``); ``description``: one line for
    docs/architecture.md; ``keras_layer``: the KerasHub layer with the same output (for the parity
    report; None when there is none); ``level``: the pyramid level this stage outputs, if any;
    ``box``: ``(title, detail)`` when the architecture figure draws it.
    """

    module: str
    description: str
    keras_layer: str | None = None
    level: str | None = None
    box: tuple[str, str] | None = None


def keras_layer(module) -> KerasLayer:
    """The :class:`KerasLayer` of one of tinydeeplab's own weighted layers (Conv2D, DepthwiseConv2D, BatchNorm)."""
    if isinstance(module, DepthwiseConv2D):
        return KerasLayer("depthwise_conv2d", module, CONV_VARS)   # Keras: vars/0 kernel, vars/1 bias
    if isinstance(module, Conv2D):
        return KerasLayer("conv2d", module, CONV_VARS)
    if isinstance(module, BatchNorm):
        return KerasLayer("batch_normalization", module, BN_VARS)
    raise TypeError(f"no Keras layer known for a {type(module).__name__}; return a KerasLayer for it")


class Encoder(Module):
    """Base class of image encoders (see the module docstring for the protocol).

    A subclass sets ``keras_class_name`` and ``keras_module``, sets ``pyramid_channels`` and
    ``pyramid_strides`` in ``__init__``, and implements ``forward``, ``backward``, ``get_config``,
    ``from_config``, ``keras_weight_layers`` and ``stages``.
    """

    keras_class_name: str = ""
    keras_module: str = ""
    pyramid_channels: dict[str, int]
    pyramid_strides: dict[str, int]
    in_channels: int = 3          # an encoder that reads other channel counts sets it from image_shape

    def input_conv(self) -> Conv2D:
        """The convolution that reads the image, whose kernel (kh, kw, in_channels, F) a preset loaded for
        another channel count adapts (:mod:`tinydeeplab.models.input_channels`). The default is the first
        Conv2D in :meth:`keras_weight_layers`, which is the image's first layer in a feed-forward encoder."""
        convs = [layer.module for layer in self.keras_weight_layers() if isinstance(layer.module, Conv2D)]
        if not convs:
            raise TypeError(f"{type(self).__name__} has no Conv2D; override input_conv()")
        return convs[0]

    def keras_output_scale(self, key: str) -> Fraction:
        """Output size / input size of a KerasHub DeepLabV3 whose ``spatial_pyramid_pooling_key`` is ``key``.
        KerasHub's last upsampling is ``2**level // upsampling_size``, which assumes ``P{l}`` at ``1/2**l``:
        1 for such encoders (the default); an encoder whose levels sit elsewhere (CSPNet) overrides it."""
        return Fraction(1)

    def forward(self, x, training=False) -> dict:
        """``x`` (N, H, W, C) -> ``{"P2": ..., ...}``."""
        raise NotImplementedError

    def backward(self, d_pyramid: dict):
        """Gradients of some pyramid levels -> gradient of ``x``."""
        raise NotImplementedError

    def check_pyramid_gradients(self, d_pyramid: dict) -> None:
        """ValueError unless ``d_pyramid`` holds gradients for a non-empty subset of the pyramid levels."""
        unknown = sorted(set(d_pyramid) - set(self.pyramid_channels))
        if unknown or not d_pyramid:
            raise ValueError(f"backward needs gradients for some of {list(self.pyramid_channels)}, "
                             f"got {sorted(d_pyramid)}")

    def get_config(self) -> dict:
        """KerasHub's constructor arguments for this encoder (the ``config`` of its config.json entry,
        without ``name``, ``trainable`` and ``dtype``)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict, *, output_stride=None, seed=None) -> "Encoder":
        """A new encoder from :meth:`get_config`'s dict; unknown keys are ignored, bad values raise
        ValueError (or TypeError). ``output_stride`` (8, 16) is the atrous option, where supported."""
        raise NotImplementedError

    def keras_weight_layers(self) -> list[KerasLayer]:
        """Every weighted layer, in the order Keras saves the encoder's functional graph (the
        counter in ``layers/functional/layers/conv2d_7`` counts within one Keras class)."""
        raise NotImplementedError

    def keras_unused_weight_layers(self) -> list[KerasLayer]:
        """Weighted layers that feed no pyramid output (ResNet v2's ``post_bn``), in Keras's order.

        DeepLabV3Backbone's ``functional`` holds only the graph up to the pyramid outputs; Keras saves
        the rest of the encoder with the backbone's ``image_encoder`` attribute, as
        ``image_encoder/layers/<name>_<i>``, where ``i`` counts *every* layer of that Keras class in
        the encoder, those of the functional graph included."""
        return []

    def stages(self) -> list[EncoderStage]:
        """The stages worth naming, in data-flow order (every pyramid level among them)."""
        raise NotImplementedError


ENCODERS: dict[str, type[Encoder]] = {}


def register_encoder(cls: type[Encoder]) -> type[Encoder]:
    """Add an :class:`Encoder` subclass to :data:`ENCODERS` under its ``keras_class_name``; returns it
    (usable as a class decorator).

    >>> sorted(ENCODERS)
    ['CSPNetBackbone', 'DenseNetBackbone', 'EfficientNetBackbone', 'MobileNetBackbone', 'ResNetBackbone']
    """
    if not (isinstance(cls, type) and issubclass(cls, Encoder) and cls.keras_class_name):
        raise TypeError(f"{cls!r} is not an Encoder subclass with a keras_class_name")
    ENCODERS[cls.keras_class_name] = cls
    return cls


def encoder_class(keras_class_name: str) -> type[Encoder]:
    """The registered encoder for a KerasHub class name, or ValueError listing the supported ones."""
    try:
        return ENCODERS[keras_class_name]
    except KeyError:
        raise ValueError(f"unsupported image_encoder class {keras_class_name!r} "
                         f"(tinydeeplab supports {', '.join(sorted(ENCODERS))})") from None
