"""The ops KerasHub's CSPNet adds: leaky ReLU at its ``negative_slope=0.01`` and the channel split of its
cross-stage blocks, on every backend against the NumPy reference, against float64 central differences on
every entry, through the layers (:class:`~tinydeeplab.nn.LeakyReLU`, ``Activation("leaky_relu")``,
:class:`~tinydeeplab.nn.Split`), and against JAX (``tests/fixtures/cspnet_ops_jax.npz``, written by
``tools/make_cspnet_op_fixtures.py``)."""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_all_close, assert_close, for_drawn_cases, host, on, ops
from strategies import away_from, normal, seeds
from test_ops_jax import load_cases
from tinydeeplab import functional as R
from tinydeeplab import use_backend
from tinydeeplab.gradcheck import check_gradients
from tinydeeplab.nn import Activation, LeakyReLU, Split

FIXTURE = Path(__file__).parent / "fixtures" / "cspnet_ops_jax.npz"
CASES = load_cases(FIXTURE) if FIXTURE.exists() else {}
SLOPE = 0.01                      # keras_hub/src/models/cspnet/cspnet_backbone.py: LeakyReLU(negative_slope=0.01)


def module(name):
    return R if name == "numpy" else ops(name)


@pytest.mark.parametrize("name", BACKENDS)
def test_leaky_relu_at_cspnet_slope_matches_reference(name):
    def check(args):
        shape, seed, dtype = args
        rng = np.random.default_rng(seed)
        x = normal(rng, shape, dtype) * 4
        x.flat[0] = 0.0                                           # the kink: slope 1 at exactly 0
        y_ref, c_ref = R.leaky_relu_forward(x, negative_slope=SLOPE)
        y, cache = ops(name).leaky_relu_forward(on(name, x), negative_slope=SLOPE)
        assert host(y).dtype == dtype
        assert_close(y, y_ref)
        dy = normal(rng, shape, dtype)
        assert_close(ops(name).leaky_relu_backward(on(name, dy), cache), R.leaky_relu_backward(dy, c_ref))
    side = st.integers(1, DRAW_SIZES[name]["max_size"] - 1)
    for_drawn_cases(name, st.tuples(st.lists(side, min_size=1, max_size=4), seeds,
                                    st.sampled_from([np.float32, np.float64])), check)


@pytest.mark.parametrize("name", ["numpy", "cpu", pytest.param("cuda", marks=BACKENDS[1].marks)])
def test_leaky_relu_gradient_central_differences_every_entry(name):
    """float64, a random cotangent, every entry of x (away from the kink at 0)."""
    mod = module(name)

    def forward(x, negative_slope):
        return mod.leaky_relu_forward(on(name, x), negative_slope=negative_slope)

    def backward(dy, cache):
        return host(mod.leaky_relu_backward(on(name, dy), cache))

    @settings(max_examples=5 if name == "cuda" else 10, deadline=None)
    @given(seeds, st.lists(st.integers(1, 3 if name == "cuda" else 4), min_size=1, max_size=4))
    def check(seed, shape):
        rng = np.random.default_rng(seed)
        x = away_from(normal(rng, shape) * 4, (0.0,))
        check_gradients(lambda x, negative_slope: _host_out(forward(x, negative_slope)), backward, {"x": x},
                        kwargs={"negative_slope": SLOPE}, rng=rng)
    check()


def _host_out(pair):
    y, cache = pair
    return host(y), cache


@pytest.mark.parametrize("name", ["numpy", "cpu", pytest.param("cuda", marks=BACKENDS[1].marks)])
def test_split_gradient_central_differences_every_entry(name, rng):
    mod = module(name)
    x = normal(rng, (2, 3, 2, 6))

    def forward(x):
        parts, cache = mod.split_forward(on(name, x), [3, 3])
        return [host(p) for p in parts], cache

    def backward(dys, cache):
        return host(mod.split_backward([on(name, d) for d in dys], cache))
    result = check_gradients(forward, backward, {"x": x}, rng=rng)
    assert result.passed


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
@pytest.mark.parametrize("case_name", sorted(CASES))
def test_op_matches_jax(name, case_name):
    case, mod = CASES[case_name], module(name)
    options = json.loads(str(case["options"]))
    if options["op"] == "leaky_relu":
        y, cache = mod.leaky_relu_forward(on(name, case["x"]), negative_slope=options["negative_slope"])
        dx = mod.leaky_relu_backward(on(name, case["dy"]), cache)
        np.testing.assert_allclose(host(y), case["y"], rtol=1e-12, atol=1e-14)
    else:
        c = case["x"].shape[-1]
        parts, cache = mod.split_forward(on(name, case["x"]), [c // 2] * 2)
        for k, p in enumerate(parts):
            np.testing.assert_array_equal(host(p), case[f"y{k}"])
        dx = mod.split_backward([on(name, case["dy0"]), on(name, case["dy1"])], cache)
    np.testing.assert_allclose(host(dx), case["grad_x"], rtol=1e-12, atol=1e-14)


def test_the_fixture_holds_the_kink_and_both_ops():
    kinds = {json.loads(str(c["options"]))["op"] for c in CASES.values()}
    assert kinds == {"leaky_relu", "split"}
    assert 0.0 in CASES["leaky_relu_0.01"]["x"].ravel().tolist()
    assert json.loads(str(CASES["leaky_relu_0.01"]["options"]))["negative_slope"] == SLOPE


@pytest.mark.parametrize("name", ["numpy"] + BACKENDS)
def test_layers_run_the_ops_with_the_given_slope(name, rng):
    x = normal(rng, (2, 3, 4, 6), np.float32)
    x.flat[0] = 0.0
    dy = normal(rng, x.shape, np.float32)
    y_ref, c_ref = R.leaky_relu_forward(x, negative_slope=SLOPE)
    for layer in (LeakyReLU(SLOPE), Activation("leaky_relu", negative_slope=SLOPE)):
        with use_backend(name):
            y = layer.forward(on(name, x))
            dx = layer.backward(on(name, dy))
        assert_close(y, y_ref)
        assert_close(dx, R.leaky_relu_backward(dy, c_ref))
    with use_backend(name):
        split = Split(2)
        a, b = split.forward(on(name, x))
        d = split.backward([on(name, dy[..., :3]), on(name, dy[..., 3:])])
    assert_all_close([a, b], [x[..., :3], x[..., 3:]])
    assert_close(d, dy)


def test_layer_defaults_follow_keras():
    """keras.layers.LeakyReLU defaults to 0.3, keras.activations.leaky_relu (Activation) to 0.2."""
    assert LeakyReLU().kwargs == {"negative_slope": 0.3}
    assert Activation("leaky_relu").kwargs == {"negative_slope": 0.2}
    y = LeakyReLU(SLOPE).forward(np.array([-100.0, 0.0, 5.0]))
    assert y.tolist() == [-1.0, 0.0, 5.0]


@pytest.mark.parametrize("make,match", [
    (lambda: Activation("relu", negative_slope=0.1), "negative_slope is leaky_relu's option"),
    (lambda: Split(0), "positive int"),
    (lambda: Split(4).forward(np.zeros((1, 1, 1, 6))), "cannot split 6 channels into 4"),
])
def test_bad_layer_arguments_are_one_line(make, match):
    with pytest.raises(ValueError, match=match):
        make()
