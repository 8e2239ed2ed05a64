"""The inference plan (tinydeeplab.nn.inference_plan) and its fused op, conv2d_fused.

* ``conv2d_fused`` (``act(conv(x, w) + b + residual)``) on every backend against the reference, the reference
  against the chain conv2d -> add -> relu it replaces, and its gradients against central differences;
* the plan's logits against the plain forward on the KerasHub fixtures and a recipe, CPU and CUDA simulator,
  with the tolerance below; the model's weights untouched (a preset saved after using the plan is the same);
  training unchanged; a stale plan refused.

**Tolerance of the plan.** Folding rounds ``W * s`` to float32 before the products are summed (the plain path
rounds the convolution, then the batch norm), so each folded layer adds a few float32 roundings of relative size
``eps = 2^-23`` and they accumulate along the network. The test bound is ``4 eps`` per convolution of the model::

    max |plan - plain| / max |plain| <= 4 * eps * (number of convolutions)

Measured (CPU, fixtures' stored inputs, 2 images each): v3plus_tiny 2.5e-6..7.5e-6 (28 convs: bound 1.3e-5),
v3plus_v2_tiny 3.0e-6..3.6e-6 (27: 1.3e-5), effnet_v3plus_tiny 8.5e-7..1.6e-6 (46: 2.2e-5), i.e. 7..63 eps.
And the plan is no less accurate than the plain path: against the same model in float64 its error is at most
4x the plain float32 path's (measured: 0.7x..2.2x). A wrong fold (epsilon dropped, the mean not scaled, the
bias lost) moves the logits by 1e-3 or more, far outside both bounds.
"""
from pathlib import Path

import h5py
import numpy as np
import pytest

from backends import BACKENDS, DRAW_SIZES, NEEDS_CUDA, assert_all_close, assert_close, for_drawn_cases, host, on, ops
from model_factories import randomize_batchnorm, tiny_segmenter
from strategies import conv_cases, normal
from tinydeeplab import backend, load_keras_preset, save_keras_preset
from tinydeeplab import functional as R
from tinydeeplab.gradcheck import check_gradients
from tinydeeplab.kernels.cpu import conv as kconv
from tinydeeplab.models.recipes import build_model
from tinydeeplab.nn import (BatchNorm, Conv2D, DepthwiseConv2D, InferencePlan, ReLU, Sequential, StalePlanError,
                            inference_mode, inference_plan)
from tinydeeplab.nn.inference_plan import fold_batchnorm

FIXTURES = Path(__file__).parent / "fixtures"
PRESETS = ["v3plus_tiny", "v3plus_v2_tiny", "effnet_v3plus_tiny"]
EPS32 = float(np.finfo(np.float32).eps)
ULPS_PER_CONV = 4


# ---------------------------------------------------------------------------------------------------
# The fused op
# ---------------------------------------------------------------------------------------------------

def fused_case(case, dtype=np.float32):
    """Arrays and options of a drawn conv case plus a residual (every other seed) and the ReLU flag."""
    rng = np.random.default_rng(case["seed"])
    x, w = normal(rng, case["x_shape"], dtype), normal(rng, case["w_shape"], dtype)
    b = normal(rng, case["w_shape"][3], dtype) if case["bias"] else None
    kw = {k: case[k] for k in ("stride", "dilation", "padding")}
    y0, _ = R.conv2d_forward(x, w, b, **kw)
    residual = normal(rng, y0.shape, dtype) if case["seed"] % 2 else None
    return rng, x, w, b, residual, dict(kw, relu=bool(case["seed"] % 3))


@pytest.mark.parametrize("name", BACKENDS)
def test_conv2d_fused_matches_reference(name):
    mod = ops(name)

    def check(case):
        rng, x, w, b, res, kw = fused_case(case)
        y_ref, c_ref = R.conv2d_fused_forward(x, w, b, res, **kw)
        y, cache = mod.conv2d_fused_forward(on(name, x), on(name, w), on(name, b), on(name, res), **kw)
        assert_close(y, y_ref)
        dy = normal(rng, y_ref.shape, np.float32)
        assert_all_close(mod.conv2d_fused_backward(on(name, dy), cache), R.conv2d_fused_backward(dy, c_ref))
    for_drawn_cases(name, conv_cases(**DRAW_SIZES[name]), check)


