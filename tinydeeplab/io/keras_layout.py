"""Where each tinydeeplab array lives in a KerasHub preset's HDF5 files.

Keras 3 does not store layer names in ``*.weights.h5``. A layer's path is made of its *class name*
in snake case plus a counter, in the order the saving code walks the model's ``layers`` list::

    layers/functional/layers/conv2d_7/vars/0        (the 8th Conv2D of the image-encoder graph)
    image_encoder/layers/batch_normalization_15     (ResNet v2's post_bn: the 16th BN of the encoder,
                                                     outside the graph that DeepLab uses)

so the mapping is a matter of listing our Conv2D / BatchNorm modules in Keras's order. The image
encoder's part comes from the encoder itself (:meth:`~tinydeeplab.models.encoder.Encoder.keras_weight_layers`,
e.g. ResNet's shortcut-before-last-conv order); this module adds the ASPP, the decoder and the head.

Variables: a Conv2D has ``vars/0`` = kernel (HWIO) [, ``vars/1`` = bias]; a BatchNormalization has
``vars/0..3`` = gamma, beta, moving_mean, moving_variance.

A separable head (``separable=True``, a tinydeeplab extension that KerasHub cannot build) is laid out by
the same rule, as Keras would save such a Sequential: a separable ASPP branch holds ``depthwise_conv2d``,
``batch_normalization``, ``conv2d``, ``batch_normalization_1``; the separable decoder's units follow the
low-level projection at the top level (``depthwise_conv2d``, ``conv2d_1``, ``depthwise_conv2d_1``,
``conv2d_2`` and their BNs, in data-flow order). Only tinydeeplab reads these paths back.
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


def _weighted_units(seq) -> list[tuple[str, object, tuple]]:
    """``(Keras class base name, module, variable names)`` of the weighted layers of a conv -> BN -> ReLU
    Sequential (``conv``, ``bn``), of a separable one (``depthwise``, ``depthwise_bn``, ``pointwise``,
    ``pointwise_bn``), or of a Sequential of such blocks (the separable decoder), in data-flow order."""
    names = dict(seq.children())
    if "depthwise" in names:
        return [("depthwise_conv2d", names["depthwise"], CONV_VARS), ("batch_normalization", names["depthwise_bn"],
                BN_VARS), ("conv2d", names["pointwise"], CONV_VARS), ("batch_normalization", names["pointwise_bn"],
                BN_VARS)]
    if "conv" in names:
        return [("conv2d", names["conv"], CONV_VARS), ("batch_normalization", names["bn"], BN_VARS)]
    return [unit for block in names.values() for unit in _weighted_units(block)]


def _add_counted(table, prefix, units, seen=None) -> dict[str, int]:
    """Add ``units`` under ``prefix/<base>_<i>``, ``i`` counting the earlier units of the same base (Keras's
    per-class counter; ``seen``: the counts so far, returned updated, for a counter that continues)."""
    seen = {} if seen is None else seen
    for base, module, var_names in units:
        i = seen[base] = seen.get(base, -1) + 1
        _add_unit(table, f"{prefix}/{_counter_name(base, i)}", module, var_names)
    return seen


def encoder_weight_table(encoder, prefix: str) -> dict[tuple[int, str], str]:
    """``{(id(module), array key): HDF5 path}`` of the encoder's weights under ``prefix``: ``"layers"`` for a
    KerasHub backbone saved alone, ``"layers/functional/layers"`` inside a DeepLabV3Backbone (a layer's
    counter counts the earlier layers of the same Keras class; a nested layer's weights lie under
    ``<layer>/<attribute>``). Layers outside that graph (``keras_unused_weight_layers``, e.g. ResNet v2's
    post_bn, DenseNet's final bn) lie under ``image_encoder/layers``, their counters continuing the graph's; in a
    backbone saved alone (``prefix`` ``"layers"``) they are part of its graph and follow the others there."""
    where: dict[tuple[int, str], str] = {}
    seen: dict[str, int] = {}
    for layer in encoder.keras_weight_layers():
        i = seen[layer.name] = seen.get(layer.name, -1) + 1
        at = f"{prefix}/{_counter_name(layer.name, i)}"
        for attribute, module, var_names in layer.inner or (("", layer.module, layer.var_names),):
            _add_unit(where, f"{at}/{attribute}" if attribute else at, module, var_names)
    outside = "image_encoder/layers" if prefix != "layers" else prefix   # a backbone saved alone: its own graph
    _add_counted(where, outside, [(layer.name, layer.module, layer.var_names)
                                  for layer in encoder.keras_unused_weight_layers()], seen)
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
        _add_counted(where, f"{spp}/aspp_parallel_channels/{_counter_name('sequential', i)}/layers",
                     _weighted_units(seq))
    _add_counted(where, f"{spp}/projection/layers", _weighted_units(aspp.projection))

    # 3. top level of DeepLabV3Backbone: the low-level projection (V3+) comes before the head (one conv -> BN
    #    -> ReLU, or the two separable convs of the paper's decoder)
    top = _weighted_units(backbone.low_level_projection) if backbone.low_key is not None else []
    _add_counted(where, "layers", top + _weighted_units(backbone.head))

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
