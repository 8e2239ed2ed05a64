"""DeepLabV3+ decoder exercises (notebook 09): shape bookkeeping, and accuracy by distance from a boundary.

==================  ==============================================================  ==========================
name                the student writes                                              reference
==================  ==============================================================  ==========================
decoder_shapes      ``fn(height, width, output_stride, aspp_channels,                :func:`decoder_shapes`
                    low_level_channels, projection_filters, num_classes)`` ->
                    ``{stage: (h, w, c)}`` for the V3+ decoder's seven stages
boundary_accuracy   ``fn(pred, label, distance, max_distance, ignore_label)`` ->     :func:`boundary_accuracy`
                    ``(accuracy, counts)`` per distance bin ``min(floor(d), max)``
==================  ==============================================================  ==========================

A stride-2 layer of the ResNet encoder (explicit zero padding + "valid") maps a side ``s`` to
``ceil(s / 2)``, so the level at stride ``S`` has side ``ceil(H / S)``: a 513 crop gives 33 at
output stride 16 and 129 at stride 4 (P2), and the V3+ decoder resizes the ASPP output to P2's own
size (not by the factor ``S / 4``, which would give 132).

>>> from tinydeeplab.exercises import check
>>> def floor_sizes(h, w, os_, a, low, p, k):
...     s = decoder_shapes(h, w, os_, a, low, p, k)
...     return {**s, "aspp": (h // os_, w // os_, a)}
>>> check("decoder_shapes", floor_sizes)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: decoder_shapes: aspp is (32, 32, 256), expected (33, 33, 256): ...
"""
from __future__ import annotations

import numpy as np

from . import exercise
from ._grading import Variant, attempt, compare, fail, unpack

STAGES = ("aspp", "upsampled", "projection", "concat", "head", "classes", "logits")


