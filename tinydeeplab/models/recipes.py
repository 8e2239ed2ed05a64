"""Named DeepLabV3 / V3+ architectures to train from scratch (``tinydeeplab train --model NAME``).

Each from-scratch recipe is designed for one training crop: its output stride (OS) and ASPP rates are
chosen so that every atrous tap lands on the feature map it will see there (DeepLab's rule, see
:mod:`tinydeeplab.models.atrous`: a rate ``d`` on a map of side ``h`` keeps its off-centre taps only
while ``d < h``; the paper's 6/12/18 at OS16 sit at 0.2-0.55 of its 33x33 map). The rates here follow the
same proportions of the map at the design crop, and stay alive at larger evaluation sizes.

=================  ===========================================  ===  ========  =========  ========  ===========
name               encoder                                      OS   rates     crop       ASPP map  parameters*
=================  ===========================================  ===  ========  =========  ========  ===========
tiny               ResNet stem 16, bottleneck 16 x 4, 1 block   16   1/2/3     64x64      4x4       0.10 M
small              ResNet stem 32, bottleneck 32 x 4, 1 block   16   1/2/3     96x96      6x6       0.40 M
medium             ResNet basic 32-48-96-160, 2-2-2-1 blocks    16   3/6/9     256x352    16x22     1.13 M
resnet18           KerasHub ResNet18 (basic blocks 2-2-2-2)     32   6/12/18   (512x512)  (16x16)   16 M
resnet50           KerasHub ResNet50 v1 (pascalvoc preset)      32   6/12/18   (512x512)  (16x16)   39 M
mobilenetv3-small  KerasHub MobileNetV3 Small (small_100)       16   3/6/9     256x352    16x22     2.03 M
mobilenetv3-large  KerasHub MobileNetV3 Large (large_100)       16   3/6/9     256x352    16x22     4.78 M
densenet-tiny      DenseNet 1-2-4-3 conv blocks, growth 16      16   3/6/9     256x352    16x22     0.37 M
cspnet-tiny        KerasHub CSPNet, CSPDarkNet pattern, narrow  16   3/6/9     256x352    16x22     0.74 M
=================  ===========================================  ===  ========  =========  ========  ===========

(*) with 21 classes (``medium``: 1,127,040 with CamVid's 11; ``mobilenetv3-small`` / ``-large``: 2,024,864 /
4,782,768 with 11, of which the encoder 0.93 M / 2.97 M and the ASPP on the 576 / 960-channel P5 most of the rest).
The MobileNet recipes are KerasHub's own encoder configs (so a ``MobileNetBackbone`` preset's weights fit
them), OS16 by dilating the last stride-2 block and those after it (rate 2), ASPP on P5 (the final 1x1
ConvBnAct), decoder on P2 (Small: ``block_0_0``, Large: ``block_1_1``); ASPP width 64, like ``medium``.
``densenet-tiny`` is a KerasHub ``DenseNetBackbone`` config (its fixed 64-filter stem, compression 0.5),
shallow and narrow (P2..P5 of 80, 72, 100, 98 channels; encoder 0.15 M), OS16 by a stride-1 last transition pool and rate 2 in the last dense block; ASPP on P5,
decoder on P2, widths as ``medium``. One training step of batch 2 at 256x352 (Numba CPU, one thread,
niced, on a machine loaded by another run) took 10-16 s, ``medium`` 8-9 s in the same conditions: the
64-filter 7x7 stem at 1/2 resolution, which KerasHub fixes, is a large part of it (1-1.5x ``medium``'s time).
All use the V3+ decoder on P2 (``decoder="v3"`` drops it); ASPP / head widths are 32, 64, 64 for tiny / small / medium, 256 for the KerasHub-shaped ones.
``cspnet-tiny`` (744,320 parameters with 21 classes, 743,680 with 11; encoder 417,408) is a KerasHub
``CSPNetBackbone`` with CSPDarkNet-53's stage pattern at widths 16-32-48-96-160 and depths 1-2-2-1, but a
stride-2 stem, so its P2..P5 sit at 1/4..1/32 like ResNet's and the logits at the input size (CSPDarkNet-53's
stride-1 stem puts P2 at 1/2: KerasHub's DeepLabV3 then outputs twice the input size, see
:mod:`.cspnet`); its OS16 preset (``output_strides`` 16) loads in tinydeeplab only (KerasHub 0.32's
CSPNetBackbone fails for ``output_strides`` below 32).
``resnet18`` / ``resnet50`` are exactly KerasHub's DeepLabV3+ (OS32, rates 6/12/18: the pascalvoc preset's
shape), so their presets load in Keras; the narrow recipes load in tinydeeplab only. At the design crop of
each from-scratch recipe every ASPP tap is live; ``tinydeeplab summary NAME --size H W`` lists the live
taps at any other size.

``medium`` is the CamVid recipe (360x480 images, 256x352 training crops; 23x30 ASPP map at test time),
chosen by the training speed of candidates of 1.1-1.5 M parameters, measured with
``python benchmarks/bench_recipes.py --recipes ... --output-strides 16 8 --steps 3`` (one SGD step, batch 8,
256x352, 11 classes, Numba CPU backend) while the 2 cores ran other jobs (load average 5-7): the wall
time is that of a shared machine; the CPU time (both threads) is steadier. An idle machine ran ``small``
at OS32 in 0.77 s per step (9.8-10.9 images/s, docs/results.md), about CPU / 4 here; the last column
applies that ratio (an estimate, not a measurement):

====================================================  ==========  ==  =======  ========  ===================
candidate (basic blocks; ASPP / head width)           parameters  OS  wall s   CPU s     idle est. images/s
====================================================  ==========  ==  =======  ========  ===================
small (today's OS32, for scale)                          397,088  32  6.06     3.12      10.3 (measured)
small                                                    397,088  16  3.86     2.86      11
**medium**: 32-48-96-160, 2-2-2-1 blocks; 64          1,127,040  16  5.07     2.86      11
medium                                                 1,127,040   8  8.22     4.76      6.7
24-48-96-128, 2-2-2-2 blocks; 64                      1,227,736  16  6.72     3.18      10
24-48-96-128, 2-2-2-2 blocks; 64                      1,227,736   8  10.18    4.69      6.8
32-64-96-128, 2-2-2-2 blocks; 96                      1,469,568  16  3.84     3.55      9.0
32-64-96-128, 2-2-2-2 blocks; 96                      1,469,568   8  6.94     6.24      5.1
====================================================  ==========  ==  =======  ========  ===================

``medium`` at OS16 trains an epoch of CamVid's 367 images in about 33 s (plus ~8 s of validation), so
2.5 hours hold ~150 epochs even at 1.5x that time (``configs/camvid_main.toml``); at OS8 (rates 6/12/18
for its 32x44 map) about 55 s, ~100 epochs. The 1.47 M candidate is 25 % slower for 30 % more weights.

>>> build_model("tiny", num_classes=4, seed=0).num_parameters()
101296
>>> RECIPES["medium"]["crop"], RECIPES["medium"]["output_stride"], RECIPES["medium"]["atrous_rates"]
((256, 352), 16, (3, 6, 9))
"""
from __future__ import annotations

