"""avg_pool2d on every backend against the NumPy reference; the reference against a brute-force mean
over the real pixels of each window (Keras excludes the padding of "same"; dilated windows and explicit
padding are tinydeeplab's extension for atrous encoders) and central differences on every backend."""
import numpy as np
import pytest
from hypothesis import given, settings

from backends import BACKENDS, DRAW_SIZES, assert_close, for_drawn_cases, host, on, ops
from strategies import avg_pool_cases, normal
from tinydeeplab import functional as R
from tinydeeplab.functional.geometry import same_padding_1d
from tinydeeplab.gradcheck import check_gradients


def opts(case):
    return {k: case[k] for k in ("pool_size", "stride", "padding", "dilation") if k in case}


def check_avg_pool(name, case, dtype=np.float32):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"], dtype)
    y_ref, c_ref = R.avg_pool2d_forward(x, **opts(case))
    y, cache = ops(name).avg_pool2d_forward(on(name, x), **opts(case))
    assert host(y).dtype == dtype
    assert_close(y, y_ref)
    dy = normal(rng, y_ref.shape, dtype)
    assert_close(ops(name).avg_pool2d_backward(on(name, dy), cache), R.avg_pool2d_backward(dy, c_ref))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", BACKENDS)
def test_avg_pool2d_matches_reference(name, dtype):
    sizes = DRAW_SIZES[name]
    cases = avg_pool_cases(max_size=sizes["max_size"] + 1, max_channels=sizes["max_channels"])
    for_drawn_cases(name, cases, lambda case: check_avg_pool(name, case, dtype))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("pool,stride,padding", [(2, None, "valid"), (3, 2, "same"), (3, 1, "same"), ((2, 3), (1, 2), "same"),
                                                 (4, 3, "same"), (1, 1, "valid")])
def test_avg_pool2d_named_cases(name, pool, stride, padding):
    check_avg_pool(name, {"x_shape": (2, 5, 7, 3), "pool_size": pool, "stride": stride, "padding": padding,
                          "seed": 7})


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("pool,stride,padding,dilation", [
    (2, 1, ((0, 1), (0, 1)), 1), (2, 1, ((0, 2), (0, 2)), 2), ((2, 3), (1, 2), "same", (2, 1)),
    (3, 2, ((1, 0), (2, 1)), (1, 3)), (2, 1, "valid", 3)])
def test_avg_pool2d_dilated_and_explicitly_padded(name, pool, stride, padding, dilation):
    """The atrous DenseNet's de-strided transition pools (2x2/1, dilation r, padding (0, r)) and others."""
    check_avg_pool(name, {"x_shape": (2, 6, 7, 3), "pool_size": pool, "stride": stride, "padding": padding,
                          "dilation": dilation, "seed": 8})


def test_dilated_stride1_pool_holds_the_strided_pool_at_the_rate_grid():
    """Pooling a map of rate r with 2x2 / 1, dilation r, padding (0, r) gives the 2x2 / 2 pool of the
    sparse map at every r-th position: what DenseNet's transition does at output stride 8."""
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(1, 8, 12, 2))                     # (N, H, W, C), values of rate 2 at even positions
    strided, _ = R.avg_pool2d_forward(dense[:, ::2, ::2], pool_size=2, stride=2)     # (1, 2, 3, 2)
    atrous, _ = R.avg_pool2d_forward(dense, pool_size=2, stride=1, padding=((0, 2), (0, 2)), dilation=2)
    assert atrous.shape == dense.shape
    np.testing.assert_allclose(atrous[:, ::4, ::4], strided, rtol=1e-12)


def mean_of_real_pixels(x, pool_size, stride, padding, dilation=1):
    """Window means by explicit loops over the real pixels only, the Keras padding rule written out again."""
    n, h, w, c = x.shape
    kh, kw = pool_size
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1                 # the windows' spans
    if padding == "same":
        (pt, _), (pl, _) = same_padding_1d(h, kh, sh, dh), same_padding_1d(w, kw, sw, dw)
        ho, wo = -(-h // sh), -(-w // sw)
    elif padding == "valid":
        pt = pl = 0
        ho, wo = (h - eh) // sh + 1, (w - ew) // sw + 1
    else:
        (pt, pb), (pl, pr) = padding
        ho, wo = (h + pt + pb - eh) // sh + 1, (w + pl + pr - ew) // sw + 1
    y = np.empty((n, ho, wo, c))
    for oh in range(ho):
        for ow in range(wo):
            rows = [r for r in range(oh * sh - pt, oh * sh - pt + eh, dh) if 0 <= r < h]
            cols = [q for q in range(ow * sw - pl, ow * sw - pl + ew, dw) if 0 <= q < w]
            y[:, oh, ow] = x[:, rows][:, :, cols].mean(axis=(1, 2))
    return y


@given(avg_pool_cases())
def test_avg_pool2d_is_the_mean_over_the_real_pixels(case):
    x = normal(np.random.default_rng(case["seed"]), case["x_shape"]) + 10.0   # zero padding averaged in would show
    y, _ = R.avg_pool2d_forward(x, **opts(case))
    np.testing.assert_allclose(y, mean_of_real_pixels(x, **opts(case)), rtol=1e-12)


@pytest.mark.parametrize("name", ["numpy", *BACKENDS])
def test_avg_pool2d_gradients_against_central_differences(name):
    """float64 central differences on every entry of x, random cotangent (cuda: device arrays in and out)."""
    mod = R if name == "numpy" else ops(name)

    def forward(x, **kw):
        y, cache = mod.avg_pool2d_forward(on(name, x), **kw)
        return host(y), cache

    def backward(dy, cache):
        return host(mod.avg_pool2d_backward(on(name, dy), cache))

    @settings(max_examples=10 if name != "cuda" else 5)
    @given(avg_pool_cases(max_size=5 if name != "cuda" else 4, max_channels=3 if name != "cuda" else 2))
    def check(case):
        rng = np.random.default_rng(case["seed"])
        check_gradients(forward, backward, {"x": normal(rng, case["x_shape"])}, kwargs=opts(case), rng=rng)
    check()


@pytest.mark.parametrize("name", BACKENDS)
def test_an_avg_pool_that_averages_the_padding_is_caught(name):
    """Dividing every "same" window by KH * KW (the padding counted as zeros) is a different op."""
    x = normal(np.random.default_rng(0), (1, 5, 5, 2), np.float32) + 10.0
    y, _ = ops(name).avg_pool2d_forward(on(name, x), pool_size=3, stride=2, padding="same")
    total = R.avg_pool2d_forward(x, pool_size=3, stride=2, padding="same")[1]["count"] * host(y)
    with pytest.raises(AssertionError):
        assert_close(total / 9, R.avg_pool2d_forward(x, pool_size=3, stride=2, padding="same")[0])
