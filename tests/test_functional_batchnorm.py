"""batchnorm (training and inference) and moving_average (NumPy reference)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import nhwc_shapes, normal, seeds
from tinydeeplab import functional as F
from tinydeeplab.gradcheck import check_gradients


def bn_params(rng, c, dtype=np.float64):
    gamma = (rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    moving_mean = rng.standard_normal(c).astype(dtype)
    moving_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    return gamma, beta, moving_mean, moving_var


@given(nhwc_shapes(), seeds, st.booleans(), st.sampled_from([1e-3, 1e-5]))
def test_batchnorm_gradients(shape, seed, training, eps):
    if training and shape[0] * shape[1] * shape[2] == 1:
        shape = (2, *shape[1:])           # a batch statistic over one pixel has var 0: ill-conditioned
    rng = np.random.default_rng(seed)
    x = normal(rng, shape) * 2 + 1
    gamma, beta, moving_mean, moving_var = bn_params(rng, shape[3])
    check_gradients(F.batchnorm_forward, F.batchnorm_backward, {"x": x, "gamma": gamma, "beta": beta},
                    kwargs={"moving_mean": moving_mean, "moving_var": moving_var, "training": training, "eps": eps},
                    rng=rng, rtol=1e-5, atol=1e-6)


@given(nhwc_shapes(), seeds)
def test_batchnorm_inference_is_the_closed_formula(shape, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape)
    gamma, beta, mm, mv = bn_params(rng, shape[3])
    y, _ = F.batchnorm_forward(x, gamma, beta, mm, mv, training=False, eps=1e-3)
    np.testing.assert_allclose(y, gamma * (x - mm) / np.sqrt(mv + 1e-3) + beta, rtol=1e-12, atol=1e-12)


@given(nhwc_shapes(min_size=2), seeds, st.sampled_from([1e-3, 0.5]))
def test_batchnorm_training_output_statistics(shape, seed, eps):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape) * 3 - 2
    gamma, beta, mm, mv = bn_params(rng, shape[3])
    y, cache = F.batchnorm_forward(x, gamma, beta, mm, mv, training=True, eps=eps)
    var = x.var(axis=(0, 1, 2))                                        # biased, like Keras
    np.testing.assert_allclose(cache["mean"], x.mean(axis=(0, 1, 2)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache["var"], var, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), beta, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), gamma ** 2 * var / (var + eps), rtol=1e-9, atol=1e-12)


def test_batchnorm_training_ignores_moving_statistics_and_does_not_update_them():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3, 4))
    gamma, beta, mm, mv = bn_params(rng, 4)
    mm0, mv0 = mm.copy(), mv.copy()
    y1, _ = F.batchnorm_forward(x, gamma, beta, mm, mv, training=True)
    y2, _ = F.batchnorm_forward(x, gamma, beta, mm * 100, mv * 100, training=True)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(mm, mm0)
    np.testing.assert_array_equal(mv, mv0)


def test_batchnorm_inference_backward_is_a_per_channel_scale():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 3, 3))
    gamma, beta, mm, mv = bn_params(rng, 3)
    y, cache = F.batchnorm_forward(x, gamma, beta, mm, mv, training=False, eps=1e-5)
    dy = rng.standard_normal(y.shape)
    dx, dgamma, dbeta = F.batchnorm_backward(dy, cache)
    np.testing.assert_allclose(dx, dy * gamma / np.sqrt(mv + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(dbeta, dy.sum(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(dgamma, (dy * (x - mm) / np.sqrt(mv + 1e-5)).sum(axis=(0, 1, 2)), rtol=1e-10)


def test_batchnorm_float32_stays_float32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    params = bn_params(rng, 3, np.float32)
    for training in (True, False):
        y, cache = F.batchnorm_forward(x, *params, training=training)
        grads = F.batchnorm_backward(np.ones_like(y), cache)
        assert y.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
        assert cache["mean"].dtype == cache["var"].dtype == np.float32


@pytest.mark.parametrize("momentum", [0.0, 0.9, 0.99, 1.0])
def test_moving_average(momentum):
    moving, batch = np.array([1.0, -2.0, 4.0], np.float32), np.array([3.0, 0.0, 4.0], np.float32)
    out = F.moving_average(moving, batch, momentum)
    np.testing.assert_allclose(out, moving * momentum + batch * (1 - momentum), rtol=1e-6)
    assert out.dtype == np.float32
    assert moving.tolist() == [1.0, -2.0, 4.0]          # a new array: the input is untouched


def test_batchnorm_cache_feeds_moving_average_like_keras():
    # one Keras training step: moving = moving * m + batch * (1 - m), with the biased batch variance
    x = np.array([0.0, 2.0, 4.0, 6.0]).reshape(1, 2, 2, 1)
    ones, zeros = np.ones(1), np.zeros(1)
    _, cache = F.batchnorm_forward(x, ones, zeros, zeros, ones, training=True)
    assert F.moving_average(zeros, cache["mean"], 0.99).item() == pytest.approx(0.03)
    assert F.moving_average(ones, cache["var"], 0.99).item() == pytest.approx(0.99 + 0.01 * 5.0)
