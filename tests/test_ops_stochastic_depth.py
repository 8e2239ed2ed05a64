"""Stochastic depth (drop-connect) on every backend against the NumPy reference: one Bernoulli draw per
sample from the caller's generator on the host, so with the same seed every backend drops the same
samples; kept samples divided by the keep probability; the identity at inference."""
import numpy as np
import pytest

from backends import BACKENDS, assert_close, host, on, ops
from strategies import normal
from tinydeeplab import functional as R
from tinydeeplab.gradcheck import check_gradients


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_stochastic_depth_draws_the_reference_mask(rng, name, rate, dtype):
    x, dy = normal(rng, (8, 3, 2, 4), dtype), normal(rng, (8, 3, 2, 4), dtype)
    y_ref, c_ref = R.stochastic_depth_forward(x, rate=rate, rng=np.random.default_rng(7))
    y, cache = ops(name).stochastic_depth_forward(on(name, x), rate=rate, rng=np.random.default_rng(7))
    assert_close(y, y_ref)
    assert_close(ops(name).stochastic_depth_backward(on(name, dy), cache), R.stochastic_depth_backward(dy, c_ref))


def test_whole_samples_are_dropped_or_kept_and_scaled(rng):
    x = normal(rng, (64, 2, 3, 2)) + 5.0                       # no zero anywhere
    y, cache = R.stochastic_depth_forward(x, rate=0.25, rng=np.random.default_rng(3))
    keep = np.random.default_rng(3).random(64) >= 0.25
    np.testing.assert_array_equal(cache["keep"], keep)
    np.testing.assert_array_equal(y[~keep], 0.0)
    np.testing.assert_allclose(y[keep], x[keep] / 0.75, rtol=1e-15)
    assert 0 < (~keep).sum() < 64


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
def test_stochastic_depth_is_the_identity_at_inference_and_draws_nothing(rng, name):
    x = normal(rng, (3, 2, 2, 2), np.float32)
    mod = R if name == "numpy" else ops(name)
    gen = np.random.default_rng(5)
    state = gen.bit_generator.state
    y, cache = mod.stochastic_depth_forward(on(name, x), rate=0.5, rng=gen, training=False)
    assert gen.bit_generator.state == state
    np.testing.assert_array_equal(host(y), x)
    np.testing.assert_array_equal(host(mod.stochastic_depth_backward(on(name, x), cache)), x)


def test_stochastic_depth_gradients_against_central_differences(rng):
    x = normal(rng, (6, 2, 2, 3))
    seed = 11
    # the mask must be the same in every forward of the check: a fresh generator with one seed each time
    forward = lambda x, rate: R.stochastic_depth_forward(x, rate=rate, rng=np.random.default_rng(seed))  # noqa: E731
    check_gradients(forward, R.stochastic_depth_backward, {"x": x}, kwargs={"rate": 0.4}, rng=rng)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_per_element_mask_is_caught(rng, name):
    """Dropout's per-element mask is not drop-connect: with the same generator it must differ."""
    x = normal(rng, (4, 3, 3, 2), np.float32)
    y_ref, _ = R.stochastic_depth_forward(x, rate=0.5, rng=np.random.default_rng(2))
    y, _ = ops(name).dropout_forward(on(name, x), rate=0.5, rng=np.random.default_rng(2))
    with pytest.raises(AssertionError):
        assert_close(y, y_ref)
