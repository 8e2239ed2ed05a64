"""The binary losses of a one-logit head (sigmoid cross-entropy, soft Dice, sigmoid focal loss).

The reference against formulas written out pixel by pixel from ``log sigmoid`` (not the reference's
softplus form), float64 central differences on every logit with a random cotangent, Hypothesis
properties (BCE >= 0, Dice in [0, 1], focal with gamma = 0 is the alpha-weighted cross-entropy, ignored
pixels change nothing, focal <= the alpha-weighted cross-entropy), stability at huge logits, every backend
against the reference, and the bad-input errors. The JAX comparison is in ``test_binary_loss_jax.py``.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, assert_close, for_drawn_cases, host, on, ops
from strategies import seeds
from tinydeeplab import functional as R
from tinydeeplab.gradcheck import check_gradients

LOSSES = ("sigmoid_binary_cross_entropy", "dice_loss", "sigmoid_focal_loss")

binary_shapes = st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.just(1))
options = {
    "sigmoid_binary_cross_entropy": st.fixed_dictionaries({"pos_weight": st.one_of(st.none(), st.floats(0.0, 5.0))}),
    "dice_loss": st.fixed_dictionaries({"smooth": st.floats(0.0, 2.0)}),
    "sigmoid_focal_loss": st.fixed_dictionaries({"gamma": st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.7]),
                                                 "alpha": st.one_of(st.none(), st.floats(0.0, 1.0))}),
}


def draw_case(shape, seed, ignore_fraction=0.3, scale=3.0, ignore_label=255):
    """Logits (N, H, W, 1) float64 and labels 0/1 with some pixels set to ``ignore_label``."""
    rng = np.random.default_rng(seed)
    n, h, w, _ = shape
    logits = rng.standard_normal(shape) * scale
    labels = rng.integers(0, 2, size=(n, h, w))
    labels[rng.random((n, h, w)) < ignore_fraction] = ignore_label
    return rng, logits, labels


def naive_loss(op, logits, labels, ignore_label=255, **opts):
    """Each loss straight from its definition, one pixel at a time, with log p = log(1 / (1 + e^-z))."""
    terms, inter, sum_p, sum_y = [], 0.0, 0.0, 0.0
    for idx in np.ndindex(labels.shape):
        y = int(labels[idx])
        if ignore_label is not None and y == ignore_label:
            continue
        z = float(logits[idx + (0,)])
        p = 1.0 / (1.0 + math.exp(-z))
        p_t = p if y == 1 else 1.0 - p
        if op == "sigmoid_binary_cross_entropy":
            w = 1.0 if opts.get("pos_weight") is None else opts["pos_weight"]
            terms.append(-(w * y * math.log(p) + (1 - y) * math.log(1.0 - p)))
        elif op == "sigmoid_focal_loss":
            a = opts.get("alpha")
            a_t = 1.0 if a is None else (a if y == 1 else 1.0 - a)
            terms.append(-a_t * (1.0 - p_t) ** opts["gamma"] * math.log(p_t))
        else:
            inter, sum_p, sum_y, terms = inter + p * y, sum_p + p, sum_y + y, terms + [None]
    if not terms:
        return 0.0
    if op == "dice_loss":
        s = opts["smooth"]
        return 1.0 - (2 * inter + s) / (sum_p + sum_y + s)
    return sum(terms) / len(terms)


def forward(op):
    return getattr(R, op + "_forward")


def backward(op):
    return getattr(R, op + "_backward")


@pytest.mark.parametrize("op", LOSSES)
def test_gradients_every_logit(op):
    @given(binary_shapes, seeds, st.floats(0.0, 0.7), options[op])
    def check(shape, seed, ignore_fraction, opts):
        rng, logits, labels = draw_case(shape, seed, ignore_fraction, scale=2.0)
        check_gradients(forward(op), backward(op), {"logits": logits}, kwargs={"labels": labels, **opts}, rng=rng)
    check()


@pytest.mark.parametrize("op", LOSSES)
def test_matches_the_naive_formula(op):
    @given(binary_shapes, seeds, st.sampled_from([255, 7, None]), options[op])
    def check(shape, seed, ignore_label, opts):
        _, logits, labels = draw_case(shape, seed, 0.3, ignore_label=255 if ignore_label is None else ignore_label)
        if ignore_label is None:
            labels = np.where(labels == 255, 0, labels)
        loss, _ = forward(op)(logits, labels, ignore_label=ignore_label, **opts)
        assert isinstance(loss, float)
        assert loss == pytest.approx(naive_loss(op, logits, labels, ignore_label, **opts), rel=1e-10, abs=1e-12)
    check()


@given(binary_shapes, seeds, st.floats(0.0, 4.0), st.floats(0.0, 0.8))
def test_bce_is_non_negative_and_dice_in_unit_interval(shape, seed, smooth, ignore_fraction):
    _, logits, labels = draw_case(shape, seed, ignore_fraction, scale=10.0)
    assert R.sigmoid_binary_cross_entropy_forward(logits, labels)[0] >= 0.0
    dice = R.dice_loss_forward(logits, labels, smooth=smooth)[0]
    assert 0.0 <= dice <= 1.0


@given(binary_shapes, seeds, st.floats(0.01, 0.99), st.floats(0.1, 3.0))
def test_focal_with_gamma_zero_is_alpha_weighted_bce(shape, seed, alpha, dloss):
    """gamma = 0: alpha_t * ce = (1 - alpha) * [w+ y ce_1 + (1 - y) ce_0] with w+ = alpha / (1 - alpha):
    two different code paths (focal's z_t form, BCE's two softplus terms), the same loss and gradient."""
    _, logits, labels = draw_case(shape, seed)
    focal, c_focal = R.sigmoid_focal_loss_forward(logits, labels, gamma=0.0, alpha=alpha)
    bce, c_bce = R.sigmoid_binary_cross_entropy_forward(logits, labels, pos_weight=alpha / (1 - alpha))
    assert focal == pytest.approx((1 - alpha) * bce, rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(R.sigmoid_focal_loss_backward(dloss, c_focal),
                               (1 - alpha) * R.sigmoid_binary_cross_entropy_backward(dloss, c_bce), rtol=1e-12,
                               atol=1e-15)
    plain, _ = R.sigmoid_focal_loss_forward(logits, labels, gamma=0.0, alpha=None)
    assert plain == pytest.approx(R.sigmoid_binary_cross_entropy_forward(logits, labels)[0], rel=1e-12, abs=1e-14)


@given(binary_shapes, seeds, st.floats(0.1, 5.0), st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_focal_never_exceeds_the_weighted_cross_entropy(shape, seed, gamma, alpha):
    """(1 - p_t)^gamma <= 1: the focal loss is at most its gamma = 0 value, and equal only if nothing is valid."""
    _, logits, labels = draw_case(shape, seed)
    focal = R.sigmoid_focal_loss_forward(logits, labels, gamma=gamma, alpha=alpha)[0]
    assert focal <= R.sigmoid_focal_loss_forward(logits, labels, gamma=0.0, alpha=alpha)[0] + 1e-15


@pytest.mark.parametrize("op", LOSSES)
def test_ignored_pixels_change_nothing(op):
    """New logits on the ignored pixels: the same loss and the same gradient (exactly 0 there); and the
    loss equals that of the valid pixels alone, laid out as a batch of 1 x 1 x P."""
    @given(binary_shapes, seeds, options[op])
    def check(shape, seed, opts):
        rng, logits, labels = draw_case(shape, seed, 0.4)
        ignored = labels == 255
        loss, cache = forward(op)(logits, labels, **opts)
        other = np.where(ignored[..., None], rng.standard_normal(logits.shape) * 50, logits)
        loss2, cache2 = forward(op)(other, labels, **opts)
        assert loss2 == loss
        d = backward(op)(0.7, cache)
        np.testing.assert_array_equal(d, backward(op)(0.7, cache2))
        assert np.all(d[ignored] == 0.0)
        valid = ~ignored
        alone = forward(op)(logits[valid].reshape(1, 1, -1, 1), labels[valid].reshape(1, 1, -1), **opts)[0]
        assert alone == pytest.approx(loss, rel=1e-12, abs=1e-15)
    check()


@pytest.mark.parametrize("op", LOSSES)
def test_nothing_valid_is_zero_with_zero_gradient(op):
    logits = np.random.default_rng(0).standard_normal((2, 3, 3, 1))
    loss, cache = forward(op)(logits, np.full((2, 3, 3), 255, np.uint8))
    assert loss == 0.0
    grad = backward(op)(1.0, cache)
    assert grad.shape == logits.shape and np.all(grad == 0.0)


@pytest.mark.parametrize("op", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_and_right_for_huge_logits(op, dtype):
    """z = +-1e4: no overflow; a confident right answer costs ~0, a confident wrong one ~1e4 (BCE, focal)."""
    z = np.array([1e4, -1e4, 1e4, -1e4], dtype).reshape(1, 1, 4, 1)
    right, wrong = np.array([[[1, 0, 1, 0]]]), np.array([[[0, 1, 0, 1]]])
    low, c_low = forward(op)(z, right)
    high, c_high = forward(op)(z, wrong)
    for c in (c_low, c_high):
        g = backward(op)(1.0, c)
        assert np.all(np.isfinite(g)) and g.dtype == dtype
    assert low == pytest.approx(0.0, abs=1e-6)
    expected = {"sigmoid_binary_cross_entropy": 1e4, "dice_loss": 1.0 - 1.0 / 5.0,    # (0 + 1) / (2 + 2 + 1)
                "sigmoid_focal_loss": 0.5 * 1e4}                                    # alpha_t: 0.25, 0.75
    assert high == pytest.approx(expected[op], rel=1e-6)


def test_pos_weight_scales_the_foreground_terms():
    logits = np.array([0.3, -1.2, 2.0]).reshape(1, 1, 3, 1)
    labels = np.array([[[1, 0, 1]]])
    base, _ = R.sigmoid_binary_cross_entropy_forward(logits, labels)
    heavy, c = R.sigmoid_binary_cross_entropy_forward(logits, labels, pos_weight=3.0)
    fg = naive_loss("sigmoid_binary_cross_entropy", logits, np.array([[[1, 255, 1]]])) * 2 / 3   # their share
    assert heavy == pytest.approx(base + 2 * fg, rel=1e-12)
    g = R.sigmoid_binary_cross_entropy_backward(1.0, c).ravel()
    p = 1 / (1 + np.exp(-logits.ravel()))
    np.testing.assert_allclose(g, [3 * (p[0] - 1) / 3, p[1] / 3, 3 * (p[2] - 1) / 3], rtol=1e-12)


@pytest.mark.parametrize("op", LOSSES)
def test_float32_and_label_dtypes(op):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((1, 3, 3, 1)).astype(np.float32)
    labels = rng.integers(0, 2, (1, 3, 3))
    ref, _ = forward(op)(logits.astype(np.float64), labels)
    for dtype in (np.uint8, np.int32, np.int64, np.uint16):
        loss, cache = forward(op)(logits, labels.astype(dtype))
        assert loss == pytest.approx(ref, rel=1e-6)
        assert backward(op)(1.0, cache).dtype == np.float32


BAD = [
    ("sigmoid_binary_cross_entropy", np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2), int), {},
     r"logits must have one channel \(N, H, W, 1\) for a binary loss"),
    ("dice_loss", np.zeros((2, 2, 1)), np.zeros((2, 2), int), {}, "logits must have 4 dimensions"),
    ("sigmoid_focal_loss", np.zeros((1, 2, 2, 1)), np.array([[[0, 1], [2, 255]]]), {},
     r"labels must be in \[0, 2\) \(binary: 0 background, 1 foreground\) or equal ignore_label=255; "
     "found bad values 2"),
    ("dice_loss", np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2), np.float32), {}, "labels must have an integer dtype"),
    ("dice_loss", np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 3), int), {}, "labels must have shape"),
    ("sigmoid_binary_cross_entropy", np.zeros((1, 2, 2, 1), np.int32), np.zeros((1, 2, 2), int), {},
     "logits must be float32 or float64"),
    ("sigmoid_binary_cross_entropy", np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2), int), {"pos_weight": -1.0},
     r"pos_weight must be a finite number >= 0 or None, got -1.0"),
    ("sigmoid_binary_cross_entropy", np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2), int), {"pos_weight": "2"},
     "pos_weight must be a finite number"),
    ("dice_loss", np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2), int), {"smooth": -0.5},
     r"smooth must be a finite number >= 0, got -0.5"),
    ("sigmoid_focal_loss", np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2), int), {"gamma": float("nan")},
     "gamma must be a finite number >= 0"),
    ("sigmoid_focal_loss", np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2), int), {"alpha": 1.5},
     r"alpha must be a finite number in \[0, 1\] or None, got 1.5"),
]


@pytest.mark.parametrize("op,logits,labels,opts,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_named_in_one_line(op, logits, labels, opts, message):
    with pytest.raises(ValueError, match=message) as info:
        forward(op)(logits, labels, **opts)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("op", LOSSES)
def test_bad_dloss_is_named(op):
    _, cache = forward(op)(np.zeros((1, 1, 2, 1)), np.array([[[0, 1]]]))
    for bad in ("1.0", True, np.ones(2)):
        with pytest.raises(ValueError, match="dloss must be a real number"):
            backward(op)(bad, cache)


# -- every backend against the reference ------------------------------------------------------------
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("op", LOSSES)
def test_backend_matches_reference(name, op):
    def check(args):
        shape, seed, ignore, scale, dloss, opts = args
        rng = np.random.default_rng(seed)
        logits = (rng.standard_normal(shape) * scale).astype(np.float32)
        labels = rng.integers(0, 2, shape[:3])
        if ignore is not None:
            labels[rng.random(shape[:3]) < 0.3] = ignore
        loss_ref, c_ref = forward(op)(logits, labels, ignore_label=ignore, **opts)
        loss, cache = getattr(ops(name), op + "_forward")(on(name, logits), on(name, labels), ignore_label=ignore,
                                                          **opts)
        assert isinstance(loss, float) and loss == pytest.approx(loss_ref, rel=1e-6, abs=1e-7)
        d = getattr(ops(name), op + "_backward")(dloss, cache)
        assert type(d) is type(on(name, logits))                   # on the device where the logits were
        assert_close(d, backward(op)(dloss, c_ref))
        if ignore is not None:
            assert np.all(host(d)[labels == ignore] == 0)
    size = DRAW_SIZES[name]["max_size"]
    cases = st.tuples(st.tuples(st.integers(1, 2), st.integers(1, size), st.integers(1, size), st.just(1)), seeds,
                      st.sampled_from([255, 3, None]), st.floats(0.1, 1e3), st.sampled_from([1.0, 0.5, -2.0]),
                      options[op])
    for_drawn_cases(name, cases, check)
