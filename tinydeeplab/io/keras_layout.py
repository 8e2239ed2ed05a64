"""Where each tinydeeplab array lives in a KerasHub preset's HDF5 files.

Keras 3 does not store layer names in ``*.weights.h5``. A layer's path is made of its *class name*
in snake case plus a counter, in the order the saving code walks the model's ``layers`` list::

    layers/functional/layers/conv2d_7/vars/0        (the 8th Conv2D of the image-encoder graph)

so the mapping is a matter of listing our Conv2D / BatchNorm modules in Keras's order. Inside a
functional graph Keras orders layers by decreasing depth (longest path to an output), ties broken
by a depth-first walk from the outputs that visits an ``Add``'s inputs in order
``[shortcut, residual]``. For a ResNet block that puts the shortcut's 1x1 conv (and its BN) right
before the *last* convolution of the residual branch (and its BN)::

    v1 bottleneck:  1_conv 1_bn 2_conv 2_bn 0_conv 3_conv 0_bn 3_bn   -> conv order 1, 2, 0, 3
    v1 basic:       1_conv 1_bn 0_conv 2_conv 0_bn 2_bn               -> conv order 1, 0, 2

Variables: a Conv2D has ``vars/0`` = kernel (HWIO) [, ``vars/1`` = bias]; a BatchNormalization has
``vars/0..3`` = gamma, beta, moving_mean, moving_variance.
"""
from __future__ import annotations

BACKBONE_FILE, TASK_FILE = "model.weights.h5", "task.weights.h5"
CONV_VARS = ("kernel", "bias")
BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")


def _conv_and_bn_units(seq):
    """(conv, bn-or-None) of a conv unit Sequential (children named pad / conv / bn / relu)."""
    return seq.conv, getattr(seq, "bn", None)


def resnet_layer_order(encoder):
    """Conv2D modules and BatchNorm modules of a :class:`ResNetBackbone` in Keras's layer order."""
    convs, bns = [], []
    for _, unit in encoder.stem.children():
        if hasattr(unit, "conv"):
            conv, bn = _conv_and_bn_units(unit)
            convs.append(conv)
            bns += [bn] if bn is not None else []
    for s in range(encoder.num_stacks):
        for block in encoder.blocks(s):
            if block.pre_activation:
                bns.append(block.preact.bn)
            units = block.residual_layers()
            if block.shortcut is not None:
                units = units[:-1] + [block.shortcut, units[-1]]  # shortcut just before the last conv
            for unit in units:
                conv, bn = _conv_and_bn_units(unit)
                convs.append(conv)
                bns += [bn] if bn is not None else []
    return convs, bns


def _counter_name(base, i):
    return base if i == 0 else f"{base}_{i}"


def _add_unit(table, prefix, module, var_names):
    for j, key in enumerate(var_names):
        if key in module.params or key in module.buffers:
            table[(id(module), key)] = f"{prefix}/vars/{j}"


def keras_weight_paths(segmenter) -> dict[str, tuple[str, str]]:
    """``{dotted tinydeeplab name: (file name, HDF5 dataset path)}`` for every parameter and buffer.

    >>> from tinydeeplab.models import ResNetBackbone, DeepLabV3Backbone, DeepLabV3ImageSegmenter
    >>> enc = ResNetBackbone([64], [7], [64, 8], [1, 1], [1, 2], seed=0)
    >>> seg = DeepLabV3ImageSegmenter(DeepLabV3Backbone(enc, "P3", 2, [1], "P2", 8, num_channels=8), 3)
    >>> paths = keras_weight_paths(seg)
    >>> paths["backbone.image_encoder.stem.conv1.conv.kernel"]
    ('model.weights.h5', 'layers/functional/layers/conv2d/vars/0')
    >>> paths["output_conv.kernel"]
    ('task.weights.h5', 'layers/conv2d/vars/0')
    """
    backbone = segmenter.backbone
    where: dict[tuple[int, str], str] = {}

    # 1. the image encoder's graph, saved as the nested functional model "functional"
    convs, bns = resnet_layer_order(backbone.image_encoder)
    for i, conv in enumerate(convs):
        _add_unit(where, f"layers/functional/layers/{_counter_name('conv2d', i)}", conv, CONV_VARS)
    for i, bn in enumerate(bns):
        _add_unit(where, f"layers/functional/layers/{_counter_name('batch_normalization', i)}", bn, BN_VARS)

    # 2. ASPP: a list of Sequentials (branches, pooling last) and a projection Sequential
    aspp = backbone.aspp
    spp = "layers/spatial_pyramid_pooling"
    parallel = aspp.branches() + [aspp.pooling]
    for i, seq in enumerate(parallel):
        base = f"{spp}/aspp_parallel_channels/{_counter_name('sequential', i)}/layers"
        _add_unit(where, f"{base}/conv2d", seq.conv, CONV_VARS)
        _add_unit(where, f"{base}/batch_normalization", seq.bn, BN_VARS)
    _add_unit(where, f"{spp}/projection/layers/conv2d", aspp.projection.conv, CONV_VARS)
    _add_unit(where, f"{spp}/projection/layers/batch_normalization", aspp.projection.bn, BN_VARS)

    # 3. top level of DeepLabV3Backbone: the low-level projection (V3+) comes before the head
    top_convs, top_bns = [], []
    if backbone.low_key is not None:
        top_convs.append(backbone.low_level_projection.conv)
        top_bns.append(backbone.low_level_projection.bn)
    top_convs.append(backbone.head.conv)
    top_bns.append(backbone.head.bn)
    for i, conv in enumerate(top_convs):
        _add_unit(where, f"layers/{_counter_name('conv2d', i)}", conv, CONV_VARS)
    for i, bn in enumerate(top_bns):
        _add_unit(where, f"layers/{_counter_name('batch_normalization', i)}", bn, BN_VARS)

    # 4. the segmenter's own layer lives in task.weights.h5
    task = {}
    _add_unit(task, "layers/conv2d", segmenter.output_conv, CONV_VARS)

    out = {}
    for path, mod in segmenter.modules():
        for key in list(mod.params) + list(mod.buffers):
            name = f"{path}.{key}" if path else key
            if (id(mod), key) in where:
                out[name] = (BACKBONE_FILE, where[(id(mod), key)])
            elif (id(mod), key) in task:
                out[name] = (TASK_FILE, task[(id(mod), key)])
            else:
                raise ValueError(f"no Keras weight path known for {name} "
                                 f"(unsupported layer in a {type(mod).__name__})")
    return out
