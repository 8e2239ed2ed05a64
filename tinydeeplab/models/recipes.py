"""Named DeepLabV3+ architectures to train from scratch (``tinydeeplab train --model NAME``).

=========  ==============================================  ===========  =============
name       ResNet encoder                                   ASPP / head  parameters*
=========  ==============================================  ===========  =============
tiny       stem 16, bottleneck filters 16 x 4 stacks, 1 blk  32 ch        0.1 M
small      stem 32, bottleneck filters 32 x 4 stacks, 1 blk  64 ch        0.4 M
resnet18   KerasHub ResNet18 (basic blocks 2-2-2-2)          256 ch       16 M
resnet50   KerasHub ResNet50 v1 (pascalvoc preset shape)     256 ch       39 M
=========  ==============================================  ===========  =============

(*) with 21 classes. All use ASPP on P5 with rates 6/12/18 and the V3+ decoder on P2; KerasHub fixes
the ASPP and head width at 256, the ``tiny`` and ``small`` widths are a tinydeeplab extension for CPU
training (their presets load in tinydeeplab only).

>>> build_model("tiny", num_classes=4, seed=0).num_parameters()
101296
"""
from __future__ import annotations

from .deeplab import DeepLabV3Backbone, DeepLabV3ImageSegmenter
from .encoder import encoder_class
from .preprocessor import ImageConverter


def _resnet(stem, filters, blocks, block_type):
    """A KerasHub ``ResNetBackbone`` config: one stem conv (7x7), strides 1, 2, 2, 2."""
    return ("ResNetBackbone", dict(input_conv_filters=[stem], input_conv_kernel_sizes=[7],
                                   stackwise_num_filters=filters, stackwise_num_blocks=blocks,
                                   stackwise_num_strides=[1, 2, 2, 2], block_type=block_type))


RECIPES = {   # encoder: (Keras class name, its config); ASPP / head width; V3+ projection filters
    "tiny": dict(encoder=_resnet(16, [16] * 4, [1] * 4, "bottleneck_block"), channels=32, projection_filters=16),
    "small": dict(encoder=_resnet(32, [32] * 4, [1] * 4, "bottleneck_block"), channels=64, projection_filters=32),
    "resnet18": dict(encoder=_resnet(64, [64, 128, 256, 512], [2, 2, 2, 2], "basic_block"), channels=256,
                     projection_filters=48),
    "resnet50": dict(encoder=_resnet(64, [64, 128, 256, 512], [3, 4, 6, 3], "bottleneck_block"), channels=256,
                     projection_filters=48),
}


def build_model(name: str, num_classes: int, *, seed: int = 0, scale=1 / 127.5, offset=-1.0,
                image_size=None, output_stride=None) -> DeepLabV3ImageSegmenter:
    """A randomly initialised DeepLabV3+ of recipe ``name`` with an image converter
    (``pixel * scale + offset``, optional resize to ``image_size``)."""
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(RECIPES)}")
    r = RECIPES[name]
    class_name, config = r["encoder"]
    enc = encoder_class(class_name).from_config(config, output_stride=output_stride, seed=seed)
    backbone = DeepLabV3Backbone(enc, "P5", 8, [6, 12, 18], low_level_feature_key="P2",
                                 projection_filters=r["projection_filters"], num_channels=r["channels"],
                                 seed=seed + 1)
    model = DeepLabV3ImageSegmenter(backbone, int(num_classes), seed=seed + 2)
    model.preprocessor = ImageConverter(image_size, scale, offset)
    return model