@pytest.mark.parametrize("name", ["numpy", "cpu"])
@pytest.mark.parametrize("path", ["auto", "tapwise"])
def test_conv2d_fused_equals_the_chain_it_replaces(name, path):
    """conv2d -> add -> relu of the same backend, bit for bit: the epilogue adds in the same order."""
    mod = ops(name)
    threshold = kconv.TAPWISE_MIN_DEAD_FRACTION if path == "auto" else -1.0

    def check(case):
        _, x, w, b, res, kw = fused_case(case)
        relu = kw.pop("relu")
        saved, kconv.TAPWISE_MIN_DEAD_FRACTION = kconv.TAPWISE_MIN_DEAD_FRACTION, threshold
        try:
            y, _ = mod.conv2d_fused_forward(x, w, b, res, relu=relu, **kw)
            chain, _ = mod.conv2d_forward(x, w, b, **kw)
        finally:
            kconv.TAPWISE_MIN_DEAD_FRACTION = saved
        if res is not None:
            chain = mod.add_forward(chain, res)[0]
        if relu:
            chain = mod.relu_forward(chain)[0]
        np.testing.assert_array_equal(y, chain)
    for_drawn_cases(name, conv_cases(), check)


def test_cpu_fused_1x1_in_small_chunks_equals_one_chunk(rng, monkeypatch):
    """The fused 1x1 convolution's GEMM is cut into row chunks for its epilogue: the rows do not depend on it."""
    x, w, b = normal(rng, (2, 7, 5, 6), np.float32), normal(rng, (1, 1, 6, 4), np.float32), normal(rng, 4, np.float32)
    res = normal(rng, (2, 7, 5, 4), np.float32)
    whole, _ = kconv.conv2d_fused_forward(x, w, b, res, relu=True)
    monkeypatch.setattr(kconv, "EPILOGUE_CHUNK_BYTES", 3 * 4 * 4)          # three rows of 4 channels per chunk
    chunked, _ = kconv.conv2d_fused_forward(x, w, b, res, relu=True)
    assert_close(chunked, whole, rtol=1e-6)
    assert_close(whole, R.conv2d_fused_forward(x, w, b, res, relu=True)[0])


@pytest.mark.parametrize("name", ["numpy", "cpu"])
@pytest.mark.parametrize("relu,residual,bias", [(True, True, True), (True, False, False), (False, True, True)])
def test_conv2d_fused_gradients_against_central_differences(name, relu, residual, bias):
    mod = ops(name)
    rng = np.random.default_rng(7)
    inputs = {"x": rng.standard_normal((2, 5, 4, 3)), "w": rng.standard_normal((3, 2, 3, 4))}
    if bias:
        inputs["b"] = rng.standard_normal(4)
    if residual:
        inputs["residual"] = rng.standard_normal((2, 3, 2, 4))
    check_gradients(mod.conv2d_fused_forward, mod.conv2d_fused_backward, inputs, rng=rng,
                    kwargs={"stride": 2, "padding": "same", "relu": relu}, grad_names=("x", "w", "b", "residual"))


