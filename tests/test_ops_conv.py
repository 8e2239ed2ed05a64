"""conv2d on every backend against the NumPy reference, and the plan every backend shares.

One strategy (``conv_cases``: shapes, even kernels, strides, dilations larger than the input,
same/valid/explicit padding, bias or not) draws a case; each backend runs forward and backward and is
compared with :mod:`tinydeeplab.functional` (``tests/backends.py``). The CPU backend also runs with each
of its two paths forced (im2col + GEMM, tap by tap) and with tiny im2col chunks; the CUDA backend with
one-row chunks.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends import BACKENDS, DRAW_SIZES, NEEDS_CUDA, assert_all_close, assert_close, for_drawn_cases, host, on, ops
from strategies import conv_cases, normal, seeds
from tinydeeplab import functional as R
from tinydeeplab.functional.conv import conv2d_plan
from tinydeeplab.kernels.cpu import conv as kconv


def run_conv(name, case, dtype=np.float32, module=None):
    """Forward and backward of ``case`` on backend ``name`` (or ``module``) and on the reference:
    ``((y, grads), (y_ref, grads_ref))``."""
    rng = np.random.default_rng(case["seed"])
    x = normal(rng, case["x_shape"], dtype)
    w = normal(rng, case["w_shape"], dtype)
    b = normal(rng, case["w_shape"][3], dtype) if case["bias"] else None
    kw = {k: case[k] for k in ("stride", "dilation", "padding")}
    mod = module or ops(name)
    y_ref, c_ref = R.conv2d_forward(x, w, b, **kw)
    y, cache = mod.conv2d_forward(on(name, x), on(name, w), on(name, b), **kw)
    dy = normal(rng, y_ref.shape, dtype)
    return (y, mod.conv2d_backward(on(name, dy), cache)), (y_ref, R.conv2d_backward(dy, c_ref))


def check_conv(name, case, dtype=np.float32, module=None):
    (y, grads), (y_ref, grads_ref) = run_conv(name, case, dtype, module)
    assert_close(y, y_ref)
    assert_all_close(grads, grads_ref)


@contextlib.contextmanager
def setting(module, name, value):
    """Temporarily change a constant of a kernel module (a plain context: Hypothesis tests take no fixtures)."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


# The CPU convolution's own choice of path, or one of its two paths forced for every case.
CPU_PATHS = {"auto": kconv.TAPWISE_MIN_DEAD_FRACTION, "im2col": 2.0, "tapwise": -1.0}
RUNS = [pytest.param("cpu", "auto", id="cpu"), pytest.param("cpu", "im2col", id="cpu-im2col"),
        pytest.param("cpu", "tapwise", id="cpu-tapwise"), pytest.param("cuda", "auto", id="cuda", marks=NEEDS_CUDA)]
"""(backend, path) pairs of the drawn comparisons."""


def cpu_path(path):
    return setting(kconv, "TAPWISE_MIN_DEAD_FRACTION", CPU_PATHS[path])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name,path", RUNS)
def test_conv2d_matches_reference(name, path, dtype):
    def check(case):
        with cpu_path(path):
            (y, grads), (y_ref, grads_ref) = run_conv(name, case, dtype)
        assert host(y).dtype == dtype
        assert_close(y, y_ref)
        assert_all_close(grads, grads_ref)
    for_drawn_cases(name, conv_cases(**DRAW_SIZES[name]), check)


NAMED_CASES = [  # x shape, w shape, stride, dilation, padding, bias
    ((2, 5, 6, 3), (3, 3, 3, 4), 1, 1, "same", True),
    ((1, 6, 5, 2), (3, 3, 2, 3), 2, 1, "same", False),
    ((1, 7, 7, 2), (3, 3, 2, 2), 1, 2, "same", False),
    ((2, 5, 5, 2), (2, 2, 2, 3), 1, 1, "same", True),          # even kernel: asymmetric Keras padding
    ((1, 6, 6, 2), (4, 4, 2, 2), 2, 1, "same", False),
    ((1, 6, 5, 3), (3, 2, 3, 2), (2, 1), 1, "valid", True),
    ((1, 5, 5, 2), (3, 3, 2, 2), 2, (1, 2), ((1, 0), (2, 1)), False),   # explicit padding
    ((2, 4, 4, 3), (1, 1, 3, 5), 1, 1, "same", True),          # 1x1: one GEMM, no im2col
    ((1, 3, 3, 2), (3, 3, 2, 2), 1, 4, "same", False),         # dilation > input: only the centre tap
    ((1, 5, 5, 2), (1, 1, 2, 3), 2, 1, "valid", False),        # strided 1x1 (ResNet shortcut)
    ((1, 2, 2, 2), (1, 1, 2, 3), 3, 1, ((2, 2), (2, 2)), True),   # outputs that see only padding
    ((1, 1, 1, 1), (1, 3, 1, 1), 2, 1, 2, False),              # live taps 0 and 2, dead tap 1 between them
]


