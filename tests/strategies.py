"""Hypothesis strategies for the op tests (small shapes: gradient checks visit every entry).

In the spirit of minitorch's ``tensor_strategies``: draw the *configuration* (shape, kernel,
stride, dilation, padding) and a seed, then build the arrays with NumPy from the seed. Drawing
seeds instead of array contents keeps shrinking fast and the examples reproducible.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from tinydeeplab.functional import max_pool2d_forward
from tinydeeplab.functional.geometry import window_geometry

seeds = st.integers(min_value=0, max_value=2**32 - 1)
small_sizes = st.integers(min_value=1, max_value=6)          # H or W
batch_sizes = st.integers(min_value=1, max_value=2)          # N
channels = st.integers(min_value=1, max_value=3)             # C or F
kernel_sizes = st.integers(min_value=1, max_value=4)         # includes even kernels (2, 4)


def int_or_pair(elements):
    """An int, or a ``(h, w)`` pair of them (ops accept both)."""
    return st.one_of(elements, st.tuples(elements, elements))


strides = int_or_pair(st.integers(min_value=1, max_value=3))
dilations = int_or_pair(st.integers(min_value=1, max_value=4))   # with H <= 6 often larger than the input
explicit_pads = st.integers(min_value=0, max_value=2)
paddings = st.one_of(
    st.sampled_from(["same", "valid"]),
    explicit_pads,                                                       # int
    st.tuples(explicit_pads, explicit_pads),                             # (ph, pw)
    st.tuples(st.tuples(explicit_pads, explicit_pads), st.tuples(explicit_pads, explicit_pads)),  # explicit
)


@st.composite
def nhwc_shapes(draw, min_size=1, max_size=6, max_channels=3):
    """``(N, H, W, C)`` with small sides."""
    sizes = st.integers(min_value=min_size, max_value=max_size)
    return (draw(batch_sizes), draw(sizes), draw(sizes), draw(st.integers(1, max_channels)))


@st.composite
def conv_cases(draw, max_size=6, max_channels=3):
    """A consistent conv2d configuration: shapes, stride, dilation, padding and a data seed.

    A padding that leaves the window larger than the padded input falls back to "same" (which
    always works), so no draw is wasted.
    """
    n, h, w, c = draw(nhwc_shapes(max_size=max_size, max_channels=max_channels))
    f = draw(st.integers(1, max_channels))
    kh, kw = draw(kernel_sizes), draw(kernel_sizes)
    stride, dilation, padding = draw(strides), draw(dilations), draw(paddings)
    s2 = stride if isinstance(stride, tuple) else (stride, stride)
    d2 = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    try:
        window_geometry((n, h, w, c), (kh, kw), s2, d2, padding)
    except ValueError:
        padding = "same"
    return {"x_shape": (n, h, w, c), "w_shape": (kh, kw, c, f), "stride": stride, "dilation": dilation,
            "padding": padding, "bias": draw(st.booleans()), "seed": draw(seeds)}


@st.composite
def pool_cases(draw, max_size=7, max_channels=3):
    """A consistent max_pool2d configuration (every window must touch the input)."""
    n, h, w, c = draw(nhwc_shapes(max_size=max_size, max_channels=max_channels))
    pool = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(strides)
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), st.tuples(st.integers(0, 1), st.integers(0, 1))))
    try:   # padding that leaves a window outside the input is rejected by the op: use "same" then
        max_pool2d_forward(np.zeros((n, h, w, c)), pool_size=pool, stride=stride, padding=padding)
    except ValueError:
        padding = "same"
    return {"x_shape": (n, h, w, c), "pool_size": pool, "stride": stride, "padding": padding, "seed": draw(seeds)}


@st.composite
def depthwise_cases(draw, max_size=6, max_channels=3):
    """A consistent depthwise_conv2d configuration: as :func:`conv_cases`, with a depth multiplier ``M``
    instead of ``F`` (kernel ``(KH, KW, C, M)``)."""
    case = draw(conv_cases(max_size=max_size, max_channels=max_channels))
    kh, kw, c, _ = case["w_shape"]
    return {**case, "w_shape": (kh, kw, c, draw(st.integers(1, 3)))}


@st.composite
def avg_pool_cases(draw, max_size=7, max_channels=3):
    """An avg_pool2d configuration: windows 1..4 (even ones too), stride int, pair or None (= pool size),
    Keras padding "valid" or "same" or explicit pairs, dilation 1..3 (a configuration that is not
    possible, such as a window left entirely in the padding, falls back to "same" without dilation)."""
    from tinydeeplab.functional.avg_pool import avg_pool2d_geometry

    n, h, w, c = draw(nhwc_shapes(max_size=max_size, max_channels=max_channels))
    pool = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), strides))
    dilation = draw(st.one_of(st.just(1), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]),
                             st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                       st.tuples(st.integers(0, 2), st.integers(0, 2)))))
    try:
        avg_pool2d_geometry((n, h, w, c), pool, stride, padding, dilation)
    except ValueError:
        padding, dilation = "same", 1
    return {"x_shape": (n, h, w, c), "pool_size": pool, "stride": stride, "padding": padding,
            "dilation": dilation, "seed": draw(seeds)}


def away_from(x: np.ndarray, points, gap: float = 1e-3) -> np.ndarray:
    """``x`` with every entry closer than ``gap`` to one of ``points`` (an activation's kinks) moved ``2 gap`` up,
    so a central difference with a small step never straddles a kink."""
    x = x.copy()
    for p in points:
        near = np.abs(x - p) < gap
        x[near] = p + 2 * gap
    return x


def normal(rng: np.random.Generator, shape, dtype=np.float64) -> np.ndarray:
    """Standard normal array of ``shape`` and ``dtype``."""
    return rng.standard_normal(shape).astype(dtype)
