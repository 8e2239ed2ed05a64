"""The parity exercises (``tinydeeplab.exercises.parity``, notebook 13) and the fixture reader: the
reference passes, each characteristic mistake (written as a student would write it) is named, and the
fixture's Keras activations line up with tinydeeplab's stages."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tinydeeplab import load_keras_preset
from tinydeeplab.exercises import ExerciseFailure, check
from tinydeeplab.exercises.parity import keras_fixture_stages
from tinydeeplab.parity import compare, tinydeeplab_stages

FIXTURES = Path(__file__).parent / "fixtures"


def paths(layers, mistake=None):
    """A student's layout rule with switchable mistakes."""
    seen, out = {}, {}
    for module, cls in layers:
        snake = {"Conv2D": "conv2d", "BatchNormalization": "batch_normalization"}[cls]
        if mistake == "lower":
            snake = cls.lower()
        key = "any" if mistake == "one counter" else cls
        seen[key] = seen.get(key, -1) + 1
        i = seen[key] + (1 if mistake == "from one" else 0)
        group = snake if i == 0 else f"{snake}_{i}"
        names = ["kernel"] if cls == "Conv2D" else ["gamma", "beta", "moving_mean", "moving_variance"]
        if mistake == "sorted vars":
            names = sorted(names)
        root = "layers/" if mistake == "no functional" else "layers/functional/layers/"
        for j, var in enumerate(names):
            out[f"{module}.{var}"] = f"{root}{group}/vars/{j}"
    if mistake == "bias":
        out.update({f"{m}.bias": "x" for m, c in layers if c == "Conv2D"})
    return out


def first_bad(ours, theirs, tolerance, mistake=None):
    rel = {}
    for name, want in theirs.items():
        scale = 1.0 if mistake == "absolute" else np.abs(want).max()
        rel[name] = np.abs(ours[name] - want).max() / scale
    bad = [k for k in (sorted(theirs) if mistake == "sorted" else theirs) if rel[k] > tolerance]
    if not bad:
        return None
    if mistake == "worst":
        return max(bad, key=rel.get)
    return bad[-1] if mistake == "last" else bad[0]


def test_the_references_pass():
    assert check("keras_encoder_paths", paths).startswith("keras_encoder_paths: passed")
    assert check("first_diverging_stage", first_bad).startswith("first_diverging_stage: passed (13 cases")


@pytest.mark.parametrize("mistake, said", [
    ("lower", "class names are snake case"),
    ("one counter", "the counter is per class"),
    ("from one", "the counter starts at 0"),
    ("sorted vars", "gamma, beta, moving_mean, moving_variance as vars/0..3"),
    ("no functional", "its layers live under layers/functional/layers/"),
    ("bias", "wrong keys: missing [], unexpected ['stack0.block0.conv1.conv.bias'"),
])
def test_keras_encoder_paths_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("keras_encoder_paths", lambda layers: paths(layers, mistake))


@pytest.mark.parametrize("mistake, said", [
    ("worst", "you returned the stage with the largest relative difference"),
    ("last", "you returned the last stage past the tolerance"),
    ("absolute", "compare the *relative* difference"),
    ("sorted", "in forward order (the dict's order), not sorted by name"),
])
def test_first_diverging_stage_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure, match=re.escape(said)):
        check("first_diverging_stage", lambda o, t, tol: first_bad(o, t, tol, mistake))


@pytest.mark.parametrize("name", ["v3_tiny", "v3plus_tiny"])
def test_fixture_stages_are_keras_numbers_that_tinydeeplab_matches(name):
    model = load_keras_preset(FIXTURES / name / "preset")
    x, keras = keras_fixture_stages(FIXTURES / name, model)
    ours = tinydeeplab_stages(model, x)
    assert list(keras) == list(ours)                          # the same stages, in forward order
    rows = compare(ours, keras)
    assert all(r["relative"] <= 1e-4 for r in rows), rows
    broken = {k: v.copy() for k, v in ours.items()}
    broken["backbone.aspp"] += 1.0                            # not a copy of ours: a wrong one is flagged
    assert [r["stage"] for r in compare(broken, keras) if r["relative"] > 1e-4] == ["backbone.aspp"]
