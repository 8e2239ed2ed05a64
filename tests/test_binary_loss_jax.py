"""The binary losses against an independent JAX formulation (``jax.numpy`` from the textbook form,
gradients by ``jax.grad``), on every backend.

``tests/fixtures/binary_losses_jax.npz`` was written by ``tools/make_binary_loss_fixtures.py`` (needs jax,
not a test dependency) in float64: logits, labels (some ignored, with 255 or another ignore label), the
options, the loss and its gradient. The reference and every backend must agree to float64 round-off.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from backends import BACKENDS, host, on, ops
from test_ops_jax import load_cases
from tinydeeplab import functional as R

FIXTURE = Path(__file__).parent / "fixtures" / "binary_losses_jax.npz"


CASES = load_cases(FIXTURE)


def test_fixture_covers_every_binary_loss_and_ignores_pixels():
    ops_seen = {json.loads(str(c["options"]))["op"] for c in CASES.values()}
    assert ops_seen == {"sigmoid_binary_cross_entropy", "dice_loss", "sigmoid_focal_loss"}
    assert sum(bool(np.any((c["labels"] != 0) & (c["labels"] != 1))) for c in CASES.values()) >= 5


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_binary_loss_matches_jax(name, case_name):
    case = CASES[case_name]
    options = json.loads(str(case["options"]))
    op = options.pop("op")
    module = R if name == "numpy" else ops(name)
    loss, cache = getattr(module, op + "_forward")(on(name, case["logits"]), case["labels"], **options)
    assert loss == pytest.approx(float(case["loss"]), rel=1e-12, abs=1e-14)
    grad = host(getattr(module, op + "_backward")(1.0, cache))
    np.testing.assert_allclose(grad, case["grad"], rtol=1e-10, atol=1e-14)
