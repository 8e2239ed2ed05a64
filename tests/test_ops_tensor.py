"""Concat, split and the residual add on every backend against the NumPy reference (on the CPU backend
they are the reference functions themselves, see ``test_ops_contract.py``)."""
import numpy as np
import pytest

from backends import BACKENDS, assert_all_close, assert_close, on, ops
from strategies import normal
from tinydeeplab import functional as R


@pytest.mark.parametrize("name", BACKENDS)
def test_concat_and_split(rng, name):
    a, b = normal(rng, (2, 3, 2, 2), np.float32), normal(rng, (2, 3, 2, 3), np.float32)
    y, cache = ops(name).concat_forward([on(name, a), on(name, b)])
    y_ref, c_ref = R.concat_forward([a, b])
    assert_close(y, y_ref)
    dy = normal(rng, y_ref.shape, np.float32)
    assert_all_close(ops(name).concat_backward(on(name, dy), cache), R.concat_backward(dy, c_ref))
    parts, cache = ops(name).split_forward(on(name, y_ref), [2, 3])
    assert_all_close(parts, [a, b])
    assert_close(ops(name).split_backward([on(name, a), on(name, b)], cache), y_ref)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("inplace", [False, True])
def test_add(rng, name, inplace):
    a = normal(rng, (2, 3, 2, 2), np.float32)
    s, cache = ops(name).add_forward(on(name, a.copy()), on(name, a * 2), inplace=inplace)
    assert_close(s, a * 3)
    assert_all_close(ops(name).add_backward(on(name, a), cache), (a, a))
