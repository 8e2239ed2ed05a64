"""max_pool2d and global_avg_pool (NumPy reference)."""
import math

import numpy as np
import pytest
from hypothesis import given

from strategies import nhwc_shapes, normal, pool_cases, seeds
from tinydeeplab import functional as F
from tinydeeplab.gradcheck import check_gradients


def as_pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def pool_bruteforce(x, pool_size, stride, padding):
    """Window max by explicit loops over the *real* pixels of each window (padding never takes part)."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = as_pair(pool_size), as_pair(stride)
    if padding == "valid":
        pads = ((0, 0), (0, 0))
    elif padding == "same":
        pads = []
        for size, k, s in ((h, kh, sh), (w, kw, sw)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
    else:
        pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    (pt, pb), (pl, pr) = pads
    ho, wo = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    y = np.empty((n, ho, wo, c))
    for oh in range(ho):
        for ow in range(wo):
            r0, c0 = oh * sh - pt, ow * sw - pl
            rows = range(max(r0, 0), min(r0 + kh, h))
            cols = range(max(c0, 0), min(c0 + kw, w))
            y[:, oh, ow, :] = x[:, rows.start:rows.stop, cols.start:cols.stop, :].max(axis=(1, 2))
    return y


@given(pool_cases())
def test_max_pool_matches_bruteforce_window_max(case):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"]) - 10.0           # all negative: a zero-padded pool would be wrong
    opts = {k: case[k] for k in ("pool_size", "stride", "padding")}
    y, _ = F.max_pool2d_forward(x, **opts)
    np.testing.assert_array_equal(y, pool_bruteforce(x, **opts))


@given(pool_cases())
def test_max_pool_gradients(case):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"])                  # continuous values: ties have probability 0
    opts = {k: case[k] for k in ("pool_size", "stride", "padding")}
    check_gradients(F.max_pool2d_forward, F.max_pool2d_backward, {"x": x}, kwargs=opts, rng=rng)


def test_max_pool_gradient_goes_to_first_maximum_in_row_major_order():
    x = np.array([[1.0, 5.0, 5.0],
                  [5.0, 2.0, 0.0],
                  [0.0, 0.0, 0.0]]).reshape(1, 3, 3, 1)
    y, cache = F.max_pool2d_forward(x, pool_size=3, stride=1, padding="valid")
    assert y.item() == 5.0
    dx = F.max_pool2d_backward(np.full_like(y, 7.0), cache)
    expected = np.zeros((3, 3))
    expected[0, 1] = 7.0                              # (0, 1) comes before (0, 2) and (1, 0)
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)


def test_max_pool_overlapping_windows_accumulate():
    # 3x3 windows, stride 1 on a 4x4 ramp: the bottom-right pixels win their windows
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    y, cache = F.max_pool2d_forward(x, pool_size=3, stride=1, padding="same")
    dx = F.max_pool2d_backward(np.ones_like(y), cache)
    assert dx.sum() == y.size                          # every output sends its 1 somewhere
    assert dx[0, 3, 3, 0] == 4.0                       # the global max wins 4 windows (2x2 at the corner)


def test_max_pool_padding_never_wins():
    x = np.full((1, 3, 3, 2), -5.0)
    y, cache = F.max_pool2d_forward(x, pool_size=3, stride=2, padding="same")
    assert np.all(y == -5.0)                           # zero padding would have produced 0
    dx = F.max_pool2d_backward(np.ones_like(y), cache)
    assert dx.sum() == y.size                          # nothing was lost into the padding


def test_max_pool_keras_resnet_stem_shape():
    # ZeroPadding(1) -> MaxPool 3x3/2 valid, as in the ResNet stem: 112 -> 56
    x = np.zeros((1, 112, 112, 1), np.float32)
    xp, _ = F.zero_pad2d_forward(x, 1)
    y, _ = F.max_pool2d_forward(xp, pool_size=3, stride=2, padding="valid")
    assert y.shape == (1, 56, 56, 1) and y.dtype == np.float32


@given(nhwc_shapes(), seeds)
def test_global_avg_pool_is_the_mean_and_gradients(shape, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape)
    y, _ = F.global_avg_pool_forward(x)
    assert y.shape == (shape[0], 1, 1, shape[3])
    for n in range(shape[0]):
        for c in range(shape[3]):
            assert y[n, 0, 0, c] == pytest.approx(sum(x[n, :, :, c].ravel()) / (shape[1] * shape[2]))
    check_gradients(F.global_avg_pool_forward, F.global_avg_pool_backward, {"x": x}, rng=rng)
