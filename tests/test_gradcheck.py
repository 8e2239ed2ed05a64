"""The gradient checker itself: it passes correct gradients and catches broken ones."""
import numpy as np
import pytest

from tinydeeplab import functional as F
from tinydeeplab.gradcheck import GradcheckResult, GradientCheckError, check_gradients, numerical_gradient


def conv_inputs(seed=0, bias=True):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal((2, 5, 4, 3)), "w": rng.standard_normal((3, 2, 3, 4))}
    if bias:
        inputs["b"] = rng.standard_normal(4)
    return inputs


def test_numerical_gradient_of_a_known_function():
    x = np.array([[0.5, -1.0], [2.0, 3.0]])
    grad = numerical_gradient(lambda: float(np.sum(np.sin(x) * x)), x)
    np.testing.assert_allclose(grad, np.cos(x) * x + np.sin(x), rtol=1e-8)
    assert x.tolist() == [[0.5, -1.0], [2.0, 3.0]]      # restored after the perturbations


def test_correct_conv_gradients_pass_and_report():
    result = check_gradients(F.conv2d_forward, F.conv2d_backward, conv_inputs(),
                             kwargs={"stride": 2, "padding": "same"}, rng=0)
    assert isinstance(result, GradcheckResult) and result.passed
    assert result.n_checked == 2 * 5 * 4 * 3 + 3 * 2 * 3 * 4 + 4
    assert set(result.per_input) == {"x", "w", "b"}
    assert result.max_abs_err < 1e-6 and "passed" in str(result)


def test_one_wrong_weight_gradient_entry_is_caught_and_located():
    def backward_scaled_entry(dy, cache):
        dx, dw, db = F.conv2d_backward(dy, cache)
        dw[1, 0, 2, 3] *= 1.001                          # a 0.1% error in one of 72 entries
        return dx, dw, db

    with pytest.raises(GradientCheckError, match=r"worst entry w\[1, 0, 2, 3\]") as info:
        check_gradients(F.conv2d_forward, backward_scaled_entry, conv_inputs(), rng=0)
    result = info.value.result
    assert not result.passed and result.worst[:2] == ("w", (1, 0, 2, 3))
    assert result.max_rel_err == pytest.approx(0.001, rel=0.05)


def test_dropped_bias_gradient_is_caught():
    def backward_without_db(dy, cache):
        dx, dw, db = F.conv2d_backward(dy, cache)
        return dx, dw, np.zeros_like(db)

    result = check_gradients(F.conv2d_forward, backward_without_db, conv_inputs(), rng=0, raise_on_fail=False)
    assert not result.passed and result.worst[0] == "b"
    assert result.per_input["x"][0] < 1e-6 and result.per_input["b"][1] == pytest.approx(1.0)


def test_a_transposed_gradient_is_caught_by_the_random_cotangent():
    # A backward that returns dy flipped: with an all-ones cotangent the sum would look fine.
    def forward(x):
        return x * 2.0, None

    def backward_flipped(dy, cache):
        return 2.0 * dy[::-1]

    with pytest.raises(GradientCheckError):
        check_gradients(forward, backward_flipped, {"x": np.arange(6.0)}, rng=1)
    check_gradients(forward, lambda dy, cache: 2.0 * dy, {"x": np.arange(6.0)}, rng=1)


def test_wrong_batchnorm_training_backward_is_caught():
    # Forgetting that the batch statistics depend on x (using the inference formula while training)
    rng = np.random.default_rng(3)
    x, gamma, beta = rng.standard_normal((2, 3, 3, 2)), rng.standard_normal(2), rng.standard_normal(2)
    consts = {"moving_mean": np.zeros(2), "moving_var": np.ones(2), "training": True}

    def backward_as_if_constant_stats(dy, cache):
        dx, dgamma, dbeta = F.batchnorm_backward(dy, cache)
        return dy * cache["gamma"] * cache["inv_std"], dgamma, dbeta

    with pytest.raises(GradientCheckError, match=r"worst entry x\["):
        check_gradients(F.batchnorm_forward, backward_as_if_constant_stats,
                        {"x": x, "gamma": gamma, "beta": beta}, kwargs=consts, rng=rng)


def test_float32_inputs_are_checked_in_float64_and_left_untouched():
    inputs = {k: v.astype(np.float32) for k, v in conv_inputs(bias=False).items()}
    before = {k: v.copy() for k, v in inputs.items()}
    result = check_gradients(F.conv2d_forward, F.conv2d_backward, inputs, rng=0)
    assert result.passed
    for k in inputs:
        assert inputs[k].dtype == np.float32
        np.testing.assert_array_equal(inputs[k], before[k])


def test_grad_names_select_a_subset():
    inputs = conv_inputs()
    x = inputs.pop("x")
    result = check_gradients(F.conv2d_forward, F.conv2d_backward, inputs, kwargs={"x": x},
                             grad_names=("x", "w", "b"), rng=0)
    assert set(result.per_input) == {"w", "b"}


def test_list_inputs_and_list_outputs():
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 2, 2, 1)), rng.standard_normal((1, 2, 2, 3))]
    result = check_gradients(F.concat_forward, F.concat_backward, {"xs": xs}, rng=rng)
    assert set(result.per_input) == {"xs[0]", "xs[1]"}

    def concat_backward_swapped(dy, cache):
        d0, d1 = F.concat_backward(dy, cache)
        return [d0[..., ::-1], d1[..., ::-1]]

    with pytest.raises(GradientCheckError, match=r"xs\[1\]"):
        check_gradients(F.concat_forward, concat_backward_swapped, {"xs": xs}, rng=rng)


def test_scalar_output_loss():
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((1, 2, 3, 4)), rng.integers(0, 4, (1, 2, 3))
    check_gradients(F.softmax_cross_entropy_forward, F.softmax_cross_entropy_backward, {"logits": logits},
                    kwargs={"labels": labels}, rng=rng)

    def backward_missing_dloss(dloss, cache):        # ignores the upstream scalar: caught (random dloss != 1)
        return F.softmax_cross_entropy_backward(1.0, cache)

    with pytest.raises(GradientCheckError):
        check_gradients(F.softmax_cross_entropy_forward, backward_missing_dloss, {"logits": logits},
                        kwargs={"labels": labels}, rng=rng)


def test_gradient_of_the_wrong_shape_is_a_value_error():
    with pytest.raises(ValueError, match=r"gradient of x has shape \(3,\), expected \(4,\)"):
        check_gradients(lambda x: (x * 1.0, None), lambda dy, cache: dy[:3], {"x": np.ones(4)}, rng=0)
    with pytest.raises(ValueError, match="backward returned 1 gradients but 2 were expected"):
        check_gradients(lambda a, b: (a + b, None), lambda dy, cache: (dy,), {"a": np.ones(2), "b": np.ones(2)})
