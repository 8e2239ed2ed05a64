"""Joint transforms of an (image, label) pair, for training augmentation and evaluation.

Every transform is a callable ``t(image, label, rng=None) -> (image, label)`` with ``image`` (H, W, 3)
uint8 (or a multi-channel (H, W, C) stack of uint8, uint16 or float32) and ``label`` (H, W) uint8.  Geometric changes are applied to both, so labels stay on their pixels:
images are resampled bilinearly, labels with nearest neighbour (a label is never interpolated), and
padding fills the image with ``pad_value`` and the label with the ignore label.

Random transforms draw from ``rng`` (a ``numpy.random.Generator``).  Pass one seeded generator (the
:class:`~tinydeeplab.data.BatchLoader` makes one per item from ``(seed, epoch, index)``) and a run is
reproducible; with ``rng=None`` a fresh unseeded generator is used.

Normalising pixels for the model is not done here: see :func:`to_model_input` and the model's
``ImageConverter``.

>>> rng = np.random.default_rng(0)
>>> train = Compose([RandomScale(0.5, 2.0), RandomCrop(32), RandomHorizontalFlip()])
>>> image, label = np.zeros((20, 30, 3), np.uint8), np.ones((20, 30), np.uint8)
>>> x, y = train(image, label, rng)
>>> x.shape, y.shape, x.dtype.name, y.dtype.name
((32, 32, 3), (32, 32), 'uint8', 'uint8')
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .base import IGNORE_LABEL


def _size2(size, what: str = "size") -> tuple[int, int]:
    """``int`` -> (s, s); ``(h, w)`` -> (h, w); both must be positive."""
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    h, w = int(h), int(w)
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {size}")
    return h, w


IMAGE_DTYPES = ("uint8", "uint16", "float32")


def _check_pair(image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] < 1 or image.dtype.name not in IMAGE_DTYPES:
        raise ValueError(f"image must be (H, W, C) uint8, uint16 or float32, got {image.shape} {image.dtype}")
    if label.shape != image.shape[:2] or label.dtype != np.uint8:
        raise ValueError(f"label must be (H, W) uint8 matching the image {image.shape[:2]}, "
                         f"got {label.shape} {label.dtype}")


def _rng(rng) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def resize_pair(image: np.ndarray, label: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` = (h, w): the image bilinearly (PIL), the label by nearest neighbour.

    An RGB uint8 image is resized as one PIL image; any other stack channel by channel (:func:`resize_bands`).
    """
    h, w = _size2(size)
    _check_pair(image, label)
    if (h, w) == image.shape[:2]:
        return image, label
    if image.shape[2] == 3 and image.dtype == np.uint8:
        img = np.array(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))
    else:
        img = resize_bands(image, (h, w))
    lab = Image.fromarray(np.ascontiguousarray(label)).resize((w, h), Image.NEAREST)
    return img, np.array(lab)                                              # (h, w, C), (h, w)


def resize_bands(image: np.ndarray, size) -> np.ndarray:
    """Bilinear (PIL) resize of an (H, W, C) stack to ``size`` = (h, w), one channel at a time: uint8
    channels as PIL ``L`` images (the arithmetic of PIL's RGB resize, band by band), uint16 and float32
    ones as ``F`` (float32) images, uint16 rounded back and clipped to 0..65535.

    >>> rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    >>> whole = np.array(Image.fromarray(rgb).resize((4, 5), Image.BILINEAR))
    >>> bool((resize_bands(rgb, (5, 4)) == whole).all())
    True
    """
    h, w = size
    bands = []
    for c in range(image.shape[2]):
        band = np.ascontiguousarray(image[:, :, c])
        if image.dtype != np.uint8:
            band = band.astype(np.float32)
        bands.append(np.asarray(Image.fromarray(band).resize((w, h), Image.BILINEAR)))
    out = np.stack(bands, axis=2)                                          # (h, w, C)
    if image.dtype == np.uint16:
        out = np.clip(np.rint(out), 0, 65535)
    return out.astype(image.dtype)


def pad_pair(image, label, height: int, width: int, pad_value=0, ignore_label=IGNORE_LABEL):
    """Pad at the bottom and right to at least ``height`` x ``width`` (image with ``pad_value``,
    label with ``ignore_label``)."""
    h, w = label.shape
    ph, pw = max(height - h, 0), max(width - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=pad_value)        # (H+ph, W+pw, C)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore_label)             # (H+ph, W+pw)
    return image, label


