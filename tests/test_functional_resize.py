"""bilinear_resize and upsample_bilinear (NumPy reference)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import nhwc_shapes, normal, seeds
from tinydeeplab import functional as F
from tinydeeplab.gradcheck import check_gradients

out_sizes = st.tuples(st.integers(1, 9), st.integers(1, 9))


def resize_per_pixel(x, size):
    """Independent per-pixel formula (no shared coefficients): half-pixel centres, clamp to the edge."""
    n, h, w, c = x.shape
    ho, wo = size
    y = np.zeros((n, ho, wo, c))

    def taps(o, n_in, n_out):
        src = (o + 0.5) * n_in / n_out - 0.5
        lo = math.floor(src)
        frac = src - lo
        return min(max(lo, 0), n_in - 1), min(max(lo + 1, 0), n_in - 1), frac

    for oh in range(ho):
        r0, r1, fr = taps(oh, h, ho)
        for ow in range(wo):
            c0, c1, fc = taps(ow, w, wo)
            y[:, oh, ow] = ((1 - fr) * (1 - fc) * x[:, r0, c0] + (1 - fr) * fc * x[:, r0, c1]
                            + fr * (1 - fc) * x[:, r1, c0] + fr * fc * x[:, r1, c1])
    return y


@given(nhwc_shapes(), out_sizes, seeds)
def test_resize_gradients(shape, size, seed):
    rng = np.random.default_rng(seed)
    check_gradients(F.bilinear_resize_forward, F.bilinear_resize_backward, {"x": normal(rng, shape)},
                    kwargs={"size": size}, rng=rng)


@given(nhwc_shapes(), out_sizes, seeds)
def test_resize_matches_per_pixel_formula(shape, size, seed):
    x = normal(np.random.default_rng(seed), shape)
    np.testing.assert_allclose(F.bilinear_resize_forward(x, size)[0], resize_per_pixel(x, size),
                               rtol=1e-12, atol=1e-12)


@given(nhwc_shapes(), out_sizes, seeds)
def test_resize_backward_is_the_adjoint(shape, size, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape)
    rx, cache = F.bilinear_resize_forward(x, size)
    y = rng.standard_normal(rx.shape)
    np.testing.assert_allclose(np.sum(rx * y), np.sum(x * F.bilinear_resize_backward(y, cache)),
                               rtol=1e-10, atol=1e-10)


@given(nhwc_shapes(), out_sizes, st.floats(-100, 100))
def test_resize_keeps_constants(shape, size, value):
    y, _ = F.bilinear_resize_forward(np.full(shape, value), size)
    np.testing.assert_allclose(y, value, rtol=1e-12, atol=1e-12)


@given(nhwc_shapes(), seeds)
def test_resize_to_the_same_size_is_the_identity(shape, seed):
    x = normal(np.random.default_rng(seed), shape)
    np.testing.assert_array_equal(F.bilinear_resize_forward(x, shape[1:3])[0], x)


def test_upsample_2x_hand_computed_1d():
    # 3 -> 6 samples: src = (o + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, 1.75, 2.25
    x = np.array([0.0, 3.0, 6.0]).reshape(1, 1, 3, 1)
    y, _ = F.bilinear_resize_forward(x, (1, 6))
    assert y.ravel().tolist() == [0.0, 0.75, 2.25, 3.75, 5.25, 6.0]   # ends clamp to the edge pixel


def test_upsample_2x_hand_computed_2d():
    x = np.array([[0.0, 4.0], [8.0, 12.0]], np.float32).reshape(1, 2, 2, 1)
    y, _ = F.upsample_bilinear_forward(x, 2)
    expected = [[0.0, 1.0, 3.0, 4.0],
                [2.0, 3.0, 5.0, 6.0],
                [6.0, 7.0, 9.0, 10.0],
                [8.0, 9.0, 11.0, 12.0]]
    assert y.dtype == np.float32
    assert y[0, :, :, 0].tolist() == expected


def test_downsample_2x_averages_pairs_without_antialias():
    # 4 -> 2: src = 0.5, 2.5: the mean of neighbours (0, 1) and (2, 3); 8 -> 2 would skip pixels
    x = np.array([1.0, 3.0, 10.0, 20.0]).reshape(1, 4, 1, 1)
    assert F.bilinear_resize_forward(x, (2, 1))[0].ravel().tolist() == [2.0, 15.0]
    x8 = np.arange(8.0).reshape(1, 1, 8, 1)
    assert F.bilinear_resize_forward(x8, (1, 2))[0].ravel().tolist() == [1.5, 5.5]   # src 1.5, 5.5


@given(nhwc_shapes(max_size=4), st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))), seeds)
def test_upsample_is_resize_to_multiple_and_gradients(shape, factor, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape)
    fh, fw = factor if isinstance(factor, tuple) else (factor, factor)
    y, _ = F.upsample_bilinear_forward(x, factor)
    assert y.shape == (shape[0], shape[1] * fh, shape[2] * fw, shape[3])
    np.testing.assert_array_equal(y, F.bilinear_resize_forward(x, (shape[1] * fh, shape[2] * fw))[0])
    check_gradients(F.upsample_bilinear_forward, F.upsample_bilinear_backward, {"x": x},
                    kwargs={"factor": factor}, rng=rng)


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (16, 2)])
def test_resize_float32(size):
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 2)).astype(np.float32)
    y, cache = F.bilinear_resize_forward(x, size)
    assert y.dtype == np.float32 and y.shape == (2, *size, 2)
    assert F.bilinear_resize_backward(np.ones_like(y), cache).dtype == np.float32
    np.testing.assert_allclose(y, resize_per_pixel(x.astype(np.float64), size), rtol=1e-5, atol=1e-6)
