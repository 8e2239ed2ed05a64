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
from ..functional.resize_coeffs import nearest_indices

INTERPOLATIONS = ("bilinear", "nearest")


class ImageConverter:
    """Turns raw RGB images into model-ready float32 batches, as the preset's preprocessor does.

    >>> conv = ImageConverter(image_size=(4, 4), scale=1 / 255)
    >>> x, box = conv(np.full((6, 8, 3), 255, np.uint8))
    >>> x.shape, float(x.max()), box
    ((1, 4, 4, 3), 1.0, (0, 1, 6, 6))
    """

    def __init__(self, image_size=None, scale=None, offset=None, interpolation="bilinear",
                 crop_to_aspect_ratio=True):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.scale = None if scale is None else np.asarray(scale, np.float32)
        self.offset = None if offset is None else np.asarray(offset, np.float32)
        self.interpolation = interpolation
        self.crop_to_aspect_ratio = bool(crop_to_aspect_ratio)

    @classmethod
    def from_config(cls, cfg: dict) -> "ImageConverter":
        return cls(cfg.get("image_size"), cfg.get("scale"), cfg.get("offset"),
                   cfg.get("interpolation", "bilinear"), cfg.get("crop_to_aspect_ratio", True))

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
        """``image`` (H, W, 3) uint8/float -> (``x`` (1, h, w, 3) float32, crop box in the image)."""
        image = check_image(image)
        top, left, ch, cw = box = self.crop_box(*image.shape[:2])
        x = image[None, top:top + ch, left:left + cw, :].astype(np.float32)    # (1, ch, cw, 3)
        if self.image_size is not None and (ch, cw) != self.image_size:
            x = resize(x, self.image_size, self.interpolation)
        if self.scale is not None:
            x = x * self.scale
        if self.offset is not None:
            x = x + self.offset
        return x.astype(np.float32, copy=False), box


def resize(x, size, interpolation="bilinear"):
    """Resize an NHWC batch to ``size`` with the chosen interpolation (no antialiasing)."""
    if interpolation == "nearest":
        rows, cols = nearest_indices(x.shape[1], size[0]), nearest_indices(x.shape[2], size[1])
        return x[:, rows][:, :, cols]
    return ops().bilinear_resize_forward(x, tuple(size))[0]


def check_image(image) -> np.ndarray:
    """An (H, W, 3) RGB image as an array, or ValueError saying what it is instead."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (H, W, 3), got {type(image).__name__}")
    if image.ndim == 2:
        raise ValueError(f"image must be RGB (H, W, 3); got a single-channel image of shape {image.shape}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB with shape (H, W, 3), got shape {image.shape}")
    if image.dtype.kind not in "uif":
        raise ValueError(f"image must hold numbers (uint8 or float), got dtype {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return image


