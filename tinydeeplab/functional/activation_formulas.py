"""The activations of :mod:`.elementwise` for one number: the scalar code both kernel backends compile.

:func:`activation_value` and :func:`activation_slope` are plain Python on floats (``math.exp``, no NumPy),
so the Numba CPU backend compiles them with ``njit`` and the CUDA backend with ``cuda.jit(device=True)``:
one copy of the formulas and of the kink conventions for both. ``kind`` is one of the constants below and
``a`` the leaky-ReLU slope (ignored by the other kinds). The NumPy reference (:mod:`.elementwise`) is the
spec they are tested against.

>>> [round(activation_value(k, 1.0, 0.2), 6) for k in (SIGMOID, SWISH, HARD_SIGMOID, HARD_SWISH, LEAKY_RELU)]
[0.731059, 0.731059, 0.666667, 0.666667, 1.0]
>>> [activation_slope(HARD_SWISH, v, 0.2) for v in (-3.0, 3.0)]     # the kinks, as JAX
[0.0, 1.0]
"""
import functools
import math

from . import elementwise

SIGMOID, SWISH, HARD_SIGMOID, HARD_SWISH, LEAKY_RELU, RELU6 = 0, 1, 2, 3, 4, 5
KINDS = {"sigmoid": SIGMOID, "swish": SWISH, "hard_sigmoid": HARD_SIGMOID, "hard_swish": HARD_SWISH,
         "leaky_relu": LEAKY_RELU, "relu6": RELU6}
"""Op name -> ``kind`` code."""


def activation_value(kind, v, a):
    """``f(v)`` for activation ``kind`` (see :mod:`.elementwise` for the equations)."""
    if kind == RELU6:
        return min(max(v, 0.0), 6.0)
    if kind == LEAKY_RELU:
        return v if v >= 0 else a * v
    if kind == HARD_SIGMOID or kind == HARD_SWISH:
        hs = min(max(v + 3.0, 0.0), 6.0) / 6.0             # relu6(v + 3) / 6
        return hs if kind == HARD_SIGMOID else v * hs
    e = math.exp(-abs(v))                                  # never overflows
    s = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
    return s if kind == SIGMOID else v * s


def activation_slope(kind, v, a):
    """``f'(v)``; at the kinks the one-sided value JAX uses (relu6 passes gradient only on ``0 < v + 3 < 6``)."""
    if kind == RELU6:
        return 1.0 if v > 0.0 and v < 6.0 else 0.0
    if kind == LEAKY_RELU:
        return 1.0 if v >= 0 else a
    if kind == HARD_SIGMOID or kind == HARD_SWISH:
        t = v + 3.0
        inside = t > 0.0 and t < 6.0
        if kind == HARD_SIGMOID:
            return 1.0 / 6.0 if inside else 0.0
        hs = min(max(t, 0.0), 6.0) / 6.0
        return hs + v / 6.0 if inside else hs
    e = math.exp(-abs(v))
    s = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
    return s * (1.0 - s) if kind == SIGMOID else s + v * s * (1.0 - s)


def activation_pairs(forward, backward):
    """A kernel backend's public activation ops from its two launchers, ``forward(x, op, negative_slope)``
    (``op`` a key of :data:`KINDS`) and ``backward(dy, cache)``.

    Returns ``(sigmoid_forward, sigmoid_backward, swish_forward, ..., relu6_backward)`` in the order of
    :data:`KINDS`, each wrapping its reference twin of :mod:`.elementwise` (``functools.wraps``: the same
    name, docstring and signature), so the backends do not repeat ten wrappers each.

    >>> fwd, bwd = activation_pairs(lambda x, op, slope=0.0: (op, slope), None)[8:10]
    >>> fwd.__name__, fwd(1.0, negative_slope=0.5)
    ('leaky_relu_forward', ('leaky_relu', 0.5))
    """
    def plain(op):
        return lambda x: forward(x, op)

    def leaky(x, *, negative_slope=0.2):
        return forward(x, "leaky_relu", negative_slope)

    pairs = []
    for op in KINDS:
        pairs.append(functools.wraps(getattr(elementwise, f"{op}_forward"))(leaky if op == "leaky_relu" else plain(op)))
        pairs.append(functools.wraps(getattr(elementwise, f"{op}_backward"))(lambda dy, cache: backward(dy, cache)))
    return tuple(pairs)
