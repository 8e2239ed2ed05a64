"""The V3+ decoder checkers (notebook 09): ``decoder_shapes`` and ``boundary_accuracy``.

The references are checked against something independent (the shapes recorded in a real forward pass,
a brute-force distance), and each named mistake is written the way a student would write it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from tinydeeplab.exercises import ExerciseFailure, check
from tinydeeplab.exercises.decoder import boundary_accuracy, boundary_distance, decoder_shapes, label_edges
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
from tinydeeplab.nn.hooks import record_outputs

RECORDED = {"aspp": "backbone.aspp", "upsampled": "backbone.encoder_upsample",
            "projection": "backbone.low_level_projection", "concat": "backbone.concat", "head": "backbone.head",
            "classes": "output_conv", "logits": "output_upsample"}


# --- decoder_shapes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("height, width, output_stride", [(65, 49, 16), (37, 64, 8), (64, 64, 32)])
def test_reference_shapes_match_a_forward_pass(height, width, output_stride):
    enc = ResNetBackbone([4], [7], [4, 4, 4, 4], [1, 1, 1, 1], [1, 2, 2, 2], output_stride=output_stride, seed=0)
    model = DeepLabV3ImageSegmenter(DeepLabV3Backbone(enc, "P5", 4, [1, 2], low_level_feature_key="P2",
                                                      projection_filters=3, num_channels=8, seed=0), 5, seed=0)
    with record_outputs(model, list(RECORDED.values())) as seen:
        model.forward(np.zeros((1, height, width, 3), np.float32))
    expected = decoder_shapes(height, width, output_stride, 8, enc.pyramid_channels["P2"], 3, 5)
    assert {stage: seen[name].shape[1:] for stage, name in RECORDED.items()} == expected


def shapes_student(h, w, os_, aspp, low, proj, k, mistake=None):
    if mistake == "floor":
        h5, w5 = h // os_, w // os_
    else:
        h5, w5 = math.ceil(h / os_), math.ceil(w / os_)
    if mistake == "factor":
        h2, w2 = h5 * (os_ // 4), w5 * (os_ // 4)
    else:
        h2, w2 = math.ceil(h / 4), math.ceil(w / 4)
    cat = aspp + (low if mistake == "raw_concat" else proj)
    return {"aspp": (h5, w5, aspp), "upsampled": (h2, w2, aspp), "projection": (h2, w2, proj),
            "concat": (h2, w2, cat), "head": (h2, w2, aspp), "classes": (h2, w2, k),
            "logits": (h2, w2, k) if mistake == "no_final_resize" else (h, w, k)}


def test_decoder_shapes_reference_passes():
    assert check("decoder_shapes", decoder_shapes).startswith("decoder_shapes: passed")
    assert check("decoder_shapes", shapes_student).startswith("decoder_shapes: passed")


@pytest.mark.parametrize("mistake, said", [("floor", "aspp is (32, 32, 256), expected (33, 33, 256): each "
                                                     "stride-2 layer rounds *up*"),
                                           ("factor", "upsampled is (132, 132, 256), expected (129, 129, 256): "
                                                      "the decoder resizes the ASPP output to P2's own size"),
                                           ("raw_concat", "holds the *projected* low-level features"),
                                           ("no_final_resize", "resized to the input's size at the end")])
def test_decoder_shapes_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure) as err:
        check("decoder_shapes", lambda *args: shapes_student(*args, mistake=mistake))
    assert said in str(err.value)


def test_decoder_shapes_wants_every_stage():
    with pytest.raises(ExerciseFailure, match=r"lacks the stages \['classes', 'logits'\]"):
        check("decoder_shapes", lambda *a: {k: v for k, v in shapes_student(*a).items() if k not in ("classes", "logits")})


# --- boundary_accuracy ------------------------------------------------------------------------------------------

def test_boundary_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    label = (rng.random((9, 11)) < 0.15).astype(np.int64)
    edges = label_edges(label)
    ey, ex = np.nonzero(edges)
    yy, xx = np.mgrid[:9, :11]
    brute = np.sqrt((yy[..., None] - ey) ** 2 + (xx[..., None] - ex) ** 2).min(axis=-1)
    assert np.allclose(boundary_distance(label), brute)
    # an edge pixel has a 4-neighbour of another class, by brute force
    padded = np.pad(label, 1, constant_values=-1)
    neighbour_differs = np.zeros_like(edges)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        other = padded[1 + dy:10 + dy, 1 + dx:12 + dx]
        neighbour_differs |= (other != -1) & (other != label)
    assert np.array_equal(edges, neighbour_differs)


def accuracy_student(pred, label, distance, max_distance, ignore_label=255, mistake=None):
    keep = np.ones(label.shape, bool) if mistake == "no_ignore" else label != ignore_label
    d = np.round(distance) if mistake == "round" else np.floor(distance)
    bins = d.astype(int) if mistake == "no_clip" else np.minimum(d.astype(int), max_distance)
    accuracy, counts = [], []
    for k in range(max_distance + 1):
        here = keep & (bins == k)
        counts.append(int(here.sum()))
        hit = (pred == label)[here].mean() if here.any() else np.nan
        accuracy.append(1 - hit if mistake == "error_rate" else hit)
    return np.array(accuracy), np.array(counts)


def test_boundary_accuracy_reference_passes():
    assert check("boundary_accuracy", boundary_accuracy).startswith("boundary_accuracy: passed")
    assert check("boundary_accuracy", accuracy_student).startswith("boundary_accuracy: passed")


@pytest.mark.parametrize("mistake, said", [("no_ignore", "ignore label must be left out"),
                                           ("round", "use floor, not round"),
                                           ("no_clip", "the last bin holds every pixel at distance >= max"),
                                           ("error_rate", "you computed the error rate")])
def test_boundary_accuracy_names_the_mistake(mistake, said):
    with pytest.raises(ExerciseFailure) as err:
        check("boundary_accuracy", lambda *args: accuracy_student(*args, mistake=mistake))
    assert said in str(err.value)


def test_boundary_accuracy_wants_nan_for_an_empty_bin():
    def zero_for_empty(*args):
        accuracy, counts = boundary_accuracy(*args)
        return np.nan_to_num(accuracy), counts

    with pytest.raises(ExerciseFailure, match="return NaN there, not 0"):
        check("boundary_accuracy", zero_for_empty)
