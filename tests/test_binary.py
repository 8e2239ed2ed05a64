"""Binary (one-class) segmentation: the refused one-class softmax, the training loss by name, a sigmoid head's
gradients through the whole model, the prediction rule (logit > 0) in segment / TTA / tiling, foreground IoU
and Dice in evaluate, the one-vs-rest dataset, the command line, and a tiny run that learns."""
from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from PIL import Image

from backends import BACKENDS, NEEDS_CUDA, host, on
from model_factories import randomize_batchnorm, tiny_segmenter
from test_cli import _folder_dataset      # masks 0 / 1 with an ignored column: a binary folder dataset
from tinydeeplab import functional as F
from tinydeeplab import use_backend
from tinydeeplab.cli import main
from tinydeeplab.data import OneVsRest, SyntheticShapes
from tinydeeplab.errors import DatasetError, TrainingError
from tinydeeplab.gradcheck import numerical_gradient
from tinydeeplab.models.head import logits_of, predicted_labels, probabilities
from tinydeeplab.models.recipes import build_model
from tinydeeplab.train import ConfusionMatrix, evaluate, predict_logits, segment_tiled
from tinydeeplab.train.builder import build_trainer
from tinydeeplab.train.losses import LOSSES, SegmentationLoss


# -- the one-class softmax, refused --------------------------------------------------------------
def test_one_class_softmax_really_learns_nothing():
    """The fact behind the refusal: with one class the softmax is 1, the loss 0 and the gradient 0 for any logits."""
    logits = np.random.default_rng(0).standard_normal((2, 3, 3, 1)) * 10
    loss, cache = F.softmax_cross_entropy_forward(logits, np.zeros((2, 3, 3), np.int64))
    assert loss == 0.0
    assert np.all(F.softmax_cross_entropy_backward(1.0, cache) == 0.0)


def test_one_class_softmax_is_refused_with_the_reason_in_one_line():
    with pytest.raises(TrainingError) as info:
        SegmentationLoss("ce", num_classes=1)
    message = str(info.value)
    assert "\n" not in message
    assert "num_classes=1" in message and "constant 1" in message and "gradient is zero" in message
    model = build_model("tiny", 1)
    data = OneVsRest(SyntheticShapes(2, size=(16, 16)), "circle")
    with tempfile.TemporaryDirectory() as d, pytest.raises(TrainingError, match="constant 1"):
        build_trainer(model, data, out_dir=d, epochs=1, batch_size=2, crop=None, loss="ce", progress=False)


@pytest.mark.parametrize("name,k,kwargs,message", [
    ("bce", 3, {}, "loss bce is a binary loss: it needs a one-logit head"),
    ("dice", 2, {}, "the model has 2 classes; use ce"),
    ("bce", 1, {"class_weights": np.ones(2, np.float32)}, "class weights weight the softmax cross-entropy"),
    ("hinge", 1, {}, "loss must be one of ce, bce, dice, focal, bce\\+dice, got 'hinge'"),
])
def test_bad_loss_choices_are_named(name, k, kwargs, message):
    with pytest.raises(TrainingError, match=message):
        SegmentationLoss(name, k, **kwargs)


def test_default_loss_follows_the_head():
    assert SegmentationLoss(None, 1).name == "bce" and SegmentationLoss(None, 5).name == "ce"


@pytest.mark.parametrize("backend", ["numpy", *BACKENDS])
def test_bce_plus_dice_is_the_sum_of_its_terms(rng, backend):
    """On every backend (on cuda the logits and the gradient are device arrays): the sum of the two ops."""
    logits = rng.standard_normal((2, 4, 5, 1)).astype(np.float32)
    labels = rng.integers(0, 2, (2, 4, 5))
    labels[0, 0] = 255
    with use_backend(backend):
        loss, cache = SegmentationLoss("bce+dice", 1).forward(on(backend, logits), labels)
        grad = host(SegmentationLoss("bce+dice", 1).backward(0.5, cache))
    bce, c_bce = F.sigmoid_binary_cross_entropy_forward(logits, labels)
    dice, c_dice = F.dice_loss_forward(logits, labels)
    assert loss == pytest.approx(bce + dice, rel=1e-12) and cache["total"] == int((labels != 255).sum())
    np.testing.assert_allclose(grad, F.sigmoid_binary_cross_entropy_backward(0.5, c_bce)
                               + F.dice_loss_backward(0.5, c_dice), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=[NEEDS_CUDA, pytest.mark.slow])])
