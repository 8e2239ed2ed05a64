"""ReLU on every backend against the NumPy reference: any shape, float32 and float64, the gradient 0 at
exactly 0, and ``inplace=True`` writing over its input with the same values."""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_close, for_drawn_cases, host, on, ops
from strategies import normal, seeds
from tinydeeplab import functional as R


@pytest.mark.parametrize("name", BACKENDS)
def test_relu_matches_reference_exactly(name):
    def check(args):
        shape, seed, dtype = args
        rng = np.random.default_rng(seed)
        x = normal(rng, shape, dtype)
        x.flat[0] = 0.0                                   # the gradient at exactly 0 is 0
        y_ref, c_ref = R.relu_forward(x)
        y, cache = ops(name).relu_forward(on(name, x))
        np.testing.assert_array_equal(host(y), y_ref)
        assert host(y).dtype == dtype
        dy = normal(rng, shape, dtype)
        np.testing.assert_array_equal(host(ops(name).relu_backward(on(name, dy), cache)), R.relu_backward(dy, c_ref))
    side = st.integers(1, DRAW_SIZES[name]["max_size"] - 1)
    for_drawn_cases(name, st.tuples(st.lists(side, min_size=1, max_size=4), seeds,
                                    st.sampled_from([np.float32, np.float64])), check)


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
def test_relu_inplace_overwrites_its_input_with_the_same_values(name, rng):
    x = normal(rng, (2, 3, 4, 5), np.float32)
    y_ref, c_ref = R.relu_forward(x)
    dy = normal(rng, x.shape, np.float32)
    xb = on(name, x.copy())
    y, cache = ops(name).relu_forward(xb, inplace=True)
    assert y is xb if name == "cuda" else np.shares_memory(y, xb)
    assert_close(xb, y_ref, rtol=0, atol_scale=0)
    assert_close(ops(name).relu_backward(on(name, dy), cache), R.relu_backward(dy, c_ref), rtol=0, atol_scale=0)
