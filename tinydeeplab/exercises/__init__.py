"""Graders for the notebook exercises: ``check(name, fn)`` says *what* is wrong with a student's function.

A student writes a function in a notebook (or anywhere) and hands it to :func:`check` with the
exercise's name. The checker runs it on a few seeded random cases, compares the result with
tinydeeplab's reference ops (:mod:`tinydeeplab.functional`), checks a backward pass against float64
central differences, and either returns a one-line success message or raises
:class:`ExerciseFailure` (an ``AssertionError``) whose message names the problem: a function that
still raises ``NotImplementedError`` ("not implemented yet"), a wrong shape or dtype (expected vs
got), a flipped sign, a constant factor, a *characteristic mistake* recognised by comparing with
known wrong variants (e.g. "your dx lacks the mean-of-dy term"), or else the first entries that
differ, with their indices and values. The failing case is attached as ``err.case`` (a dict of the
inputs) so it can be replayed.

>>> import numpy as np
>>> from tinydeeplab.exercises import check, ExerciseFailure
>>> from tinydeeplab.functional.geometry import same_padding_1d
>>> print(check("keras_same_padding", same_padding_1d))
keras_same_padding: passed (1280 cases)
>>> def stub(size, k, s, d):
...     raise NotImplementedError("exercise: keras_same_padding")
>>> check("keras_same_padding", stub)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: keras_same_padding: not implemented yet (your function raises NotImplementedError...)

Writing a topic module (how the package grows)
==============================================
One module per topic, e.g. ``tinydeeplab/exercises/conv.py``; every module of this package whose
name does not start with ``_`` is imported on first use (``pkgutil``), so a new topic needs no edit
here. A module registers each checker with the :func:`exercise` decorator::

    from . import exercise
    from ._grading import attempt, compare, Variant

    @exercise("relu_forward", "ReLU forward: max(x, 0)")
    def _check_relu(fn):
        rng = np.random.default_rng(0)                      # seeded: the verdict is deterministic
        for k in range(3):
            x = rng.standard_normal((2, 3, 4, 5))
            case = {"x": x}
            got = attempt(fn, case, x)                      # NotImplementedError -> "not implemented yet"
            compare(got, np.maximum(x, 0), "relu(x)", case,
                    variants=[Variant(np.abs(x), "you returned |x|: negative inputs must give 0")])
        return "3 cases"                                    # check() prefixes "<name>: passed (...)"

The helpers in ``tinydeeplab.exercises._grading`` do the diagnosis: :func:`~._grading.attempt` calls the
student's function (turning its exceptions into a failure that names the case), :func:`~._grading.compare`
checks type, shape, dtype, NaNs, the known wrong ``variants``, a sign flip, a constant factor, then lists
the first differing entries; :func:`~._grading.check_backward` runs the float64 central-difference check.
For exercises with many tiny cases (a number or a pair per case) :func:`~._grading.judge_cases` names a
mistake only if it explains every case. Keep a checker under 2 s (small shapes, few cases) and
deterministic (seeded draws, no hypothesis at run time: students do not need it installed). Names are
global across notebooks: prefix nothing, but do not reuse one.

Tests: ``tests/test_exercises.py`` already runs a stub through every registered checker (it must say
"not implemented"); for a new topic add ``tests/test_exercises_<topic>.py`` showing that the checker
passes a reference solution and names each characteristic mistake it claims to detect, with wrong
solutions written as a student would write them. How a notebook marks the exercise and calls the
checker is in ``tools/build_notebooks.py``'s docstring.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

from ..errors import OptionError

__all__ = ["check", "exercise", "names", "describe", "ExerciseFailure", "Exercise"]


class ExerciseFailure(AssertionError):
    """A student's function failed its checker; the message says what is wrong (and ``case`` where)."""

    def __init__(self, message: str, case: dict | None = None):
        super().__init__(message)
        self.case = case


@dataclass(frozen=True)
class Exercise:
    """A registered checker: ``checker(fn)`` returns a short detail string or raises ExerciseFailure."""

    name: str
    summary: str
    checker: Callable
    module: str


_REGISTRY: dict[str, Exercise] = {}
_discovered = False


def exercise(name: str, summary: str):
    """Decorator registering ``checker(fn) -> str`` under ``name`` (unique across the package)."""
    def register(checker):
        if name in _REGISTRY and _REGISTRY[name].checker is not checker:
            raise RuntimeError(f"exercise {name!r} is registered twice ({_REGISTRY[name].module}, "
                               f"{checker.__module__})")
        _REGISTRY[name] = Exercise(name, summary, checker, checker.__module__)
        return checker
    return register


def _discover() -> None:
    """Import every topic module of this package once (new modules register themselves)."""
    global _discovered
    if not _discovered:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _discovered = True


def names() -> list[str]:
    """The registered exercise names, sorted.

    >>> {"conv2d_backward", "batchnorm_backward", "image_pooling_branch"} <= set(names())
    True
    """
    _discover()
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    """One line: the exercise's summary and the topic module that grades it."""
    ex = _get(name)
    return f"{ex.name}: {ex.summary} (graded by {ex.module})"


def _get(name: str) -> Exercise:
    _discover()
    if name not in _REGISTRY:
        raise OptionError(f"unknown exercise {name!r}; known exercises: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check(name: str, fn: Callable) -> str:
    """Grade ``fn`` with the checker registered as ``name``.

    Returns ``"<name>: passed (<detail>)"``; raises :class:`ExerciseFailure` with
    ``"<name>: <what is wrong>"`` otherwise, and OptionError for an unknown ``name``.
    """
    ex = _get(name)
    if not callable(fn):
        raise ExerciseFailure(f"{name}: expected a function, got {type(fn).__name__}")
    try:
        detail = ex.checker(fn)
    except ExerciseFailure as err:
        raise ExerciseFailure(f"{name}: {err}", err.case) from err.__cause__
    return f"{name}: passed ({detail})"