from .deeplab import DeepLabV3Backbone, DeepLabV3ImageSegmenter
from .encoder import encoder_class
from .input_channels import check_in_channels
from .preprocessor import ImageConverter

DECODERS = ("v3plus", "v3")


def _resnet(stem, filters, blocks, block_type):
    """A KerasHub ``ResNetBackbone`` config: one stem conv (7x7), strides 1, 2, 2, 2."""
    return ("ResNetBackbone", dict(input_conv_filters=[stem], input_conv_kernel_sizes=[7],
                                   stackwise_num_filters=filters, stackwise_num_blocks=blocks,
                                   stackwise_num_strides=[1, 2, 2, 2], block_type=block_type))


def _v3(blocks, expansion, filters, kernels, strides, se, activation, padding, **rest):
    """A KerasHub ``MobileNetBackbone`` config of the MobileNetV3 family (hard_swish stem, 16 stem filters)."""
    return dict(stackwise_num_blocks=blocks, stackwise_expansion=expansion, stackwise_num_filters=filters,
                stackwise_kernel_size=kernels, stackwise_num_strides=strides, stackwise_se_ratio=se,
                stackwise_activation=activation, stackwise_padding=padding, output_num_filters=1024,
                input_num_filters=16, input_activation="hard_swish", output_activation="hard_swish", **rest)


