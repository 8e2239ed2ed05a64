"""The diagnosis shared by every checker: call the student's function, compare, name the mistake.

``compare(got, expected, what, case, variants=...)`` goes from coarse to fine and raises
:class:`~tinydeeplab.exercises.ExerciseFailure` at the first problem found:

1. not an array (``None``, a tuple where one array was expected, ...);
2. wrong shape (expected vs got; a known wrong variant with that shape is named);
3. wrong dtype (e.g. float64 returned for float32 input);
4. NaN or infinity;
5. equal (``|got - expected| <= atol + rtol |expected|``): nothing to say, return;
6. equal to one of the known wrong ``variants``: its message ("your dx lacks the mean-of-dy term");
7. ``got = -expected``: "the sign is flipped";
8. ``got = a * expected`` for a constant ``a``: "off by a constant factor a";
9. otherwise: how many entries differ, the first few (index, got, expected), the largest difference.

>>> import numpy as np
>>> x = np.arange(6.0).reshape(2, 3)
>>> compare(-x, x, "y", {"x": x})
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: y has the wrong sign everywhere (you return -y) on case x (2, 3)
>>> got = x.copy(); got[1, 2] = 9.0
>>> compare(got, x, "y", {"x": x})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: y differs from the reference in 1 of 6 entries ...; first: [1, 2] got 9 expected 5
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import ExerciseFailure

MAX_LISTED = 3


@dataclass(frozen=True)
class Variant:
    """A known wrong answer ``value`` and the message that names the mistake behind it."""

    value: object
    message: str


def describe_case(case: dict) -> str:
    """``"x (2, 5, 5, 3), w (3, 3, 3, 4), stride 2"``: arrays by shape, other values as they are."""
    parts = []
    for key, value in case.items():
        if isinstance(value, np.ndarray):
            dtype = "" if value.dtype == np.float64 else f" {value.dtype}"
            parts.append(f"{key} {tuple(value.shape)}{dtype}")
        else:
            parts.append(f"{key} {value!r}")
    return ", ".join(parts)


def fail(message: str, case: dict | None = None):
    """Raise ExerciseFailure with ``message`` and, when given, ``" on case ..."`` appended."""
    suffix = f" on case {describe_case(case)}" if case else ""
    raise ExerciseFailure(message + suffix, dict(case) if case else None)


def attempt(fn: Callable, case: dict, *args, **kwargs):
    """``fn(*args, **kwargs)``; a ``NotImplementedError`` becomes "not implemented yet", any other
    exception a failure naming it and the case (the original is the failure's ``__cause__``)."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise ExerciseFailure("not implemented yet (your function raises NotImplementedError: "
                              "replace the `raise` with your code)", dict(case)) from None
    except Exception as err:  # noqa: BLE001 - the student's bug, reported with its case
        raise ExerciseFailure(f"your function raised {type(err).__name__}: {err}; on case "
                              f"{describe_case(case)}", dict(case)) from err


def unpack(got, n: int, what: str, case: dict) -> tuple:
    """``got`` as a tuple of ``n`` results (e.g. ``(dx, dw, db)``), or a failure saying what came back."""
    if not isinstance(got, (tuple, list)) or len(got) != n:
        kind = f"{len(got)} values" if isinstance(got, (tuple, list)) else type(got).__name__
        fail(f"expected {n} results {what}, got {kind}", case)
    return tuple(got)


def _close(a, b, rtol, atol) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def _fmt(v) -> str:
    return f"{float(v):.6g}"


