"""Whole-model tests: shapes, exact rewrites, and hand-written backward vs central differences."""
import numpy as np
import pytest

from tinydeeplab import use_backend
from tinydeeplab.gradcheck import numerical_gradient
from tinydeeplab.models import DeepLabV3Backbone, ResNetBackbone

from model_factories import randomize_batchnorm, tiny_segmenter


def _loss_and_grads(model, x, c, training):
    """L = <logits, c>; returns L, dL/dx and {param name: dL/dparam} from the hand-written backward."""
    logits = model.forward(x, training=training)
    dx = model.backward(c)
    return float((logits * c).sum()), dx, {k: g.copy() for k, g in model.named_gradients()}


def _snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("plus", [True, False])
@pytest.mark.parametrize("size", [(64, 64), (64, 96), (50, 37)])
def test_output_has_input_size(plus, size):
    model = tiny_segmenter(plus=plus)
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    assert model.forward(x).shape == (2, *size, 3)


@pytest.mark.parametrize("output_stride,expected", [(None, 32), (16, 16), (8, 8)])
def test_output_stride_sets_resolution_of_p5(output_stride, expected):
    enc = ResNetBackbone([8], [3], [64, 8, 8, 8], [1, 1, 1, 1], [1, 2, 2, 2], output_stride=output_stride, seed=0)
    out = enc.forward(np.zeros((1, 64, 64, 3), np.float32))
    assert out["P5"].shape[1:3] == (64 // expected, 64 // expected)
    assert enc.pyramid_strides["P5"] == expected


def test_readable_parameter_names():
    names = dict(tiny_segmenter(blocks=(1, 2)).named_parameters())
    for name in ["backbone.image_encoder.stem.conv1.conv.kernel", "backbone.image_encoder.stack1.block1.conv2.conv.kernel",
                 "backbone.image_encoder.stack1.block0.shortcut.bn.gamma", "backbone.aspp.branch2.conv.kernel",
                 "backbone.aspp.pooling.conv.kernel", "backbone.low_level_projection.conv.kernel",
                 "backbone.head.conv.kernel", "output_conv.kernel"]:
        assert name in names, name


@pytest.mark.parametrize("training", [False, True])
def test_classify_before_upsample_is_exact(training):
    """The 1x1 classifier and the bilinear upsampling commute (both linear): same logits, same grads."""
    rng = np.random.default_rng(1)
    fast = randomize_batchnorm(tiny_segmenter(), rng).astype(np.float64)
    plain = tiny_segmenter().astype(np.float64)
    plain.load_state_dict(fast.state_dict())
    plain.classify_before_upsample = False
    x = rng.normal(size=(2, 32, 40, 3))
    c = rng.normal(size=(2, 32, 40, 3))
    with use_backend("numpy"):
        l1, dx1, g1 = _loss_and_grads(fast, x, c, training)
        l2, dx2, g2 = _loss_and_grads(plain, x, c, training)
    assert l1 == pytest.approx(l2, rel=1e-12)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-9, atol=1e-12)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("plus, pre_activation", [(True, False), (False, True)])
@pytest.mark.parametrize("training", [False, True])
def test_inplace_relus_change_nothing(backend, plus, pre_activation, training):
    """The models' in-place ReLUs (over BN / add outputs) and residual adds (over the residual branch)
    give bit-identical logits, gradients and moving statistics to out-of-place ones, and a recorded BN
    output still holds its negative values."""
    from tinydeeplab.nn import Add, ReLU
    from tinydeeplab.nn.hooks import record_outputs

    rng = np.random.default_rng(3)
    fast = randomize_batchnorm(tiny_segmenter(plus=plus, pre_activation=pre_activation), rng)
    plain = tiny_segmenter(plus=plus, pre_activation=pre_activation)
    plain.load_state_dict(fast.state_dict())
    relus = [m for _, m in plain.modules() if isinstance(m, ReLU)]
    assert relus and all(m.inplace for m in relus)
    adds = [m for _, m in plain.modules() if isinstance(m, Add)]
    assert adds and all(m.inplace for m in adds)
    for m in relus + adds:
        m.inplace = False
    x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    c = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    bn = next(name for name, _ in fast.modules() if name.endswith(".bn"))        # the first BN of the stem
    with use_backend(backend):
        with record_outputs(fast, [bn]) as seen:
            l1, dx1, g1 = _loss_and_grads(fast, x.copy(), c, training)
        l2, dx2, g2 = _loss_and_grads(plain, x.copy(), c, training)
    assert (seen[bn] < 0).any()
    assert l1 == l2
    np.testing.assert_array_equal(dx1, dx2)
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k], err_msg=k)
    for (k, a), (_, b) in zip(fast.named_buffers(), plain.named_buffers()):
        np.testing.assert_array_equal(a, b, err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_inference_mode_keeps_no_caches_and_changes_no_output(backend):
    from tinydeeplab.nn import inference_mode

    rng = np.random.default_rng(5)
    model = randomize_batchnorm(tiny_segmenter(), rng)
    x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    with use_backend(backend):
        plain = model.forward(x)
        kept = [n for n, m in model.modules() if getattr(m, "_cache", None) is not None]
        with inference_mode():
            lean = model.forward(x)
        left = [n for n, m in model.modules() if getattr(m, "_cache", None) is not None]
        np.testing.assert_array_equal(lean, plain)
        assert len(kept) > 20 and left == []
        with pytest.raises(RuntimeError, match="inference_mode"):
            model.backward(np.ones_like(lean))
        np.testing.assert_array_equal(model.predict(x), plain)     # predict runs in inference mode


def _check_every_entry(model, x, c, training, rtol=1e-5, atol=1e-7):
    """Central differences (float64) on every input pixel and every parameter of the whole model."""
    state = _snapshot(model)

    def loss():
        model.load_state_dict(state)  # training mode updates moving stats: undo before each evaluation
        return float((model.forward(x, training=training) * c).sum())

    _, dx, grads = _loss_and_grads(model, x, c, training)
    params = dict(model.slots())
    checked = 0
    for name, g in grads.items():
        table, key = params[name]
        arr = state[name]
        numeric = numerical_gradient(lambda: (table.__setitem__(key, arr), loss())[1], arr)
        np.testing.assert_allclose(g, numeric, rtol=rtol, atol=atol, err_msg=name)
        checked += arr.size
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=rtol, atol=atol, err_msg="input")
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("plus,block_type,pre_activation,training,separable", [
    (True, "bottleneck_block", False, False, False), (True, "bottleneck_block", False, True, False),
    (False, "basic_block", False, True, False), (True, "bottleneck_block", True, True, False),
    (True, "bottleneck_block", False, True, True), (False, "basic_block", False, True, True)])