def _side(size: int, stride: int) -> int:
    return -(-int(size) // int(stride))                 # ceil(size / stride): each stride 2 rounds up


def decoder_shapes(height, width, output_stride, aspp_channels, low_level_channels, projection_filters,
                   num_classes) -> dict:
    """``{stage: (h, w, channels)}`` through the V3+ decoder (one image; P2 at stride 4).

    aspp: ASPP output on the encoder's deepest map; upsampled: resized to P2's size; projection: the
    1x1 projection of P2; concat: both; head: the 1x1 conv back to ``aspp_channels``; classes: the
    classifier at P2's size; logits: resized to the input.

    >>> decoder_shapes(513, 513, 16, 256, 256, 48, 21)["concat"]
    (129, 129, 304)
    """
    h, w = _side(height, output_stride), _side(width, output_stride)
    h2, w2 = _side(height, 4), _side(width, 4)
    return {"aspp": (h, w, aspp_channels), "upsampled": (h2, w2, aspp_channels),
            "projection": (h2, w2, projection_filters), "concat": (h2, w2, aspp_channels + projection_filters),
            "head": (h2, w2, aspp_channels), "classes": (h2, w2, num_classes), "logits": (height, width, num_classes)}


def _shape_variants(h, w, os_, a, low, p, k) -> dict:
    """Known wrong values per stage, each with the mistake behind it."""
    up = os_ // 4
    return {"aspp": [((h // os_, w // os_, a), "each stride-2 layer rounds *up* (zero padding + valid "
                                               "convolution): the side is ceil(H / output_stride)"),
                     ((_side(h, os_), _side(w, os_), low), "ASPP outputs aspp_channels, whatever the encoder gives")],
            "upsampled": [((_side(h, os_) * up, _side(w, os_) * up, a), "the decoder resizes the ASPP output to "
                           "P2's own size, ceil(H / 4); multiplying its side by output_stride / 4 overshoots when "
                           "H is not a multiple of the stride"),
                          ((h // 4, w // 4, a), "P2's side is ceil(H / 4), not H // 4 (the stem rounds up)"),
                          ((h, w, a), "upsample to P2 (1/4 of the input) here; the input size comes last")],
            "projection": [((_side(h, 4), _side(w, 4), low), "the 1x1 projection outputs projection_filters "
                            "channels (48 in DeepLabV3+), not the low-level map's own channels")],
            "concat": [((_side(h, 4), _side(w, 4), a + low), "the concatenation holds the *projected* low-level "
                        "features: aspp_channels + projection_filters"),
                       ((_side(h, 4), _side(w, 4), a), "concatenation adds the channels of both inputs")],
            "head": [((_side(h, 4), _side(w, 4), a + p), "the head's 1x1 convolution maps the concatenation back "
                      "to aspp_channels")],
            "classes": [((h, w, k), "tinydeeplab (like KerasHub) classifies at P2's size, then upsamples the logits"),
                        ((_side(h, 4), _side(w, 4), a), "the classifier outputs num_classes channels")],
            "logits": [((_side(h, 4), _side(w, 4), k), "the logits are resized to the input's size at the end")]}


@exercise("decoder_shapes", "shapes through the V3+ decoder: ASPP map, upsample to P2, concat, head, logits")
def _check_decoder_shapes(fn):
    cases = [(513, 513, 16, 256, 256, 48, 21), (512, 512, 16, 256, 256, 48, 21), (513, 385, 8, 256, 256, 48, 11),
             (64, 96, 32, 32, 64, 8, 4), (97, 61, 16, 16, 24, 6, 3), (360, 480, 16, 256, 256, 48, 12)]
    for args in cases:
        case = dict(zip(("height", "width", "output_stride", "aspp_channels", "low_level_channels",
                         "projection_filters", "num_classes"), args))
        got = attempt(fn, case, *args)
        if not isinstance(got, dict):
            fail(f"expected a dict {{stage: (h, w, c)}}, got {type(got).__name__}", case)
        missing = [s for s in STAGES if s not in got]
        if missing:
            fail(f"your dict lacks the stages {missing} (expected keys {list(STAGES)})", case)
        expected, variants = decoder_shapes(*args), _shape_variants(*args)
        for stage in STAGES:
            value = got[stage]
            if not isinstance(value, (tuple, list)) or len(value) != 3:
                fail(f"{stage} should be a triple (h, w, channels), got {value!r}", case)
            value = tuple(int(v) for v in value)
            if value != expected[stage]:
                said = next((m for v, m in variants[stage] if v == value), None)
                fail(f"{stage} is {value}, expected {expected[stage]}" + (f": {said}" if said else ""), case)
    return f"{len(cases)} cases"


# --- boundary distance -----------------------------------------------------------------------------------------

def label_edges(label) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (both sides of every boundary). (..., H, W) bool.

    >>> label_edges(np.array([[0, 0, 1, 1]])).astype(int).tolist()
    [[0, 1, 1, 0]]
    """
    label = np.asarray(label)
    edges = np.zeros(label.shape, bool)
    for axis in (-1, -2):
        n = label.shape[axis]
        a, b = [slice(None)] * label.ndim, [slice(None)] * label.ndim
        a[axis], b[axis] = slice(1, n), slice(0, n - 1)
        differ = label[tuple(a)] != label[tuple(b)]
        edges[tuple(a)] |= differ
        edges[tuple(b)] |= differ
    return edges


def boundary_distance(label) -> np.ndarray:
    """Euclidean distance (pixels) from each pixel to the nearest edge pixel of ``label`` (H, W); 0 on edges.

    >>> boundary_distance(np.array([[0, 0, 0, 0, 1]])).tolist()
    [[3.0, 2.0, 1.0, 0.0, 0.0]]
    """
    from scipy import ndimage

    edges = label_edges(label)
    if not edges.any():
        return np.full(edges.shape, np.inf)
    return ndimage.distance_transform_edt(~edges)


def boundary_accuracy(pred, label, distance, max_distance, ignore_label=255):
    """Pixel accuracy per distance bin ``k = min(floor(distance), max_distance)``, ignored pixels left out.

    Returns ``(accuracy, counts)``, both (max_distance + 1,): accuracy float64 (NaN for an empty bin),
    counts int64.

    >>> acc, n = boundary_accuracy(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 255]),
    ...                            np.array([0.0, 1.5, 4.0, 0.0]), 2)
    >>> acc.tolist(), n.tolist()
    ([1.0, 0.0, 1.0], [1, 1, 1])
    """
    valid = np.asarray(label) != ignore_label
    bins = np.minimum(np.floor(np.asarray(distance)).astype(np.int64), max_distance)[valid]
    correct = (np.asarray(pred) == np.asarray(label))[valid]
    counts = np.bincount(bins, minlength=max_distance + 1)
    hits = np.bincount(bins, weights=correct, minlength=max_distance + 1)
    accuracy = np.full(max_distance + 1, np.nan)
    accuracy[counts > 0] = hits[counts > 0] / counts[counts > 0]
    return accuracy, counts.astype(np.int64)


def _accuracy_variants(pred, label, distance, max_distance, ignore_label):
    acc, counts = boundary_accuracy(pred, label, distance, max_distance, ignore_label)
    everything = boundary_accuracy(pred, label, distance, max_distance, ignore_label=-1)
    rounded = boundary_accuracy(pred, label, np.round(distance), max_distance, ignore_label)
    far = np.asarray(distance) < max_distance + 1
    unclipped = boundary_accuracy(np.where(far, pred, -1), np.where(far, label, ignore_label), distance,
                                  max_distance, ignore_label)
    return {"accuracy": [Variant(1 - acc, "you computed the error rate: accuracy is the fraction of correct pixels"),
                         Variant(everything[0], "pixels with the ignore label must be left out"),
                         Variant(rounded[0], "bin k holds the distances in [k, k + 1): use floor, not round"),
                         Variant(unclipped[0], "the last bin holds every pixel at distance >= max_distance "
                                               "(clip the bin index), not only those in [max, max + 1)")],
            "counts": [Variant(everything[1], "pixels with the ignore label must be left out"),
                       Variant(rounded[1], "bin k holds the distances in [k, k + 1): use floor, not round"),
                       Variant(unclipped[1], "the last bin holds every pixel at distance >= max_distance "
                                             "(clip the bin index), not only those in [max, max + 1)"),
                       Variant(np.round(acc * counts).astype(np.int64), "counts is the number of pixels in each "
                                                                        "bin, not of correct ones")]}


def _accuracy_case(rng, size, max_shapes, seed):
    from ..data import SyntheticShapes

    _, label = SyntheticShapes(length=1, size=size, seed=seed, max_shapes=max_shapes)[0]
    label = label.astype(np.int64)
    distance = boundary_distance(label)
    # a prediction that errs mostly near the boundaries, as a segmenter does
    wrong = rng.random(label.shape) < 0.6 * np.exp(-distance / 2) + 0.03
    pred = np.where(wrong, (label + rng.integers(1, 4, label.shape)) % 4, label)
    label = np.where(rng.random(label.shape) < 0.05, 255, label)                 # a few ignored pixels
    return pred, label, distance


@exercise("boundary_accuracy", "pixel accuracy binned by the distance to the nearest label boundary")
def _check_boundary_accuracy(fn):
    rng = np.random.default_rng(9)
    n = 0
    for size, shapes, max_distance, seed in (((40, 40), 3, 6, 1), ((33, 47), 4, 4, 2), ((48, 32), 2, 8, 3)):
        pred, label, distance = _accuracy_case(rng, size, shapes, seed)
        case = dict(pred=pred, label=label, distance=distance, max_distance=max_distance, ignore_label=255)
        got = unpack(attempt(fn, case, pred, label, distance, max_distance, 255), 2, "(accuracy, counts)", case)
        acc, counts = boundary_accuracy(pred, label, distance, max_distance, 255)
        variants = _accuracy_variants(pred, label, distance, max_distance, 255)
        compare(got[1], counts, "counts", case, variants=variants["counts"], check_dtype=False)
        compare(got[0], acc, "accuracy", case, variants=variants["accuracy"], rtol=1e-9, atol=1e-12,
                check_dtype=False)
        n += 1
    # an empty bin: every pixel is far from the (single) boundary but one
    label = np.zeros((3, 12), np.int64)
    label[:, -1] = 1
    distance = boundary_distance(label)
    pred = label.copy()
    case = dict(pred=pred, label=label, distance=distance, max_distance=20, ignore_label=255)
    got = unpack(attempt(fn, case, pred, label, distance, 20, 255), 2, "(accuracy, counts)", case)
    accuracy = np.asarray(got[0], dtype=np.float64)
    if accuracy.shape != (21,) or not np.isnan(accuracy[15]):
        fail("a bin without pixels (here bin 15) has no accuracy: return NaN there, not "
             f"{accuracy[15] if accuracy.shape == (21,) else accuracy.shape}", case)
    return f"{n + 1} cases"