def named(x_shape, w_shape, stride, dilation, padding, bias, seed=1234):
    return {"x_shape": x_shape, "w_shape": w_shape, "stride": stride, "dilation": dilation, "padding": padding,
            "bias": bias, "seed": seed}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", NAMED_CASES, ids=[f"conv{i}" for i in range(len(NAMED_CASES))])
def test_conv2d_named_cases(name, case):
    """Every path on every backend, whatever the strategy draws."""
    check_conv(name, named(*case))


@pytest.mark.parametrize("name", BACKENDS)
def test_a_wrong_conv_is_caught(name):
    """A kernel that ignores the dilation would pass a test against itself, not against the reference."""
    mod = ops(name)

    class IgnoresDilation:
        conv2d_backward = staticmethod(mod.conv2d_backward)

        @staticmethod
        def conv2d_forward(x, w, b=None, **kw):
            return mod.conv2d_forward(x, w, b, **{**kw, "dilation": 1})
    with pytest.raises(AssertionError):
        check_conv(name, named((1, 7, 7, 2), (3, 3, 2, 2), 1, 2, "same", False), module=IgnoresDilation)


# ---------------------------------------------------------------------------------------------------
# im2col chunks
# ---------------------------------------------------------------------------------------------------

def im2col_module(name):
    if name == "cuda":
        from tinydeeplab.kernels.cuda import conv
        return conv
    return kconv


@pytest.mark.parametrize("name", BACKENDS)
def test_conv2d_one_output_row_per_im2col_chunk(name):
    with setting(im2col_module(name), "IM2COL_MAX_BYTES", 64):      # less than a row: one row per chunk
        check_conv(name, named((2, 4, 5, 2), (3, 3, 2, 3), 1, 1, "same", True))


@pytest.mark.parametrize("path", ["im2col", "tapwise"])
@given(case=conv_cases())
def test_conv2d_cpu_tiny_im2col_chunks_equal_one_big_chunk(path, case):
    with cpu_path(path):
        with setting(kconv, "IM2COL_MAX_BYTES", 1 << 40):        # everything in one chunk
            (y_big, g_big), _ = run_conv("cpu", case)
        with setting(kconv, "IM2COL_MAX_BYTES", 1):              # less than a row: one output row per chunk
            (y_small, g_small), (y_ref, g_ref) = run_conv("cpu", case)
    np.testing.assert_allclose(y_small, y_big, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_small, g_big):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert_close(y_small, y_ref)
    assert_all_close(g_small, g_ref)


def test_conv2d_cpu_chunking_on_a_wider_case(rng):
    """Several images, chunks that cut through an image, strided and dilated: same as the reference."""
    x = normal(rng, (3, 11, 10, 4), np.float32)
    w = normal(rng, (3, 2, 4, 5), np.float32)
    y_ref, c_ref = R.conv2d_forward(x, w, stride=(2, 1), dilation=(1, 2), padding="same")
    dy = normal(rng, y_ref.shape, np.float32)
    g_ref = R.conv2d_backward(dy, c_ref)
    row_bytes = y_ref.shape[2] * 3 * 2 * 4 * 4
    for rows in (1, 2, 4, 5, 7, 100):
        with setting(kconv, "IM2COL_MAX_BYTES", rows * row_bytes):
            y, cache = ops("cpu").conv2d_forward(x, w, stride=(2, 1), dilation=(1, 2), padding="same")
            grads = ops("cpu").conv2d_backward(dy, cache)
        assert_close(y, y_ref)
        assert_all_close(grads, g_ref)


def test_conv2d_cpu_reuses_its_im2col_buffer_across_calls(rng):
    """The second and third convolutions (smaller, then of another layer shape) allocate no new im2col
    buffer, and the stale contents left by the first never leak into a result."""
    K = ops("cpu")
    big_x, big_w = normal(rng, (2, 12, 12, 6), np.float32), normal(rng, (3, 3, 6, 4), np.float32)
    K.conv2d_forward(big_x, big_w)                    # grows the buffer
    buffer = kconv.scratch((1, 1), np.float32)
    for shape, wshape, dilation in [((1, 7, 5, 3), (3, 3, 3, 2), 1), ((2, 6, 6, 2), (2, 3, 2, 5), 2)]:
        x, w = normal(rng, shape, np.float32), normal(rng, wshape, np.float32)
        y, cache = K.conv2d_forward(x, w, dilation=dilation)
        y_ref, c_ref = R.conv2d_forward(x, w, dilation=dilation)
        dy = normal(rng, y.shape, np.float32)
        assert_close(y, y_ref)
        assert_all_close(K.conv2d_backward(dy, cache), R.conv2d_backward(dy, c_ref))
        assert np.shares_memory(kconv.scratch((1, 1), np.float32), buffer)


def test_conv2d_cpu_accepts_non_contiguous_inputs(rng):
    x = normal(rng, (2, 6, 8, 3), np.float32)[:, ::2, ::2]
    w = np.asfortranarray(normal(rng, (3, 3, 3, 2), np.float32))
    assert_close(ops("cpu").conv2d_forward(x, w)[0], R.conv2d_forward(x, w)[0])


