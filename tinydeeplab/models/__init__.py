"""Image encoders (the :class:`Encoder` protocol and its registry), ASPP, DeepLabV3/V3+ backbone and segmenter."""
from .aspp import ASPP
from .deeplab import DeepLabV3Backbone, DeepLabV3ImageSegmenter
from .encoder import ENCODERS, Encoder, EncoderStage, KerasLayer, encoder_class, register_encoder
from .densenet import DenseNetBackbone
from .cspnet import CSPNetBackbone
from .efficientnet import EfficientNetBackbone
from .mobilenet import MobileNetBackbone
from .resnet import ResNetBackbone

register_encoder(ResNetBackbone)          # the registry: one line per encoder family
register_encoder(EfficientNetBackbone)
register_encoder(MobileNetBackbone)
register_encoder(DenseNetBackbone)
register_encoder(CSPNetBackbone)

__all__ = ["Encoder", "EncoderStage", "KerasLayer", "ENCODERS", "register_encoder", "encoder_class",
           "ResNetBackbone", "EfficientNetBackbone", "MobileNetBackbone", "DenseNetBackbone", "CSPNetBackbone", "ASPP", "DeepLabV3Backbone",
           "DeepLabV3ImageSegmenter"]
