"""Check a hand-written backward pass against central differences, entry by entry.

A backward pass computes a vector-Jacobian product: given the upstream gradient ``c`` (the
*cotangent*, shaped like the output ``y = f(x)``) it returns ``dL/dx`` for the scalar

    L(x) = <f(x), c> = sum(f(x) * c).

The checker draws a random ``c``, asks ``backward`` for ``dL/dx`` (the *analytic* gradient), and
estimates every entry of it with a central difference in float64 (the *numeric* gradient)::

    dL/dx[k] ~ (L(x + eps e_k) - L(x - eps e_k)) / (2 eps)

A random ``c`` (not all ones) matters: with ``c = 1`` a bug that permutes or mixes output
positions could go unseen. Entries compare like ``numpy.allclose``: ``|a - n| <= atol + rtol * |n|``.

Usage with an op pair (``forward(**inputs, **kwargs) -> (y, cache)``, ``backward(c, cache) -> grads``)::

    >>> import numpy as np
    >>> from tinydeeplab import functional as F
    >>> rng = np.random.default_rng(0)
    >>> x, w = rng.standard_normal((1, 4, 4, 2)), rng.standard_normal((3, 3, 2, 3))
    >>> result = check_gradients(F.conv2d_forward, F.conv2d_backward, {"x": x, "w": w},
    ...                          kwargs={"stride": 2}, rng=rng)
    >>> result.passed, result.n_checked           # 32 entries of x + 54 of w
    (True, 86)

A broken backward raises :class:`GradientCheckError` (an ``AssertionError``) naming the worst entry::

    >>> def bad_backward(dy, cache):
    ...     dx, dw, db = F.conv2d_backward(dy, cache)
    ...     dw[0, 0, 0, 0] *= 1.1
    ...     return dx, dw, db
    >>> check_gradients(F.conv2d_forward, bad_backward, {"x": x, "w": w}, rng=rng)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tinydeeplab.gradcheck.GradientCheckError: gradient check failed: ... worst entry w[0, 0, 0, 0]: ...
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["check_gradients", "numerical_gradient", "GradcheckResult", "GradientCheckError"]


@dataclass
class GradcheckResult:
    """Outcome of :func:`check_gradients`.

    ``max_abs_err`` = max ``|analytic - numeric|``; ``max_rel_err`` = max ``|a - n| / max(|a|, |n|)`` over
    the entries whose gradient is larger than ``atol`` (tiny entries are judged by ``atol`` alone);
    ``worst`` = the entry furthest outside the tolerance: ``(name, index, analytic, numeric)``;
    ``per_input`` maps each input name to its ``(max_abs_err, max_rel_err)``.
    """

    passed: bool
    max_abs_err: float
    max_rel_err: float
    worst: tuple
    n_checked: int
    atol: float
    rtol: float
    per_input: dict = field(default_factory=dict)

    def __str__(self) -> str:
        name, index, a, n = self.worst
        where = f"{name}[{', '.join(str(i) for i in index)}]" if index else name
        return (f"gradient check {'passed' if self.passed else 'failed'}: {self.n_checked} entries, "
                f"max abs err {self.max_abs_err:.3g}, max rel err {self.max_rel_err:.3g} "
                f"(atol {self.atol:g}, rtol {self.rtol:g}); worst entry {where}: "
                f"analytic {a:.8g} vs numeric {n:.8g}")


class GradientCheckError(AssertionError):
    """Raised by :func:`check_gradients` when an entry is outside tolerance; ``.result`` holds the details."""

    def __init__(self, result: GradcheckResult):
        super().__init__(str(result))
        self.result = result


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences ``(f(x + eps e_k) - f(x - eps e_k)) / (2 eps)`` for every entry ``k`` of ``x``.

    ``f`` takes no argument and reads ``x``, which is perturbed *in place* (and restored) one entry at a
    time; ``x`` must be a contiguous float64 array.

    >>> x = np.array([1.0, 2.0])
    >>> numerical_gradient(lambda: float((x ** 3).sum()), x).round(6).tolist()    # 3 x^2
    [3.0, 12.0]
    """
    if not (isinstance(x, np.ndarray) and x.dtype == np.float64 and x.flags.c_contiguous):
        raise ValueError("numerical_gradient needs a C-contiguous float64 array x")
    flat = x.reshape(-1)                  # a view: writing flat[k] perturbs x
    grad = np.zeros(x.size)
    for k in range(x.size):
        old = flat[k]
        flat[k] = old + eps
        plus = f()
        flat[k] = old - eps
        minus = f()
        flat[k] = old
        grad[k] = (plus - minus) / (2 * eps)
    return grad.reshape(x.shape)