def test_binary_training_step_on_every_backend_matches_numpy(backend):
    """Forward, bce+dice, backward of a one-logit model as the trainer runs them (on cuda: device arrays
    throughout, the loss on a host copy of the logits): the same loss and weight gradients as numpy."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
    y = rng.integers(0, 2, (2, 16, 16))
    y[1, :3] = 255
    results = {}
    for name in ("numpy", backend):
        model = randomize_batchnorm(tiny_segmenter(num_classes=1), np.random.default_rng(1))
        loss = SegmentationLoss("bce+dice", 1)
        with use_backend(name):
            model.to(name)
            value, cache = loss.forward(model.forward(on(name, x), training=True), y)
            model.backward(loss.backward(1.0, cache))
            results[name] = value, {k: host(g) for k, g in model.named_gradients()}
            model.to("numpy")
    (ref, ref_grads), (got, got_grads) = results["numpy"], results[backend]
    assert got == pytest.approx(ref, rel=1e-5)
    for k, g in ref_grads.items():
        np.testing.assert_allclose(got_grads[k], g, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(g).max()), err_msg=k)


# -- gradients of a sigmoid head through the whole model ----------------------------------------------
def _check_binary_model(name, x_shape, keys=None):
    """L = loss(model(x), y) of a one-logit DeepLab: the hand-written backward (loss, then model) against
    float64 central differences on every input pixel and every entry of the parameters ``keys`` (all: None),
    BN in inference mode. Returns the number of parameter entries checked."""
    rng = np.random.default_rng(5)
    model = randomize_batchnorm(tiny_segmenter(num_classes=1, blocks=(1, 1)), rng).astype(np.float64)
    assert model.num_classes == 1
    x = rng.normal(size=x_shape)
    y = rng.integers(0, 2, x_shape[:3])
    y[0, :2, :2] = 255
    loss = SegmentationLoss(name, 1)
    with use_backend("numpy"):
        value, cache = loss.forward(model.forward(x), y)
        dx = model.backward(loss.backward(1.0, cache))
        grads = {k: g.copy() for k, g in model.named_gradients() if keys is None or k in keys}
        state = {k: v.copy() for k, v in model.state_dict().items()}

        def total():
            model.load_state_dict(state)
            return loss.forward(model.forward(x), y)[0]
        assert total() == pytest.approx(value, rel=1e-12)
        params = dict(model.slots())
        for key, g in grads.items():
            table, slot = params[key]
            arr = state[key]
            numeric = numerical_gradient(lambda: (table.__setitem__(slot, arr), total())[1], arr)
            np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8, err_msg=key)
        np.testing.assert_allclose(dx, numerical_gradient(total, x), rtol=1e-5, atol=1e-8, err_msg="input")
    return sum(state[k].size for k in grads), model


@pytest.mark.parametrize("name", ["bce", "dice", "focal", "bce+dice"])
def test_sigmoid_head_gradient_every_entry(name):
    """The head (1x1 classifier kernel and the BN before it) and every input pixel, for each binary loss."""
    head = ("output_conv.kernel", "backbone.head.bn.gamma", "backbone.head.bn.beta")
    checked, model = _check_binary_model(name, (1, 5, 4, 3), keys=head)
    assert checked == model.output_conv.params["kernel"].size + 2 * 4


@pytest.mark.slow
def test_binary_model_gradient_every_parameter():
    checked, model = _check_binary_model("bce+dice", (1, 6, 5, 3))
    assert checked == model.num_parameters()


# -- the prediction rule ------------------------------------------------------------------------------
def test_binary_prediction_is_logit_above_zero_and_tta_averages_sigmoids(rng):
    model = build_model("tiny", 1, seed=3)
    x = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
    z = model.forward(x)                                                   # (1, 32, 32, 1)
    np.testing.assert_array_equal(predicted_labels(z), (z[..., 0] > 0).astype(np.int64))
    tta = predict_logits(model, x, flip=True)
    p = (1 / (1 + np.exp(-z.astype(np.float64))) + 1 / (1 + np.exp(-model.forward(x[:, :, ::-1].copy())[:, :, ::-1]))) / 2
    np.testing.assert_allclose(probabilities(tta), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits_of(probabilities(z)), z, rtol=1e-4, atol=1e-4)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    labels = model.segment(image)
    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, predicted_labels(model.forward(model.preprocessor(image)[0]))[0])
    assert np.array_equal(segment_tiled(model, image), labels)
    tiled = segment_tiled(model, image, window=(32, 32), overlap=8)        # blended sigmoids, p > 1/2
    assert tiled.shape == (40, 48) and set(np.unique(tiled)) <= {0, 1}


class _FixedLogits:
    """A stand-in binary model whose logits are given: evaluate's counting, checked by hand."""
    num_classes = 1

    def __init__(self, z):
        self.z = z

    def preprocessor(self, image):
        return image[None].astype(np.float32), (0, 0) + image.shape[:2]

    def forward(self, x):
        return self.z[None, ..., None]


