"""Inference with test-time augmentation and sliding windows, and dataset evaluation (mIoU).

A *view* is one forward pass on a transformed input: the image resized by a scale ``s``
(bilinear), optionally flipped left-right, optionally cut into overlapping windows. Each view's
logits are mapped back (un-flipped, resized to the input size) and the views are averaged as
probabilities::

    p = mean_views softmax(logits_view)          (N, H, W, K)
    predict_logits(...) = log p                  a logit map whose softmax is p (argmax = argmax p)

A binary head (K = 1, the foreground logit) averages ``sigmoid`` instead and returns ``log(p / (1 - p))``
(:mod:`tinydeeplab.models.head`: the one place the two readings of logits are written).

With a single view (``scales=(1.0,)``, ``flip=False``, no window or one window equal to the image)
no averaging happens and the model's own logits come back unchanged.

Sliding window ``(h, w)`` with stride ``(sh, sw)`` (default: half the window): tiles start at
``0, sh, 2 sh, ...`` and the last one is moved to end at the border, so every pixel is covered;
where tiles overlap their probabilities are averaged. An input smaller than the window is padded
with zeros at the bottom/right to the window size and the padding is cut from the output.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..models.head import is_binary, label_classes, logits_of, predicted_labels, probabilities
from ..models.head import softmax  # noqa: F401  (its former home: tinydeeplab.train.evaluate.softmax)
from ..models.preprocessor import resize
from ..nn import inference_mode
from ..progress import Progress
from .metrics import ConfusionMatrix


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Tile origins along one axis: 0, stride, ... and a last tile flush with the end.

    >>> _starts(10, 4, 3), _starts(4, 4, 2), _starts(3, 4, 2)
    ([0, 3, 6], [0], [0])
    """
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def sliding_window_logits(model, x, window, stride=None):
    """Logits (N, H, W, K) of ``x`` (N, H, W, 3) computed tile by tile (see the module docstring).

    One tile: the model's logits of that tile (cropped if the input was padded). Several tiles:
    the logit map of the per-pixel mean of the tiles' probabilities (softmax, or sigmoid for K = 1).
    """
    n, H, W, _ = x.shape
    wh, ww = int(window[0]), int(window[1])
    if wh < 1 or ww < 1:
        raise ValueError(f"window must be positive (h, w), got {window!r}")
    sh, sw = (max(wh // 2, 1), max(ww // 2, 1)) if stride is None else (int(stride[0]), int(stride[1]))
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive (h, w), got {stride!r}")
    ph, pw = max(wh - H, 0), max(ww - W, 0)
    if ph or pw:                                                   # smaller than the window: zero-pad
        x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    Hp, Wp = x.shape[1:3]
    tiles = [(t, l) for t in _starts(Hp, wh, sh) for l in _starts(Wp, ww, sw)]
    if len(tiles) == 1:
        return model.forward(np.ascontiguousarray(x[:, :wh, :ww]))[:, :H, :W]
    probs, count = None, np.zeros((1, Hp, Wp, 1), np.float32)
    for t, l in tiles:
        p = probabilities(model.forward(np.ascontiguousarray(x[:, t:t + wh, l:l + ww])))   # (N, wh, ww, K)
        if probs is None:
            probs = np.zeros((n, Hp, Wp, p.shape[-1]), p.dtype)
        probs[:, t:t + wh, l:l + ww] += p
        count[:, t:t + wh, l:l + ww] += 1
    return logits_of(probs / count)[:, :H, :W]


def predict_logits(model, x, *, scales=(1.0,), flip=False, window=None, stride=None):
    """Test-time-augmented logits of ``x`` (N, H, W, 3) model-ready float32 -> (N, H, W, K).

    ``scales``: input resize factors (bilinear; output resized back); ``flip``: also run the
    left-right mirrored input; ``window`` / ``stride``: sliding-window inference at each scale.

    >>> from tinydeeplab.models.recipes import build_model
    >>> model = build_model("tiny", num_classes=3)
    >>> x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype(np.float32)
    >>> bool(np.array_equal(predict_logits(model, x), model.forward(x)))        # one view: plain forward
    True
    >>> predict_logits(model, x, scales=(0.75, 1.0), flip=True).shape
    (1, 32, 32, 3)
    """
    x = np.asarray(x, np.float32)
    c = getattr(model, "in_channels", 3)
    if x.ndim != 4 or x.shape[-1] != c:
        raise ValueError(f"x must be (N, H, W, {c}) for this model, got shape {x.shape}")
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be a non-empty tuple of positive numbers, got {scales!r}")
    H, W = x.shape[1:3]
    def run(v):
        with inference_mode():                                     # no caches kept: less memory
            return model.forward(v) if window is None else sliding_window_logits(model, v, window, stride)
    views = []
    for s in scales:
        size = (max(int(round(H * s)), 1), max(int(round(W * s)), 1))
        xs = x if size == (H, W) else resize(x, size)              # (N, h, w, 3)
        for flipped in ((False, True) if flip else (False,)):
            z = run(np.ascontiguousarray(xs[:, :, ::-1]) if flipped else xs)            # (N, h, w, K)
            if flipped:
                z = z[:, :, ::-1]
            if z.shape[1:3] != (H, W):
                z = resize(np.ascontiguousarray(z), (H, W))       # (N, H, W, K)
            views.append(z)
    if len(views) == 1:
        return views[0]
    p = sum(probabilities(z) for z in views) / len(views)
    return logits_of(p)


class _Shard:
    """Items ``rank, rank + size, ...`` of ``dataset``, read when iterated."""

    def __init__(self, dataset, rank: int, size: int):
        self.dataset, self.indices = dataset, range(rank, len(dataset), size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return (self.dataset[j] for j in self.indices)


def evaluate(model, dataset, preprocess=None, num_classes=None, ignore_label=255, *, progress=True, world=None,
             **tta) -> dict:
    """Confusion matrix of ``model`` over ``dataset`` -> ``{miou, pixel_accuracy, iou, confusion}``.

    A binary model (``num_classes=1``, labels 0 background / 1 foreground, prediction ``logit > 0``) also
    gets ``foreground_iou``, ``foreground_dice`` and ``background_iou`` (the 2 x 2 matrix's classes 1 and 0;
    ``miou`` is their mean).

    ``dataset``: iterable of ``(image uint8 (H, W, 3), label (H, W))``. ``preprocess(image)`` ->
    ``(x (1, h, w, 3) float32, (top, left, crop_h, crop_w))`` (default ``model.preprocessor``);
    logits are resized back to the crop and pixels outside it count as ``ignore_label``.
    ``tta``: keyword arguments of :func:`predict_logits` (``scales``, ``flip``, ``window``, ``stride``).
    ``iou`` is a list (NaN for classes absent from labels and predictions); ``confusion`` the
    :class:`ConfusionMatrix` (``.table(names)`` prints it).
    ``world``: the ranks of a distributed evaluation (:class:`tinydeeplab.train.distributed.World`): rank
    ``r`` of ``n`` evaluates items ``r, r + n, r + 2n, ...`` and the confusion matrices are summed over the
    ranks (integer counts: the same mIoU as one process); only rank 0 shows progress.
    """
    preprocess = model.preprocessor if preprocess is None else preprocess
    heads = getattr(model, "num_classes", None) if num_classes is None else num_classes
    cm = ConfusionMatrix(label_classes(heads), ignore_label)        # a binary head predicts 2 labels
    sharded = world is not None and world.size > 1
    if sharded:                                                    # this rank's items, read by index
        dataset = _Shard(dataset, world.rank, world.size)
        progress = progress and world.is_root
    try:
        total = len(dataset)
    except TypeError:
        total = None
    bar = Progress(progress)
    who = f"(rank 0's share, of {world.size}) " if sharded else ""
    t0 = time.perf_counter()
    i = 0
    with bar:                                                      # the line ends even on errors
        for i, (image, label) in enumerate(dataset, 1):
            image, label = np.asarray(image), np.asarray(label)
            if label.shape != image.shape[:2]:
                raise ValueError(f"item {i - 1}: label shape {label.shape} does not match image shape {image.shape}")
            x, (top, left, ch, cw) = preprocess(image)                 # (1, h, w, 3)
            logits = predict_logits(model, x, **tta)                   # (1, h, w, K)
            if logits.shape[1:3] != (ch, cw):
                logits = resize(np.ascontiguousarray(logits), (ch, cw))  # (1, ch, cw, K)
            pred = np.zeros(label.shape, np.int64)                     # outside the crop: label ignored below
            pred[top:top + ch, left:left + cw] = predicted_labels(logits[0])   # argmax, or z > 0 if K = 1
            seen = np.zeros(label.shape, bool)
            seen[top:top + ch, left:left + cw] = True
            target = label.astype(np.int64)
            if not seen.all():
                if ignore_label is None:
                    raise ValueError("ignore_label=None but the preprocessor crops the image; pixels outside "
                                     "the crop need an ignore label")
                target = np.where(seen, target, ignore_label)
            cm.update(pred, target)
            rate = i / max(time.perf_counter() - t0, 1e-9)
            bar.show(f"eval {who}{i}/{total if total is not None else '?'}  mIoU {cm.miou():.4f}  "
                     f"pixel acc {cm.pixel_accuracy():.4f}  {rate:.2f} img/s")
    if sharded:
        cm.matrix = world.allreduce(cm.matrix, "the confusion-matrix allreduce")    # (K, K) int64 counts
    result = {"miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy(), "iou": cm.iou().tolist(), "confusion": cm}
    if is_binary(heads):
        (bg_iou, fg_iou), fg_dice = cm.iou().tolist(), float(cm.dice()[1])
        result.update(foreground_iou=fg_iou, foreground_dice=fg_dice, background_iou=bg_iou)
    return result


def miou_check(measured: float, expected: float, tolerance: float) -> tuple[bool, str]:
    """Compare a measured mIoU with a published one: ``(ok, one line)``, ``ok`` when
    ``|measured - expected| <= tolerance`` (plus 1e-12 for the decimal inputs' float round-off); an
    undefined (NaN) measurement is never ok.

    >>> miou_check(0.6312, 0.63, 0.005)
    (True, 'mIoU 0.631200 vs expected 0.630000: difference +0.001200, within the tolerance 0.005')
    >>> miou_check(0.61, 0.63, 0.005)[1]
    'mIoU 0.610000 vs expected 0.630000: difference -0.020000, outside the tolerance 0.005'
    """
    if not math.isfinite(measured):
        return False, f"mIoU undefined (no labelled pixel) vs expected {expected:.6f}"
    difference = measured - expected
    ok = abs(difference) <= tolerance + 1e-12
    return ok, (f"mIoU {measured:.6f} vs expected {expected:.6f}: difference {difference:+.6f}, "
                f"{'within' if ok else 'outside'} the tolerance {tolerance:g}")
