"""Import and export of KerasHub ``DeepLabV3ImageSegmenter`` presets.

A preset directory holds::

    config.json          the backbone: DeepLabV3Backbone with a nested image-encoder config (any class in
                         tinydeeplab.models.ENCODERS, e.g. ResNetBackbone)
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
import re
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, encoder_class
from ..models.input_channels import adapt_input_kernel, check_in_channels, tile_channels
from ..models.preprocessor import ImageConverter, check_channel_values, converter_config
from .errors import PresetError
from .keras_layout import TASK_FILE, keras_weight_paths

KAGGLE_PREFIX = "kaggle://"
SUPPORTED = {"backbone": "DeepLabV3Backbone", "task": "DeepLabV3ImageSegmenter"}   # encoders: models.ENCODERS


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


def _flag(value, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise PresetError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def build_from_configs(backbone_cfg: dict, task_cfg: dict | None, *, source: str = "config.json",
                       output_stride=None, in_channels=None) -> DeepLabV3ImageSegmenter:
    """Build a segmenter from the ``config`` dicts of config.json and task.json (no weights).

    ``in_channels`` replaces the channel count of the encoder's ``image_shape`` (KerasHub's key for it)."""
    name = _class_name(backbone_cfg, source)
    if name != SUPPORTED["backbone"]:
        raise PresetError(f"{source}: unsupported backbone class {name!r} (tinydeeplab supports "
                          f"{SUPPORTED['backbone']})")
    cfg = backbone_cfg["config"]
    _require(cfg, ["image_encoder", "spatial_pyramid_pooling_key", "upsampling_size", "dilation_rates"], source)
    enc = cfg["image_encoder"]
    enc_name = _class_name(enc, f"{source} image_encoder")
    try:
        encoder_cls = encoder_class(enc_name)
    except ValueError as err:
        raise PresetError(f"{source}: {err}") from None
    enc_cfg = enc["config"] if in_channels is None else {**enc["config"], "image_shape": [None, None, in_channels]}
    try:
        encoder = encoder_cls.from_config(enc_cfg, output_stride=output_stride)
        if in_channels is not None and encoder.in_channels != in_channels:
            raise PresetError(f"{source}: the {enc_name} encoder does not read image_shape, so it cannot be "
                              f"built for {in_channels} input channels")
        up = cfg["upsampling_size"]
        backbone = DeepLabV3Backbone(
            encoder, cfg["spatial_pyramid_pooling_key"], up[0] if isinstance(up, (list, tuple)) else up,
            cfg["dilation_rates"], cfg.get("low_level_feature_key"), cfg.get("projection_filters", 48),
            num_channels=int(cfg.get("num_channels", 256)),   # num_channels, separable: tinydeeplab extensions
            separable=_flag(cfg.get("separable", False), "separable", source))
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

    def visit(name, obj):  # must return None, or h5py stops walking
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    f.visititems(visit)
    return found


def load_weights(model: DeepLabV3ImageSegmenter, directory: Path, *, task_weights: bool = True,
                 adapt=None) -> None:
    """Read every parameter and buffer from the preset's HDF5 files into ``model``.

    Raises PresetError naming the file and the parameter for a missing dataset, a dataset whose
    shape differs from the model's, or datasets in the file that no parameter explains.
    Optimizer variables (``optimizer/...``) in task.weights.h5 are skipped. ``adapt`` maps parameter
    names to functions applied to the stored array before its shape is checked (the input kernel of a
    model built for another channel count).
    """
    paths = keras_weight_paths(model)
    slots = model.slots()
    wanted: dict[str, dict[str, str]] = {}
    for name, (fname, h5path) in paths.items():
        if fname == TASK_FILE and not task_weights:
            continue
        wanted.setdefault(fname, {})[h5path] = name
    for fname, table in wanted.items():
        read_weights(directory / fname, table, slots, adapt=adapt)


def read_weights(path: Path, table: dict[str, str], slots: dict, *, adapt=None) -> None:
    """Read the HDF5 file ``path`` into a model: ``table`` maps each dataset path to a dotted parameter name,
    ``slots`` (:meth:`~tinydeeplab.nn.Module.slots`) maps that name to where the array lives, ``adapt`` as in
    :func:`load_weights`. PresetError for a missing dataset, one no parameter explains (optimizer variables
    skipped), a wrong shape or dtype, or NaN / infinite values."""
    adapt = adapt or {}
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
            if tuple(dset.shape) != store[key].shape and name not in adapt:
                raise PresetError(f"{path}: {h5path} ({name}) has shape {tuple(dset.shape)}, "
                                  f"the model expects {store[key].shape}")
            try:
                value = np.asarray(dset[()])
            except Exception as err:
                raise PresetError(f"{path}: cannot read {h5path} ({name}): {err}") from None
            if value.dtype.kind != "f":
                raise PresetError(f"{path}: {h5path} ({name}) has dtype {value.dtype}, expected floats")
            if not np.isfinite(value).all():
                raise PresetError(f"{path}: {h5path} ({name}) holds NaN or infinite values; this preset "
                                  f"cannot be used (written by a diverged run or damaged)")
            if name in adapt:
                value = adapt[name](value)
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


def load_keras_preset(path, *, output_stride=None, in_channels=None, adapt=None) -> DeepLabV3ImageSegmenter:
    """Build a :class:`DeepLabV3ImageSegmenter` from a KerasHub preset and load its weights.

    ``output_stride`` (8/16) optionally turns the encoder's last strides into dilation; the
    weights are the same arrays (results then differ from Keras, by design).
    ``in_channels`` = C builds the encoder for C-channel images; when C differs from the preset's own
    channel count S, the first kernel (kh, kw, S, F) is re-made as (kh, kw, C, F) by ``adapt``, one of
    "repeat", "mean", "zero" (:mod:`tinydeeplab.models.input_channels` gives the equations), and S
    per-channel ``scale``/``offset`` values of the converter are repeated cyclically (channel c takes
    c mod S). When C equals S the preset loads as stored and ``adapt`` is not used.
    The returned model has ``model.preprocessor`` (an :class:`ImageConverter`) used by
    ``segment``, and ``model.preset_dir``.
    """
    directory = resolve_preset(path)
    config = read_json(directory / "config.json")
    task_path = directory / "task.json"
    task = read_json(task_path) if task_path.exists() else None
    source = str(directory / "config.json")
    kernels, saved_for = {}, {}
    if in_channels is not None:
        try:
            in_channels = check_in_channels(in_channels)
        except OptionError as err:
            raise PresetError(f"{directory}: {err}") from None
    model = build_from_configs(config, task, source=source, output_stride=output_stride, in_channels=in_channels)
    if in_channels is not None:
        def adapt_kernel(w):                                         # (kh, kw, S, F) -> (kh, kw, C, F)
            saved_for["channels"] = w.shape[2]
            return adapt_input_kernel(w, in_channels, adapt)
        kernels = {model.input_kernel_name(): adapt_kernel}
    try:
        load_weights(model, directory, task_weights=task is not None, adapt=kernels)
    except OptionError as err:
        raise PresetError(f"{directory}: {err}") from None
    model.preprocessor = read_image_converter(directory, channels=saved_for.get("channels", model.in_channels))
    if in_channels is not None:
        model.preprocessor.scale = tile_channels(model.preprocessor.scale, in_channels)
        model.preprocessor.offset = tile_channels(model.preprocessor.offset, in_channels)
    model.preset_dir = directory
    return model


def read_image_converter(directory: Path, channels: int | None = None) -> ImageConverter:
    """The preset's :class:`ImageConverter` from preprocessor.json (or image_converter.json); an identity
    converter when neither exists. With ``channels``, per-channel scale/offset must have that many values."""
    for name in ("preprocessor.json", "image_converter.json"):
        path = Path(directory) / name
        if path.exists():
            try:
                converter = ImageConverter.from_config(converter_config(read_json(path)))
                if channels is not None:
                    check_channel_values(converter, channels)
                return converter
            except OptionError as err:
                raise PresetError(f"{path}: {err}") from None
    return ImageConverter()


# -- writing ------------------------------------------------------------------------------------
def _serialized(module: str, class_name: str, config: dict, registered: str | None) -> dict:
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    return {"module": module, "class_name": class_name,
            "config": {"name": config.pop("name"), "trainable": True, "dtype": dtype, **config},
            "registered_name": registered}


def _snake_case(name: str) -> str:
    """Keras's default object name (``keras.src.utils.naming.to_snake_case``): ``"ResNetBackbone"`` ->
    ``"res_net_backbone"``, ``"CSPNetBackbone"`` -> ``"csp_net_backbone"`` (a run of capitals stays one word).

    >>> _snake_case("ResNetBackbone"), _snake_case("CSPNetBackbone")
    ('res_net_backbone', 'csp_net_backbone')
    """
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def backbone_config(model: DeepLabV3ImageSegmenter) -> dict:
    """The config.json object KerasHub writes for this model's DeepLabV3Backbone."""
    bb = model.backbone
    encoder = bb.image_encoder
    name = encoder.keras_class_name
    enc = _serialized(encoder.keras_module, name, {"name": _snake_case(name), **encoder.get_config()},
                      f"keras_hub>{name}")
    c = bb.config
    return _serialized("keras_hub.src.models.deeplab_v3.deeplab_v3_backbone", "DeepLabV3Backbone",
                       {"name": "deep_lab_v3_backbone", "image_encoder": enc,
                        "projection_filters": c["projection_filters"], "dilation_rates": c["dilation_rates"],
                        "upsampling_size": c["upsampling_size"], "low_level_feature_key": c["low_level_feature_key"],
                        "spatial_pyramid_pooling_key": c["spatial_pyramid_pooling_key"],
                        "image_shape": [None, None, encoder.in_channels],
                        **({} if bb.out_channels == 256 else {"num_channels": bb.out_channels}),
                        **({"separable": True} if c["separable"] else {})},
                       "keras_hub>DeepLabV3Backbone")


