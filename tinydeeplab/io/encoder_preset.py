"""Import of a KerasHub image-encoder preset saved on its own (``MobileNetBackbone.save_to_preset(dir)``).

Such a directory holds ``config.json`` (the encoder's class and constructor arguments) and ``model.weights.h5``
with the encoder's layers at the top level (``layers/conv2d/vars/0``, not under ``layers/functional/layers``
as inside a DeepLabV3Backbone). The encoder class comes from the registry
(:data:`tinydeeplab.models.ENCODERS`), the paths from its :meth:`~tinydeeplab.models.Encoder.keras_weight_layers`;
the checks are those of :func:`~tinydeeplab.io.keras_preset.read_weights`.
"""
from __future__ import annotations

from ..models import Encoder, encoder_class
from .errors import PresetError
from .keras_layout import BACKBONE_FILE, encoder_weight_table
from .keras_preset import _class_name, read_json, read_weights, resolve_preset


def load_encoder_preset(path, *, output_stride=None) -> Encoder:
    """The encoder of a KerasHub backbone preset directory, with its weights (``output_stride`` as in
    :func:`~tinydeeplab.load_keras_preset`). Bad files raise a one-line PresetError naming the file."""
    directory = resolve_preset(path)
    source = directory / "config.json"
    obj = read_json(source)
    try:
        cls = encoder_class(_class_name(obj, str(source)))
        encoder = cls.from_config(obj["config"], output_stride=output_stride)
    except (ValueError, TypeError) as err:
        if isinstance(err, PresetError):
            raise
        raise PresetError(f"{source}: {err}") from None
    where = encoder_weight_table(encoder, "layers")
    table = {}
    for prefix, module in encoder.modules():
        for key in list(module.params) + list(module.buffers):
            name = f"{prefix}.{key}" if prefix else key
            if (id(module), key) not in where:
                raise PresetError(f"{source}: no Keras weight path known for {name}")
            table[where[(id(module), key)]] = name
    read_weights(directory / BACKBONE_FILE, table, encoder.slots())
    return encoder
