"""Batch norm (and the moving-average update) on every backend against the NumPy reference.

Forward in training and inference mode, the batch statistics the layer feeds into
``moving_average``, and the three gradients; ``tests/backends.py`` holds the comparison.
"""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_all_close, assert_close, for_drawn_cases, host, on, ops
from strategies import nhwc_shapes, normal, seeds
from tinydeeplab import functional as R


def bn_params(rng, c, dtype=np.float32):
    """gamma, beta, moving_mean, moving_var (the variance positive)."""
    gamma, beta, mm = (normal(rng, c, dtype) for _ in range(3))
    return gamma, beta, mm, (rng.random(c) + 0.5).astype(dtype)


def check_batchnorm(name, x, params, dy, **kw):
    """Forward, the batch statistics of the cache, and backward of backend ``name`` against the reference."""
    y_ref, c_ref = R.batchnorm_forward(x, *params, **kw)
    y, cache = ops(name).batchnorm_forward(on(name, x), *(on(name, p) for p in params), **kw)
    assert host(y).dtype == x.dtype
    assert_close(y, y_ref)          # normalised outputs: compared at the scale of gamma * xhat
    assert_all_close((cache["mean"], cache["var"]), (c_ref["mean"], c_ref["var"]))
    assert_all_close(ops(name).batchnorm_backward(on(name, dy), cache), R.batchnorm_backward(dy, c_ref))
    return cache, c_ref


@pytest.mark.parametrize("name", BACKENDS)
def test_batchnorm_matches_reference(name):
    sizes = DRAW_SIZES[name]

    def check(args):
        shape, seed, training, eps = args
        rng = np.random.default_rng(seed)
        x = (normal(rng, shape, np.float32) * 3 + 2).astype(np.float32)
        check_batchnorm(name, x, bn_params(rng, shape[3]), normal(rng, shape, np.float32),
                        training=training, eps=eps)
    cases = st.tuples(nhwc_shapes(max_size=sizes["max_size"], max_channels=sizes["max_channels"] + 2), seeds,
                      st.booleans(), st.sampled_from([1e-3, 1e-5, 0.1]))
    for_drawn_cases(name, cases, check)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_named_case_and_moving_average(rng, name, training):
    x = normal(rng, (2, 3, 4, 5)) * 3 + 1
    gamma, beta = rng.uniform(0.5, 1.5, 5).astype(np.float32), normal(rng, (5,), np.float32)
    mm, mv = normal(rng, (5,), np.float32), rng.uniform(0.5, 1.5, 5).astype(np.float32)
    cache, c_ref = check_batchnorm(name, x.astype(np.float32), (gamma, beta, mm, mv),
                                   normal(rng, x.shape, np.float32), training=training, eps=1e-3)
    assert_close(ops(name).moving_average(on(name, mm), cache["mean"], 0.9), R.moving_average(mm, c_ref["mean"], 0.9))


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_cpu_float64_and_many_rows(rng, training):
    """More rows than the CPU kernel's N_CHUNKS (uneven last chunk) and float64."""
    x = normal(rng, (3, 17, 13, 6), np.float64) + 5.0
    check_batchnorm("cpu", x, bn_params(rng, 6, np.float64), normal(rng, x.shape), training=training, eps=1e-3)


@pytest.mark.parametrize("name", BACKENDS)
def test_batchnorm_training_statistics_feed_moving_average(rng, name):
    """The cache's batch mean and (biased) variance are NumPy's, and ``moving_average`` mixes them in."""
    x = normal(rng, (2, 4, 4, 3), np.float32)
    p = [np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32), np.ones(3, np.float32)]
    _, cache = ops(name).batchnorm_forward(on(name, x), *(on(name, v) for v in p), training=True)
    np.testing.assert_allclose(host(cache["mean"]), x.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(cache["var"]), x.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    new = ops(name).moving_average(on(name, p[2]), cache["mean"], 0.9)
    np.testing.assert_allclose(host(new), 0.1 * host(cache["mean"]), rtol=1e-6)


@pytest.mark.parametrize("name", [pytest.param("numpy", id="numpy"), *BACKENDS])
def test_synchronized_batchnorm_on_half_the_batch_equals_the_whole_batch(name):
    """Synchronized BN (``reduce=``) on one half of a batch, whose other half (on another "rank") is the same,
    equals BN on the whole batch: the reduce doubles the local sums, as an allreduce over two equal ranks
    would. Forward, statistics and dx agree with the whole batch's; dgamma and dbeta are the local half."""
    rng = np.random.default_rng(7)
    half = (normal(rng, (2, 3, 3, 3), np.float32) * 3 + 2).astype(np.float32)
    dy_half = normal(rng, half.shape, np.float32)
    params = bn_params(rng, 3)
    whole = np.concatenate([half, half])
    y_ref, c_ref = R.batchnorm_forward(whole, *params, training=True, eps=1e-3)
    dx_ref, dgamma_ref, dbeta_ref = R.batchnorm_backward(np.concatenate([dy_half, dy_half]), c_ref)
    calls = []

    def reduce(local):
        calls.append(local.shape)
        return 2 * local
    y, cache = ops(name).batchnorm_forward(on(name, half), *(on(name, p) for p in params), training=True, eps=1e-3,
                                           reduce=reduce)
    assert_close(y, y_ref[:2])
    assert_all_close((cache["mean"], cache["var"]), (c_ref["mean"], c_ref["var"]))
    dx, dgamma, dbeta = ops(name).batchnorm_backward(on(name, dy_half), cache)
    assert_all_close((dx, dgamma, dbeta), (dx_ref[:2], dgamma_ref / 2, dbeta_ref / 2))
    assert calls == [(3, 3), (2, 3)]               # one fused reduction each way: [sum, sum sq, count], [dy, dy*xhat]