def test_whole_model_gradient_every_entry(plus, block_type, pre_activation, training, separable):
    """``separable``: the DeepLabV3+ paper's head (depthwise + pointwise ASPP branches, two-conv separable
    decoder for V3+); its rate-2 branch on the 2 x 2 P3 map has dead taps, whose gradient must be 0."""
    rng = np.random.default_rng(2)
    model = randomize_batchnorm(tiny_segmenter(plus=plus, block_type=block_type, pre_activation=pre_activation,
                                               blocks=(1, 1), separable=separable), rng).astype(np.float64)
    x = rng.normal(size=(2, 12, 9, 3))
    c = rng.normal(size=(2, 12, 9, 3))
    with use_backend("numpy"):
        checked = _check_every_entry(model, x, c, training)
    assert checked == model.num_parameters()


def directional_derivative(model, x, c, rng, eps=1e-5):
    """``(numeric, predicted)``: d/dt L(theta + t v, x + t vx) at t = 0 by a central difference of step
    ``eps``, and ``<grad, v> + <dx, vx>`` from the hand-written backward, for random directions (training mode)."""
    with use_backend("numpy"):
        state = _snapshot(model)
        _, dx, grads = _loss_and_grads(model, x, c, True)
        v = {k: rng.normal(size=g.shape) for k, g in grads.items()}
        vx = rng.normal(size=x.shape)
        predicted = sum(float((grads[k] * v[k]).sum()) for k in v) + float((dx * vx).sum())

        def loss_at(t):
            moved = dict(state)
            moved.update({k: state[k] + t * v[k] for k in v})
            model.load_state_dict(moved)
            return float((model.forward(x + t * vx, training=True) * c).sum())

        return (loss_at(eps) - loss_at(-eps)) / (2 * eps), predicted


def test_whole_model_directional_derivative():
    """Fast check on a bigger input: d/dt L(theta + t v) at t=0 equals <grad, v> for a random direction v."""
    rng = np.random.default_rng(3)
    model = randomize_batchnorm(tiny_segmenter(output_stride=8), rng).astype(np.float64)
    x, c = rng.normal(size=(2, 37, 29, 3)), rng.normal(size=(2, 37, 29, 3))
    numeric, predicted = directional_derivative(model, x, c, rng)
    assert numeric == pytest.approx(predicted, rel=1e-6)


def test_bad_pyramid_key_is_reported():
    enc = ResNetBackbone([8], [3], [64, 8], [1, 1], [1, 2], seed=0)
    with pytest.raises(ValueError, match="P5.*not an output"):
        DeepLabV3Backbone(enc, "P5", 8, [6])


@pytest.mark.parametrize("block_type", ["bottleneck_block", "basic_block"])
def test_output_stride_is_exact_a_trous_of_the_strided_network(block_type):
    """Same weights, stride swapped for dilation: the denser P5 holds the strided P5 at its even positions."""
    args = ([8], [3], [8, 8, 8, 8], [1, 2, 2, 2], [1, 2, 2, 2])
    strided = ResNetBackbone(*args, block_type=block_type, seed=0).astype(np.float64)
    for os_, step in ((16, 2), (8, 4)):
        dense = ResNetBackbone(*args, block_type=block_type, output_stride=os_, seed=0).astype(np.float64)
        dense.load_state_dict(strided.state_dict())
        x = np.random.default_rng(1).normal(size=(1, 64, 64, 3))
        with use_backend("numpy"):
            p5, q5 = strided.forward(x)["P5"], dense.forward(x)["P5"]
        np.testing.assert_allclose(q5[:, ::step, ::step], p5, rtol=1e-10, atol=1e-12)
