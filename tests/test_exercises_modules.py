"""The module exercises (``tinydeeplab.exercises.modules``, notebook 07): the reference passes, and each
characteristic mistake, written as a student would write it, is named."""
from __future__ import annotations

import re

import pytest

from tinydeeplab.exercises import ExerciseFailure, check


def fork(branches, concat, dy, mistake=None):
    parts = concat.backward(dy)
    grads = [b.backward(d) for b, d in zip(branches, parts)]
    if mistake == "last":
        return grads[-1]
    if mistake == "mean":
        return sum(grads) / len(grads)
    if mistake == "skip last":
        return sum(grads[:-1])
    return sum(grads)


def bottleneck(block, dy, mistake=None):
    d = dy if mistake == "no relu" else block.out_relu.backward(dy)
    r = d
    for layer in (block.conv3, block.conv2, block.conv1):
        r = layer.backward(r)
    if mistake == "no shortcut":
        return r
    s = dy if mistake == "raw dy to shortcut" else d
    if block.shortcut is not None:
        if mistake == "no shortcut backward":
            return r + s                        # treats the projection shortcut as an identity
        s = block.shortcut.backward(s)
    return (r + s) / 2 if mistake == "mean" else r + s


def test_the_references_pass():
    assert check("fork_backward", fork).startswith("fork_backward: passed (3 cases")
    assert check("bottleneck_backward", bottleneck).startswith("bottleneck_backward: passed (3 cases")


@pytest.mark.parametrize("mistake, said", [
    ("last", "you returned the gradient of the last branch only"),
    ("mean", "you averaged the branches' gradients"),
    ("skip last", "the last branch's gradient is missing"),
])
def test_fork_backward_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("fork_backward", lambda b, c, dy: fork(b, c, dy, mistake))


def test_fork_backward_names_a_branch_whose_backward_never_ran():
    def lazy(branches, concat, dy):           # the right dx, but branch 0's parameter gradients wiped
        parts = concat.backward(dy)
        dx = 0
        for k, (b, d) in enumerate(zip(branches, parts)):
            dx = dx + b.backward(d)
            if k == 0:
                b.zero_grad()
        return dx

    with pytest.raises(ExerciseFailure, match=r"branch 0's kernel gradient is zero: that module's backward was "
                                              r"never called"):
        check("fork_backward", lazy)


@pytest.mark.parametrize("mistake, said", [
    ("no shortcut", "dx lacks the shortcut branch's gradient"),
    ("no relu", "you skipped the backward of the ReLU after the add"),
    ("raw dy to shortcut", "the shortcut got dy without the final ReLU's mask"),
    ("mean", "you averaged the two branches' gradients"),
])
def test_bottleneck_backward_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("bottleneck_backward", lambda block, dy: bottleneck(block, dy, mistake))


def test_bottleneck_backward_treating_the_projection_as_identity_fails_with_the_case():
    with pytest.raises(ExerciseFailure, match=r"shortcut '1x1 conv \+ BN'") as info:
        check("bottleneck_backward", lambda block, dy: bottleneck(block, dy, "no shortcut backward"))
    assert info.value.case["shortcut"] == "1x1 conv + BN"