def compare(got, expected, what: str, case: dict, *, variants=(), rtol: float = 1e-6, atol: float = 1e-8,
            check_dtype: bool = True) -> None:
    """Raise ExerciseFailure unless ``got`` matches ``expected`` (see the module docstring for the order)."""
    expected = np.asarray(expected)
    if got is None:
        fail(f"{what}: your function returned None (did you forget `return`?)", case)
    if not isinstance(got, (np.ndarray, np.generic, float, int)) or isinstance(got, bool):
        fail(f"{what} should be a NumPy array of shape {expected.shape}, got {type(got).__name__}", case)
    got = np.asarray(got)
    if got.shape != expected.shape:
        for v in variants:
            if np.shape(v.value) == got.shape and _close(got, np.asarray(v.value), rtol, atol):
                fail(f"{what} has shape {got.shape}, expected {expected.shape}: {v.message}", case)
        fail(f"{what} has shape {got.shape}, expected {expected.shape}", case)
    if check_dtype and got.dtype != expected.dtype:
        fail(f"{what} has dtype {got.dtype}, expected {expected.dtype} (keep the input's dtype)", case)
    bad = ~np.isfinite(got)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        fail(f"{what} contains {int(bad.sum())} NaN/inf entries, first at {list(idx)}", case)
    if _close(got, expected, rtol, atol):
        return
    for v in variants:
        if _close(got, np.asarray(v.value), rtol, atol):
            fail(f"{what} is wrong: {v.message}", case)
    if _close(got, -expected, rtol, atol) and np.abs(expected).max() > atol:
        fail(f"{what} has the wrong sign everywhere (you return -{what})", case)
    e, g = expected.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    if e @ e > 0 and expected.size > 1:
        factor = float(g @ e / (e @ e))
        if _close(g, factor * e, rtol, atol):
            fail(f"{what} is off by a constant factor: yours = {factor:.6g} x the reference "
                 f"(a missing or extra scale such as 1/M or 2?)", case)
    differ = ~np.isclose(got, expected, rtol=rtol, atol=atol)
    where = np.argwhere(differ)[:MAX_LISTED]
    listed = "; ".join(f"{[int(i) for i in idx]} got {_fmt(got[tuple(idx)])} expected "
                       f"{_fmt(expected[tuple(idx)])}" for idx in where)
    if got.ndim == 0:
        fail(f"{what} is {_fmt(got)}, expected {_fmt(expected)}", case)
    worst = float(np.abs(got.astype(np.float64) - expected).max())
    more = f"; largest difference {worst:.3g}" if differ.sum() > MAX_LISTED else ""
    on = f" on case {describe_case(case)}" if case else ""
    raise ExerciseFailure(f"{what} differs from the reference in {int(differ.sum())} of {got.size} entries{on}; "
                          f"first: {listed}{more}", dict(case) if case else None)

def judge_cases(cases: list, got: list, expected: list, variants: list, same: Callable, show=repr) -> None:
    """For exercises with many small cases (a number or a pair per case): fail unless ``same(got[k],
    expected[k])`` for every case. ``variants[k]`` lists ``(value, message)`` for case ``k``, the mistakes in
    the same order for every case; a mistake is named only if it explains *every* case, since a single
    case can match a wrong formula by accident."""
    wrong = [k for k in range(len(cases)) if not same(got[k], expected[k])]
    if not wrong:
        return
    first = wrong[0]
    where = (f"wrong in {len(wrong)} of {len(cases)} cases, first: got {show(got[first])}, "
             f"expected {show(expected[first])}")
    for v, (_, message) in enumerate(variants[0]):
        if all(same(g, vs[v][0]) for g, vs in zip(got, variants)):
            fail(f"{where}: {message}", cases[first])
    fail(where, cases[first])


def check_backward(forward: Callable, student_backward: Callable, inputs: dict, kwargs: dict, case: dict,
                   *, grad_names, seed: int = 0) -> str:
    """Float64 central-difference check of ``student_backward(c, cache) -> grads`` against ``forward``
    (``tinydeeplab.gradcheck.check_gradients``); a failure names the worst entry. Returns a summary."""
    from ..gradcheck import GradientCheckError, check_gradients

    def backward(c, cache):
        return attempt(student_backward, case, c, cache)

    try:
        result = check_gradients(forward, backward, inputs, kwargs=kwargs, rng=seed, grad_names=grad_names)
    except GradientCheckError as err:
        fail(f"float64 gradient check against central differences failed: {err}", case)
    except ValueError as err:                 # e.g. a gradient of the wrong shape
        fail(f"gradient check could not compare: {err}", case)
    return f"gradient check max rel err {result.max_rel_err:.1e}"
