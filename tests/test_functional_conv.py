"""conv2d (NumPy reference): gradients, an independent brute-force loop, and structural properties."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import conv_cases, dilations, kernel_sizes, normal, paddings, seeds, strides
from tinydeeplab import functional as F
from tinydeeplab.gradcheck import check_gradients


def as_pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def explicit_pads(padding, hw, kernel, stride, dilation):
    """Padding spec -> ((top, bottom), (left, right)), written out independently of geometry.py."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for size, k, s, d in zip(hw, kernel, stride, dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    if isinstance(padding[0], int):
        return (padding[0], padding[0]), (padding[1], padding[1])
    return tuple(padding[0]), tuple(padding[1])


def conv_bruteforce(x, w, b, stride, dilation, padding):
    """Seven nested loops, straight from the definition; out-of-range taps read zero."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    (sh, sw), (dh, dw) = as_pair(stride), as_pair(dilation)
    (pt, pb), (pl, pr) = explicit_pads(padding, (h, wd), (kh, kw), (sh, sw), (dh, dw))
    ho = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    wo = (wd + pl + pr - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((n, ho, wo, f))
    for b_ in range(n):
        for oh in range(ho):
            for ow in range(wo):
                for i in range(kh):
                    for j in range(kw):
                        r, col = oh * sh + i * dh - pt, ow * sw + j * dw - pl
                        if 0 <= r < h and 0 <= col < wd:
                            y[b_, oh, ow] += x[b_, r, col] @ w[i, j]
    if b is not None:
        y += b
    return y


def make_case(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"], dtype)
    w = normal(rng, case["w_shape"], dtype)
    b = normal(rng, case["w_shape"][3], dtype) if case["bias"] else None
    opts = {k: case[k] for k in ("stride", "dilation", "padding")}
    return x, w, b, opts


@given(conv_cases())
def test_conv2d_gradients(case):
    x, w, b, opts = make_case(case)
    inputs = {"x": x, "w": w} if b is None else {"x": x, "w": w, "b": b}
    check_gradients(F.conv2d_forward, F.conv2d_backward, inputs, kwargs=opts, rng=case["seed"])


@pytest.mark.parametrize("dilation,padding", [(5, "same"), ((4, 7), "same"), (3, 3), (6, ((6, 6), (5, 5)))])
def test_conv2d_gradients_dilation_larger_than_input(dilation, padding):
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4, 2)), rng.standard_normal((3, 3, 2, 3)), rng.standard_normal(3)
    check_gradients(F.conv2d_forward, F.conv2d_backward, {"x": x, "w": w, "b": b},
                    kwargs={"dilation": dilation, "padding": padding}, rng=rng)


@given(conv_cases())
def test_conv2d_matches_bruteforce(case):
    x, w, b, opts = make_case(case)
    y, _ = F.conv2d_forward(x, w, b, **opts)
    np.testing.assert_allclose(y, conv_bruteforce(x, w, b, **opts), rtol=1e-10, atol=1e-12)


@given(conv_cases())
def test_conv2d_float32_close_to_float64(case):
    x, w, b, opts = make_case(case, np.float32)
    y32, _ = F.conv2d_forward(x, w, b, **opts)
    assert y32.dtype == np.float32
    y64 = conv_bruteforce(x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64),
                          **opts)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)
    dx, dw, db = F.conv2d_backward(np.ones_like(y32), _)
    assert dx.dtype == dw.dtype == np.float32 and (db is None or db.dtype == np.float32)


def test_conv2d_small_hand_example():
    # 3x3 input, 2x2 kernel of ones, valid: each output is the sum of a 2x2 block (+ bias 10)
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    w = np.ones((2, 2, 1, 1), np.float32)
    y, _ = F.conv2d_forward(x, w, np.array([10.0], np.float32), padding="valid")
    assert y[0, :, :, 0].tolist() == [[18.0, 22.0], [30.0, 34.0]]


@given(conv_cases())
def test_dilated_conv_equals_conv_with_zero_inserted_kernel(case):
    x, w, b, opts = make_case(case)
    dh, dw = as_pair(opts["dilation"])
    kh, kw, c, f = w.shape
    w_holes = np.zeros(((kh - 1) * dh + 1, (kw - 1) * dw + 1, c, f))   # "a trous": zeros between the taps
    w_holes[::dh, ::dw] = w
    y_dilated, _ = F.conv2d_forward(x, w, b, **opts)
    y_plain, _ = F.conv2d_forward(x, w_holes, b, stride=opts["stride"], dilation=1, padding=opts["padding"])
    np.testing.assert_allclose(y_dilated, y_plain, rtol=1e-10, atol=1e-12)


@given(seeds, strides)
def test_1x1_conv_is_a_matrix_product(seed, stride):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((2, 5, 4, 3)), rng.standard_normal((1, 1, 3, 6)), rng.standard_normal(6)
    sh, sw = as_pair(stride)
    y, _ = F.conv2d_forward(x, w, b, stride=stride, padding="same")
    sub = x[:, ::sh, ::sw, :]                                       # the pixels a strided 1x1 conv reads
    expected = (sub.reshape(-1, 3) @ w[0, 0] + b).reshape(*sub.shape[:3], 6)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@given(st.integers(1, 12), st.integers(1, 12), kernel_sizes, strides, dilations)
def test_same_output_size_is_ceil_of_input_over_stride(h, w, k, stride, dilation):
    x = np.zeros((1, h, w, 1))
    y, _ = F.conv2d_forward(x, np.zeros((k, k, 1, 1)), stride=stride, dilation=dilation, padding="same")
    sh, sw = as_pair(stride)
    assert y.shape == (1, math.ceil(h / sh), math.ceil(w / sw), 1)


def test_same_padding_puts_the_extra_row_and_column_after():
    # 2x2 kernel, stride 1, "same": total padding 1 per axis, all of it after (bottom/right).
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    w = np.zeros((2, 2, 1, 1))
    w[1, 1] = 1.0                       # picks xpad[h + 1, w + 1]
    y, _ = F.conv2d_forward(x, w, padding="same")
    expected = np.zeros((4, 4))
    expected[:3, :3] = x[0, 1:, 1:, 0]  # the bottom row / right column read the padding
    np.testing.assert_array_equal(y[0, :, :, 0], expected)
    w[...] = 0
    w[0, 0] = 1.0                       # picks xpad[h, w] = x[h, w]: no padding on top/left
    np.testing.assert_array_equal(F.conv2d_forward(x, w, padding="same")[0], x)


def test_same_padding_stride_two_even_input():
    # H = 4, k = 3, s = 2: outputs 2, total pad (2-1)*2 + 3 - 4 = 1 -> (top 0, bottom 1).
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    w = np.zeros((3, 3, 1, 1))
    w[0, 0] = 1.0                       # reads xpad[2*oh, 2*ow] = x[2*oh, 2*ow] when top/left pads are 0
    y, _ = F.conv2d_forward(x, w, stride=2, padding="same")
    np.testing.assert_array_equal(y[0, :, :, 0], x[0, ::2, ::2, 0])


def test_taps_entirely_in_padding_contribute_nothing():
    # 4x4 input, 3x3 kernel, dilation 5, "same": only the centre tap ever reads a real pixel.
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 4, 4, 2)), rng.standard_normal((3, 3, 2, 3))
    y, cache = F.conv2d_forward(x, w, dilation=5, padding="same")
    np.testing.assert_allclose(y, x @ w[1, 1], rtol=1e-12)
    dx, dw, _ = F.conv2d_backward(np.ones_like(y), cache)
    mask = np.zeros((3, 3, 1, 1))
    mask[1, 1] = 1
    assert np.all(dw * (1 - mask) == 0) and np.any(dw[1, 1] != 0)


@given(conv_cases())
def test_conv2d_backward_is_the_adjoint_in_x(case):
    # <conv(x), dy> == <x, dx> for the bias-free conv (linear in x): ties forward and backward together
    x, w, _, opts = make_case(case)
    y, cache = F.conv2d_forward(x, w, **opts)
    dy = np.random.default_rng(case["seed"] + 1).standard_normal(y.shape)
    dx, dw, db = F.conv2d_backward(dy, cache)
    assert db is None
    np.testing.assert_allclose(np.sum(y * dy), np.sum(x * dx), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.sum(y * dy), np.sum(w * dw), rtol=1e-9, atol=1e-9)   # also linear in w


@given(paddings)
def test_padding_forms_agree_with_explicit_pairs(padding):
    x = np.random.default_rng(0).standard_normal((1, 5, 6, 2))
    w = np.random.default_rng(1).standard_normal((3, 2, 2, 2))
    pads = explicit_pads(padding, (5, 6), (3, 2), (1, 1), (1, 1))
    np.testing.assert_allclose(F.conv2d_forward(x, w, padding=padding)[0],
                               F.conv2d_forward(x, w, padding=pads)[0], rtol=1e-12)
