"""avg_pool2d against JAX where the shared ``ops_jax.npz`` does not reach: DenseNet's transition pool on
odd sides, and the dilated / explicitly padded pools of the atrous DenseNet (a tinydeeplab extension).

``tests/fixtures/avg_pool_jax.npz`` was written by ``tools/make_avg_pool_fixtures.py`` (needs jax, not a test
dependency): ``lax.reduce_window`` sums with ``window_dilation`` divided by the same window sum of ones, in
float64, with a random cotangent and JAX's vector-Jacobian product. Every backend must reproduce them to
float64 round-off.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from backends import BACKENDS, ops
from test_ops_jax import load_cases, run
from tinydeeplab import functional as R

CASES = load_cases(Path(__file__).parent / "fixtures" / "avg_pool_jax.npz")


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_avg_pool_matches_jax(name, case_name):
    case = CASES[case_name]
    y, (gx,), _ = run(R if name == "numpy" else ops(name), name, case, name)
    np.testing.assert_allclose(y, case["y"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, case["grad_x"], rtol=1e-10, atol=1e-12, err_msg="grad of x")


def test_the_fixture_covers_dilation_and_explicit_padding():
    options = [json.loads(str(c["options"])) for c in CASES.values()]
    assert {o["op"] for o in options} == {"avg_pool2d"}
    assert any(max(o["dilation"]) > 1 for o in options)
    assert any(isinstance(o["padding"], list) for o in options) and {"valid", "same"} <= {
        o["padding"] for o in options if isinstance(o["padding"], str)}
