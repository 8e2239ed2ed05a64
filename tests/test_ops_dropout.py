"""Dropout on every backend against the NumPy reference: the mask is drawn on the host from the caller's
generator, so with the same seed every backend drops the same units and scales the rest alike."""
import numpy as np
import pytest

from backends import BACKENDS, assert_close, on, ops
from strategies import normal
from tinydeeplab import functional as R


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_dropout_draws_the_reference_mask(rng, name, rate):
    x, dy = normal(rng, (2, 3, 3, 4), np.float32), normal(rng, (2, 3, 3, 4), np.float32)
    y_ref, c_ref = R.dropout_forward(x, rate=rate, rng=np.random.default_rng(7))
    y, cache = ops(name).dropout_forward(on(name, x), rate=rate, rng=np.random.default_rng(7))
    assert_close(y, y_ref)
    assert_close(ops(name).dropout_backward(on(name, dy), cache), R.dropout_backward(dy, c_ref))