_R, _H = "relu", "hard_swish"                       # MobileNetV3 activations
MOBILENET_V3_SMALL = _v3(
    [2, 3, 2, 3], [[72, 88], [96, 240, 240], [120, 144], [288, 576, 576]],
    [[24, 24], [40, 40, 40], [48, 48], [96, 96, 96]], [[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
    [[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]], [[None, None], [0.25] * 3, [0.25] * 2, [0.25] * 3],
    [[_R, _R], [_H] * 3, [_H] * 2, [_H] * 3], [[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
    depthwise_filters=16, depthwise_stride=2, depthwise_residual=False, squeeze_and_excite=0.5,
    last_layer_filter=576)
"""KerasHub's ``mobilenet_v3_small_100`` backbone config (``keras_hub/src/utils/timm/convert_mobilenet.py``)."""

MOBILENET_V3_LARGE = _v3(
    [2, 3, 4, 2, 3], [[64, 72], [72, 120, 120], [240, 200, 184, 184], [480, 672], [672, 960, 960]],
    [[24, 24], [40, 40, 40], [80] * 4, [112, 112], [160] * 3], [[3, 3], [5, 5, 5], [3] * 4, [3, 3], [5, 5, 5]],
    [[2, 1], [2, 1, 1], [2, 1, 1, 1], [1, 1], [2, 1, 1]],
    [[None, None], [0.25] * 3, [None] * 4, [0.25] * 2, [0.25] * 3],
    [[_R, _R], [_R] * 3, [_H] * 4, [_H] * 2, [_H] * 3], [[1, 1], [2, 2, 2], [1] * 4, [1, 1], [2, 2, 2]],
    depthwise_filters=16, depthwise_stride=1, depthwise_residual=True, squeeze_and_excite=None,
    last_layer_filter=960)
"""KerasHub's ``mobilenet_v3_large_100`` backbone config (``keras_hub/src/utils/timm/convert_mobilenet.py``)."""


CSPNET_TINY = dict(stem_filters=16, stem_kernel_size=3, stem_strides=2, stem_padding="valid",
                   stackwise_depth=[1, 2, 2, 1], stackwise_num_filters=[32, 48, 96, 160], stackwise_strides=[2, 2, 2, 2],
                   bottle_ratio=[0.5, 1.0], block_ratio=[1.0, 0.5], expand_ratio=[2.0, 1.0], stage_type="csp",
                   block_type="dark_block", down_growth=True)
"""A narrow CSPDarkNet (``csp`` stages of dark blocks, LeakyReLU 0.01): ZeroPadding 1 + stem 3x3/2 "valid" (ceil(H/2);
"same" after KerasHub's ZeroPadding would pad twice), stages at 1/4, 1/8, 1/16, 1/32 (P2..P5, as ResNet's; the
last dilated for OS16), so the logits come out at the input size (``keras_output_scale`` 1)."""


RECIPES = {
    # encoder: (Keras class name, its config); channels: ASPP / head width; projection_filters: V3+ P2 projection;
    # output_stride: None = KerasHub's 32 (no dilation); crop: the training crop the rates were chosen for
    "tiny": dict(encoder=_resnet(16, [16] * 4, [1] * 4, "bottleneck_block"), channels=32, projection_filters=16,
                 output_stride=16, atrous_rates=(1, 2, 3), crop=(64, 64)),
    "small": dict(encoder=_resnet(32, [32] * 4, [1] * 4, "bottleneck_block"), channels=64, projection_filters=32,
                  output_stride=16, atrous_rates=(1, 2, 3), crop=(96, 96)),
    "medium": dict(encoder=_resnet(32, [32, 48, 96, 160], [2, 2, 2, 1], "basic_block"), channels=64,
                   projection_filters=32, output_stride=16, atrous_rates=(3, 6, 9), crop=(256, 352)),
    "resnet18": dict(encoder=_resnet(64, [64, 128, 256, 512], [2, 2, 2, 2], "basic_block"), channels=256,
                     projection_filters=48, output_stride=None, atrous_rates=(6, 12, 18), crop=None),
    "resnet50": dict(encoder=_resnet(64, [64, 128, 256, 512], [3, 4, 6, 3], "bottleneck_block"), channels=256,
                     projection_filters=48, output_stride=None, atrous_rates=(6, 12, 18), crop=None),
    # KerasHub's MobileNetV3 encoders (their presets' weights load with tinydeeplab.io.encoder_preset), the
    # last strided block dilated for OS16: the 16x22 ASPP map of a CamVid 256x352 crop, rates as "medium"
    "mobilenetv3-small": dict(encoder=("MobileNetBackbone", MOBILENET_V3_SMALL), channels=64, projection_filters=32,
                              output_stride=16, atrous_rates=(3, 6, 9), crop=(256, 352)),
    "mobilenetv3-large": dict(encoder=("MobileNetBackbone", MOBILENET_V3_LARGE), channels=64, projection_filters=32,
                              output_stride=16, atrous_rates=(3, 6, 9), crop=(256, 352)),
    # a small KerasHub DenseNet (DenseNet-121 has 6-12-24-16 blocks of growth 32), OS16 for the 16x22 map
    "densenet-tiny": dict(encoder=("DenseNetBackbone", dict(stackwise_num_repeats=[1, 2, 4, 3], growth_rate=16,
                                                            compression_ratio=0.5)),
                          channels=64, projection_filters=32, output_stride=16, atrous_rates=(3, 6, 9), crop=(256, 352)),
    # KerasHub's CSPNetBackbone in CSPDarkNet-53's pattern, narrow, with a stride-2 stem so that P2..P5 sit at
    # 1/4..1/32 and the logits at the input size; P5's stage dilated for OS16 (16x22 at 256x352, rates as "medium")
    "cspnet-tiny": dict(encoder=("CSPNetBackbone", CSPNET_TINY), channels=64, projection_filters=32,
                        output_stride=16, atrous_rates=(3, 6, 9), crop=(256, 352)),
}


def recipe_output_stride(name: str) -> int:
    """The output stride recipe ``name`` is built with (32 for the KerasHub-shaped ones).

    >>> recipe_output_stride("small"), recipe_output_stride("resnet50")
    (16, 32)
    """
    return RECIPES[_known(name)]["output_stride"] or 32


def _known(name: str) -> str:
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(RECIPES)}")
    return name


def build_model(name: str, num_classes: int, *, seed: int = 0, scale=1 / 127.5, offset=-1.0,
                image_size=None, output_stride=None, atrous_rates=None, decoder="v3plus",
                in_channels: int = 3, separable=False) -> DeepLabV3ImageSegmenter:
    """A randomly initialised DeepLabV3+ of recipe ``name`` with an image converter
    (``pixel * scale + offset``, optional resize to ``image_size``), for ``in_channels``-channel images
    (the encoder's KerasHub ``image_shape`` is ``[None, None, in_channels]``; scale/offset may then
    have one value per channel).

    ``output_stride`` (8, 16, 32) and ``atrous_rates`` replace the recipe's (None keeps them);
    ``decoder="v3"`` drops the V3+ low-level branch: the head runs on the ASPP map and the logits are
    upsampled bilinearly to the input size (DeepLabV3). ``separable=True`` gives the DeepLabV3+ paper's head
    (atrous separable convolutions in the ASPP and, for V3+, two separable 3x3 convs as the decoder; see
    :class:`~tinydeeplab.models.DeepLabV3Backbone`), a tinydeeplab extension that KerasHub cannot load.

    >>> build_model("small", 4, output_stride=8, atrous_rates=[2, 4, 6]).backbone.config["dilation_rates"]
    [2, 4, 6]
    """
    r = RECIPES[_known(name)]
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    class_name, config = r["encoder"]
    stride = r["output_stride"] if output_stride is None else output_stride
    config = {**config, "image_shape": [None, None, check_in_channels(in_channels)]}
    enc = encoder_class(class_name).from_config(config, output_stride=stride, seed=seed)
    rates = list(r["atrous_rates"] if atrous_rates is None else atrous_rates)
    if not rates or any(not isinstance(d, int) or d < 1 for d in rates):
        raise ValueError(f"atrous rates must be integers >= 1, got {rates!r}")
    v3plus = decoder == "v3plus"
    backbone = DeepLabV3Backbone(enc, "P5", 8 if v3plus else 1, rates, low_level_feature_key="P2" if v3plus else None,
                                 projection_filters=r["projection_filters"], num_channels=r["channels"],
                                 separable=separable, seed=seed + 1)
    model = DeepLabV3ImageSegmenter(backbone, int(num_classes), seed=seed + 2)
    model.preprocessor = ImageConverter(image_size, scale, offset)
    return model
