"""Where each tinydeeplab array lives in a KerasHub preset's HDF5 files.

Keras 3 does not store layer names in ``*.weights.h5``. A layer's path is made of its *class name*
in snake case plus a counter, in the order the saving code walks the model's ``layers`` list::

    layers/functional/layers/conv2d_7/vars/0        (the 8th Conv2D of the image-encoder graph)

so the mapping is a matter of listing our Conv2D / BatchNorm modules in Keras's order. The image
encoder's part comes from the encoder itself (:meth:`~tinydeeplab.models.encoder.Encoder.keras_weight_layers`,
e.g. ResNet's shortcut-before-last-conv order); this module adds the ASPP, the decoder and the head.

Variables: a Conv2D has ``vars/0`` = kernel (HWIO) [, ``vars/1`` = bias]; a BatchNormalization has
``vars/0..3`` = gamma, beta, moving_mean, moving_variance.
"""
from __future__ import annotations

from ..models.encoder import BN_VARS, CONV_VARS

BACKBONE_FILE, TASK_FILE = "model.weights.h5", "task.weights.h5"


def _counter_name(base, i):
    return base if i == 0 else f"{base}_{i}"


def _add_unit(table, prefix, module, var_names):
    for j, key in enumerate(var_names):
        if key in module.params or key in module.buffers:
            table[(id(module), key)] = f"{prefix}/vars/{j}"


def encoder_weight_table(encoder, prefix: str) -> dict[tuple[int, str], str]:
    """``{(id(module), array key): HDF5 path}`` for the encoder's weights under ``prefix``: ``"layers"`` for
    a KerasHub backbone saved alone, ``"layers/functional/layers"`` inside a DeepLabV3Backbone. A layer's
    counter counts the earlier layers of the same Keras class (``conv2d``, ``conv2d_1``, ...)."""
    where: dict[tuple[int, str], str] = {}
    seen: dict[str, int] = {}
    for layer in encoder.keras_weight_layers():
        i = seen[layer.name] = seen.get(layer.name, -1) + 1
        _add_unit(where, f"{prefix}/{_counter_name(layer.name, i)}", layer.module, layer.var_names)
    return where


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
    # 1. the image encoder's graph, saved as the nested functional model "functional"
    where = encoder_weight_table(backbone.image_encoder, "layers/functional/layers")

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
