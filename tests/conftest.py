"""Shared pytest setup: Hypothesis profiles and a seeded random generator.

Profiles (select with ``HYPOTHESIS_PROFILE=<name>``):

* ``default``  — 20 examples per property, no deadline (the float64 gradient checks are slow per
  example and timings on shared CI machines are noisy);
* ``thorough`` — 200 examples, for a local soak before a release.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (deterministic, independent of test order)."""
    return np.random.default_rng(1234)