def _to_float64(value):
    """Float64 copies of float arrays (also inside lists); everything else unchanged."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return np.array(value, dtype=np.float64, order="C")
    if isinstance(value, (list, tuple)) and any(isinstance(v, np.ndarray) for v in value):
        return type(value)(_to_float64(v) for v in value)
    return value


def _leaves(name: str, value) -> list[tuple[str, np.ndarray]]:
    """``(label, array)`` pairs of an input: an array, or a list of arrays (``xs[0]``, ``xs[1]``, ...)."""
    if isinstance(value, np.ndarray):
        return [(name, value)]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    raise ValueError(f"input {name!r} must be an array or a list of arrays, got {type(value).__name__}")


def _random_like(y, rng: np.random.Generator):
    """A random cotangent with the structure of the output: array, list of arrays, or scalar."""
    if isinstance(y, np.ndarray) and y.ndim > 0:
        return rng.standard_normal(y.shape)
    if isinstance(y, (list, tuple)):
        return [_random_like(v, rng) for v in y]
    if isinstance(y, (numbers.Real, np.ndarray, np.generic)):
        return float(rng.standard_normal())
    raise ValueError(f"forward must return an array, a list of arrays or a scalar, got {type(y).__name__}")


def _inner(y, c) -> float:
    """``<y, c> = sum(y * c)`` in float64, for matching structures."""
    if isinstance(y, (list, tuple)):
        return sum(_inner(a, b) for a, b in zip(y, c))
    return float(np.sum(np.asarray(y, dtype=np.float64) * c))


def _match_grads(grads, names: list[str]) -> dict[str, Any]:
    """Pair the result of ``backward`` with ``names``. A dict is matched by name; a tuple by position
    (surplus trailing ``None`` entries, e.g. ``db`` without bias, are ignored); with a single name an
    array or a list (the gradient of a list input, as ``concat_backward`` returns) is that name's gradient."""
    if isinstance(grads, dict):
        return grads
    if len(names) == 1 and not isinstance(grads, tuple):
        return {names[0]: grads}
    if not isinstance(grads, (list, tuple)):
        raise ValueError(f"backward returned one {type(grads).__name__} but {len(names)} gradients were expected "
                         f"for {names}")
    grads = list(grads)
    while len(grads) > len(names) and grads[-1] is None:
        grads.pop()
    if len(grads) != len(names):
        raise ValueError(f"backward returned {len(grads)} gradients but {len(names)} were expected for {names} "
                         f"(pass grad_names=... to name them)")
    return dict(zip(names, grads))


def check_gradients(forward: Callable, backward: Callable, inputs: dict, *, kwargs: dict | None = None,
                    rng: np.random.Generator | int | None = None, eps: float = 1e-6, atol: float = 1e-6,
                    rtol: float = 1e-5, grad_names=None, raise_on_fail: bool = True) -> GradcheckResult:
    """Compare ``backward`` with central differences of ``forward`` on every entry of every input.

    Args:
        forward: called as ``forward(**inputs, **kwargs)``; returns ``(y, cache)`` with ``y`` an array,
            a list of arrays (e.g. ``split``) or a scalar (e.g. a loss).
        backward: called as ``backward(c, cache)`` with a random cotangent ``c`` shaped like ``y``.
        inputs: the arrays to differentiate, by argument name. A value may be a list of arrays
            (``concat``'s ``xs``). They are copied to float64 first; the caller's arrays are untouched.
        kwargs: constant arguments (strides, labels, moving statistics, ``training=...``). Float arrays
            among them are cast to float64 too, so dtypes agree.
        rng: ``numpy.random.Generator`` or seed for the cotangent.
        eps: central-difference step. atol, rtol: ``|analytic - numeric| <= atol + rtol * |numeric|``.
        grad_names: names of what ``backward`` returns, in order (default: the keys of ``inputs``);
            only those present in ``inputs`` are checked, e.g. ``("x", "w", "b")`` with
            ``inputs={"w": w}`` checks only ``dw``.
        raise_on_fail: raise :class:`GradientCheckError` on failure (default) instead of returning.

    Returns:
        :class:`GradcheckResult` (``passed``, ``max_abs_err``, ``max_rel_err``, ``worst``, ...).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    inputs = {name: _to_float64(value) for name, value in inputs.items()}
    kwargs = {name: _to_float64(value) for name, value in (kwargs or {}).items()}
    names = list(grad_names) if grad_names is not None else list(inputs)
    for name in inputs:
        if name not in names:
            raise ValueError(f"input {name!r} is not among grad_names {names}")

    # analytic: one forward and one backward with a random cotangent c
    y, cache = forward(**inputs, **kwargs)
    c = _random_like(y, rng)
    by_name = _match_grads(backward(c, cache), names)

    def loss() -> float:                  # L(x) = <f(x), c>, re-evaluated after each perturbation
        return _inner(forward(**inputs, **kwargs)[0], c)

    checked, per_input = [], {}
    for name, value in inputs.items():
        grad = by_name.get(name)
        analytic_leaves = _leaves(name, grad) if grad is not None else None
        for k, (label, x) in enumerate(_leaves(name, value)):
            if analytic_leaves is None or len(analytic_leaves) <= k:
                raise ValueError(f"backward returned no gradient for input {label}")
            a = np.asarray(analytic_leaves[k][1], dtype=np.float64)
            if a.shape != x.shape:
                raise ValueError(f"gradient of {label} has shape {a.shape}, expected {x.shape}")
            n = numerical_gradient(loss, x, eps)
            checked.append((label, a, n))

    worst, worst_excess, max_abs, max_rel, total = None, -1.0, 0.0, 0.0, 0
    for label, a, n in checked:
        err = np.abs(a - n)
        scale = np.maximum(np.abs(a), np.abs(n))
        rel = np.where(scale > atol, err / np.where(scale > 0, scale, 1.0), 0.0)
        excess = err / (atol + rtol * np.abs(n))        # > 1 means outside tolerance
        per_input[label] = (float(err.max(initial=0.0)), float(rel.max(initial=0.0)))
        max_abs, max_rel, total = max(max_abs, per_input[label][0]), max(max_rel, per_input[label][1]), total + a.size
        if a.size and excess.max() > worst_excess:
            k = np.unravel_index(int(np.argmax(excess)), a.shape)
            worst_excess = float(excess[k])
            worst = (label, tuple(int(i) for i in k), float(a[k]), float(n[k]))
    result = GradcheckResult(passed=bool(worst_excess <= 1.0), max_abs_err=max_abs, max_rel_err=max_rel,
                             worst=worst or ("-", (), 0.0, 0.0), n_checked=total, atol=atol, rtol=rtol,
                             per_input=per_input)
    if raise_on_fail and not result.passed:
        raise GradientCheckError(result)
    return result
