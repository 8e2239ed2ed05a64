"""Shared pytest setup: Hypothesis profiles and a seeded random generator.

Profiles (select with ``HYPOTHESIS_PROFILE=<name>``):

* ``default``  — 20 examples per property, no deadline (the float64 gradient checks are slow per
  example and timings on shared CI machines are noisy);
* ``thorough`` — 200 examples, for a local soak before a release.

CUDA: the cuda backend's tests run on Numba's CUDA simulator, which must be switched on before
``numba.cuda`` is first imported, hence the lines below (they do not affect the Numba CPU kernels).
``TINYDEEPLAB_REAL_CUDA=1`` runs them on a real GPU instead.
"""
import os
import sys

if os.environ.get("TINYDEEPLAB_REAL_CUDA") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    if "numba" in sys.modules:                      # imported early by a plugin: re-read the environment
        sys.modules["numba"].core.config.reload_config()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("default", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (deterministic, independent of test order)."""
    return np.random.default_rng(1234)
