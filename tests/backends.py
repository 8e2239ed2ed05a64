"""The backends every op conformance test (``tests/test_ops_*.py``) runs on, and the one comparison they share.

In the spirit of minitorch's backend tests: one strategy draws a case, every backend runs it, and each
result is compared with the NumPy reference (:mod:`tinydeeplab.functional`), never with itself.

* ``"cpu"``  — :mod:`tinydeeplab.kernels.cpu`, on host arrays;
* ``"cuda"`` — :mod:`tinydeeplab.kernels.cuda`, on device arrays. ``tests/conftest.py`` switches Numba's
  CUDA simulator on (every GPU thread a Python thread: slow), so cuda cases are drawn smaller
  (:data:`DRAW_SIZES`); ``TINYDEEPLAB_REAL_CUDA=1`` runs them on a GPU. Where neither is usable the cuda
  cases are skipped with the reason.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from tinydeeplab import backend

try:
    from tinydeeplab.kernels import cuda as _cuda
    _cuda.check_available()
    CUDA_MISSING = None
except ImportError as err:   # no numba.cuda, or TINYDEEPLAB_REAL_CUDA=1 on a machine without a GPU
    CUDA_MISSING = str(err)

NEEDS_CUDA = pytest.mark.skipif(CUDA_MISSING is not None, reason=str(CUDA_MISSING))
"""Mark of a cuda case: skipped, with the reason, where neither a GPU nor the simulator is usable."""

BACKENDS = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=NEEDS_CUDA)]
"""``@pytest.mark.parametrize("name", BACKENDS)``: the backends compared with the reference."""

DRAW_SIZES = {"cpu": {"max_size": 6, "max_channels": 3}, "cuda": {"max_size": 4, "max_channels": 2}}
"""Largest H/W and C a strategy draws per backend (the simulator runs every thread in Python)."""

SIMULATED = CUDA_MISSING is None and _cuda.SIMULATED


def examples(name: str) -> int:
    """Examples per property on backend ``name``: the Hypothesis profile's count (``tests/conftest.py``), a
    quarter of it (at least 5) for cuda on the simulator, where one example costs about a second."""
    n = settings().max_examples
    return max(5, n // 4) if name == "cuda" and SIMULATED else n


def for_drawn_cases(name: str, strategy, check) -> None:
    """Run ``check(case)`` on :func:`examples` cases drawn from ``strategy`` (Hypothesis shrinks a failure)."""
    settings(max_examples=examples(name))(given(strategy)(check))()


def ops(name: str):
    """The op module of backend ``name``."""
    return backend.ops(name)


def on(name: str, a):
    """``a`` where backend ``name`` wants it: a device copy on cuda; host arrays elsewhere (None passes)."""
    if name == "cuda" and isinstance(a, np.ndarray):
        return _cuda.to_device(a)
    return a


def host(a):
    """A backend's result as a NumPy array (device arrays are copied back; None passes)."""
    return backend.to_numpy(a)


def assert_close(actual, expected, *, rtol=1e-4, atol_scale=1e-5):
    """``actual`` (host or device) against the reference ``expected``: same shape and dtype, and
    ``|actual - expected| <= atol + rtol * |expected|`` with ``atol = atol_scale * max(1, max |expected|)``
    (sums of many terms round off in proportion to the magnitude of the values). float64 results must
    agree to ``rtol = 1e-10``, ``atol_scale = 1e-12``.

    >>> assert_close(np.float32([1.0, 2.0]), np.float32([1.0, 2.00001]))
    """
    actual, expected = host(actual), np.asarray(expected)
    assert isinstance(actual, np.ndarray) and actual.shape == expected.shape, (getattr(actual, "shape", None),
                                                                               expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    tight = expected.dtype == np.float64
    np.testing.assert_allclose(actual, expected, rtol=1e-10 if tight else rtol,
                               atol=(1e-12 if tight else atol_scale) * scale)


def assert_all_close(actuals, expecteds, **tolerances):
    """:func:`assert_close` for each pair of two sequences of results; a None (no bias) must match a None."""
    actuals, expecteds = list(actuals), list(expecteds)
    assert len(actuals) == len(expecteds)
    for a, e in zip(actuals, expecteds):
        if e is None:
            assert a is None
        else:
            assert_close(a, e, **tolerances)