def test_evaluate_reports_foreground_iou_dice_and_background_iou():
    z = np.array([[2.0, -1.0, 3.0], [0.5, -2.0, -0.1]])                    # predictions 1 0 1 / 1 0 0
    label = np.array([[1, 1, 0], [1, 255, 0]], np.uint8)                   # one pixel ignored
    r = evaluate(_FixedLogits(z), [(np.zeros((2, 3, 3), np.uint8), label)], progress=False)
    tp, fp, fn, tn = 2, 1, 1, 1                                            # foreground counts by hand
    assert r["foreground_iou"] == pytest.approx(tp / (tp + fp + fn))
    assert r["foreground_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert r["background_iou"] == pytest.approx(tn / (tn + fn + fp))
    assert r["miou"] == pytest.approx((r["foreground_iou"] + r["background_iou"]) / 2)


def test_dice_is_two_iou_over_one_plus_iou(rng):
    cm = ConfusionMatrix(4)
    cm.update(rng.integers(0, 4, 500), rng.integers(0, 4, 500))
    iou = cm.iou()
    np.testing.assert_allclose(cm.dice(), 2 * iou / (1 + iou), rtol=1e-12)


# -- one class against the rest -------------------------------------------------------------------------
def test_one_vs_rest_maps_labels_and_keeps_void():
    base = SyntheticShapes(3, size=(24, 24), seed=7)
    labels = [base[i][1].copy() for i in range(3)]
    labels[0][:2] = 255

    class WithVoid:
        num_classes, class_names, palette, names = 4, base.class_names, base.palette, base.names

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return base[i][0], labels[i]
    squares = OneVsRest(WithVoid(), "square")
    for i in range(3):
        _, target = squares[i]
        np.testing.assert_array_equal(target, np.where(labels[i] == 255, 255, labels[i] == 2).astype(np.uint8))
        np.testing.assert_array_equal(squares.read_label(i), target)
    assert squares.class_names == ["rest", "square"] and squares.palette.shape == (2, 3)
    with pytest.raises(DatasetError, match="class 'hexagon' is not one of the dataset's classes: background, circle"):
        OneVsRest(base, "hexagon")


# -- the command line -------------------------------------------------------------------------------------
def test_cli_trains_and_evaluates_a_binary_folder_dataset(tmp_path, capsys):
    data = _folder_dataset(tmp_path / "data", size=48)
    out = tmp_path / "run"
    common = ["--dataset", "folder", "--data", str(data), "--num-classes", "1"]
    assert main(["train", *common, "--model", "tiny", "--epochs", "1", "--batch-size", "2", "--crop", "32", "32",
                 "--val-split", "val", "--out", str(out), "--lr", "0.02", "--warmup", "1", "--loss", "bce+dice"]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    assert {"val_foreground_iou", "val_foreground_dice", "val_background_iou"} <= set(rows[-1])
    capsys.readouterr()
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.npz"), *common, "--split", "val",
                 "--json", str(metrics)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads(metrics.read_text())
    assert f"foreground class_1: IoU {saved['foreground_iou']:.4f}, Dice {saved['foreground_dice']:.4f}" in printed
    assert np.sum(saved["confusion"]) == 4 * 48 * 48 - 4 * 48 and len(saved["confusion"]) == 2
    assert main(["predict", "--preset", str(out / "preset"), str(data / "val" / "images" / "im0.png"),
                 "--out", str(tmp_path / "pred")]) == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / "im0_labels.png"))
    assert labels.shape == (48, 48) and set(np.unique(labels)) <= {0, 1}


@pytest.mark.parametrize("argv,expected", [
    (["--num-classes", "1", "--loss", "ce"], "num_classes=1 with a softmax cross-entropy learns nothing: a softmax "
                                             "over one class is the constant 1"),
    (["--num-classes", "2", "--loss", "dice"], "loss dice is a binary loss"),
    (["--num-classes", "2", "--binary-class", "car"], "class 'car' is not one of the dataset's classes"),
])
def test_cli_binary_mistakes_are_one_line(tmp_path, capsys, argv, expected):
    data = _folder_dataset(tmp_path / "data", n=2, size=32)
    code = main(["train", "--dataset", "folder", "--data", str(data), "--model", "tiny", "--epochs", "1",
                 "--batch-size", "2", "--crop", "32", "32", "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and expected in err[-1] and err[-1].startswith("tinydeeplab train: error:")


def test_cli_binary_on_a_multi_class_dataset_needs_a_class(tmp_path, capsys):
    assert main(["train", "--dataset", "shapes", "--binary", "--out", str(tmp_path / "run")]) == 2
    assert "--binary needs two classes (0 rest, 1 foreground), --dataset shapes has 4 (background, circle, " \
           "square, triangle): choose the foreground with --binary-class NAME" in capsys.readouterr().err


# -- a tiny run that learns ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_binary_model_learns_circles_vs_rest(tmp_path):
    """A sigmoid head with binary cross-entropy, 32 SGD steps on 32x32 shapes: circles found (measured
    foreground IoU 0.67, Dice 0.80 on the held-out images; 0 for an untrained or one-class-softmax model)."""
    train = OneVsRest(SyntheticShapes(64, size=(32, 32), seed=0, colour_hints=True), "circle")
    val = OneVsRest(SyntheticShapes(16, size=(32, 32), seed=1000, colour_hints=True), "circle")
    model = build_model("tiny", 1)
    before = evaluate(model, val, progress=False)
    build_trainer(model, train, out_dir=tmp_path, epochs=4, batch_size=8, crop=None, lr=0.1, warmup=5,
                  schedule="cosine", progress=False).fit()
    after = evaluate(model, val, progress=False)
    assert after["foreground_iou"] > 0.5 and after["foreground_dice"] > 0.65
    assert after["foreground_iou"] > before["foreground_iou"] + 0.3
