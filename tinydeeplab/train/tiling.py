"""Streaming tiled segmentation of large images: labels band by band, bounded memory.

:func:`segment_tiled` labels an (H, W, 3) image without ever holding per-class scores for the
whole image. It works in *model space*: the pixels the model is fed, i.e. the image region after
the preprocessor's geometry (see :func:`model_input_size`); model space is the image itself when
the preset does not resize (``image_size`` None).

Rule (window, overlap, blending). With window ``(wh, ww)`` (clamped to model space) and overlap
``(oh, ow)``, tiles start along each axis at ``0, s, 2 s, ...`` with stride ``s = w - o`` and the
last tile is moved to end at the border, so every pixel is covered. Each tile is preprocessed on
its own (``x * scale + offset``, and the preset's resize computed for that tile's pixels only),
run through the model (with :func:`~tinydeeplab.train.predict_logits`' test-time options) and
turned into probabilities ``p_t = softmax(z_t)`` (a sigmoid for a binary head). Overlapping tiles
are blended with separable ramp weights that fall off linearly inside the overlap, away from the
tile's centre::

    r(i; n, o) = min(1, (i + 1) / (o + 1), (n - i) / (o + 1))     i = 0 .. n-1 inside a tile
    w_t(y, x)  = r(y - top_t; wh, oh) * r(x - left_t; ww, ow)      (> 0 everywhere; 1 with o = 0)
    p(y, x)    = sum_t w_t p_t / sum_t w_t ,    scores = log p ,    label = argmax_k p

With one tile the scores are the model's own logits, so the labels are exactly those of the
whole-image path (:meth:`~tinydeeplab.models.deeplab.DeepLabV3ImageSegmenter.segment`).

Tiled is not the same model as whole-image: each tile's ASPP image-pooling branch averages over
that tile, not over the image, and a tile's border pixels see less context; the overlap and the
ramp weights reduce, not remove, the difference. ``benchmarks/bench_large_image.py`` measures
how many labels agree.

Memory. Tile rows are processed top to bottom; the blended probabilities of one tile row,
``(wh, W_model, K)`` float32, are the only per-class array kept, and rows no later tile touches
are turned into labels before the next tile row starts. When the preset resizes (model space !=
image region), the scores stay at model-space size (the preset's ``image_size``, bounded by the
preset, not by the image) and are resized to the image ``OUT_BAND`` rows at a time. The uint8
image and the label map are held whole; a float copy of the image never is.
"""
from __future__ import annotations

import numpy as np

from ..errors import OptionError
from ..functional.resize_coeffs import bilinear_coefficients, nearest_indices
from ..models.preprocessor import ImageConverter, check_image
from ..models.head import labels_from_probabilities, logits_of, predicted_labels, probabilities
from .evaluate import _starts, predict_logits

DEFAULT_WINDOW = (512, 512)          # model-space pixels; each tile costs about one 512x512 forward
STREAM_ABOVE = 2048 * 2048           # the CLI tiles automatically above this many model-space pixels
OUT_BAND = 64                        # image rows resized from model-space scores at a time


def ramp(n: int, overlap: int) -> np.ndarray:
    """Blending weight along one axis of a tile of ``n`` pixels: ``min(1, (i+1)/(o+1), (n-i)/(o+1))``.

    >>> (ramp(6, 2) * 3).round(5).tolist()            # thirds: 1/3, 2/3, 1, 1, 2/3, 1/3
    [1.0, 2.0, 3.0, 3.0, 2.0, 1.0]
    >>> ramp(3, 0).tolist()
    [1.0, 1.0, 1.0]
    """
    i = np.arange(n, dtype=np.float64)
    return np.minimum(1.0, np.minimum(i + 1, n - i) / (overlap + 1)).astype(np.float32)


def model_input_size(converter, height: int, width: int, full_image: bool = False):
    """``(region box (top, left, h, w) in the image, model-space size (h, w))`` for an image.

    Default: the converter's own crop box and ``image_size`` (the whole-image path's geometry).
    ``full_image``: the whole image, resized by the same factor the preset applies to its crop
    (``image_size / crop size`` per axis), so every pixel gets a label at the preset's scale,
    without the aspect crop and without distortion.

    >>> conv = ImageConverter(image_size=(4, 4))
    >>> model_input_size(conv, 6, 8), model_input_size(conv, 6, 8, full_image=True)
    (((0, 1, 6, 6), (4, 4)), ((0, 0, 6, 8), (4, 5)))
    """
    box = conv_box = converter.crop_box(height, width)
    size = converter.image_size or conv_box[2:]
    if full_image:
        box = (0, 0, height, width)
        size = tuple(max(int(round(n * s / c)), 1) for n, s, c in zip((height, width), size, conv_box[2:]))
    return box, tuple(int(s) for s in size)


