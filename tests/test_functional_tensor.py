"""relu, zero_pad2d, concat, split, add (NumPy reference)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from strategies import channels, nhwc_shapes, normal, seeds
from tinydeeplab import functional as F
from tinydeeplab.gradcheck import check_gradients

pads = st.integers(0, 2)
zero_paddings = st.one_of(pads, st.tuples(pads, pads), st.tuples(st.tuples(pads, pads), st.tuples(pads, pads)))


def test_every_op_of_the_contract_is_exported():
    for op in ("conv2d", "zero_pad2d", "batchnorm", "relu", "max_pool2d", "global_avg_pool", "bilinear_resize",
               "upsample_bilinear", "concat", "split", "add", "softmax_cross_entropy"):
        assert callable(getattr(F, op + "_forward")) and callable(getattr(F, op + "_backward"))
    assert callable(F.moving_average)
    assert set(F.__all__) >= {"conv2d_forward", "moving_average"}


@given(nhwc_shapes(), seeds)
def test_relu(shape, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape)
    y, cache = F.relu_forward(x)
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0.0))
    dy = rng.standard_normal(shape)
    np.testing.assert_array_equal(F.relu_backward(dy, cache), np.where(x > 0, dy, 0.0))
    check_gradients(F.relu_forward, F.relu_backward, {"x": x}, rng=rng)


@given(nhwc_shapes(), zero_paddings, seeds)
def test_zero_pad2d(shape, padding, seed):
    rng = np.random.default_rng(seed)
    x = normal(rng, shape)
    if isinstance(padding, int):
        (t, b), (l, r) = (padding, padding), (padding, padding)
    elif isinstance(padding[0], int):
        (t, b), (l, r) = (padding[0], padding[0]), (padding[1], padding[1])
    else:
        (t, b), (l, r) = padding
    y, _ = F.zero_pad2d_forward(x, padding)
    n, h, w, c = shape
    assert y.shape == (n, h + t + b, w + l + r, c)
    np.testing.assert_array_equal(y[:, t:t + h, l:l + w], x)
    border = y.copy()
    border[:, t:t + h, l:l + w] = 0
    assert np.all(border == 0)                          # everything else is zero
    check_gradients(F.zero_pad2d_forward, F.zero_pad2d_backward, {"x": x}, kwargs={"padding": padding}, rng=rng)


@given(nhwc_shapes(max_channels=1), st.lists(channels, min_size=1, max_size=3), seeds)
def test_concat_and_split(shape, sizes, seed):
    rng = np.random.default_rng(seed)
    xs = [normal(rng, (*shape[:3], c)) for c in sizes]
    y, _ = F.concat_forward(xs)
    assert y.shape == (*shape[:3], sum(sizes))
    np.testing.assert_array_equal(y[..., :sizes[0]], xs[0])
    pieces, _ = F.split_forward(y, sizes)               # split undoes concat
    for piece, x in zip(pieces, xs):
        np.testing.assert_array_equal(piece, x)
    check_gradients(F.concat_forward, F.concat_backward, {"xs": xs}, rng=rng)
    check_gradients(F.split_forward, F.split_backward, {"x": y}, kwargs={"sizes": sizes}, rng=rng)


def test_concat_backward_routes_each_slice_to_its_input():
    xs = [np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 3))]
    _, cache = F.concat_forward(xs)
    dxs = F.concat_backward(np.arange(5.0).reshape(1, 1, 1, 5), cache)
    assert [d.ravel().tolist() for d in dxs] == [[0.0, 1.0], [2.0, 3.0, 4.0]]


@given(nhwc_shapes(), seeds)
def test_add(shape, seed):
    rng = np.random.default_rng(seed)
    a, b = normal(rng, shape), normal(rng, shape)
    y, cache = F.add_forward(a, b)
    np.testing.assert_array_equal(y, a + b)
    dy = rng.standard_normal(shape)
    da, db = F.add_backward(dy, cache)
    np.testing.assert_array_equal(da, dy)
    np.testing.assert_array_equal(db, dy)
    assert da is not db                                  # independent copies: safe to modify one branch
    check_gradients(F.add_forward, F.add_backward, {"a": a, "b": b}, rng=rng)
