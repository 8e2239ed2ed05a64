"""Sigmoid, swish, hard sigmoid, hard swish, leaky ReLU and ReLU6 on every backend against the NumPy reference:
any shape, float32 and float64, the gradient conventions at the kinks (as JAX), central differences, and
the Keras 3 definitions and defaults."""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_close, for_drawn_cases, host, on, ops
from strategies import away_from, normal, seeds
from tinydeeplab import functional as R
from tinydeeplab.gradcheck import check_gradients

ACTIVATIONS = ["sigmoid", "swish", "hard_sigmoid", "hard_swish", "leaky_relu", "relu6"]
KINKS = {"sigmoid": (), "swish": (), "hard_sigmoid": (-3.0, 3.0), "hard_swish": (-3.0, 3.0), "leaky_relu": (0.0,),
         "relu6": (0.0, 6.0)}
SPECIAL = [-3.0, 0.0, 3.0, -60.0, 60.0, 6.0]     # the kinks, and values where a naive sigmoid overflows in float32


def pair(mod, op):
    return getattr(mod, f"{op}_forward"), getattr(mod, f"{op}_backward")


def run(name, op, x, dy, module=None, **kw):
    forward, backward = pair(module or ops(name), op)
    y, cache = forward(on(name, x), **kw)
    return y, backward(on(name, dy), cache)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("op", ACTIVATIONS)
def test_activation_matches_reference(name, op):
    def check(args):
        shape, seed, dtype, slope = args
        rng = np.random.default_rng(seed)
        x = normal(rng, shape, dtype) * 4
        x.flat[:min(x.size, len(SPECIAL))] = SPECIAL[:x.size]
        kw = {"negative_slope": slope} if op == "leaky_relu" else {}
        y_ref, c_ref = pair(R, op)[0](x, **kw)
        dy = normal(rng, shape, dtype)
        y, dx = run(name, op, x, dy, **kw)
        assert host(y).dtype == dtype
        assert_close(y, y_ref)
        assert_close(dx, pair(R, op)[1](dy, c_ref))
    side = st.integers(1, DRAW_SIZES[name]["max_size"] - 1)
    for_drawn_cases(name, st.tuples(st.lists(side, min_size=1, max_size=4), seeds,
                                    st.sampled_from([np.float32, np.float64]), st.sampled_from([0.2, 0.3, 0.0])),
                    check)


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
def test_gradients_at_the_kinks_follow_jax(name):
    """relu6 passes the gradient only strictly inside (0, 6): hard sigmoid's slope is 0 at -3 and 3, hard
    swish's is hard_sigmoid(x) there (0 and 1); leaky ReLU's ``where(x >= 0, ...)`` has slope 1 at 0."""
    mod = R if name == "numpy" else ops(name)
    x = np.array([-3.0, 0.0, 3.0])
    ones = np.ones(3)
    expected = {"hard_sigmoid": [0.0, 1 / 6, 0.0], "hard_swish": [0.0, 0.5, 1.0], "leaky_relu": [0.2, 1.0, 1.0],
                "relu6": [0.0, 0.0, 1.0]}
    for op, slopes in expected.items():
        _, dx = run(name, op, x, ones, module=mod)
        np.testing.assert_allclose(host(dx), slopes, rtol=1e-15, err_msg=op)


@pytest.mark.parametrize("name", ["numpy", "cpu"])
@pytest.mark.parametrize("op", ACTIVATIONS)
def test_activation_gradients_against_central_differences(name, op):
    mod = R if name == "numpy" else ops(name)
    forward, backward = pair(mod, op)

    @settings(max_examples=10)
    @given(seeds, st.lists(st.integers(1, 4), min_size=1, max_size=4))
    def check(seed, shape):
        rng = np.random.default_rng(seed)
        x = away_from(normal(rng, shape) * 4, KINKS[op])
        kwargs = {"negative_slope": 0.2} if op == "leaky_relu" else {}
        check_gradients(forward, backward, {"x": x}, kwargs=kwargs, rng=rng)
    check()


@pytest.mark.parametrize("name", BACKENDS)
def test_a_wrong_kink_convention_is_caught(name):
    """A hard sigmoid whose slope is 1/6 on the closed interval [-3, 3] differs from the reference only at
    the kinks: the drawn comparison (which always includes -3 and 3) must catch it."""
    mod = ops(name)

    class ClosedInterval:
        @staticmethod
        def hard_sigmoid_forward(x):
            y, cache = mod.hard_sigmoid_forward(x)
            return y, {"inner": cache, "x": host(x)}

        @staticmethod
        def hard_sigmoid_backward(dy, cache):
            inside = (cache["x"] >= -3) & (cache["x"] <= 3)
            return on(name, np.where(inside, host(dy) / 6, 0.0))
    x = np.array([-3.0, 0.5, 3.0])
    _, dx = run(name, "hard_sigmoid", x, np.ones(3), module=ClosedInterval)
    with pytest.raises(AssertionError):
        assert_close(dx, R.hard_sigmoid_backward(np.ones(3), R.hard_sigmoid_forward(x)[1]))


def test_keras3_definitions_and_defaults():
    """keras.activations.leaky_relu defaults to negative_slope=0.2 (the layer LeakyReLU to 0.3);
    hard_sigmoid is relu6(x + 3) / 6 (Keras 3; Keras 2's was 0.2 x + 0.5)."""
    assert inspect.signature(R.leaky_relu_forward).parameters["negative_slope"].default == 0.2
    x = np.linspace(-5, 5, 41)
    np.testing.assert_array_equal(R.hard_sigmoid_forward(x)[0], np.minimum(np.maximum(x + 3, 0), 6) / 6)
    np.testing.assert_array_equal(R.hard_swish_forward(x)[0], x * (np.minimum(np.maximum(x + 3, 0), 6) / 6))
    np.testing.assert_allclose(R.swish_forward(x)[0], x / (1 + np.exp(-x)), rtol=1e-15)
    x = np.linspace(-2, 8, 41)                                   # relu6 (EfficientNet-lite): clip to [0, 6]
    np.testing.assert_array_equal(R.relu6_forward(x)[0], np.clip(x, 0, 6))


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
def test_sigmoid_never_overflows(name):
    x = np.array([-1e4, -80.0, 80.0, 1e4], np.float32)
    mod = R if name == "numpy" else ops(name)
    with np.errstate(over="raise", invalid="raise"):
        y = host(mod.sigmoid_forward(on(name, x))[0])
        z = host(mod.swish_forward(on(name, x))[0])
    np.testing.assert_allclose(y, [0.0, np.exp(-80.0), 1.0, 1.0], rtol=1e-5, atol=0)
    np.testing.assert_allclose(z, [0.0, -80.0 * np.exp(-80.0), 80.0, 1e4], rtol=1e-5, atol=0)
