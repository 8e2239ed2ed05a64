"""Data-pipeline exercises (notebook 10): a joint random crop, median-frequency class weights.

========================  ==========================================================  ===========================
name                      the student writes                                          reference
========================  ==========================================================  ===========================
joint_random_crop         ``fn(image, label, size, rng) -> (image, label)``: one      ``RandomCrop`` (properties:
                          random ``size = (h, w)`` window of both, padding first      alignment, padding, every
                          (bottom/right; image 0, label 255) where they are smaller   offset reachable)
median_frequency_weights  ``fn(counts) -> (K,) float64`` from ``counts[i, c]``,       :func:`median_frequency_weights`
                          the pixels of class ``c`` in image ``i``
========================  ==========================================================  ===========================

Median-frequency balancing (Eigen & Fergus; SegNet, Badrinarayanan et al. 2017)::

    f_c = (pixels of class c) / (pixels of the images in which c occurs)
    w_c = median_c(f_c) / f_c            (median over the classes that occur; w_c = 0 for a class that never does)

The crop is random, so its checker does not compare with one reference crop: it feeds images whose
pixels encode their own coordinates and checks that the image and the label come from the same window,
that padding is 0 in the image and 255 in the label, and that over many draws every offset occurs.

>>> counts = np.array([[90, 10, 0], [50, 0, 50]])        # class 1 in image 0, class 2 in image 1
>>> median_frequency_weights(counts).round(3).tolist()    # f = (140/200, 10/100, 50/100)
[0.714, 5.0, 1.0]
"""
from __future__ import annotations

import numpy as np

from . import exercise
from ._grading import Variant, attempt, compare, fail, unpack

IGNORE = 255


def median_frequency_weights(counts) -> np.ndarray:
    """``w_c = median(f) / f_c`` with ``f_c = sum_i counts[i, c] / sum_{i: counts[i, c] > 0} pixels_i``.

    ``counts`` is ``(N, K)``: pixels of each class (ignored pixels excluded) in each image. The median runs
    over the classes that occur; a class that never occurs gets weight 0. Returns ``(K,)`` float64.
    """
    counts = np.asarray(counts, np.float64)                     # (N, K)
    pixels = counts.sum(1, keepdims=True)                        # (N, 1) labelled pixels per image
    seen = (counts > 0) * pixels                                 # (N, K) pixels of images containing c
    present = seen.sum(0) > 0                                    # (K,)
    freq = np.zeros(counts.shape[1])
    freq[present] = counts.sum(0)[present] / seen.sum(0)[present]
    weights = np.zeros(counts.shape[1])
    weights[present] = np.median(freq[present]) / freq[present]
    return weights


def _freq_variants(counts):
    counts = np.asarray(counts, np.float64)
    present = counts.sum(0) > 0
    total = counts.sum(0)
    f_all = total / counts.sum()                                 # plain frequency
    f = np.zeros(len(total))
    seen = ((counts > 0) * counts.sum(1, keepdims=True)).sum(0)
    f[present] = total[present] / seen[present]

    def weights(freq, centre=np.median, over=present):
        w = np.zeros(len(freq))
        w[present] = centre(freq[over]) / freq[present]
        return w

    with np.errstate(divide="ignore", invalid="ignore"):
        inverted = np.where(present, f / np.median(f[present]), 0.0)
    return [Variant(weights(f_all), "f_c must divide by the pixels of the images that CONTAIN class c, not by all "
                                    "pixels of the dataset (that is the plain frequency)"),
            Variant(inverted, "the ratio is inverted: w_c = median(f) / f_c, so rare classes get weights > 1"),
            Variant(weights(f, np.mean), "use the median of the frequencies, not their mean"),
            Variant(weights(f, np.median, np.ones(len(f), bool)),
                    "the median must run over the classes that occur: a class with f_c = 0 drags it down")]


@exercise("median_frequency_weights", "median-frequency class weights w_c = median(f) / f_c from per-image counts")
def _check_median_frequency_weights(fn):
    rng = np.random.default_rng(70)
    n = 0
    cases = [np.array([[90, 10, 0], [50, 0, 50]]),
             rng.integers(0, 500, (6, 5)) * (rng.random((6, 5)) < 0.6),
             rng.integers(0, 2000, (12, 8)) * (rng.random((12, 8)) < 0.4)]
    cases[2][:, 5] = 0                                          # a class that never occurs
    cases[1][:, 0] += 1000                                      # a frequent "background"
    for counts in cases:
        case = {"counts": counts}
        got = attempt(fn, case, counts.copy())
        expected = median_frequency_weights(counts)
        if isinstance(got, np.ndarray) and got.shape == expected.shape and not np.all(np.isfinite(got)):
            k = int(np.argmax(~np.isfinite(np.asarray(got, np.float64))))
            if expected[k] == 0:
                fail(f"weight {k} is not finite: class {k} never occurs (f_c = 0); give it weight 0", case)
        compare(got, expected, "weights", case, variants=_freq_variants(counts), check_dtype=False)
        n += 1
    return f"{n} cases"