@pytest.mark.parametrize("name", ["numpy", "cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def test_conv2d_fused_rejects_a_residual_of_the_wrong_shape(name):
    x, w = np.zeros((1, 4, 4, 3), np.float32), np.zeros((3, 3, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"residual has shape \(1, 4, 4, 3\), the convolution's output is "
                                         r"\(1, 4, 4, 2\)"):
        ops(name).conv2d_fused_forward(on(name, x), on(name, w), None, on(name, np.zeros((1, 4, 4, 3), np.float32)))
    with pytest.raises(ValueError, match="relu must be True or False"):
        ops(name).conv2d_fused_forward(on(name, x), on(name, w), relu=1)


@NEEDS_CUDA
def test_cuda_gemm_epilogue_is_applied_in_the_store_and_never_accumulates(rng):
    from tinydeeplab.kernels import cuda as G
    from tinydeeplab.kernels.cuda import gemm

    a, b = normal(rng, (9, 7), np.float32), normal(rng, (7, 5), np.float32)
    bias, res = normal(rng, 5, np.float32), normal(rng, (9, 5), np.float32)
    got = gemm.matmul(G.to_device(a), G.to_device(b), bias=G.to_device(bias), residual=G.to_device(res), relu=True,
                      split_k=3)                                            # split-K is switched off for it
    assert_close(got, np.maximum(a @ b + bias + res, 0))
    with pytest.raises(ValueError, match="cannot accumulate"):
        gemm.matmul(G.to_device(a), G.to_device(b), G.to_device(res), accumulate=True, relu=True)


# ---------------------------------------------------------------------------------------------------
# Folding
# ---------------------------------------------------------------------------------------------------

def random_bn(rng, channels, eps=1e-3):
    bn = BatchNorm(channels, epsilon=eps)
    bn.params["gamma"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    bn.params["beta"] = rng.normal(0, 0.5, channels).astype(np.float32)
    bn.buffers["moving_mean"] = rng.normal(0, 0.5, channels).astype(np.float32)
    bn.buffers["moving_variance"] = rng.uniform(0.2, 2.0, channels).astype(np.float32)
    return bn


@pytest.mark.parametrize("depthwise,bias", [(False, False), (False, True), (True, False)])
def test_folded_conv_is_the_conv_then_the_batch_norm(rng, depthwise, bias):
    """``conv(x, W') + b' = BN(conv(x, W) + b)`` in float64, to 1e-12 (the equation of the module docstring)."""
    c, m = 3, 2
    w = rng.standard_normal((3, 3, c, m if depthwise else 5))
    f = c * m if depthwise else 5
    b = rng.standard_normal(f) if bias else None
    bn = random_bn(rng, f).astype(np.float64)
    wf, bf = fold_batchnorm(w, b, bn, depthwise=depthwise)
    assert wf.dtype == bf.dtype == np.float64
    x = rng.standard_normal((2, 6, 5, c))
    conv = R.depthwise_conv2d_forward if depthwise else R.conv2d_forward
    want = R.batchnorm_forward(conv(x, w, b)[0], bn.params["gamma"], bn.params["beta"], bn.buffers["moving_mean"],
                               bn.buffers["moving_variance"], training=False, eps=bn.epsilon)[0]
    np.testing.assert_allclose(conv(x, wf, bf)[0], want, rtol=1e-12, atol=1e-12)


def test_plan_fuses_every_conv_bn_relu_of_a_sequential_and_leaves_other_layers_alone(rng):
    net = Sequential(("pre_bn", random_bn(rng, 3)),                     # a BN after no conv: runs as it is
                     ("conv", Conv2D(3, 4, 3, seed=0)), ("bn", random_bn(rng, 4)), ("relu", ReLU()),
                     ("dw", DepthwiseConv2D(4, 3, seed=1)), ("dw_bn", random_bn(rng, 4)), ("dw_relu", ReLU()),
                     ("conv_relu", Conv2D(4, 4, 1, use_bias=True, seed=2)), ("relu2", ReLU()),
                     ("alone", Conv2D(4, 2, 1, seed=3)))                # a conv with nothing to fuse
    net.forward(np.zeros((1, 4, 4, 3), np.float32))
    plan = InferencePlan(net)
    assert plan.fused == ["conv + bn + relu", "dw + dw_bn + dw_relu", "conv_relu + relu2"]
    x = normal(rng, (2, 6, 6, 3), np.float32)
    with inference_mode():
        want = net.forward(x)
    assert_close(plan(x), want, rtol=1e-5)
    assert plan(x).shape == (2, 6, 6, 2)


# ---------------------------------------------------------------------------------------------------
# The plan on whole models
# ---------------------------------------------------------------------------------------------------

def fixture_inputs(name):
    with np.load(FIXTURES / name / "cases.npz", allow_pickle=False) as data:
        return {k[len("input_"):]: data[k] for k in data.files if k.startswith("input_")}


def n_convs(model):
    return sum(isinstance(m, (Conv2D, DepthwiseConv2D)) for _, m in model.modules())


def relative(a, b):
    a, b = host(a).astype(np.float64), host(b).astype(np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def assert_plan_matches_plain(model, x, *, float64_model=None):
    """The plan's logits against the plain forward's, within ``ULPS_PER_CONV`` eps per convolution; with
    ``float64_model`` also no less accurate than the plain float32 path. Returns the relative error."""
    with inference_mode():
        plain = host(model.forward(x))
    planned = host(InferencePlan(model)(x))
    err, bound = relative(planned, plain), ULPS_PER_CONV * EPS32 * n_convs(model)
    assert err <= bound, f"plan vs plain: {err:.2e} > {bound:.2e}"
    assert (planned.argmax(-1) == plain.argmax(-1)).mean() >= 0.999
    if float64_model is not None:
        with inference_mode():
            exact = float64_model.forward(x.astype(np.float64))
        assert relative(planned, exact) <= 4 * relative(plain, exact) + EPS32
    return err


@pytest.mark.parametrize("name", PRESETS)
def test_plan_logits_match_the_plain_forward_on_the_keras_fixtures(name):
    model = load_keras_preset(FIXTURES / name / "preset")
    exact = load_keras_preset(FIXTURES / name / "preset").astype(np.float64)
    plan = InferencePlan(model)
    assert len(plan.fused) >= n_convs(model) // 2                 # most convolutions are fused
    for x in fixture_inputs(name).values():
        assert_plan_matches_plain(model, x, float64_model=exact)


def test_plan_runs_no_batch_norm_and_no_add_on_a_resnet_recipe(monkeypatch):
    """Every BN of the ``small`` recipe is folded, every residual add and its ReLU fused into a conv."""
    from tinydeeplab.nn import Add

    model = randomize_batchnorm(build_model("small", 5, seed=0), np.random.default_rng(0))
    plan = InferencePlan(model)
    blocks = [m for n, m in model.modules() if type(m).__name__ == "Block"]
    assert sum("add + out_relu" in f for f in plan.fused) == len(blocks) > 0
    x = np.random.default_rng(1).normal(0, 1, (2, 64, 64, 3)).astype(np.float32)
    calls = []
    for layer in (BatchNorm, Add):
        plain = layer.forward
        monkeypatch.setattr(layer, "forward", lambda self, *a, _plain=plain, **k: calls.append(self) or
                            _plain(self, *a, **k))
    plan(x)
    assert calls == []
    model.forward(x)
    assert len(calls) == sum(isinstance(m, (BatchNorm, Add)) for _, m in model.modules())   # the counter counts
    monkeypatch.undo()
    assert_plan_matches_plain(model, x)


@NEEDS_CUDA
def test_plan_on_the_cuda_backend_matches_and_launches_no_batch_norm_kernels():
    from tinydeeplab.kernels.cuda.launches import count_launches

    x = np.random.default_rng(2).normal(0, 1, (1, 16, 16, 3)).astype(np.float32)
    with backend.use_backend("cuda"):
        model = randomize_batchnorm(tiny_segmenter(blocks=(1, 1)), np.random.default_rng(3)).to("cuda")
        assert_plan_matches_plain(model, x)
        plan = InferencePlan(model)
        with count_launches(execute=False) as planned:
            plan(x)
        with inference_mode(), count_launches(execute=False) as plain:
            model.forward(x)
    assert plain["_normalize"] > 0 and "_normalize" not in planned and "_coefficients" not in planned
    assert "_add" not in planned and sum(planned.values()) < sum(plain.values())


@pytest.mark.slow                                   # about 10 minutes on the simulator (a shared 2-core machine)
@NEEDS_CUDA
def test_plan_on_the_cuda_backend_on_a_keras_fixture():
    x = fixture_inputs("v3plus_tiny")["sq"][:1, :8, :8]
    with backend.use_backend("cuda"):
        model = load_keras_preset(FIXTURES / "v3plus_tiny" / "preset").to("cuda")
        assert_plan_matches_plain(model, x)


# ---------------------------------------------------------------------------------------------------
# Weights untouched, training unchanged, stale plans refused
# ---------------------------------------------------------------------------------------------------

def h5_datasets(directory):
    out = {}
    for path in sorted(Path(directory).glob("*.h5")):
        with h5py.File(path, "r") as f:
            f.visititems(lambda k, v: out.__setitem__(f"{path.name}/{k}", v[()].tobytes())
                         if isinstance(v, h5py.Dataset) else None)
    return out


def test_a_preset_saved_after_using_the_plan_holds_the_same_weights(tmp_path):
    model = load_keras_preset(FIXTURES / "v3plus_tiny" / "preset")
    before = {k: (v, v.copy()) for k, v in model.state_dict().items()}
    save_keras_preset(model, tmp_path / "before")
    x = fixture_inputs("v3plus_tiny")["sq"]
    with inference_plan(model):
        model.forward(x)
    InferencePlan(model)(x)
    for k, (array, copy) in before.items():                   # the same arrays, holding the same bytes
        assert model.state_dict()[k] is array and array.tobytes() == copy.tobytes(), k
    save_keras_preset(model, tmp_path / "after")
    a, b = h5_datasets(tmp_path / "before"), h5_datasets(tmp_path / "after")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(a[k] == b[k] for k in a)
    for name in ("config.json", "task.json"):
        assert (tmp_path / "before" / name).read_bytes() == (tmp_path / "after" / name).read_bytes()


def training_step(model, x, y):
    ops_ = backend.ops()
    logits = model.forward(x, training=True)
    loss, cache = ops_.softmax_cross_entropy_forward(logits, y)
    model.zero_grad()
    model.backward(ops_.softmax_cross_entropy_backward(1.0, cache))
    return logits, loss, dict(model.named_gradients()), {k: v.copy() for k, v in model.named_buffers()}


def test_training_is_unchanged_by_a_plan_and_refused_inside_one():
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (2, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 3, (2, 16, 16))
    used, fresh = (randomize_batchnorm(tiny_segmenter(), np.random.default_rng(5)) for _ in range(2))
    with inference_plan(used):
        used.forward(x)
        with pytest.raises(RuntimeError, match="inference only"):
            used.forward(x, training=True)
    InferencePlan(used)(x)
    for a, b in zip(training_step(used, x, y), training_step(fresh, x, y)):
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        else:
            np.testing.assert_array_equal(a, b)                # bit for bit: the plan left nothing behind
    assert all("forward" not in m.__dict__ for _, m in used.modules())


def test_a_plan_is_refused_once_the_weights_change_and_a_new_one_sees_them():
    rng = np.random.default_rng(6)
    model = randomize_batchnorm(tiny_segmenter(), rng)
    x = rng.normal(0, 1, (1, 16, 16, 3)).astype(np.float32)
    plan = InferencePlan(model)
    plan(x)
    model.load_state_dict(model.state_dict())                 # new arrays, same values: still refused
    with pytest.raises(StalePlanError, match="changed since the inference plan was built"):
        plan(x)
    plan = InferencePlan(model)
    plan(x)
    table, key = model.slots()["backbone.head.bn.moving_mean"]
    table[key] += 0.5                                          # in place, as an optimizer or a user would
    with pytest.raises(StalePlanError, match="backbone.head.bn"):
        plan(x)
    assert_plan_matches_plain(model, x)                        # a new plan folds the new statistics
