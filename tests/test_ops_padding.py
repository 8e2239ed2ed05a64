"""Zero padding on every backend against the NumPy reference: the embedding and its adjoint, the crop."""
import numpy as np
import pytest

from backends import BACKENDS, assert_close, on, ops
from strategies import normal
from tinydeeplab import functional as R


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("pads", [((1, 0), (2, 1)), 1, (0, 2)])
def test_zero_pad2d(rng, name, pads):
    a = normal(rng, (2, 3, 2, 2), np.float32)
    p, cache = ops(name).zero_pad2d_forward(on(name, a), pads)
    p_ref, c_ref = R.zero_pad2d_forward(a, pads)
    assert_close(p, p_ref)
    dy = normal(rng, p_ref.shape, np.float32)
    assert_close(ops(name).zero_pad2d_backward(on(name, dy), cache), R.zero_pad2d_backward(dy, c_ref))
