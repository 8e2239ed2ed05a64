"""Bilinear resizing (any output size, up and down) and integer upsampling on every backend against the
NumPy reference, forward and the adjoint."""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_close, for_drawn_cases, host, on, ops
from strategies import nhwc_shapes, normal, seeds
from tinydeeplab import functional as R


def check_resize(name, op, x, arg, seed):
    y_ref, c_ref = getattr(R, op + "_forward")(x, arg)
    y, cache = getattr(ops(name), op + "_forward")(on(name, x), arg)
    assert_close(y, y_ref)
    dy = normal(np.random.default_rng(seed), y_ref.shape, x.dtype)
    dx = getattr(ops(name), op + "_backward")(on(name, dy), cache)
    assert host(dx).dtype == x.dtype
    assert_close(dx, getattr(R, op + "_backward")(dy, c_ref))


@pytest.mark.parametrize("name", BACKENDS)
def test_bilinear_resize_matches_reference(name):
    sizes = DRAW_SIZES[name]
    out = st.integers(1, 2 * sizes["max_size"] + 1)

    def check(args):
        shape, h_out, w_out, seed = args
        check_resize(name, "bilinear_resize", normal(np.random.default_rng(seed), shape, np.float32),
                     (h_out, w_out), seed + 1)
    for_drawn_cases(name, st.tuples(nhwc_shapes(**sizes), out, out, seeds), check)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("in_hw,out_hw", [((2, 3), (5, 7)), ((7, 6), (3, 4)), ((4, 4), (4, 4)), ((1, 3), (4, 2))])
def test_bilinear_resize_named_cases(rng, name, in_hw, out_hw):
    check_resize(name, "bilinear_resize", normal(rng, (2, *in_hw, 3), np.float32), out_hw, 0)


@pytest.mark.parametrize("name", BACKENDS)
def test_upsample_bilinear_matches_reference(name):
    factors = st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4)))

    def check(args):
        shape, factor, seed, dtype = args
        check_resize(name, "upsample_bilinear", normal(np.random.default_rng(seed), shape, dtype), factor, seed + 1)
    shapes = nhwc_shapes(max_size=4 if name == "cpu" else 3, max_channels=DRAW_SIZES[name]["max_channels"])
    for_drawn_cases(name, st.tuples(shapes, factors, seeds, st.sampled_from([np.float32, np.float64])), check)