def keras_incompatibilities(model: DeepLabV3ImageSegmenter) -> list[str]:
    """What in ``model`` KerasHub's ``DeepLabV3Backbone`` cannot build (empty: a KerasHub-loadable preset).

    >>> from tinydeeplab.models.recipes import build_model
    >>> for problem in keras_incompatibilities(build_model("small", 3, separable=True)):
    ...     print(problem)
    it has 64-channel ASPP/head (KerasHub only builds 256)
    it has separable ASPP/decoder convs (the DeepLabV3+ paper's head; KerasHub has no such option)
    """
    bb = model.backbone
    problems = []
    if bb.out_channels != 256:
        problems.append(f"it has {bb.out_channels}-channel ASPP/head (KerasHub only builds 256)")
    if bb.config["separable"]:
        problems.append("it has separable ASPP/decoder convs (the DeepLabV3+ paper's head; "
                        "KerasHub has no such option)")
    return problems


def preprocessor_config(converter: ImageConverter) -> dict:
    conv_cfg = converter.get_config()
    scale = conv_cfg["scale"] if conv_cfg["scale"] is not None else None
    image_converter = _serialized(
        "keras_hub.src.models.deeplab_v3.deeplab_v3_image_converter", "DeepLabV3ImageConverter",
        {"name": "deep_lab_v3_image_converter", "image_size": conv_cfg["image_size"], "scale": scale,
         "offset": conv_cfg["offset"], "interpolation": conv_cfg["interpolation"], "antialias": False,
         "crop_to_aspect_ratio": conv_cfg["crop_to_aspect_ratio"], "pad_to_aspect_ratio": False,
         "bounding_box_format": "yxyx"},
        "keras_hub>DeepLabV3ImageConverter")
    return _serialized(
        "keras_hub.src.models.deeplab_v3.deeplab_v3_image_segmeter_preprocessor",
        "DeepLabV3ImageSegmenterPreprocessor",
        {"name": "deep_lab_v3_image_segmenter_preprocessor", "image_converter": image_converter,
         "config_file": "preprocessor.json"},
        "keras_hub>DeepLabV3ImageSegmenterPreprocessor")


