"""Atrous-encoder exercises (notebook 08): the receptive field of a stack of layers, and the atrous schedule.

=================  ===============================================================  ==============================
name               the student writes                                               reference
=================  ===============================================================  ==============================
receptive_field    ``fn(layers) -> (size, jump)`` for ``layers`` a list of           :func:`receptive_field`
                   ``(kernel, stride, dilation)`` from the input to the output
atrous_schedule    ``fn(strides, output_stride) -> [(stride, dilation), ...]``,      ``models.resnet.atrous_schedule``
                   one pair per stage (the stem already divides by 4)
=================  ===============================================================  ==============================

The receptive field of ``L`` layers, the ``i``-th with kernel ``k_i``, stride ``s_i`` and dilation ``d_i``::

    J_0 = 1,  J_i = s_1 s_2 ... s_i                         (the jump: input pixels between two outputs of layer i)
    size = 1 + sum_i (k_i - 1) d_i J_{i-1}                  (each layer widens the field by its span on the input)

>>> from tinydeeplab.exercises import check
>>> check("receptive_field", lambda layers: (1 + sum(k - 1 for k, s, d in layers), 1))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: receptive_field: wrong in ... cases, first: got ...
"""
from __future__ import annotations

import numpy as np

from ..models.resnet import atrous_schedule as _package_schedule
from . import exercise
from ._grading import attempt, fail, judge_cases

STEM_STRIDE = 4                     # the ResNet stem (stride-2 conv, stride-2 max pool)


def receptive_field(layers) -> tuple[int, int]:
    """``(size, jump)`` of a stack of ``(kernel, stride, dilation)`` layers, input first.

    >>> receptive_field([(7, 2, 1), (3, 2, 1), (3, 1, 1)])       # a ResNet stem and one 3x3 conv
    (19, 4)
    >>> receptive_field([(3, 1, 2), (3, 1, 4)])                    # rates add up: 1 + 2*2 + 2*4
    (13, 1)
    """
    size, jump = 1, 1
    for kernel, stride, dilation in layers:
        size += (kernel - 1) * dilation * jump
        jump *= stride
    return size, jump


def schedule_pairs(strides, output_stride) -> list[tuple[int, int]]:
    """The package's schedule as ``[(stride, dilation), ...]`` per stage (the input list is not modified).

    >>> schedule_pairs([1, 2, 2, 2], 16)
    [(1, 1), (2, 1), (2, 1), (1, 2)]
    """
    s, d = _package_schedule(list(strides), output_stride)
    return [(int(a), int(b)) for a, b in zip(s, d)]


# --- receptive_field ------------------------------------------------------------------------------------------

def _rf_variants(layers):
    """Known wrong answers for one case, each with the mistake behind it."""
    def field(span, jump_of):
        size, jump = 1, 1
        for k, s, d in layers:
            size += span(k, d) * jump_of(jump, s)
            jump *= s
        return size, jump
    prod = int(np.prod([s for _, s, _ in layers])) if layers else 1
    last = layers[-1][1] if layers else 1
    return [(field(lambda k, d: k - 1, lambda j, s: j), "the dilation is missing: a k x k filter at rate d "
                                                           "spans (k - 1) d + 1 pixels of its input"),
            (field(lambda k, d: (k - 1) * d, lambda j, s: j * s), "you used the jump *after* the layer: a "
             "layer's span is measured in the pixels of its input, whose spacing is the product of the strides "
             "of the layers before it"),
            (field(lambda k, d: (k - 1) * d, lambda j, s: 1), "the jump is missing: a layer after a stride-2 "
             "layer moves 2 input pixels per step, so its span counts J_{i-1} = s_1 ... s_{i-1} times"),
            ((field(lambda k, d: (k - 1) * d, lambda j, s: j)[0], prod // last),
             "the jump should include the last layer's stride: J = s_1 s_2 ... s_L"),
            (field(lambda k, d: (k - 1) * d + 1, lambda j, s: j), "you added the full effective kernel "
             "(k - 1) d + 1 per layer: each layer adds (k - 1) d (times the jump) to the field; the 1 is counted "
             "once")]


@exercise("receptive_field", "receptive field (size, jump) of a stack of (kernel, stride, dilation) layers")
def _check_receptive_field(fn):
    rng = np.random.default_rng(8)
    cases = [dict(layers=[]), dict(layers=[(3, 1, 1)]), dict(layers=[(7, 2, 1), (3, 2, 1)])]
    for _ in range(40):
        n = int(rng.integers(2, 7))
        cases.append(dict(layers=[(int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 2, 2])),
                                   int(rng.choice([1, 2, 4]))) for _ in range(n)]))
    got = []
    for case in cases:
        value = attempt(fn, case, list(case["layers"]))
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            fail(f"expected a pair (size, jump), got {type(value).__name__}"
                 + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""), case)
        got.append(tuple(value))
    judge_cases(cases, got, [receptive_field(c["layers"]) for c in cases],
                [_rf_variants(c["layers"]) for c in cases],
                same=lambda a, b: tuple(a) == tuple(b),
                show=lambda v: str(tuple(v)))
    return f"{len(cases)} cases"


