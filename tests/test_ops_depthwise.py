"""depthwise_conv2d on every backend against the NumPy reference, the reference against conv2d and
central differences, and the exact savings of the shared plan.

One strategy (``depthwise_cases``: shapes, even kernels, depth multipliers 1..3, strides, dilations larger
than the input, same/valid/explicit padding, bias or not) draws a case; each backend runs forward and
backward and is compared with :mod:`tinydeeplab.functional` (``tests/backends.py``).
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings

from backends import BACKENDS, DRAW_SIZES, assert_all_close, assert_close, for_drawn_cases, host, on, ops
from strategies import depthwise_cases, normal
from tinydeeplab import functional as R
from tinydeeplab.functional.conv import conv2d_plan
from tinydeeplab.gradcheck import check_gradients
from tinydeeplab.kernels.cpu import depthwise as kdepthwise


def options(case):
    return {k: case[k] for k in ("stride", "dilation", "padding")}


def arrays(case, dtype=np.float32):
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"], dtype)
    w = normal(rng, case["w_shape"], dtype)
    b = normal(rng, case["w_shape"][2] * case["w_shape"][3], dtype) if case["bias"] else None
    return rng, x, w, b


def run_depthwise(name, case, dtype=np.float32, module=None):
    """Forward and backward of ``case`` on backend ``name`` (or ``module``) and on the reference."""
    rng, x, w, b = arrays(case, dtype)
    mod = module or ops(name)
    y_ref, c_ref = R.depthwise_conv2d_forward(x, w, b, **options(case))
    y, cache = mod.depthwise_conv2d_forward(on(name, x), on(name, w), on(name, b), **options(case))
    dy = normal(rng, y_ref.shape, dtype)
    return (y, mod.depthwise_conv2d_backward(on(name, dy), cache)), (y_ref, R.depthwise_conv2d_backward(dy, c_ref))


def check_depthwise(name, case, dtype=np.float32, module=None):
    (y, grads), (y_ref, grads_ref) = run_depthwise(name, case, dtype, module)
    assert host(y).dtype == dtype
    assert_close(y, y_ref)
    assert_all_close(grads, grads_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", BACKENDS)
def test_depthwise_conv2d_matches_reference(name, dtype):
    for_drawn_cases(name, depthwise_cases(**DRAW_SIZES[name]), lambda case: check_depthwise(name, case, dtype))


NAMED_CASES = [  # x shape, w shape (KH, KW, C, M), stride, dilation, padding, bias
    ((2, 5, 6, 3), (3, 3, 3, 1), 1, 1, "same", True),            # MobileNet / EfficientNet 3x3
    ((1, 6, 5, 2), (3, 3, 2, 2), 2, 1, "same", False),           # stride 2, depth multiplier 2
    ((1, 7, 7, 2), (5, 5, 2, 1), 2, 1, "same", True),            # EfficientNet 5x5 stride 2
    ((1, 7, 7, 2), (3, 3, 2, 3), 1, 2, "same", False),           # atrous (the DeepLabV3+ separable conv)
    ((2, 5, 5, 2), (2, 2, 2, 1), 1, 1, "same", True),            # even kernel: asymmetric Keras padding
    ((1, 6, 5, 3), (3, 2, 3, 2), (2, 1), 1, "valid", True),
    ((1, 5, 5, 2), (3, 3, 2, 1), 2, (1, 2), ((1, 0), (2, 1)), False),   # explicit padding
    ((2, 4, 4, 3), (1, 1, 3, 2), 1, 1, "same", True),            # 1x1
    ((1, 3, 3, 2), (3, 3, 2, 1), 1, 4, "same", False),           # dilation > input: only the centre tap
    ((1, 2, 2, 2), (1, 1, 2, 1), 3, 1, ((2, 2), (2, 2)), True),  # outputs that see only padding
    ((1, 1, 1, 1), (1, 3, 1, 2), 2, 1, 2, False),                # live taps 0 and 2, dead tap 1 between them
]


def named(x_shape, w_shape, stride, dilation, padding, bias, seed=1234):
    return {"x_shape": x_shape, "w_shape": w_shape, "stride": stride, "dilation": dilation, "padding": padding,
            "bias": bias, "seed": seed}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", NAMED_CASES, ids=[f"depthwise{i}" for i in range(len(NAMED_CASES))])
def test_depthwise_conv2d_named_cases(name, case):
    check_depthwise(name, named(*case))


@pytest.mark.parametrize("name", BACKENDS)
def test_a_wrong_depthwise_conv_is_caught(name):
    """A kernel that ignores the dilation would pass a test against itself, not against the reference."""
    mod = ops(name)

    class IgnoresDilation:
        depthwise_conv2d_backward = staticmethod(mod.depthwise_conv2d_backward)

        @staticmethod
        def depthwise_conv2d_forward(x, w, b=None, **kw):
            return mod.depthwise_conv2d_forward(x, w, b, **{**kw, "dilation": 1})
    with pytest.raises(AssertionError):
        check_depthwise(name, named((1, 7, 7, 2), (3, 3, 2, 1), 1, 2, "same", False), module=IgnoresDilation)


# ---------------------------------------------------------------------------------------------------
# The reference: against conv2d with a block-diagonal kernel, and against central differences
# ---------------------------------------------------------------------------------------------------

def block_diagonal(w):
    """The conv2d kernel ``(KH, KW, C, C*M)`` equal to depthwise kernel ``w`` (KH, KW, C, M): input channel
    ``c`` feeds outputs ``c*M .. c*M + M - 1`` only (Keras's channel order)."""
    kh, kw, c, m = w.shape
    full = np.zeros((kh, kw, c, c * m), w.dtype)
    for ch in range(c):
        full[:, :, ch, ch * m:(ch + 1) * m] = w[:, :, ch, :]
    return full


@given(depthwise_cases())
def test_depthwise_is_a_conv2d_with_a_block_diagonal_kernel(case):
    _, x, w, b = arrays(case, np.float64)
    y, _ = R.depthwise_conv2d_forward(x, w, b, **options(case))
    y_conv, _ = R.conv2d_forward(x, block_diagonal(w), b, **options(case))
    np.testing.assert_allclose(y, y_conv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["numpy", "cpu"])
def test_depthwise_gradients_against_central_differences(name):
    mod = R if name == "numpy" else ops(name)

    @settings(max_examples=10)
    @given(depthwise_cases(max_size=5))
    def check(case):
        rng, x, w, b = arrays(case, np.float64)
        inputs = {"x": x, "w": w} if b is None else {"x": x, "w": w, "b": b}
        check_gradients(mod.depthwise_conv2d_forward, mod.depthwise_conv2d_backward, inputs,
                        kwargs=options(case), rng=rng, grad_names=("x", "w", "b"))
    check()


# ---------------------------------------------------------------------------------------------------
# Exact savings: dead taps skipped, as conv2d
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dilation", [6, 18])
def test_depthwise_dead_taps_are_skipped(rng, name, dilation):
    """A separable ASPP branch at 5x5 with a large rate: only the centre tap is live, the outer taps of
    ``dw`` stay exactly 0, and the backends visit the centre tap only."""
    x, w = normal(rng, (2, 5, 5, 3), np.float32), normal(rng, (3, 3, 3, 2), np.float32)
    plan = conv2d_plan(x.shape, w.shape, (1, 1), (dilation, dilation), "same")
    assert plan.live_h == plan.live_w == (1,)
    y, cache = ops(name).depthwise_conv2d_forward(on(name, x), on(name, w), dilation=dilation)
    visited = (cache["taps"]["idx_h"].tolist(), cache["taps"]["idx_w"].tolist()) if name == "cpu" else cache["taps"]
    assert visited == (([1], [1]) if name == "cpu" else (1, 1, 1, 1))
    y_ref, c_ref = R.depthwise_conv2d_forward(x, w, dilation=dilation)
    assert c_ref["live_taps"] == [(1, 1)]
    assert_close(y, y_ref)
    dy = normal(rng, y_ref.shape, np.float32)
    dx, dw, db = ops(name).depthwise_conv2d_backward(on(name, dy), cache)
    assert_all_close((dx, dw, db), R.depthwise_conv2d_backward(dy, c_ref))
    dw = host(dw)
    assert np.all(dw[0] == 0) and np.all(dw[2] == 0) and np.all(dw[:, 0] == 0) and np.all(dw[:, 2] == 0)


@contextlib.contextmanager
def dw_chunks(value):
    saved = kdepthwise.DW_CHUNKS
    kdepthwise.DW_CHUNKS = value
    try:
        yield
    finally:
        kdepthwise.DW_CHUNKS = saved


@pytest.mark.parametrize("chunks", [1, 3, 1000])
def test_depthwise_cpu_weight_gradient_does_not_depend_on_the_chunking(chunks):
    """One chunk, a few, more chunks than output rows: the same ``dw`` as the reference."""
    case = named((3, 7, 6, 4), (3, 3, 4, 2), (2, 1), (1, 2), "same", True)
    with dw_chunks(chunks):
        check_depthwise("cpu", case)


def test_depthwise_cpu_accepts_non_contiguous_inputs(rng):
    x = normal(rng, (2, 6, 8, 3), np.float32)[:, ::2, ::2]
    w = np.asfortranarray(normal(rng, (3, 3, 3, 2), np.float32))
    assert_close(ops("cpu").depthwise_conv2d_forward(x, w)[0], R.depthwise_conv2d_forward(x, w)[0])