def preset_configs(model: DeepLabV3ImageSegmenter) -> dict:
    """``{"config": ..., "task": ..., "preprocessor": ...}``: the JSON objects of config.json, task.json
    and preprocessor.json (also stored in training checkpoints to rebuild the model)."""
    backbone = backbone_config(model)
    prep = preprocessor_config(model.preprocessor)
    task = _serialized("keras_hub.src.models.deeplab_v3.deeplab_v3_segmenter", "DeepLabV3ImageSegmenter",
                       {"name": "deep_lab_v3_image_segmenter", "backbone": backbone, "preprocessor": prep,
                        "num_classes": model.num_classes, "activation": model.activation},
                       "keras_hub>DeepLabV3ImageSegmenter")
    return {"config": backbone, "task": task, "preprocessor": prep}


def model_from_configs(configs: dict, *, source: str) -> DeepLabV3ImageSegmenter:
    """Inverse of :func:`preset_configs` (weights not loaded)."""
    model = build_from_configs(configs["config"], configs["task"], source=source)
    prep = configs.get("preprocessor")
    if prep:
        try:
            model.preprocessor = check_channel_values(ImageConverter.from_config(converter_config(prep)),
                                                      model.in_channels)
        except OptionError as err:
            raise PresetError(f"{source}: preprocessor: {err}") from None
    return model


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=4) + "\n", encoding="utf-8")


