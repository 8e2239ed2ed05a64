"""Import and export of KerasHub ``DeepLabV3ImageSegmenter`` presets.

A preset directory holds::

    config.json          the backbone: DeepLabV3Backbone with a nested ResNetBackbone config
    task.json            the segmenter: num_classes, activation (and the backbone again)
    preprocessor.json    image converter: image_size, scale, offset, interpolation, crop_to_aspect_ratio
    model.weights.h5     backbone weights, paths from :mod:`tinydeeplab.io.keras_layout`
    task.weights.h5      the segmenter's classifier (may also hold optimizer variables: skipped)
    metadata.json        versions (written on export; not needed to load)

Nothing read from a file is executed: JSON is parsed as data, the model is built by our own
constructors from the known class names, and HDF5 datasets are read as plain arrays.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
from ..models.preprocessor import ImageConverter
from .errors import PresetError
from .keras_layout import BACKBONE_FILE, TASK_FILE, keras_weight_paths

KAGGLE_PREFIX = "kaggle://"
SUPPORTED = {"backbone": "DeepLabV3Backbone", "encoder": "ResNetBackbone", "task": "DeepLabV3ImageSegmenter"}


# -- reading ------------------------------------------------------------------------------------
def read_json(path: Path) -> dict:
    """Parse a JSON object from ``path``, or raise PresetError naming the file and the problem."""
    if not path.is_file():
        raise PresetError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise PresetError(f"{path}: not a UTF-8 text file ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise PresetError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _class_name(obj: dict, where: str) -> str:
    if not isinstance(obj, dict) or "class_name" not in obj or not isinstance(obj.get("config"), dict):
        raise PresetError(f"{where}: expected a serialized Keras object with 'class_name' and 'config'")
    return str(obj["class_name"]).split(">")[-1]


def _require(cfg: dict, keys, where: str):
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise PresetError(f"{where}: missing keys {missing}")


def build_from_configs(backbone_cfg: dict, task_cfg: dict | None, *, source: str = "config.json",
                       output_stride=None) -> DeepLabV3ImageSegmenter:
    """Build a segmenter from the ``config`` dicts of config.json and task.json (no weights)."""
    name = _class_name(backbone_cfg, source)
    if name != SUPPORTED["backbone"]:
        raise PresetError(f"{source}: unsupported backbone class {name!r} (tinydeeplab supports "
                          f"{SUPPORTED['backbone']})")
    cfg = backbone_cfg["config"]
    _require(cfg, ["image_encoder", "spatial_pyramid_pooling_key", "upsampling_size", "dilation_rates"], source)
    enc = cfg["image_encoder"]
    enc_name = _class_name(enc, f"{source} image_encoder")
    if enc_name != SUPPORTED["encoder"]:
        raise PresetError(f"{source}: unsupported image_encoder class {enc_name!r} (tinydeeplab supports "
                          f"{SUPPORTED['encoder']})")
    e = enc["config"]
    _require(e, ["stackwise_num_filters", "stackwise_num_blocks", "stackwise_num_strides"],
             f"{source} image_encoder")
    image_shape = e.get("image_shape") or [None, None, 3]
    try:
        encoder = ResNetBackbone(
            input_conv_filters=e.get("input_conv_filters", [64]),
            input_conv_kernel_sizes=e.get("input_conv_kernel_sizes", [7]),
            stackwise_num_filters=e["stackwise_num_filters"], stackwise_num_blocks=e["stackwise_num_blocks"],
            stackwise_num_strides=e["stackwise_num_strides"], block_type=e.get("block_type", "bottleneck_block"),
            use_pre_activation=e.get("use_pre_activation", False), in_channels=int(image_shape[-1] or 3),
            output_stride=output_stride)
        up = cfg["upsampling_size"]
        backbone = DeepLabV3Backbone(
            encoder, cfg["spatial_pyramid_pooling_key"], up[0] if isinstance(up, (list, tuple)) else up,
            cfg["dilation_rates"], cfg.get("low_level_feature_key"), cfg.get("projection_filters", 48))
        num_classes, activation = 1, None
        if task_cfg is not None:
            task_name = _class_name(task_cfg, "task.json")
            if task_name != SUPPORTED["task"]:
                raise PresetError(f"task.json: unsupported task class {task_name!r} (tinydeeplab supports "
                                  f"{SUPPORTED['task']})")
            t = task_cfg["config"]
            _require(t, ["num_classes"], "task.json")
            num_classes, activation = t["num_classes"], t.get("activation")
        return DeepLabV3ImageSegmenter(backbone, int(num_classes), activation)
    except (ValueError, TypeError, NotImplementedError) as err:
        if isinstance(err, PresetError):
            raise
        raise PresetError(f"{source}: cannot build the model from this config: {err}") from None


def _open_h5(path: Path):
    import h5py

    if not path.is_file():
        raise PresetError(f"{path}: weights file not found")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise PresetError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}") from None


def _datasets(f) -> dict[str, object]:
    import h5py

    found = {}
    f.visititems(lambda name, obj: found.setdefault(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def load_weights(model: DeepLabV3ImageSegmenter, directory: Path, *, task_weights: bool = True) -> None:
    """Read every parameter and buffer from the preset's HDF5 files into ``model``.

    Raises PresetError naming the file and the parameter for a missing dataset, a dataset whose
    shape differs from the model's, or datasets in the file that no parameter explains.
    Optimizer variables (``optimizer/...``) in task.weights.h5 are skipped.
    """
    paths = keras_weight_paths(model)
    slots = model._slots()
    wanted: dict[str, dict[str, str]] = {}
    for name, (fname, h5path) in paths.items():
        if fname == TASK_FILE and not task_weights:
            continue
        wanted.setdefault(fname, {})[h5path] = name
    for fname, table in wanted.items():
        path = directory / fname
        with _open_h5(path) as f:
            try:
                present = _datasets(f)
            except Exception as err:  # h5py raises assorted errors on damaged B-trees
                raise PresetError(f"{path}: cannot walk the HDF5 tree (corrupt?): {err}") from None
            missing = [f"{table[p]} ({p})" for p in table if p not in present]
            if missing:
                raise PresetError(f"{path}: missing weights for {len(missing)} parameters, first: "
                                  f"{missing[:5]} — is this preset for a different architecture?")
            extra = [p for p in present if p not in table and not p.startswith("optimizer")]
            if extra:
                raise PresetError(f"{path}: {len(extra)} datasets that the model built from config.json has "
                                  f"no place for, first: {extra[:5]}")
            for h5path, name in table.items():
                dset = present[h5path]
                store, key = slots[name]
                if tuple(dset.shape) != store[key].shape:
                    raise PresetError(f"{path}: {h5path} ({name}) has shape {tuple(dset.shape)}, "
                                      f"the model expects {store[key].shape}")
                try:
                    value = np.asarray(dset[()])
                except Exception as err:
                    raise PresetError(f"{path}: cannot read {h5path} ({name}): {err}") from None
                if value.dtype.kind != "f":
                    raise PresetError(f"{path}: {h5path} ({name}) has dtype {value.dtype}, expected floats")
                store[key] = value.astype(np.float32)


def resolve_preset(path) -> Path:
    """A local directory, or a ``kaggle://owner/model/framework/variant/version`` handle (needs kagglehub)."""
    text = os.fspath(path)
    if text.startswith(KAGGLE_PREFIX):
        try:
            import kagglehub
        except ImportError:
            raise PresetError(
                f"{text}: downloading Kaggle handles needs the kagglehub package (pip install kagglehub) and "
                "network access. Otherwise download the preset elsewhere (config.json, task.json, "
                "model.weights.h5, task.weights.h5, preprocessor.json) and pass its directory.") from None
        try:
            return Path(kagglehub.model_download(text[len(KAGGLE_PREFIX):]))
        except Exception as err:
            raise PresetError(f"{text}: kagglehub could not fetch the preset: {err}") from None
    p = Path(text)
    if not p.is_dir():
        raise PresetError(f"{p}: preset directory not found")
    return p


def load_keras_preset(path, *, output_stride=None) -> DeepLabV3ImageSegmenter:
    """Build a :class:`DeepLabV3ImageSegmenter` from a KerasHub preset and load its weights.

    ``output_stride`` (8/16) optionally turns the encoder's last strides into dilation; the
    weights are the same arrays (results then differ from Keras, by design).
    The returned model has ``model.preprocessor`` (an :class:`ImageConverter`) used by
    ``segment``, and ``model.preset_dir``.
    """
    directory = resolve_preset(path)
    config = read_json(directory / "config.json")
    task_path = directory / "task.json"
    task = read_json(task_path) if task_path.exists() else None
    model = build_from_configs(config, task, source=str(directory / "config.json"), output_stride=output_stride)
    load_weights(model, directory, task_weights=task is not None)
    model.preprocessor = ImageConverter.from_preset_dir(directory)
    model.preset_dir = directory
    return model