def _compact(a, b):
    """Unique indices of ``a`` and ``b`` and the positions of ``a``'s and ``b``'s in them."""
    u, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    return u, inv[:len(a)], inv[len(a):]


def _bilinear(x, rows, cols):
    """``x (h_in, w_in, C)`` resampled at ``rows = (i0, i1, u0, u1)``, ``cols = (j0, j1, v0, v1)``.

    The arithmetic of the CPU resize kernel, in float32, reading only the samples needed::

        out[r, c] = u0 * (v0 x[i0, j0] + v1 x[i0, j1]) + u1 * (v0 x[i1, j0] + v1 x[i1, j1])
    """
    i0, i1, u0, u1 = rows
    j0, j1, v0, v1 = cols
    r, a0, a1 = _compact(i0, i1)
    c, b0, b1 = _compact(j0, j1)
    xs = x[np.ix_(r, c)].astype(np.float32, copy=False)                    # (n_r, n_c, C)
    xs = v0[:, None] * xs[:, b0] + v1[:, None] * xs[:, b1]                 # along W: (n_r, w, C)
    return u0[:, None, None] * xs[a0] + u1[:, None, None] * xs[a1]          # along H: (h, w, C)


def _axis(n_in: int, n_out: int):
    i0, i1, t = bilinear_coefficients(n_in, n_out)
    return i0, i1, (1.0 - t).astype(np.float32), t.astype(np.float32)


class _TileInputs:
    """Model-ready tiles ``(1, h, w, 3)`` of model space, cut from the uint8 image region."""

    def __init__(self, converter, region, size):
        cfg = converter.get_config()
        for key in ("pad_to_aspect_ratio", "antialias"):
            if cfg.get(key):
                raise OptionError(f"tiled inference does not implement the preprocessor's {key}=True")
        self.values = ImageConverter.from_config({**cfg, "image_size": None})   # scale and offset only
        self.region, self.size = region, size
        rh, rw = region.shape[:2]
        self.resized = (rh, rw) != size
        if self.resized and converter.interpolation == "nearest":
            self.rows, self.cols = nearest_indices(rh, size[0]), nearest_indices(rw, size[1])
        elif self.resized:
            self.rows, self.cols = _axis(rh, size[0]), _axis(rw, size[1])
        self.nearest = converter.interpolation == "nearest"

    def __call__(self, top, left, h, w):
        if not self.resized:
            pixels = self.region[top:top + h, left:left + w]                     # (h, w, 3) a view
        elif self.nearest:
            pixels = self.region[np.ix_(self.rows[top:top + h], self.cols[left:left + w])].astype(np.float32)
        else:
            pixels = _bilinear(self.region, tuple(a[top:top + h] for a in self.rows),
                               tuple(a[left:left + w] for a in self.cols))      # (h, w, 3) float32
        return self.values(pixels)[0]                                          # (1, h, w, 3)


def _check_pair(value, name, low):
    try:
        pair = (int(value), int(value)) if np.ndim(value) == 0 else tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be one or two integers, got {value!r}") from None
    if len(pair) != 2 or min(pair) < low:
        raise OptionError(f"{name} must be {'positive' if low else 'non-negative'} (h, w), got {value!r}")
    return pair


