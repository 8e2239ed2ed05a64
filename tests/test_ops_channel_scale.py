"""The squeeze-and-excitation multiply ``y = x * s`` (``s`` of shape (N, 1, 1, C)) on every backend
against the NumPy reference, and the reference's ``dx`` and ``ds`` against central differences."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_all_close, assert_close, for_drawn_cases, host, on, ops
from strategies import nhwc_shapes, normal, seeds
from tinydeeplab import functional as R
from tinydeeplab.gradcheck import check_gradients


def arrays(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    n, _, _, c = shape
    return rng, normal(rng, shape, dtype), normal(rng, (n, 1, 1, c), dtype)


@pytest.mark.parametrize("name", BACKENDS)
def test_channel_scale_matches_reference(name):
    def check(args):
        shape, seed, dtype = args
        rng, x, s = arrays(shape, seed, dtype)
        y_ref, c_ref = R.channel_scale_forward(x, s)
        y, cache = ops(name).channel_scale_forward(on(name, x), on(name, s))
        assert host(y).dtype == dtype
        assert_close(y, y_ref)
        dy = normal(rng, shape, dtype)
        grads = ops(name).channel_scale_backward(on(name, dy), cache)
        assert_all_close(grads, R.channel_scale_backward(dy, c_ref))
    sizes = DRAW_SIZES[name]
    for_drawn_cases(name, st.tuples(nhwc_shapes(max_size=sizes["max_size"], max_channels=sizes["max_channels"] + 2),
                                    seeds, st.sampled_from([np.float32, np.float64])), check)


@settings(max_examples=10)
@given(nhwc_shapes(max_size=4), seeds)
def test_channel_scale_gradients_against_central_differences(shape, seed):
    rng, x, s = arrays(shape, seed, np.float64)
    check_gradients(R.channel_scale_forward, R.channel_scale_backward, {"x": x, "s": s}, rng=rng)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_scale_broadcast_over_the_wrong_axis_is_caught(name, rng):
    """``ds`` summed over the batch instead of per sample is wrong as soon as N > 1."""
    x, s = normal(rng, (2, 3, 3, 2), np.float32), normal(rng, (2, 1, 1, 2), np.float32)
    dy = normal(rng, x.shape, np.float32)
    _, cache = ops(name).channel_scale_forward(on(name, x), on(name, s))
    ds = host(ops(name).channel_scale_backward(on(name, dy), cache)[1])
    wrong = np.broadcast_to(ds.sum(axis=0, keepdims=True), ds.shape).copy()
    with pytest.raises(AssertionError):
        assert_close(wrong, R.channel_scale_backward(dy, R.channel_scale_forward(x, s)[1])[1])
