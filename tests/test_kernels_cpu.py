"""Numba CPU backend (``tinydeeplab.kernels.cpu``) against the NumPy reference (``tinydeeplab.functional``).

Every op, forward and backward, over drawn shapes/strides/dilations/paddings (strategies from
``tests/strategies.py``), in float32 with float32 tolerances; a few float64 cases check that the
kernels specialise on dtype. Also: identical ValueErrors, the chunked im2col, and that the two
backend modules export the same names with the same signatures.
"""
import contextlib
import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import conv_cases, nhwc_shapes, normal, pool_cases, seeds
from tinydeeplab import backend
from tinydeeplab import functional as R
from tinydeeplab.kernels import cpu as K
from tinydeeplab.kernels.cpu import conv as kconv


def assert_close(actual, expected, dtype=np.float32, scale=None):
    """float32: rtol 1e-4 and atol 1e-5 times the magnitude of the values (sums of many terms)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    if scale is None:
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    if dtype == np.float64:
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12 * scale)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


def assert_all_close(actuals, expecteds, dtype=np.float32):
    assert len(actuals) == len(expecteds)
    for a, e in zip(actuals, expecteds):
        if e is None:
            assert a is None
        else:
            assert np.asarray(a).dtype == np.asarray(e).dtype
            assert_close(a, e, dtype)


# ---------------------------------------------------------------------------------------------------
# The module is a drop-in for the reference
# ---------------------------------------------------------------------------------------------------

def test_backend_modules_export_the_same_names_and_signatures():
    cpu, ref = backend.ops("cpu"), backend.ops("numpy")
    assert cpu is K and ref is R
    assert sorted(cpu.__all__) == sorted(ref.__all__)
    public = lambda m: {n for n in dir(m) if not n.startswith("_") and callable(getattr(m, n))
                        and not inspect.ismodule(getattr(m, n))}
    assert public(cpu) == public(ref)
    for name in ref.__all__:
        if callable(getattr(ref, name)):
            assert inspect.signature(getattr(cpu, name)) == inspect.signature(getattr(ref, name)), name


def test_ops_without_a_kernel_are_the_reference_functions():
    for name in ("concat", "split", "add", "zero_pad2d", "global_avg_pool"):
        for half in ("forward", "backward"):
            assert getattr(K, f"{name}_{half}") is getattr(R, f"{name}_{half}")
    assert K.moving_average is R.moving_average


# ---------------------------------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------------------------------

def _conv_both(case, dtype=np.float32):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"], dtype)
    w = normal(rng, case["w_shape"], dtype)
    b = normal(rng, case["w_shape"][3], dtype) if case["bias"] else None
    kw = {k: case[k] for k in ("stride", "dilation", "padding")}
    y_ref, c_ref = R.conv2d_forward(x, w, b, **kw)
    y_cpu, c_cpu = K.conv2d_forward(x, w, b, **kw)
    dy = normal(rng, y_ref.shape, dtype)
    return (y_cpu, K.conv2d_backward(dy, c_cpu)), (y_ref, R.conv2d_backward(dy, c_ref))


@contextlib.contextmanager
def conv_setting(name, value):
    """Temporarily change a constant of the CPU conv module (a plain context: Hypothesis tests take
    no fixtures)."""
    saved = getattr(kconv, name)
    setattr(kconv, name, value)
    try:
        yield
    finally:
        setattr(kconv, name, saved)


def im2col_budget(max_bytes):
    return conv_setting("IM2COL_MAX_BYTES", max_bytes)


# Which path the convolution takes: its own choice, or forced to one of the two for every case.
CONV_PATHS = {"auto": kconv.TAPWISE_MIN_DEAD_FRACTION, "im2col": 2.0, "tapwise": -1.0}


@pytest.mark.parametrize("path", CONV_PATHS)
@given(case=conv_cases())
def test_conv2d_matches_reference(path, case):
    with conv_setting("TAPWISE_MIN_DEAD_FRACTION", CONV_PATHS[path]):
        (y, grads), (y_ref, grads_ref) = _conv_both(case)
    assert y.dtype == np.float32
    assert_close(y, y_ref)
    assert_all_close(grads, grads_ref)


@pytest.mark.parametrize("path", CONV_PATHS)
@given(case=conv_cases())
def test_conv2d_float64_matches_reference(path, case):
    with conv_setting("TAPWISE_MIN_DEAD_FRACTION", CONV_PATHS[path]):
        (y, grads), (y_ref, grads_ref) = _conv_both(case, np.float64)
    assert y.dtype == np.float64
    assert_close(y, y_ref, np.float64)
    assert_all_close(grads, grads_ref, np.float64)


@pytest.mark.parametrize("path", ["im2col", "tapwise"])
@given(case=conv_cases())
def test_conv2d_tiny_im2col_chunks_equal_one_big_chunk(path, case):
    with conv_setting("TAPWISE_MIN_DEAD_FRACTION", CONV_PATHS[path]):
        with im2col_budget(1 << 40):                  # everything in one chunk
            (y_big, g_big), _ = _conv_both(case)
        with im2col_budget(1):                        # less than a row: one output row per chunk
            (y_small, g_small), (y_ref, g_ref) = _conv_both(case)
    np.testing.assert_allclose(y_small, y_big, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_small, g_big):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert_close(y_small, y_ref)
    assert_all_close(g_small, g_ref)


def test_conv2d_chunking_on_a_wider_case(rng):
    """Several images, chunks that cut through an image, strided and dilated: same as the reference."""
    x = normal(rng, (3, 11, 10, 4), np.float32)
    w = normal(rng, (3, 2, 4, 5), np.float32)
    y_ref, c_ref = R.conv2d_forward(x, w, stride=(2, 1), dilation=(1, 2), padding="same")
    dy = normal(rng, y_ref.shape, np.float32)
    g_ref = R.conv2d_backward(dy, c_ref)
    row_bytes = y_ref.shape[2] * 3 * 2 * 4 * 4
    for rows in (1, 2, 4, 5, 7, 100):
        with im2col_budget(rows * row_bytes):
            y, cache = K.conv2d_forward(x, w, stride=(2, 1), dilation=(1, 2), padding="same")
            grads = K.conv2d_backward(dy, cache)
        assert_close(y, y_ref)
        assert_all_close(grads, g_ref)


def test_conv2d_reuses_its_im2col_buffer_across_calls(rng):
    """The second and third convolutions (smaller, then of another layer shape) allocate no new im2col
    buffer, and the stale contents left by the first never leak into a result."""
    big_x, big_w = normal(rng, (2, 12, 12, 6), np.float32), normal(rng, (3, 3, 6, 4), np.float32)
    K.conv2d_forward(big_x, big_w)                    # grows the buffer
    buffer = kconv.scratch((1, 1), np.float32)
    for shape, wshape, dilation in [((1, 7, 5, 3), (3, 3, 3, 2), 1), ((2, 6, 6, 2), (2, 3, 2, 5), 2)]:
        x, w = normal(rng, shape, np.float32), normal(rng, wshape, np.float32)
        y, cache = K.conv2d_forward(x, w, dilation=dilation)
        y_ref, c_ref = R.conv2d_forward(x, w, dilation=dilation)
        dy = normal(rng, y.shape, np.float32)
        assert_close(y, y_ref)
        assert_all_close(K.conv2d_backward(dy, cache), R.conv2d_backward(dy, c_ref))
        assert np.shares_memory(kconv.scratch((1, 1), np.float32), buffer)


@pytest.mark.parametrize("rate, dead, tapwise", [(1, 1 - (46 / 48) ** 2, False),   # border rows/cols only
                                                 (6, 1 - (36 / 48) ** 2, True), (12, 1 - (24 / 48) ** 2, True)])
def test_atrous_conv_on_a_small_map_multiplies_no_padding(rng, rate, dead, tapwise):
    """ASPP at 16 x 16: rate 12 reads padding in 75 % of its im2col products (per axis, rows 0-3 / 4-11
    / 12-15 read taps {0,+12} / {0} / {-12,0}: 24 of 48 reads are real), so it runs tap by tap; a plain
    3x3 conv (rate 1) keeps the im2col path. Same result as the reference either way."""
    x = normal(rng, (2, 16, 16, 4), np.float32)
    w = normal(rng, (3, 3, 4, 3), np.float32)
    y, cache = K.conv2d_forward(x, w, dilation=rate)
    plan = cache["plan"]
    assert plan["dead_fraction"] == pytest.approx(dead)
    assert (plan["taps"] is not None) == tapwise
    if rate == 12:
        assert [(i, j, r) for i, j, r, _ in plan["taps"]][:3] == [(0, 0, (12, 16)), (0, 1, (12, 16)), (0, 2, (12, 16))]
    y_ref, c_ref = R.conv2d_forward(x, w, dilation=rate)
    assert_close(y, y_ref)
    dy = normal(rng, y.shape, np.float32)
    assert_all_close(K.conv2d_backward(dy, cache), R.conv2d_backward(dy, c_ref))


@pytest.mark.parametrize("dilation", [6, 12, 18])
def test_conv2d_dead_taps_are_skipped(rng, dilation):
    """ASPP at 5x5 with a large rate: only the centre tap is live, the conv becomes one GEMM."""
    x = normal(rng, (2, 5, 5, 3), np.float32)
    w = normal(rng, (3, 3, 3, 4), np.float32)
    y, cache = K.conv2d_forward(x, w, dilation=dilation, padding="same")
    assert cache["plan"]["gemm_only"]
    y_ref, c_ref = R.conv2d_forward(x, w, dilation=dilation, padding="same")
    assert_close(y, y_ref)
    dy = normal(rng, y.shape, np.float32)
    dx, dw, db = K.conv2d_backward(dy, cache)
    assert_all_close((dx, dw, db), R.conv2d_backward(dy, c_ref))
    assert np.all(dw[0] == 0) and np.all(dw[2] == 0) and np.all(dw[:, 0] == 0)


@given(seeds, st.integers(1, 3), st.integers(1, 4))
def test_conv2d_1x1_is_one_gemm(seed, n, c):
    rng = np.random.default_rng(seed)
    x = normal(rng, (n, 4, 3, c), np.float32)
    w = normal(rng, (1, 1, c, 5), np.float32)
    y, cache = K.conv2d_forward(x, w, padding="valid")
    assert cache["plan"]["gemm_only"]
    np.testing.assert_allclose(y, (x.reshape(-1, c) @ w[0, 0]).reshape(n, 4, 3, 5), rtol=1e-6, atol=1e-6)


def test_conv2d_all_taps_in_padding(rng):
    """Padding so large that some outputs see nothing: still equals the reference."""
    x = normal(rng, (1, 2, 2, 2), np.float32)
    w = normal(rng, (1, 1, 2, 3), np.float32)
    b = normal(rng, 3, np.float32)
    kw = dict(stride=3, padding=((2, 2), (2, 2)))
    y_ref, c_ref = R.conv2d_forward(x, w, b, **kw)
    y, cache = K.conv2d_forward(x, w, b, **kw)
    assert_close(y, y_ref)
    dy = normal(rng, y.shape, np.float32)
    assert_all_close(K.conv2d_backward(dy, cache), R.conv2d_backward(dy, c_ref))


def test_conv2d_accepts_non_contiguous_inputs(rng):
    x = normal(rng, (2, 6, 8, 3), np.float32)[:, ::2, ::2]
    w = np.asfortranarray(normal(rng, (3, 3, 3, 2), np.float32))
    assert_close(K.conv2d_forward(x, w)[0], R.conv2d_forward(x, w)[0])


# ---------------------------------------------------------------------------------------------------
# batchnorm
# ---------------------------------------------------------------------------------------------------

@given(nhwc_shapes(max_channels=5), seeds, st.booleans(), st.sampled_from([1e-3, 1e-5, 0.1]))
def test_batchnorm_matches_reference(shape, seed, training, eps):
    rng = np.random.default_rng(seed)
    c = shape[3]
    x = (normal(rng, shape, np.float32) * 3 + 2).astype(np.float32)
    gamma, beta, mm = (normal(rng, c, np.float32) for _ in range(3))
    mv = (rng.random(c) + 0.5).astype(np.float32)
    y_ref, c_ref = R.batchnorm_forward(x, gamma, beta, mm, mv, training=training, eps=eps)
    y, cache = K.batchnorm_forward(x, gamma, beta, mm, mv, training=training, eps=eps)
    assert y.dtype == np.float32
    # normalised outputs: compare at the scale of gamma * xhat (large when var + eps is tiny)
    assert_close(y, y_ref)
    assert_all_close((cache["mean"], cache["var"]), (c_ref["mean"], c_ref["var"]))
    dy = normal(rng, shape, np.float32)
    assert_all_close(K.batchnorm_backward(dy, cache), R.batchnorm_backward(dy, c_ref))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_float64_and_many_rows(rng, training):
    """More rows than N_CHUNKS (uneven last chunk) and float64."""
    x = normal(rng, (3, 17, 13, 6), np.float64) + 5.0
    gamma, beta, mm = (normal(rng, 6) for _ in range(3))
    mv = rng.random(6) + 0.5
    y_ref, c_ref = R.batchnorm_forward(x, gamma, beta, mm, mv, training=training)
    y, cache = K.batchnorm_forward(x, gamma, beta, mm, mv, training=training)
    assert_close(y, y_ref, np.float64)
    assert_all_close((cache["mean"], cache["var"]), (c_ref["mean"], c_ref["var"]), np.float64)
    dy = normal(rng, x.shape)
    assert_all_close(K.batchnorm_backward(dy, cache), R.batchnorm_backward(dy, c_ref), np.float64)


def test_batchnorm_training_statistics_feed_moving_average(rng):
    x = normal(rng, (2, 4, 4, 3), np.float32)
    p = [np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32)]
    _, cache = K.batchnorm_forward(x, *p, training=True)
    np.testing.assert_allclose(cache["mean"], x.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache["var"], x.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    new = K.moving_average(p[2], cache["mean"], 0.9)
    np.testing.assert_allclose(new, 0.1 * cache["mean"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# relu
# ---------------------------------------------------------------------------------------------------

@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), seeds, st.sampled_from([np.float32, np.float64]))
def test_relu_matches_reference(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape, dtype)
    x.flat[0] = 0.0                                   # the gradient at exactly 0 is 0
    y_ref, c_ref = R.relu_forward(x)
    y, cache = K.relu_forward(x)
    np.testing.assert_array_equal(y, y_ref)
    dy = normal(rng, shape, dtype)
    np.testing.assert_array_equal(K.relu_backward(dy, cache), R.relu_backward(dy, c_ref))


@pytest.mark.parametrize("module", [R, K], ids=["numpy", "cpu"])
def test_relu_inplace_overwrites_its_input_with_the_same_values(module, rng):
    x = normal(rng, (2, 3, 4, 5), np.float32)
    y_ref, c_ref = R.relu_forward(x)
    dy = normal(rng, x.shape, np.float32)
    y, cache = module.relu_forward(x, inplace=True)
    assert np.shares_memory(y, x)
    np.testing.assert_array_equal(x, y_ref)
    np.testing.assert_array_equal(module.relu_backward(dy, cache), R.relu_backward(dy, c_ref))


# ---------------------------------------------------------------------------------------------------
# bilinear resize / upsample
# ---------------------------------------------------------------------------------------------------

@given(nhwc_shapes(), st.integers(1, 13), st.integers(1, 13), seeds)
def test_bilinear_resize_matches_reference(shape, h_out, w_out, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape, np.float32)
    y_ref, c_ref = R.bilinear_resize_forward(x, (h_out, w_out))
    y, cache = K.bilinear_resize_forward(x, (h_out, w_out))
    assert_close(y, y_ref)
    dy = normal(rng, y.shape, np.float32)
    dx = K.bilinear_resize_backward(dy, cache)
    assert dx.dtype == np.float32
    assert_close(dx, R.bilinear_resize_backward(dy, c_ref))


@given(nhwc_shapes(max_size=4), st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))),
       seeds, st.sampled_from([np.float32, np.float64]))
def test_upsample_bilinear_matches_reference(shape, factor, seed, dtype):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape, dtype)
    y_ref, c_ref = R.upsample_bilinear_forward(x, factor)
    y, cache = K.upsample_bilinear_forward(x, factor)
    assert_close(y, y_ref, dtype)
    dy = normal(rng, y.shape, dtype)
    assert_close(K.upsample_bilinear_backward(dy, cache), R.upsample_bilinear_backward(dy, c_ref), dtype)


# ---------------------------------------------------------------------------------------------------
# max pool
# ---------------------------------------------------------------------------------------------------

@given(pool_cases(), st.booleans())
def test_max_pool2d_matches_reference(case, with_ties):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"], np.float32)
    if with_ties:                                     # few distinct values: many ties in every window
        x = np.round(x).astype(np.float32)
    kw = {k: case[k] for k in ("pool_size", "stride", "padding")}
    y_ref, c_ref = R.max_pool2d_forward(x, **kw)
    y, cache = K.max_pool2d_forward(x, **kw)
    np.testing.assert_array_equal(y, y_ref)
    dy = normal(rng, y.shape, np.float32)
    dx = K.max_pool2d_backward(dy, cache)
    assert dx.dtype == np.float32
    assert_close(dx, R.max_pool2d_backward(dy, c_ref))


def test_max_pool2d_resnet_stem_float64(rng):
    x = normal(rng, (2, 9, 8, 3))
    y_ref, c_ref = R.max_pool2d_forward(x, pool_size=3, stride=2, padding=1)
    y, cache = K.max_pool2d_forward(x, pool_size=3, stride=2, padding=1)
    np.testing.assert_array_equal(y, y_ref)
    dy = normal(rng, y.shape)
    assert_close(K.max_pool2d_backward(dy, cache), R.max_pool2d_backward(dy, c_ref), np.float64)


# ---------------------------------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------------------------------

@given(nhwc_shapes(max_channels=6), seeds, st.sampled_from([255, -1, 0, None]), st.booleans(),
       st.floats(0.1, 1e3), st.sampled_from([1.0, 0.5, -2.0]))
def test_softmax_cross_entropy_matches_reference(shape, seed, ignore, weighted, logit_scale, dloss):
    rng = np.random.default_rng(seed)
    n, h, w, k = shape
    logits = (normal(rng, shape) * logit_scale).astype(np.float32)     # large scales: stability
    labels = rng.integers(0, k, (n, h, w))
    if ignore is not None:
        labels[rng.random((n, h, w)) < 0.3] = ignore
    weights = (rng.random(k) * 2).astype(np.float32) if weighted else None
    kw = dict(ignore_label=ignore, class_weights=weights)
    loss_ref, c_ref = R.softmax_cross_entropy_forward(logits, labels, **kw)
    loss, cache = K.softmax_cross_entropy_forward(logits, labels, **kw)
    assert isinstance(loss, float)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-4, atol=1e-5 * max(1.0, abs(loss_ref)))
    d = K.softmax_cross_entropy_backward(dloss, cache)
    d_ref = R.softmax_cross_entropy_backward(dloss, c_ref)
    assert d.dtype == np.float32
    assert_close(d, d_ref)
    if ignore is not None:
        assert np.all(d[labels == ignore] == 0)       # exactly zero on ignored pixels


def test_softmax_cross_entropy_nothing_valid(rng):
    logits = normal(rng, (1, 2, 3, 4), np.float32)
    labels = np.full((1, 2, 3), 255)
    loss, cache = K.softmax_cross_entropy_forward(logits, labels)
    assert loss == 0.0
    assert np.all(K.softmax_cross_entropy_backward(1.0, cache) == 0)


def test_softmax_cross_entropy_float64_uint8_labels(rng):
    logits = normal(rng, (2, 3, 3, 5))
    labels = rng.integers(0, 5, (2, 3, 3)).astype(np.uint8)
    labels[0, 0, 0] = 255
    loss_ref, c_ref = R.softmax_cross_entropy_forward(logits, labels)
    loss, cache = K.softmax_cross_entropy_forward(logits, labels)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    assert_close(K.softmax_cross_entropy_backward(np.array(1.0), cache),
                 R.softmax_cross_entropy_backward(np.array(1.0), c_ref), np.float64)


# ---------------------------------------------------------------------------------------------------
# Bad input: the same ValueError (type and message) as the reference
# ---------------------------------------------------------------------------------------------------

def _f32(*shape):
    return np.zeros(shape, np.float32)


BAD_CALLS = [
    ("conv2d_forward", (_f32(1, 4, 4), _f32(3, 3, 3, 2)), {}),                      # x not 4-D
    ("conv2d_forward", (np.zeros((1, 4, 4, 3), np.int32), _f32(3, 3, 3, 2)), {}),   # integer x
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 2, 2)), {}),                   # channel mismatch
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2), _f32(3)), {}),          # bias length
    ("conv2d_forward", (_f32(1, 4, 4, 3), np.zeros((3, 3, 3, 2))), {}),             # mixed dtypes
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"stride": 0}),
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"dilation": (1, -1)}),
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"padding": "full"}),
    ("conv2d_forward", (_f32(1, 4, 4, 3), _f32(3, 3, 3, 2)), {"padding": ((1, 2), 3)}),
    ("conv2d_forward", (_f32(1, 2, 2, 3), _f32(3, 3, 3, 2)), {"padding": "valid"}),  # window too big
    ("batchnorm_forward", (_f32(1, 2, 2, 3), _f32(3), _f32(3), _f32(3), _f32(2)), {"training": True}),
    ("batchnorm_forward", (_f32(1, 2, 2, 3), _f32(3), _f32(3), _f32(3), _f32(3)), {"training": 1}),
    ("batchnorm_forward", (_f32(1, 2, 2, 3), _f32(3), _f32(3), _f32(3), _f32(3)),
     {"training": False, "eps": -1.0}),
    ("relu_forward", ([1.0, 2.0],), {}),
    ("max_pool2d_forward", (_f32(1, 2, 2, 1),), {"pool_size": 3, "stride": 1}),
    ("max_pool2d_forward", (_f32(1, 4, 4, 1),), {"pool_size": 0}),
    ("max_pool2d_forward", (_f32(1, 4, 4, 1),), {"pool_size": 2, "padding": 2}),     # window in padding
    ("bilinear_resize_forward", (_f32(1, 4, 4, 1), (0, 3)), {}),
    ("bilinear_resize_forward", (_f32(4, 4, 1), (2, 3)), {}),
    ("upsample_bilinear_forward", (_f32(1, 4, 4, 1), 1.5), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.array([[[0, 1], [2, 3]]])), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 2), np.float32)), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 3), np.int64)), {}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 2), np.int64)),
     {"class_weights": np.array([1.0, -1.0, 1.0], np.float32)}),
    ("softmax_cross_entropy_forward", (_f32(1, 2, 2, 3), np.zeros((1, 2, 2), np.int64)),
     {"class_weights": _f32(4)}),
]


def _error_message(fn, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("name,args,kwargs", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_forward_input_raises_the_reference_error(name, args, kwargs):
    assert _error_message(getattr(K, name), *args, **kwargs) == _error_message(getattr(R, name), *args, **kwargs)


def test_bad_backward_input_raises_the_reference_error(rng):
    x = normal(rng, (1, 4, 4, 2), np.float32)
    w = normal(rng, (3, 3, 2, 3), np.float32)
    p = [np.ones(2, np.float32)] * 4
    cases = [
        ("conv2d", (x, w), {}, _f32(1, 4, 4, 2)),                 # wrong dy shape
        ("batchnorm", (x, *p), {"training": True}, _f32(1, 4, 4, 3)),
        ("relu", (x,), {}, np.zeros((1, 4, 4, 2), np.int64)),     # integer dy
        ("max_pool2d", (x,), {"pool_size": 2}, _f32(1, 3, 3, 2)),
        ("bilinear_resize", (x, (3, 5)), {}, _f32(1, 5, 3, 2)),
    ]
    for op, args, kwargs, bad_dy in cases:
        _, c_cpu = getattr(K, op + "_forward")(*args, **kwargs)
        _, c_ref = getattr(R, op + "_forward")(*args, **kwargs)
        assert (_error_message(getattr(K, op + "_backward"), bad_dy, c_cpu)
                == _error_message(getattr(R, op + "_backward"), bad_dy, c_ref)), op
    logits, labels = normal(rng, (1, 2, 2, 3), np.float32), np.zeros((1, 2, 2), np.int64)
    _, c_cpu = K.softmax_cross_entropy_forward(logits, labels)
    _, c_ref = R.softmax_cross_entropy_forward(logits, labels)
    for bad in ("1.0", True, np.ones(2)):
        assert (_error_message(K.softmax_cross_entropy_backward, bad, c_cpu)
                == _error_message(R.softmax_cross_entropy_backward, bad, c_ref))


# ---------------------------------------------------------------------------------------------------
# memory reuse
# ---------------------------------------------------------------------------------------------------

def test_freed_activations_are_reused_without_page_faults():
    """With the CPU backend imported (glibc), a freed 64 MiB array's pages come back for the next
    array of that size: touching it costs no page fault (fresh mmap pages fault at least once per
    2 MiB huge page, i.e. >= 32 times; ~550 measured here, ~16k with 4 KiB pages)."""
    import platform
    import resource

    from tinydeeplab.kernels.cpu import allocator as memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting is glibc-specific")
    assert memory.APPLIED
    n = 16 * 2**20                                    # float32: 64 MiB
    a = np.ones(n, np.float32)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.empty(n, np.float32)
    b[:] = 1.0                                        # touch every page
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults <= 8, f"{faults} page faults re-touching a reused 64 MiB block"