def _check_array(got, shape, what, case) -> None:
    """``got`` must be a uint8 array of ``shape``; else a failure saying what came back."""
    if not isinstance(got, np.ndarray):
        fail(f"the {what} crop should be a NumPy array, got {type(got).__name__}", case)
    if got.shape != shape:
        swapped = " (height and width swapped: size is (h, w))" if got.shape[:2] == shape[1::-1] else ""
        fail(f"the {what} crop has shape {got.shape}, expected {shape}{swapped}", case)
    if got.dtype != np.uint8:
        fail(f"the {what} crop has dtype {got.dtype}, expected uint8 (keep the input's dtype)", case)


def _coded_pair(h, w, rng):
    """An image whose pixel (r, c) holds (r + 1, c + 1, 1), and a label with a seeded pattern in 0..9."""
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.arange(1, h + 1)[:, None]
    image[..., 1] = np.arange(1, w + 1)[None, :]
    image[..., 2] = 1
    label = rng.integers(0, 10, (h, w)).astype(np.uint8)
    return image, label


@exercise("joint_random_crop", "a random crop of image AND label, padded (image 0, label 255) where too small")
def _check_joint_random_crop(fn):
    rng = np.random.default_rng(71)
    draws = 0
    for (h, w), size in (((7, 8), (4, 5)), ((6, 7), (6, 3)), ((5, 6), (8, 4)), ((4, 4), (6, 7))):
        image, label = _coded_pair(h, w, rng)
        ph, pw = max(size[0], h), max(size[1], w)
        padded_label = np.full((ph, pw), IGNORE, np.uint8)
        padded_label[:h, :w] = label
        offsets = set()
        all_offsets = {(t, l) for t in range(ph - size[0] + 1) for l in range(pw - size[1] + 1)}
        n_draws = 12 * len(all_offsets) + 8             # a fair draw misses an offset with probability < 1e-3
        for k in range(n_draws):
            case = {"image": image, "label": label, "size": size, "draw": k}
            out = unpack(attempt(fn, case, image.copy(), label.copy(), size, np.random.default_rng(k)),
                         2, "(image, label)", case)
            crop, crop_label = out
            _check_array(crop, size + (3,), "image", case)
            _check_array(crop_label, size, "label", case)
            real = crop[..., 2] == 1                                        # pixels from the image, not padding
            if not real.any():
                fail("the image crop holds only padding", case)
            r0, c0 = np.argwhere(real)[0]
            top, left = int(crop[r0, c0, 0]) - 1 - int(r0), int(crop[r0, c0, 1]) - 1 - int(c0)
            if top < 0 or left < 0 or top > ph - size[0] or left > pw - size[1]:
                fail(f"the image window starts at ({top}, {left}), outside the (padded) image", case)
            padded_image = np.zeros((ph, pw, 3), np.uint8)
            padded_image[:h, :w] = image
            if not np.array_equal(crop, padded_image[top:top + size[0], left:left + size[1]]):
                fail("the image crop is not one window of the image padded at the bottom/right with 0 "
                     "(pad after the image, not before; pad the image with 0)", case)
            want = padded_label[top:top + size[0], left:left + size[1]]
            if not np.array_equal(crop_label, want):
                pad = padded_label[top:top + size[0], left:left + size[1]] == IGNORE
                if np.array_equal(crop_label[~pad], want[~pad]):
                    fail(f"the label's padding holds {sorted(set(crop_label[pad].tolist()))}; pad labels with 255 "
                         "(ignored by the loss), not with a class", case)
                fail(f"the label is not aligned with the image: the image window starts at ({top}, {left}) but the "
                     "label comes from elsewhere; draw the offset ONCE and cut both with it", case)
            offsets.add((top, left))
            draws += 1
        if offsets != all_offsets:
            missing = sorted(all_offsets - offsets)
            hint = ""
            if all(t == ph - size[0] or l == pw - size[1] for t, l in missing):
                hint = ("; the last row/column offset never occurs: rng.integers(low, high) excludes high, "
                        "draw top in integers(0, H - h + 1)")
            elif len(offsets) == 1:
                hint = "; the offset never changes: draw it from rng"
            fail(f"over {n_draws} draws the window took {len(offsets)} of the {len(all_offsets)} possible offsets, never "
                 f"e.g. {missing[:3]}{hint}", {"image": image, "label": label, "size": size})
    return f"{draws} crops"