# ---------------------------------------------------------------------------------------------------
# The plan: live taps, the 1x1 GEMM, products with padding
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate, dead, tapwise", [(1, 1 - (46 / 48) ** 2, False),   # border rows/cols only
                                                 (6, 1 - (36 / 48) ** 2, True), (12, 1 - (24 / 48) ** 2, True)])
def test_atrous_conv_on_a_small_map_multiplies_no_padding(rng, rate, dead, tapwise):
    """ASPP at 16 x 16: rate 12 reads padding in 75 % of its im2col products (per axis, rows 0-3 / 4-11
    / 12-15 read taps {0,+12} / {0} / {-12,0}: 24 of 48 reads are real), so the CPU runs it tap by tap;
    a plain 3x3 conv (rate 1) keeps the im2col path. Same result as the reference either way."""
    x = normal(rng, (2, 16, 16, 4), np.float32)
    w = normal(rng, (3, 3, 4, 3), np.float32)
    plan = conv2d_plan(x.shape, w.shape, (1, 1), (rate, rate), "same")
    assert plan.dead_fraction == pytest.approx(dead)
    if rate == 12:
        assert [(i, j, r) for i, j, r, _ in plan.taps][:3] == [(0, 0, (12, 16)), (0, 1, (12, 16)), (0, 2, (12, 16))]
    y, cache = ops("cpu").conv2d_forward(x, w, dilation=rate)
    assert (cache["plan"]["taps"] is not None) == tapwise
    y_ref, c_ref = R.conv2d_forward(x, w, dilation=rate)
    assert_close(y, y_ref)
    dy = normal(rng, y.shape, np.float32)
    assert_all_close(ops("cpu").conv2d_backward(dy, cache), R.conv2d_backward(dy, c_ref))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dilation", [6, 12, 18])
def test_conv2d_dead_taps_are_skipped(rng, name, dilation):
    """ASPP at 5x5 with a large rate: only the centre tap is live, the conv becomes one GEMM."""
    x = normal(rng, (2, 5, 5, 3), np.float32)
    w = normal(rng, (3, 3, 3, 4), np.float32)
    plan = conv2d_plan(x.shape, w.shape, (1, 1), (dilation, dilation), "same")
    assert plan.live_h == plan.live_w == (1,) and plan.gemm_only
    y, cache = ops(name).conv2d_forward(on(name, x), on(name, w), dilation=dilation, padding="same")
    assert cache["plan"]["gemm_only"]
    y_ref, c_ref = R.conv2d_forward(x, w, dilation=dilation, padding="same")
    assert_close(y, y_ref)
    dy = normal(rng, y_ref.shape, np.float32)
    dx, dw, db = ops(name).conv2d_backward(on(name, dy), cache)
    assert_all_close((dx, dw, db), R.conv2d_backward(dy, c_ref))
    dw = host(dw)
    assert np.all(dw[0] == 0) and np.all(dw[2] == 0) and np.all(dw[:, 0] == 0)


@given(seeds, st.integers(1, 3), st.integers(1, 4))
def test_conv2d_cpu_1x1_is_one_gemm(seed, n, c):
    rng = np.random.default_rng(seed)
    x = normal(rng, (n, 4, 3, c), np.float32)
    w = normal(rng, (1, 1, c, 5), np.float32)
    y, cache = ops("cpu").conv2d_forward(x, w, padding="valid")
    assert cache["plan"]["gemm_only"]
    np.testing.assert_allclose(y, (x.reshape(-1, c) @ w[0, 0]).reshape(n, 4, 3, 5), rtol=1e-6, atol=1e-6)


@given(conv_cases())
def test_conv2d_plan_live_taps_are_the_taps_that_read_a_real_pixel(case):
    """Against a brute-force count: tap (i, j) is live iff some output reads a pixel inside x through it,
    and its output ranges are exactly those outputs."""
    s = case["stride"] if isinstance(case["stride"], tuple) else (case["stride"],) * 2
    d = case["dilation"] if isinstance(case["dilation"], tuple) else (case["dilation"],) * 2
    plan = conv2d_plan(case["x_shape"], case["w_shape"], s, d, case["padding"])
    (pt, _), (pl, _) = plan.pads
    h, w = case["x_shape"][1:3]
    kh, kw = case["w_shape"][:2]

    def reads(o, i, axis):
        pos = o * s[axis] - (pt, pl)[axis] + i * d[axis]
        return 0 <= pos < (h, w)[axis]
    rows = {i: [o for o in range(plan.out_hw[0]) if reads(o, i, 0)] for i in range(kh)}
    cols = {j: [o for o in range(plan.out_hw[1]) if reads(o, j, 1)] for j in range(kw)}
    assert plan.live_h == tuple(i for i in range(kh) if rows[i])
    assert plan.live_w == tuple(j for j in range(kw) if cols[j])
    assert list(plan.taps) == [(i, j, (rows[i][0], rows[i][-1] + 1), (cols[j][0], cols[j][-1] + 1))
                               for i in range(kh) for j in range(kw) if rows[i] and cols[j]]
