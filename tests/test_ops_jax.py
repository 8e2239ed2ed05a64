"""The new ops of the mobile encoder families against JAX, as Keras 3's JAX backend computes them.

``tests/fixtures/ops_jax.npz`` was written by ``tools/make_op_fixtures.py`` (needs jax, not a test
dependency) in float64: inputs, options, the forward output, a random cotangent and JAX's vector-Jacobian
products. Every backend must reproduce them to float64 round-off, the gradients at the kinks of hard
sigmoid, hard swish and leaky ReLU included (the fixture's activation inputs hold -3, 0 and 3 exactly).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from backends import BACKENDS, host, on, ops
from tinydeeplab import functional as R

FIXTURE = Path(__file__).parent / "fixtures" / "ops_jax.npz"


def load_cases(fixture=FIXTURE):
    """``{case: {key: array}}`` of a fixture whose keys are ``<case>/<key>`` (read without pickle)."""
    with np.load(fixture, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    names = sorted({k.split("/")[0] for k in arrays})
    return {name: {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(name + "/")} for name in names}


CASES = load_cases()
INPUTS = {"depthwise_conv2d": ("x", "w"), "channel_scale": ("x", "s")}
"""The differentiated inputs of each op, in the order its backward returns them (default: ``x``)."""


def run(module, name, case, backend_name):
    """Forward and backward of a fixture case on ``module``: ``(y, [grads of the inputs])``."""
    options = json.loads(str(case["options"]))
    op = options.pop("op")
    inputs = INPUTS.get(op, ("x",))
    if op == "stochastic_depth":   # replay the stored mask through a generator that draws it
        keep, keep_prob = np.array(options.pop("keep")), options.pop("keep_prob")
        draws = np.where(keep, 0.9, 0.1)

        class Replay:
            @staticmethod
            def random(n):
                return draws[:n]
        options = {"rate": 1.0 - keep_prob, "rng": Replay()}
    args = [on(backend_name, case[k]) for k in inputs]
    y, cache = getattr(module, op + "_forward")(*args, **options)
    grads = getattr(module, op + "_backward")(on(backend_name, case["dy"]), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return host(y), [host(g) for g in grads[:len(inputs)]], inputs


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_op_matches_jax(name, case_name):
    case = CASES[case_name]
    module = R if name == "numpy" else ops(name)
    y, grads, inputs = run(module, name, case, name)
    np.testing.assert_allclose(y, case["y"], rtol=1e-10, atol=1e-12)
    for k, g in zip(inputs, grads):
        np.testing.assert_allclose(g, case[f"grad_{k}"], rtol=1e-10, atol=1e-12, err_msg=f"grad of {k}")


def test_the_fixture_covers_every_new_op_and_the_kinks():
    ops_in_fixture = {json.loads(str(c["options"]))["op"] for c in CASES.values()}
    assert ops_in_fixture == {"depthwise_conv2d", "sigmoid", "swish", "hard_sigmoid", "hard_swish", "leaky_relu",
                              "avg_pool2d", "channel_scale", "stochastic_depth"}
    for act in ("hard_sigmoid", "hard_swish", "leaky_relu"):
        assert {-3.0, 0.0, 3.0} <= set(CASES[act]["x"].ravel().tolist())