class Compose:
    """Apply transforms in order, passing the same ``rng`` to each."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Resize by a random factor ``s`` in ``[min_scale, max_scale]`` (to ``round(H*s)`` x ``round(W*s)``).

    With ``step`` the factor is drawn from ``min_scale, min_scale + step, ..., max_scale`` (DeepLab's
    0.5:0.25:2.0).  Image bilinear, label nearest.
    """

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0, step: float | None = None):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.step = float(min_scale), float(max_scale), step

    def sample(self, rng) -> float:
        if self.step:
            choices = np.arange(self.min_scale, self.max_scale + 1e-9, self.step)
            return float(choices[rng.integers(len(choices))])
        return float(rng.uniform(self.min_scale, self.max_scale))

    def __call__(self, image, label, rng=None):
        _check_pair(image, label)
        s = self.sample(_rng(rng))
        h, w = label.shape
        return resize_pair(image, label, (max(1, round(h * s)), max(1, round(w * s))))

    def __repr__(self):
        return f"RandomScale({self.min_scale}, {self.max_scale}, step={self.step})"


class RandomCrop:
    """Crop a random ``size`` window; pad first (bottom/right) where the image is smaller.

    Padding fills the image with ``pad_value`` and the label with ``ignore_label``, so the loss skips it.
    """

    def __init__(self, size, ignore_label: int = IGNORE_LABEL, pad_value: int = 0):
        self.size = _size2(size)
        self.ignore_label, self.pad_value = int(ignore_label), pad_value

    def __call__(self, image, label, rng=None):
        _check_pair(image, label)
        rng = _rng(rng)
        ch, cw = self.size
        image, label = pad_pair(image, label, ch, cw, self.pad_value, self.ignore_label)
        h, w = label.shape
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return image[top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]

    def __repr__(self):
        return f"RandomCrop({self.size}, ignore_label={self.ignore_label})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p`` (one draw from ``rng`` per call, flipped or not)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image, label, rng=None):
        _check_pair(image, label)
        if _rng(rng).random() < self.p:
            return image[:, ::-1], label[:, ::-1]
        return image, label

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Resize:
    """Resize to a fixed ``size`` (int = square, or (h, w)): image bilinear, label nearest.

    >>> x, y = Resize((4, 6))(np.zeros((8, 12, 3), np.uint8), np.zeros((8, 12), np.uint8))
    >>> x.shape, y.shape
    ((4, 6, 3), (4, 6))
    """

    def __init__(self, size):
        self.size = _size2(size)

    def __call__(self, image, label, rng=None):
        return resize_pair(image, label, self.size)

    def __repr__(self):
        return f"Resize({self.size})"


class PadTo:
    """Pad at the bottom/right to at least ``size`` and/or up to a multiple of ``multiple``.

    For evaluation at full resolution: the label padding is the ignore label, so metrics skip it.

    >>> x, y = PadTo(multiple=8)(np.zeros((5, 9, 3), np.uint8), np.zeros((5, 9), np.uint8))
    >>> x.shape, int(y[7, 15])
    ((8, 16, 3), 255)
    """

    def __init__(self, size=None, *, multiple: int | None = None, ignore_label: int = IGNORE_LABEL,
                 pad_value: int = 0):
        if size is None and multiple is None:
            raise ValueError("PadTo needs a size, a multiple, or both")
        if multiple is not None and int(multiple) < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}")
        self.size = None if size is None else _size2(size)
        self.multiple = None if multiple is None else int(multiple)
        self.ignore_label, self.pad_value = int(ignore_label), pad_value

    def target(self, height: int, width: int) -> tuple[int, int]:
        if self.size is not None:
            height, width = max(height, self.size[0]), max(width, self.size[1])
        if self.multiple is not None:
            m = self.multiple
            height, width = -(-height // m) * m, -(-width // m) * m
        return height, width

    def __call__(self, image, label, rng=None):
        _check_pair(image, label)
        return pad_pair(image, label, *self.target(*label.shape), self.pad_value, self.ignore_label)

    def __repr__(self):
        return f"PadTo({self.size}, multiple={self.multiple})"


def to_model_input(images, scale=1 / 127.5, offset=-1.0) -> np.ndarray:
    """``images * scale + offset`` as float32 NHWC; an (H, W, 3) image gets a batch axis.

    ``scale``/``offset`` may be per-channel; the default maps 0..255 to -1..1.  Pass ``scale=1,
    offset=0`` for raw pixels (the KerasHub pascalvoc preset). The same arithmetic as a model's
    converter (:meth:`tinydeeplab.models.ImageConverter.normalize`), which it calls.

    >>> x = to_model_input(np.array([[[0, 255, 51]]], np.uint8))
    >>> x.shape, x.dtype.name, [round(float(v), 4) for v in x.ravel()]
    ((1, 1, 1, 3), 'float32', [-1.0, 1.0, -0.6])
    """
    from ..models.preprocessor import ImageConverter

    return ImageConverter(scale=scale, offset=offset).normalize(images)            # (N, H, W, C) float32
