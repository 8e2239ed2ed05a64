"""KerasHub's image converter: crop to the aspect ratio, resize, then ``x * scale + offset``.

For an image (H, W, 3) and ``image_size`` (h, w) with ``crop_to_aspect_ratio``::

    crop_h = clamp(int(W * h / w), 1, H),   crop_w = clamp(int(H * w / h), 1, W)
    top    = (H - crop_h) // 2,             left   = (W - crop_w) // 2
    x      = resize(image[top:top+crop_h, left:left+crop_w], (h, w)) * scale + offset

Resizing is bilinear with half-pixel centres and no antialiasing (or nearest neighbour), the same
op as the model's upsampling.
"""
from __future__ import annotations

import numpy as np

from ..backend import ops
from ..errors import OptionError
from ..functional.resize_coeffs import nearest_indices

INTERPOLATIONS = ("bilinear", "nearest")


class ImageConverter:
    """Turns raw images into model-ready float32 batches, as the preset's preprocessor does.

    ``scale`` and ``offset`` are None, one number (every channel), or one value per channel: 3 for
    RGB, as KerasHub writes them, or C for a C-channel model (e.g. ``scale = 1 / std``,
    ``offset = -mean / std`` from per-channel statistics).

    >>> conv = ImageConverter(image_size=(4, 4), scale=1 / 255)
    >>> x, box = conv(np.full((6, 8, 3), 255, np.uint8))
    >>> x.shape, float(x.max()), box
    ((1, 4, 4, 3), 1.0, (0, 1, 6, 6))
    """

    def __init__(self, image_size=None, scale=None, offset=None, interpolation="bilinear",
                 crop_to_aspect_ratio=True):
        self.image_size = _image_size(image_size)
        self.scale = _per_channel(scale, "scale")
        self.offset = _per_channel(offset, "offset")
        if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
            raise OptionError(f"interpolation {interpolation!r} is not supported; tinydeeplab implements "
                              f"{', '.join(map(repr, INTERPOLATIONS))}")
        self.interpolation = interpolation
        self.crop_to_aspect_ratio = _flag(crop_to_aspect_ratio, "crop_to_aspect_ratio")

    @classmethod
    def from_config(cls, cfg: dict) -> "ImageConverter":
        """From a KerasHub image converter's ``config`` object; OptionError naming the key otherwise.

        ``pad_to_aspect_ratio`` and ``antialias`` must be false (or absent): tinydeeplab does not
        implement them, and ignoring them would preprocess differently from Keras.
        """
        if not isinstance(cfg, dict):
            raise OptionError(f"the image converter config must be a JSON object, got {type(cfg).__name__}")
        for key in ("pad_to_aspect_ratio", "antialias"):
            if cfg.get(key) is not None and _flag(cfg[key], key):
                raise OptionError(f"{key} is true, which tinydeeplab does not implement (only bilinear/nearest "
                                  f"resizing without antialiasing, after an optional crop_to_aspect_ratio)")
        return cls(cfg.get("image_size"), cfg.get("scale"), cfg.get("offset"),
                   cfg.get("interpolation", "bilinear"), cfg.get("crop_to_aspect_ratio", True))

    def with_values(self, scale, offset) -> "ImageConverter":
        """The same crop and resize with other ``scale`` and ``offset``."""
        return ImageConverter(self.image_size, scale, offset, self.interpolation, self.crop_to_aspect_ratio)

    def get_config(self) -> dict:
        tolist = lambda a: None if a is None else a.tolist()  # noqa: E731
        return {"image_size": None if self.image_size is None else list(self.image_size),
                "scale": tolist(self.scale), "offset": tolist(self.offset),
                "interpolation": self.interpolation, "crop_to_aspect_ratio": self.crop_to_aspect_ratio}

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, crop_h, crop_w)`` of the centred crop with the target aspect ratio."""
        if self.image_size is None or not self.crop_to_aspect_ratio:
            return 0, 0, height, width
        th, tw = self.image_size
        ch = min(max(int(width * th / tw), 1), height)
        cw = min(max(int(height * tw / th), 1), width)
        return (height - ch) // 2, (width - cw) // 2, ch, cw

    def __call__(self, image) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """``image`` (H, W, C) uint8/uint16/float -> (``x`` (1, h, w, C) float32, crop box in the image)."""
        image = check_image(image)
        top, left, ch, cw = box = self.crop_box(*image.shape[:2])
        x = image[None, top:top + ch, left:left + cw, :].astype(np.float32)    # (1, ch, cw, C)
        if self.image_size is not None and (ch, cw) != self.image_size:
            x = resize(x, self.image_size, self.interpolation)
        return self.normalize(x, copy=False), box

    def normalize(self, images, *, copy: bool = True) -> np.ndarray:
        """``images * scale + offset`` as float32 NHWC, per channel where scale/offset have one value per
        channel (their count must then equal C); an (H, W, C) image gets a batch axis. No crop, no resize: the batch loader's path for training
        crops, and the last step of :meth:`__call__`.

        >>> x = ImageConverter(scale=1 / 127.5, offset=-1).normalize(np.array([[[0, 255, 51]]], np.uint8))
        >>> x.shape, x.dtype.name, [round(float(v), 4) for v in x.ravel()]
        ((1, 1, 1, 3), 'float32', [-1.0, 1.0, -0.6])
        """
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"images must be (H, W, C) or (N, H, W, C), got shape {x.shape}")
        for key, values in (("scale", self.scale), ("offset", self.offset)):
            if values is not None and values.size > 1 and values.size != x.shape[-1]:
                raise ValueError(f"the image converter's {key} has {values.size} values (one per channel) but "
                                 f"the images have {x.shape[-1]} channels")
        x = x.astype(np.float32, copy=copy)                                   # (N, H, W, C)
        if self.scale is not None:
            x *= self.scale
        if self.offset is not None:
            x += self.offset
        return x


def converter_config(data: dict):
    """The image converter's ``config`` in a parsed preprocessor.json or image_converter.json object.

    preprocessor.json holds it at ``config.image_converter.config`` (``image_converter`` may be null:
    no conversion), image_converter.json at ``config``.  OptionError naming the key when a level is
    not a JSON object.

    >>> converter_config({"config": {"image_converter": {"config": {"image_size": [8, 8]}}}})
    {'image_size': [8, 8]}
    >>> converter_config({"config": 5})
    Traceback (most recent call last):
    ...
    tinydeeplab.errors.OptionError: 'config' must be a JSON object, got int
    """
    def level(obj, key, where):
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, dict):
            raise OptionError(f"{where!r} must be a JSON object, got {type(value).__name__}")
        return value

    cfg = level(data, "config", "config")
    if "image_converter" not in cfg:
        return cfg                                                      # image_converter.json
    if cfg["image_converter"] is None:
        return {}
    return level(level(cfg, "image_converter", "config.image_converter"), "config",
                 "config.image_converter.config")


def _image_size(value):
    """``None`` or ``(height, width)`` of two whole numbers >= 1, else OptionError naming image_size."""
    if value is None:
        return None
    arr = _array(value) if isinstance(value, (list, tuple, np.ndarray)) else np.asarray(None)
    if (arr.shape != (2,) or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all()
            or not np.array_equal(arr, np.round(arr)) or (arr < 1).any()):
        raise OptionError(f"image_size must be [height, width], two whole numbers >= 1, got {value!r}")
    return int(arr[0]), int(arr[1])


def _per_channel(value, key: str):
    """``None``, or a float32 scalar / (C,) array of finite numbers, else OptionError naming ``key``."""
    if value is None:
        return None
    arr = _array(value) if not isinstance(value, (str, bytes, dict, bool)) else np.asarray(None)
    if (arr.dtype.kind not in "iuf" or arr.ndim > 1 or (arr.ndim == 1 and arr.size == 0)
            or not np.isfinite(arr).all()):
        raise OptionError(f"{key} must be a finite number or a list with one per channel (3 for RGB), got {value!r}")
    return arr.astype(np.float32)


def check_channel_values(converter: ImageConverter, channels: int) -> ImageConverter:
    """``converter`` if its per-channel ``scale``/``offset`` (when not one number) have ``channels`` values,
    else OptionError naming the key.

    >>> check_channel_values(ImageConverter(scale=[1, 2]), 3)
    Traceback (most recent call last):
    ...
    tinydeeplab.errors.OptionError: scale has 2 values; a 3-channel model needs one number or 3
    """
    for key in ("scale", "offset"):
        values = getattr(converter, key)
        if values is not None and values.size not in (1, channels):
            raise OptionError(f"{key} has {values.size} values; a {channels}-channel model needs one number or "
                              f"{channels}")
    return converter


def _array(value) -> np.ndarray:
    """``value`` as an array; an object array (refused by the callers) for ragged or odd content."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        return np.asarray(None)


def _flag(value, key: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(f"{key} must be true or false, got {value!r}")
    return bool(value)


def resize(x, size, interpolation="bilinear"):
    """Resize an NHWC batch to ``size`` with the chosen interpolation (no antialiasing)."""
    if interpolation == "nearest":
        rows, cols = nearest_indices(x.shape[1], size[0]), nearest_indices(x.shape[2], size[1])
        return x[:, rows][:, :, cols]
    return ops().bilinear_resize_forward(x, tuple(size))[0]


def check_image(image) -> np.ndarray:
    """An (H, W, C) image as an array (C = 3 for RGB), or ValueError saying what it is instead.

    A 2-D array is refused rather than guessed: a grey image for a 1-channel model is (H, W, 1)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (H, W, C), got {type(image).__name__}")
    if image.ndim == 2:
        raise ValueError(f"image must be (H, W, C), e.g. (H, W, 3) for RGB or (H, W, 1) for grey; got a 2-D "
                         f"array of shape {image.shape}")
    if image.ndim != 3 or image.shape[-1] < 1:
        raise ValueError(f"image must have shape (H, W, C), got shape {image.shape}")
    if image.dtype.kind not in "uif":
        raise ValueError(f"image must hold numbers (uint8 or float), got dtype {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


