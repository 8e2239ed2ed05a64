"""Import and export of a KerasHub image-encoder preset saved on its own (``MobileNetBackbone.save_to_preset(dir)``).

Such a directory holds ``config.json`` (the encoder's class and constructor arguments) and ``model.weights.h5``
with the encoder's layers at the top level (``layers/conv2d/vars/0``, not under ``layers/functional/layers``
as inside a DeepLabV3Backbone). The encoder class comes from the registry
(:data:`tinydeeplab.models.ENCODERS`), the paths from its :meth:`~tinydeeplab.models.Encoder.keras_weight_layers`;
the checks are those of :func:`~tinydeeplab.io.keras_preset.read_weights`. :func:`save_encoder_preset`
writes the same files (``keras_hub.models.MobileNetBackbone.from_preset(dir)`` loads them).
"""
from __future__ import annotations

from pathlib import Path

from ..models import Encoder, encoder_class
from .errors import PresetError
from .keras_layout import BACKBONE_FILE, encoder_weight_table
from .keras_preset import _class_name, _serialized, _snake_case, _write_json, read_json, read_weights, resolve_preset


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


def save_encoder_preset(encoder: Encoder, directory, *, overwrite: bool = False):
    """Write ``encoder`` as a KerasHub backbone preset (config.json, metadata.json, model.weights.h5), built in
    a temporary sibling directory and renamed into place (an existing non-empty ``directory`` is an error
    unless ``overwrite``). Returns the directory."""
    import h5py
    import numpy as np

    from .. import __version__
    from ..atomic import build_directory, replace_directory

    directory = Path(directory)
    if overwrite and directory.exists():
        return replace_directory(directory, lambda tmp: save_encoder_preset(encoder, tmp))
    if directory.exists() and any(directory.iterdir()):
        raise PresetError(f"{directory}: exists and is not empty; choose a new directory")
    state = encoder.state_dict()
    bad = encoder.first_non_finite()
    if bad is not None:
        raise PresetError(f"{directory}: not written: {bad} holds NaN or infinite values")
    name = encoder.keras_class_name
    where = encoder_weight_table(encoder, "layers")
    with build_directory(directory) as tmp:
        _write_json(tmp / "config.json", _serialized(encoder.keras_module, name,
                                                     {"name": _snake_case(name), **encoder.get_config()},
                                                     f"keras_hub>{name}"))
        _write_json(tmp / "metadata.json", {"keras_version": "3.15.1", "keras_hub_version": "0.32.0",
                                            "parameter_count": int(sum(v.size for v in state.values())),
                                            "saved_by": f"tinydeeplab {__version__}"})
        with h5py.File(tmp / BACKBONE_FILE, "w") as f:
            for prefix, module in encoder.modules():
                for key in list(module.params) + list(module.buffers):
                    f.create_dataset(where[(id(module), key)],
                                     data=np.asarray(state[f"{prefix}.{key}" if prefix else key], np.float32))
    return directory
