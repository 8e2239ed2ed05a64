"""The atrous-encoder checkers (notebook 08): ``receptive_field`` and ``atrous_schedule``.

The references are checked against something independent (a one-hot backward through real
convolutions; the strides of a real encoder), and each named mistake is written the way a student
would write it.
"""
from __future__ import annotations

import numpy as np
import pytest

from tinydeeplab import functional as F
from tinydeeplab.exercises import ExerciseFailure, check
from tinydeeplab.exercises.atrous import receptive_field, schedule_pairs
from tinydeeplab.models import ResNetBackbone


# --- receptive_field ------------------------------------------------------------------------------------------

def measured_field(layers, size=97):
    """Width of the input region whose pixels get a gradient from the centre output (one-hot backward)."""
    x = np.ones((1, size, size, 1))
    caches, y = [], x
    for k, s, d in layers:
        y, cache = F.conv2d_forward(y, np.ones((k, k, 1, 1)), stride=s, dilation=d, padding="same")
        caches.append(cache)
    g = np.zeros_like(y)
    g[0, y.shape[1] // 2, y.shape[2] // 2, 0] = 1.0
    for cache in reversed(caches):
        g = F.conv2d_backward(g, cache)[0]
    rows = np.flatnonzero(np.abs(g[0, :, :, 0]).sum(axis=1))
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("layers", [[(3, 1, 1)], [(3, 1, 2), (3, 1, 4)], [(7, 2, 1), (3, 2, 1), (3, 1, 1)],
                                    [(3, 2, 1), (5, 1, 2), (1, 2, 1), (3, 1, 3)]])
def test_reference_receptive_field_matches_a_one_hot_backward(layers):
    assert receptive_field(layers)[0] == measured_field(layers)


def rf_student(layers, mistake=None):
    size, jump = 1, 1
    for k, s, d in layers:
        if mistake == "jump_after":
            jump *= s
        span = (k - 1) if mistake == "no_dilation" else (k - 1) * d
        size += span * (1 if mistake == "no_jump" else jump)
        if mistake != "jump_after":
            jump *= s
    return size, jump


def test_receptive_field_reference_passes():
    assert check("receptive_field", receptive_field).startswith("receptive_field: passed")
    assert check("receptive_field", rf_student).startswith("receptive_field: passed")


@pytest.mark.parametrize("mistake, said", [("no_dilation", "the dilation is missing"),
                                           ("jump_after", "jump *after* the layer"),
                                           ("no_jump", "the jump is missing")])
def test_receptive_field_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=r"receptive_field: wrong in \d+ of \d+ cases") as err:
        check("receptive_field", lambda layers: rf_student(layers, mistake))
    assert said in str(err.value)


def test_receptive_field_wants_a_pair():
    with pytest.raises(ExerciseFailure, match=r"expected a pair \(size, jump\), got int"):
        check("receptive_field", lambda layers: rf_student(layers)[0])


# --- atrous_schedule ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("output_stride, expected", [(None, [4, 8, 16, 32]), (16, [4, 8, 16, 16]),
                                                      (8, [4, 8, 8, 8])])
def test_reference_schedule_gives_the_encoders_strides(output_stride, expected):
    enc = ResNetBackbone([4], [3], [2, 2, 2, 2], [2, 2, 2, 2], [1, 2, 2, 2], output_stride=output_stride, seed=0)
    pairs = schedule_pairs([1, 2, 2, 2], output_stride)
    assert list(enc.pyramid_strides.values()) == expected
    assert [4 * int(np.prod([s for s, _ in pairs[:i + 1]])) for i in range(4)] == expected
    rates = [d for _, d in pairs]
    assert [enc.blocks(i)[-1].conv2.conv.dilation_rate[0] for i in range(4)] == rates
    # the first block of a stage that gave up its stride keeps the stage before's rate (exact "a trous")
    assert [enc.blocks(i)[0].conv2.conv.dilation_rate[0] for i in range(4)] == [1] + rates[:-1]


def schedule_student(strides, output_stride, mistake=None):
    out, current, rate = [], (1 if mistake == "no_stem" else 4), 1
    for s in strides:
        too_far = output_stride is not None and (current * s >= output_stride if mistake == "inclusive"
                                                 else current * s > output_stride)
        if too_far:
            if mistake == "late":
                out.append((1, rate))
                rate *= s
            else:
                rate = s if mistake == "no_compound" else rate * s
                out.append((1, rate))
        else:
            current *= s
            out.append((s, rate))
    return [(d, s) for s, d in out] if mistake == "swapped" else out


def test_atrous_schedule_reference_passes():
    assert check("atrous_schedule", schedule_pairs).startswith("atrous_schedule: passed")
    assert check("atrous_schedule", schedule_student).startswith("atrous_schedule: passed")


@pytest.mark.parametrize("mistake, said", [("no_compound", "the dilations must compound"),
                                           ("inclusive", "lands exactly on the output stride"),
                                           ("no_stem", "the stem already divides by 4"),
                                           ("late", "only from the stage after it"),
                                           ("swapped", "you returned (dilation, stride)")])
def test_atrous_schedule_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=r"atrous_schedule: wrong in \d+ of \d+ cases") as err:
        check("atrous_schedule", lambda strides, os_: schedule_student(strides, os_, mistake))
    assert said in str(err.value)


def test_atrous_schedule_must_not_modify_its_input():
    def in_place(strides, output_stride):
        pairs = schedule_pairs(strides, output_stride)
        strides[:] = [s for s, _ in pairs]                # the package's own function works in place
        return pairs

    with pytest.raises(ExerciseFailure, match="modified the strides list"):
        check("atrous_schedule", in_place)