# --- atrous_schedule ------------------------------------------------------------------------------------------

def _variant_schedule(strides, output_stride, *, stem=STEM_STRIDE, compound=True, inclusive=False, late=False):
    """The schedule with one switchable mistake: no compounding, ``>=``, no stem, dilation one stage late."""
    out, total, dilation = [], stem, 1
    for st in strides:
        if output_stride is not None and (total * st >= output_stride if inclusive else total * st > output_stride):
            before = dilation
            dilation = dilation * st if compound else st
            out.append((1, before if late else dilation))
        else:
            total *= st
            out.append((st, dilation))
    return out


def _schedule_variants(strides, output_stride):
    return [(_variant_schedule(strides, output_stride, compound=False),
             "the dilations must compound: each stage that gives up a stride 2 doubles the rate of every "
             "stage after it (OS8 on (1, 2, 2, 2) -> rates 1, 1, 2, 4, not 1, 1, 2, 2)"),
            (_variant_schedule(strides, output_stride, inclusive=True),
             "you also dilated the stage whose stride lands exactly on the output stride: keep the stride while "
             "total * stride <= output_stride (use > to decide)"),
            (_variant_schedule(strides, output_stride, stem=1),
             "the stem already divides by 4 (stride-2 conv, stride-2 max pool): start the running stride at 4"),
            (_variant_schedule(strides, output_stride, late=True),
             "the stage that gives up its stride already uses the multiplied rate (in tinydeeplab, as in "
             "DeepLab's schedule): you raised the rate only from the stage after it"),
            ([(d, s) for s, d in schedule_pairs(strides, output_stride)],
             "each pair is (stride, dilation): you returned (dilation, stride)")]


@exercise("atrous_schedule", "per-stage (stride, dilation) that reaches a target output stride, DeepLab's way")
def _check_atrous_schedule(fn):
    cases = [dict(strides=list(s), output_stride=o)
             for s in ((1, 2, 2, 2), (1, 2, 2, 2, 2), (1, 2, 2), (2, 2, 2, 2), (1, 1, 2, 2), (1, 2, 1, 2, 2))
             for o in (8, 16, 32, None)]
    got = []
    for case in cases:
        strides = list(case["strides"])
        value = attempt(fn, case, strides, case["output_stride"])
        if strides != case["strides"]:
            fail(f"your function modified the strides list it was given (now {strides}): copy it first", case)
        if not isinstance(value, (tuple, list)) or len(value) != len(strides) or \
                not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value):
            fail(f"expected a list of {len(strides)} (stride, dilation) pairs, one per stage, got {value!r}", case)
        got.append([tuple(p) for p in value])
    judge_cases(cases, got, [schedule_pairs(c["strides"], c["output_stride"]) for c in cases],
                [_schedule_variants(c["strides"], c["output_stride"]) for c in cases],
                same=lambda a, b: [tuple(p) for p in a] == [tuple(p) for p in b],
                show=lambda v: str([tuple(p) for p in v]))
    return f"{len(cases)} cases"
