"""Max pooling and global average pooling on every backend against the NumPy reference.

Max pool: drawn windows, strides and paddings (every window touches the input), with and without ties
(the gradient goes to the first maximum in row-major window order), the ResNet stem in float64.
"""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_close, for_drawn_cases, host, on, ops
from strategies import normal, pool_cases
from tinydeeplab import functional as R


def check_max_pool(name, x, dy_seed=0, **kw):
    y_ref, c_ref = R.max_pool2d_forward(x, **kw)
    y, cache = ops(name).max_pool2d_forward(on(name, x), **kw)
    np.testing.assert_array_equal(host(y), y_ref)                  # a max is exact
    dy = normal(np.random.default_rng(dy_seed), y_ref.shape, x.dtype)
    dx = ops(name).max_pool2d_backward(on(name, dy), cache)
    assert_close(dx, R.max_pool2d_backward(dy, c_ref))


@pytest.mark.parametrize("name", BACKENDS)
def test_max_pool2d_matches_reference(name):
    def check(args):
        case, with_ties = args
        rng = np.random.default_rng(case["seed"])
        x = normal(rng, case["x_shape"], np.float32)
        if with_ties:                                     # few distinct values: many ties in every window
            x = np.round(x).astype(np.float32)
        check_max_pool(name, x, case["seed"], **{k: case[k] for k in ("pool_size", "stride", "padding")})
    sizes = DRAW_SIZES[name]
    cases = pool_cases(max_size=sizes["max_size"] + 1, max_channels=sizes["max_channels"])
    for_drawn_cases(name, st.tuples(cases, st.booleans()), check)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("pool,stride,padding", [(3, 2, "valid"), (2, 2, "valid"), (3, 2, "same"), (2, 1, 1)])
def test_max_pool2d_named_cases_with_a_tie(rng, name, pool, stride, padding):
    x = normal(rng, (2, 5, 6, 2), np.float32)
    x[0, 0, :2, 0] = 1.5                                     # a tie: the first maximum wins
    check_max_pool(name, x, pool_size=pool, stride=stride, padding=padding)


@pytest.mark.parametrize("name", BACKENDS)
def test_max_pool2d_resnet_stem_float64(rng, name):
    check_max_pool(name, normal(rng, (2, 9, 8, 3)), pool_size=3, stride=2, padding=1)


@pytest.mark.parametrize("name", BACKENDS)
def test_global_avg_pool(rng, name):
    x = normal(rng, (2, 3, 5, 4), np.float32)
    y_ref, c_ref = R.global_avg_pool_forward(x)
    y, cache = ops(name).global_avg_pool_forward(on(name, x))
    assert_close(y, y_ref)
    dy = normal(rng, y_ref.shape, np.float32)
    assert_close(ops(name).global_avg_pool_backward(on(name, dy), cache), R.global_avg_pool_backward(dy, c_ref))
