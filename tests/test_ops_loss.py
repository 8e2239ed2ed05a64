"""Softmax cross-entropy on every backend against the NumPy reference: ignore labels (or none), class
weights, huge logits (stability), integer label dtypes, pixels with nothing valid, and the gradient
exactly 0 on ignored pixels."""
import numpy as np
import pytest
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_close, for_drawn_cases, host, on, ops
from strategies import nhwc_shapes, normal, seeds
from tinydeeplab import functional as R


@pytest.mark.parametrize("name", BACKENDS)
def test_softmax_cross_entropy_matches_reference(name):
    def check(args):
        shape, seed, ignore, weighted, logit_scale, dloss = args
        rng = np.random.default_rng(seed)
        n, h, w, k = shape
        logits = (normal(rng, shape) * logit_scale).astype(np.float32)     # large scales: stability
        labels = rng.integers(0, k, (n, h, w))
        if ignore is not None:
            labels[rng.random((n, h, w)) < 0.3] = ignore
        weights = (rng.random(k) * 2).astype(np.float32) if weighted else None
        kw = dict(ignore_label=ignore, class_weights=weights)
        loss_ref, c_ref = R.softmax_cross_entropy_forward(logits, labels, **kw)
        loss, cache = ops(name).softmax_cross_entropy_forward(on(name, logits), labels, **kw)
        assert isinstance(loss, float)
        assert np.isfinite(loss)
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-4, atol=1e-5 * max(1.0, abs(loss_ref)))
        d = ops(name).softmax_cross_entropy_backward(dloss, cache)
        assert_close(d, R.softmax_cross_entropy_backward(dloss, c_ref))
        if ignore is not None:
            assert np.all(host(d)[labels == ignore] == 0)       # exactly zero on ignored pixels
    sizes = DRAW_SIZES[name]
    cases = st.tuples(nhwc_shapes(max_size=sizes["max_size"], max_channels=sizes["max_channels"] + 3), seeds,
                      st.sampled_from([255, -1, 0, None]), st.booleans(), st.floats(0.1, 1e3),
                      st.sampled_from([1.0, 0.5, -2.0]))
    for_drawn_cases(name, cases, check)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("ignore_label,weighted,label_dtype", [(255, False, np.int64), (255, True, np.uint8),
                                                               (None, True, np.int32)])
def test_softmax_cross_entropy_named_cases(rng, name, ignore_label, weighted, label_dtype):
    logits = normal(rng, (2, 3, 4, 5), np.float32) * 4
    labels = rng.integers(0, 5, (2, 3, 4)).astype(label_dtype)
    if ignore_label is not None:
        labels[0, 0, :3] = ignore_label
    cw = rng.uniform(0.2, 2.0, 5).astype(np.float32) if weighted else None
    kw = dict(ignore_label=ignore_label, class_weights=cw)
    loss_ref, c_ref = R.softmax_cross_entropy_forward(logits, labels, **kw)
    loss, cache = ops(name).softmax_cross_entropy_forward(on(name, logits), labels, **kw)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    assert_close(ops(name).softmax_cross_entropy_backward(0.5, cache), R.softmax_cross_entropy_backward(0.5, c_ref))


@pytest.mark.parametrize("name", BACKENDS)
def test_softmax_cross_entropy_nothing_valid(rng, name):
    """Every label ignored (on cuda handed over as a device array): the loss is 0 and so is the gradient;
    a label out of range is named, also when it sits on the device."""
    logits = normal(rng, (1, 2, 3, 4), np.float32)
    labels = np.full((1, 2, 3), 255, np.int64)
    loss, cache = ops(name).softmax_cross_entropy_forward(on(name, logits), on(name, labels))
    assert loss == 0.0
    assert_close(ops(name).softmax_cross_entropy_backward(1.0, cache), np.zeros_like(logits), rtol=0, atol_scale=0)
    with pytest.raises(ValueError, match="bad values 7"):
        ops(name).softmax_cross_entropy_forward(on(name, logits), on(name, np.full((1, 2, 3), 7)))


@pytest.mark.parametrize("name", BACKENDS)
def test_softmax_cross_entropy_float64_uint8_labels(rng, name):
    logits = normal(rng, (2, 3, 3, 5))
    labels = rng.integers(0, 5, (2, 3, 3)).astype(np.uint8)
    labels[0, 0, 0] = 255
    loss_ref, c_ref = R.softmax_cross_entropy_forward(logits, labels)
    loss, cache = ops(name).softmax_cross_entropy_forward(on(name, logits), labels)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-12)
    assert_close(ops(name).softmax_cross_entropy_backward(np.array(1.0), cache),
                 R.softmax_cross_entropy_backward(np.array(1.0), c_ref))