def save_keras_preset(model: DeepLabV3ImageSegmenter, directory, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a KerasHub preset directory that ``DeepLabV3ImageSegmenter.from_preset`` loads.

    Files are first written into a temporary sibling directory, which is then renamed into place,
    so an interrupted export never leaves a half-written preset behind. An existing non-empty
    ``directory`` is an error unless ``overwrite``: then the new preset is complete before the old
    one moves aside (:func:`tinydeeplab.atomic.replace_directory`). A model holding a NaN or an
    infinity is never written. A model that KerasHub cannot build (:func:`keras_incompatibilities`:
    an ASPP and head narrower than KerasHub's fixed 256 channels, ``num_channels``; the separable head of
    the DeepLabV3+ paper, ``separable``) is written with those extra config.json keys: tinydeeplab loads
    it; KerasHub (0.32) ignores the keys, builds its standard head and then fails on the weights (their
    shapes differ: e.g. a separable branch's 1x1 pointwise kernel where it expects a 3x3 kernel), so such a
    preset never loads there as a wrong model. A warning says so on export.
    """
    import h5py

    from .. import __version__
    from ..atomic import build_directory, replace_directory

    directory = Path(directory)
    if overwrite and directory.exists():
        return replace_directory(directory, lambda tmp: save_keras_preset(model, tmp))
    bad = model.first_non_finite()
    if bad is not None:
        raise PresetError(f"{directory}: not written: {bad} holds NaN or infinite values (a diverged model)")
    for problem in keras_incompatibilities(model):
        import warnings
        warnings.warn(f"{directory}: {problem}, so only tinydeeplab can load this preset", stacklevel=2)
    if directory.exists() and any(directory.iterdir()):
        raise PresetError(f"{directory}: exists and is not empty; choose a new directory")
    with build_directory(directory) as tmp:
        backbone, task, prep = preset_configs(model).values()
        _write_json(tmp / "config.json", backbone)
        _write_json(tmp / "task.json", task)
        _write_json(tmp / "preprocessor.json", prep)
        _write_json(tmp / "image_converter.json", prep["config"]["image_converter"])
        n_weights = model.num_parameters() + sum(b.size for _, b in model.named_buffers())
        _write_json(tmp / "metadata.json", {"keras_version": "3.15.1", "keras_hub_version": "0.32.0",
                                            "parameter_count": int(n_weights), "tasks": ["ImageSegmenter"],
                                            "saved_by": f"tinydeeplab {__version__}"})
        state = model.state_dict()
        files = {}
        try:
            for name, (fname, h5path) in keras_weight_paths(model).items():
                if fname not in files:
                    files[fname] = h5py.File(tmp / fname, "w")
                files[fname].create_dataset(h5path, data=np.asarray(state[name], np.float32))
        finally:
            for f in files.values():
                f.close()
    return directory