def score_bands(model, inputs, size, window, overlap, tta, progress=None):
    """Yield ``(top, bottom, scores (bottom - top, W, K), weight (bottom - top, W, 1) or None)``.

    Model-space rows come in order, each band final. ``inputs(top, left, h, w)`` gives a
    model-ready tile. One tile: the model's logits and ``None``. Several: the ramp-weighted sum of
    probabilities ``sum_t w_t p_t`` and ``sum_t w_t`` (module docstring); both are views into the
    one tile row kept, valid until the next band is asked for. ``argmax`` of either is the label.
    """
    (mh, mw), (wh, ww), (oh, ow) = size, window, overlap
    tops, lefts = _starts(mh, wh, wh - oh), _starts(mw, ww, ww - ow)
    n_tiles, done = len(tops) * len(lefts), 0

    def logits(t, l):
        nonlocal done
        z = predict_logits(model, inputs(t, l, wh, ww), **tta)[0]             # (wh, ww, K)
        done += 1
        if progress is not None:
            progress(done, n_tiles)
        return z

    if n_tiles == 1:
        yield 0, mh, logits(0, 0), None
        return
    weight = ramp(wh, oh)[:, None, None] * ramp(ww, ow)[None, :, None]       # (wh, ww, 1)
    acc, wsum = None, np.zeros((wh, mw, 1), np.float32)                       # one tile row
    for i, t in enumerate(tops):
        for l in lefts:
            p = probabilities(logits(t, l))                                   # (wh, ww, K)
            if acc is None:
                acc = np.zeros((wh, mw, p.shape[-1]), np.float32)              # (wh, W, K)
            p *= weight
            acc[:, l:l + ww] += p
            wsum[:, l:l + ww] += weight
        final = (tops[i + 1] if i + 1 < len(tops) else t + wh) - t            # rows no later tile adds to
        yield t, t + final, acc[:final], wsum[:final]
        for r in range(wh - final):                   # slide up row by row: no temporary copy of the band
            acc[r], wsum[r] = acc[final + r], wsum[final + r]
        acc[wh - final:], wsum[wh - final:] = 0, 0


def segment_tiled(model, image, *, window=None, overlap=None, full_image=False, outside_label=255,
                  scales=(1.0,), flip=False, progress=None) -> np.ndarray:
    """Label map (H, W) of a raw RGB ``image`` (H, W, 3), computed tile by tile (module docstring).

    ``window``: tile size (h, w) in model-space pixels (default: one tile, the whole-image path);
    ``overlap``: pixels shared by neighbouring tiles, an int or (h, w) (default: a quarter of the
    window). ``full_image``: label every pixel, also outside the preset's aspect crop (see
    :func:`model_input_size`); otherwise pixels outside the crop get ``outside_label``.
    ``scales`` / ``flip``: test-time augmentation per tile. ``progress(done, total)`` is called
    after every tile. Returns uint8 (int32 above 255 classes).

    >>> from tinydeeplab.models.recipes import build_model
    >>> model = build_model("tiny", num_classes=3)
    >>> image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    >>> bool(np.array_equal(segment_tiled(model, image), model.segment(image)))   # one tile
    True
    >>> segment_tiled(model, image, window=(32, 32), overlap=8).shape
    (40, 56)
    """
    image = check_image(np.asarray(image))
    converter = model.preprocessor
    (top, left, rh, rw), size = model_input_size(converter, *image.shape[:2], full_image)
    window = size if window is None else _check_pair(window, "window", 1)
    window = (min(window[0], size[0]), min(window[1], size[1]))
    overlap = (window[0] // 4, window[1] // 4) if overlap is None else _check_pair(overlap, "overlap", 0)
    overlap = tuple(min(o, w - 1) for o, w in zip(overlap, window))
    inputs = _TileInputs(converter, image[top:top + rh, left:left + rw], size)
    labels = np.full(image.shape[:2], outside_label, np.int32 if model.num_classes > 255 else np.uint8)
    bands = score_bands(model, inputs, size, window, overlap, {"scales": scales, "flip": flip}, progress)
    if not inputs.resized:
        for t, b, band, weight in bands:                # argmax of sum_t w_t p_t = argmax of p
            labels[top + t:top + b, left:left + rw] = (predicted_labels(band) if weight is None else
                                                       labels_from_probabilities(band / weight))
        return labels
    scores = None                                       # model-space scores: the preset's image_size
    for t, b, band, weight in bands:
        if scores is None:
            scores = np.empty((size[0], size[1], band.shape[-1]), np.float32)  # (h, w, K)
        scores[t:b] = band if weight is None else logits_of(band / weight)    # logits, or log p
    rows, cols = _axis(size[0], rh), _axis(size[1], rw)
    for r in range(0, rh, OUT_BAND):
        band = _bilinear(scores, tuple(a[r:r + OUT_BAND] for a in rows), cols)  # (OUT_BAND, rw, K)
        labels[top + r:top + r + len(band), left:left + rw] = predicted_labels(band)
    return labels
