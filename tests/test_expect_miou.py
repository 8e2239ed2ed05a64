"""``tinydeeplab evaluate --expect-miou X --tolerance T``: the reference-mIoU check, through the CLI.

Two references, both computed by Keras, never by tinydeeplab:

* ``fixtures/keras_trained_tiny``: a tiny DeepLabV3 *trained by KerasHub* on a synthetic 3-class task,
  its validation images and the mIoU Keras measured on them (``keras_miou.json``), all written by
  ``tools/make_keras_trained_fixture.py``. The command line must reproduce that number from the preset
  and the images alone: the one-command answer to "does my import reproduce the reference mIoU?".
* ``fixtures/v3_tiny``'s raw-image parity case: two uint8 images and KerasHub's ``seg.predict`` logits
  for them. The expected mIoU is counted here in plain NumPy from those logits (resized back to the
  image, as the evaluation protocol does) against labels made for the test.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinydeeplab.cli import main
from tinydeeplab.functional.resize import bilinear_resize_forward

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "v3_tiny"
TRAINED = FIXTURES / "keras_trained_tiny"
K = 5                                                              # classes of the v3_tiny preset


def _folder(root, images, labels):
    """``root/val/{images,masks}/{i}.png``: a folder dataset's val split of these arrays; returns ``root``."""
    for sub in ("images", "masks"):
        (root / "val" / sub).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(root / "val" / "images" / f"{i}.png")
        Image.fromarray(label).save(root / "val" / "masks" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def keras_trained(tmp_path_factory):
    """The Keras-trained fixture's validation split as a folder dataset, and Keras's record of it."""
    with np.load(TRAINED / "val.npz", allow_pickle=False) as val:
        images, labels = val["images"], val["labels"]              # (6, 48, 80, 3), (6, 48, 80) uint8
    root = _folder(tmp_path_factory.mktemp("keras_trained"), images, labels)
    return root, json.loads((TRAINED / "keras_miou.json").read_text())


def _evaluate_trained(root, *extra):
    return main(["evaluate", "--preset", str(TRAINED / "preset"), "--dataset", "folder", "--data", str(root),
                 "--num-classes", "3", *extra])


def test_expect_miou_reproduces_the_miou_keras_measured_on_its_own_trained_preset(keras_trained, capsys):
    root, record = keras_trained
    assert record["miou"] > 0.5                                    # a trained model, not a random one
    # 1 of the 22,552 labelled pixels gets another argmax than in Keras (Keras's smallest top-2 logit
    # margin, recorded, is 4.4e-4: float32 round-off decides it), which moves this small set's mIoU by
    # 3.2e-4; the tolerance is set just above one such pixel.
    assert _evaluate_trained(root, "--expect-miou", repr(record["miou"]), "--tolerance", "5e-4") == 0
    assert "within the tolerance 0.0005" in capsys.readouterr().out


def test_expect_miou_fails_when_the_reference_is_not_met(keras_trained, capsys):
    root, record = keras_trained
    wrong = record["miou"] - 0.02
    assert _evaluate_trained(root, "--expect-miou", f"{wrong:.6f}", "--tolerance", "0.01") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]         # after the progress lines
    assert err.startswith("tinydeeplab evaluate: reference check failed: mIoU ")
    measured = float(err.split("mIoU ")[1].split()[0])
    difference = float(err.split("difference ")[1].split(",")[0])
    assert abs(measured - record["miou"]) <= 5e-4 and abs(difference - 0.02) <= 5e-4
    assert f"vs expected {wrong:.6f}" in err and err.endswith("outside the tolerance 0.01")


def _numpy_miou(pred, label, k):
    """mIoU over the classes present in labels or predictions, 255 skipped: a confusion matrix by bincount."""
    valid = label != 255
    cm = np.bincount(k * label[valid].astype(np.int64) + pred[valid], minlength=k * k).reshape(k, k)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory):
    """A folder dataset of the fixture's raw images, and the mIoU Keras's logits score on it."""
    with np.load(FIXTURE / "cases.npz", allow_pickle=False) as cases:
        raw, keras_logits = cases["raw_pp"].astype(np.uint8), cases["logits_pp"]   # (2, 50, 70, 3), (2, 64, 96, 5)
    h, w = raw.shape[1:3]
    keras_pred = bilinear_resize_forward(keras_logits.astype(np.float64), (h, w))[0].argmax(-1)   # (2, 50, 70)
    rng = np.random.default_rng(20)
    labels = keras_pred.copy()                                     # agree with Keras on ~70 % of the pixels
    changed = rng.random(labels.shape) < 0.3
    labels[changed] = rng.integers(0, K, int(changed.sum()))
    labels[rng.random(labels.shape) < 0.05] = 255                  # some void
    labels = labels.astype(np.uint8)
    root = _folder(tmp_path_factory.mktemp("reference"), raw, labels)
    expected = _numpy_miou(keras_pred, labels, K)
    assert 0.05 < expected < 0.95                                  # a reference that can be missed either way
    return root, expected


def _evaluate(root, *extra):
    return main(["evaluate", "--preset", str(FIXTURE / "preset"), "--dataset", "folder", "--data", str(root),
                 "--num-classes", str(K), *extra])


def test_expect_miou_passes_on_the_keras_reference(keras_reference, capsys):
    root, expected = keras_reference
    assert _evaluate(root, "--expect-miou", f"{expected:.6f}", "--tolerance", "0.0005") == 0
    out = capsys.readouterr().out
    assert f"vs expected {expected:.6f}" in out and "within the tolerance 0.0005" in out


def test_expect_miou_fails_with_one_line_when_off_by_more_than_the_tolerance(keras_reference, capsys):
    root, expected = keras_reference
    wrong = expected + 0.03
    assert _evaluate(root, "--expect-miou", f"{wrong:.6f}", "--tolerance", "0.01") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]       # after the progress lines
    assert err.startswith("tinydeeplab evaluate: reference check failed: mIoU ")
    measured = float(err.split("mIoU ")[1].split()[0])
    assert abs(measured - expected) <= 5e-4                        # the measured value is reported, and right
    assert f"expected {wrong:.6f}" in err and "difference -0.03" in err and "tolerance 0.01" in err


@pytest.mark.parametrize("extra,expected", [
    (["--tolerance", "0.01"], "--tolerance 0.01 needs --expect-miou"),
    (["--expect-miou", "0.5", "--tolerance", "-0.1"], "expected a finite number >= 0"),
    (["--expect-miou", "1.5"], "expected a number in [0, 1]"),
    (["--expect-miou", "nan"], "expected a number in [0, 1]"),
])
def test_expect_miou_arguments_are_checked_in_one_line(extra, expected, capsys, tmp_path):
    assert _evaluate(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
