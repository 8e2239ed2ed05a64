"""softmax_cross_entropy (NumPy reference)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import nhwc_shapes, seeds
from tinydeeplab import functional as F
from tinydeeplab.gradcheck import check_gradients


def draw_case(shape, seed, ignore_fraction=0.3, weighted=True):
    """Logits (N, H, W, K), labels with some pixels set to 255, optional class weights."""
    rng = np.random.default_rng(seed)
    n, h, w, k = shape
    logits = rng.standard_normal(shape) * 3
    labels = rng.integers(0, k, size=(n, h, w))
    labels[rng.random((n, h, w)) < ignore_fraction] = 255
    weights = rng.uniform(0.1, 3.0, k) if weighted else None
    return rng, logits, labels, weights


def naive_loss(logits, labels, weights, ignore_label=255):
    """Straight from the definition, one pixel at a time (fine for moderate logits)."""
    num = den = 0.0
    for idx in np.ndindex(labels.shape):
        y = labels[idx]
        if y == ignore_label:
            continue
        z = logits[idx]
        wy = 1.0 if weights is None else weights[y]
        num += wy * (np.log(np.sum(np.exp(z))) - z[y])
        den += wy
    return num / den if den > 0 else 0.0


@given(nhwc_shapes(min_size=1, max_size=4, max_channels=4), seeds, st.booleans(), st.floats(0.0, 0.7))
def test_cross_entropy_gradients(shape, seed, weighted, ignore_fraction):
    rng, logits, labels, weights = draw_case(shape, seed, ignore_fraction, weighted)
    check_gradients(F.softmax_cross_entropy_forward, F.softmax_cross_entropy_backward, {"logits": logits},
                    kwargs={"labels": labels, "class_weights": weights}, rng=rng)


@given(nhwc_shapes(min_size=1, max_size=4, max_channels=4), seeds, st.booleans())
def test_cross_entropy_matches_naive_formula(shape, seed, weighted):
    _, logits, labels, weights = draw_case(shape, seed, 0.3, weighted)
    loss, _ = F.softmax_cross_entropy_forward(logits, labels, class_weights=weights)
    assert isinstance(loss, float)
    assert loss == pytest.approx(naive_loss(logits, labels, weights), rel=1e-10, abs=1e-12)


@given(nhwc_shapes(min_size=1, max_size=4, max_channels=4), seeds, st.booleans(), st.floats(0.1, 3.0))
def test_cross_entropy_gradient_is_softmax_minus_onehot(shape, seed, weighted, dloss):
    _, logits, labels, weights = draw_case(shape, seed, 0.4, weighted)
    _, cache = F.softmax_cross_entropy_forward(logits, labels, class_weights=weights)
    grad = F.softmax_cross_entropy_backward(dloss, cache)
    k = shape[3]
    valid = labels != 255
    w = np.ones(k) if weights is None else weights
    p = np.exp(logits) / np.exp(logits).sum(axis=3, keepdims=True)
    onehot = np.eye(k)[np.where(valid, labels, 0)]
    w_pix = np.where(valid, w[np.where(valid, labels, 0)], 0.0)
    total = w_pix.sum()
    expected = dloss * w_pix[..., None] * (p - onehot) / total if total > 0 else np.zeros_like(p)
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-14)
    assert np.all(grad[~valid] == 0.0)                   # exactly zero on ignored pixels


def test_cross_entropy_stable_for_huge_logits():
    logits = np.array([1e4, 0.0, -1e4, 1e4 - 3.0]).reshape(1, 1, 1, 4)
    for dtype in (np.float32, np.float64):
        z = logits.astype(dtype)
        loss0, cache = F.softmax_cross_entropy_forward(z, np.array([[[0]]]))
        assert loss0 == pytest.approx(np.log1p(np.exp(-3.0)), rel=1e-5)  # only classes 0 and 3 matter
        grad = F.softmax_cross_entropy_backward(1.0, cache)
        assert np.all(np.isfinite(grad)) and grad.dtype == dtype
        loss1, _ = F.softmax_cross_entropy_forward(z, np.array([[[1]]]))
        assert loss1 == pytest.approx(1e4 + np.log1p(np.exp(-3.0)), rel=1e-6)
        loss2, _ = F.softmax_cross_entropy_forward(z, np.array([[[2]]]))
        assert np.isfinite(loss2) and loss2 == pytest.approx(2e4 + np.log1p(np.exp(-3.0)), rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_with_zero_gradient():
    logits = np.random.default_rng(0).standard_normal((2, 3, 3, 5))
    loss, cache = F.softmax_cross_entropy_forward(logits, np.full((2, 3, 3), 255, np.uint8))
    assert loss == 0.0
    grad = F.softmax_cross_entropy_backward(1.0, cache)
    assert grad.shape == logits.shape and np.all(grad == 0.0)


def test_cross_entropy_class_weights_make_a_weighted_mean():
    # two pixels, uniform logits over 2 classes: nll = log 2 each; weights 1 and 3 -> the mean is still log 2,
    # but the gradient of the weight-3 pixel is 3x the other's
    logits = np.zeros((1, 1, 2, 2))
    labels = np.array([[[0, 1]]])
    loss, cache = F.softmax_cross_entropy_forward(logits, labels, class_weights=np.array([1.0, 3.0]))
    assert loss == pytest.approx(np.log(2))
    grad = F.softmax_cross_entropy_backward(1.0, cache)[0, 0]
    np.testing.assert_allclose(grad, [[-0.5 / 4, 0.5 / 4], [1.5 / 4, -1.5 / 4]])


def test_cross_entropy_custom_and_disabled_ignore_label():
    logits = np.random.default_rng(1).standard_normal((1, 2, 2, 3))
    labels = np.array([[[0, 1], [2, 0]]])
    base, _ = F.softmax_cross_entropy_forward(logits, labels, ignore_label=None)
    assert base == pytest.approx(naive_loss(logits, labels, None, ignore_label=-1))
    without_zero, _ = F.softmax_cross_entropy_forward(logits, labels, ignore_label=0)   # class 0 ignored
    assert without_zero == pytest.approx(naive_loss(logits, labels, None, ignore_label=0))
    assert without_zero != pytest.approx(base)


def test_cross_entropy_float32_and_label_dtypes():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((1, 3, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (1, 3, 3))
    ref, _ = F.softmax_cross_entropy_forward(logits.astype(np.float64), labels)
    for dtype in (np.uint8, np.int32, np.int64, np.uint16):
        loss, cache = F.softmax_cross_entropy_forward(logits, labels.astype(dtype))
        assert loss == pytest.approx(ref, rel=1e-6)
        assert F.softmax_cross_entropy_backward(1.0, cache).dtype == np.float32
