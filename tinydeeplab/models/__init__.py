"""ResNet encoder, ASPP, DeepLabV3/V3+ backbone and segmenter."""
from .aspp import ASPP
from .deeplab import DeepLabV3Backbone, DeepLabV3ImageSegmenter
from .resnet import ResNetBackbone

__all__ = ["ResNetBackbone", "ASPP", "DeepLabV3Backbone", "DeepLabV3ImageSegmenter"]
