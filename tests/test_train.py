"""Optimizer, schedules, checkpoints, the trainer (overfit, resume, divergence) and TTA inference."""
import json
import math
import zipfile

import numpy as np
import pytest
from model_factories import randomize_batchnorm, tiny_segmenter

from tinydeeplab.nn import BatchNorm, Conv2D, Sequential
from tinydeeplab.errors import CheckpointError
from tinydeeplab.train import (SGD, ConfusionMatrix, Cosine, NonFiniteLossError, Poly, Trainer, clip_grad_norm,
                               cosine, evaluate, load_checkpoint, poly, predict_logits, save_checkpoint)
from tinydeeplab.train import checkpoint as checkpoint_module
from tinydeeplab.train import schedules


# -- SGD ---------------------------------------------------------------------------------------
def conv_bn():
    net = Sequential(("conv", Conv2D(1, 2, 1, seed=0)), ("bn", BatchNorm(1)))
    net.conv.params["kernel"][...] = np.array([1.0, -2.0], np.float32).reshape(1, 1, 1, 2)
    net.bn.params["gamma"][...] = 1.0
    net.bn.params["beta"][...] = 0.0
    return net


def set_grads(net):
    net.conv.grads["kernel"] = np.full((1, 1, 1, 2), 0.5, np.float32)
    net.bn.grads["gamma"] = np.array([0.5], np.float32)
    net.bn.grads["beta"] = np.array([-1.0], np.float32)


def test_sgd_matches_hand_computed_momentum_and_kernel_only_decay():
    net = conv_bn()
    opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=0.1)
    set_grads(net)
    opt.step()
    # kernel: d = g + 0.1 p = [0.6, 0.3]; v = d; p = p - 0.1 v
    np.testing.assert_allclose(net.conv.params["kernel"].ravel(), [0.94, -2.03], rtol=1e-6)
    # BN gamma / beta: no decay: v = g
    np.testing.assert_allclose(net.bn.params["gamma"], [0.95], rtol=1e-6)
    np.testing.assert_allclose(net.bn.params["beta"], [0.1], rtol=1e-6)
    set_grads(net)
    opt.step()
    # kernel: d = [0.5 + 0.094, 0.5 - 0.203]; v = 0.9 [0.6, 0.3] + d = [1.134, 0.567]
    np.testing.assert_allclose(net.conv.params["kernel"].ravel(), [0.8266, -2.0867], rtol=1e-6)
    # gamma: v = 0.9 * 0.5 + 0.5 = 0.95 -> 0.95 - 0.095; beta: v = -1.9 -> 0.1 + 0.19
    np.testing.assert_allclose(net.bn.params["gamma"], [0.855], rtol=1e-6)
    np.testing.assert_allclose(net.bn.params["beta"], [0.29], rtol=1e-6)
    set_grads(net)
    opt.step(lr=0.0)                                               # explicit lr overrides
    np.testing.assert_allclose(net.bn.params["gamma"], [0.855], rtol=1e-6)


def test_sgd_nesterov_and_state_round_trip():
    net = conv_bn()
    opt = SGD(net, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    set_grads(net)
    opt.step()
    # d = [0.6, 0.3]; v = d; p -= 0.1 (d + 0.9 v)
    np.testing.assert_allclose(net.conv.params["kernel"].ravel(), [1 - 0.114, -2 - 0.057], rtol=1e-6)
    state = opt.state_dict()
    assert set(state) == {"conv.kernel", "bn.gamma", "bn.beta"}
    other = SGD(conv_bn(), lr=0.1)
    other.load_state_dict(state)
    assert all(np.array_equal(other.velocity[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="conv.kernel"):
        other.load_state_dict({"conv.kernel": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="nope"):
        other.load_state_dict({"nope": np.zeros(3, np.float32)})


def test_clip_grad_norm(rng):
    net = tiny_segmenter()
    for _, mod in net.modules():
        mod.grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in mod.params.items()}
    norm = lambda: math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for _, g in net.named_gradients()))  # noqa
    before = norm()
    assert clip_grad_norm(net, before * 2) == pytest.approx(before)
    assert norm() == pytest.approx(before)                        # under the limit: untouched
    total = clip_grad_norm(net, 1.5)
    assert total == pytest.approx(before)
    assert norm() == pytest.approx(1.5, rel=1e-5)


# -- schedules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [lambda s, **k: cosine(s, 100, 0.2, **k), lambda s, **k: poly(s, 100, 0.2, **k)])
def test_schedule_endpoints_warmup_monotone(fn):
    assert fn(0) == pytest.approx(0.2) and fn(100) == pytest.approx(0.0) and fn(150) == pytest.approx(0.0)
    curve = fn(np.arange(0, 101), warmup=10)
    assert curve[0] == 0.0 and curve[10] == pytest.approx(0.2)
    np.testing.assert_allclose(curve[:11], 0.2 * np.arange(11) / 10)   # linear warm-up from 0
    assert np.all(np.diff(curve[10:]) <= 1e-12)                       # then non-increasing
    assert curve[-1] == pytest.approx(0.0)
    assert [fn(s, warmup=10) for s in (3, 40)] == pytest.approx(curve[[3, 40]].tolist())   # scalar == array


def test_schedule_classes_and_final_lr():
    assert Cosine(50, 1.0, warmup=5, final_lr=0.1)(50) == pytest.approx(0.1)
    assert Cosine(50, 1.0, final_lr=0.1)(25) == pytest.approx(0.55)
    assert Poly(10, 1.0, power=1.0)(5) == pytest.approx(0.5)
    assert schedules.constant(0.3)(10**6) == 0.3
    with pytest.raises(ValueError):
        poly(0, 10, 0.1, warmup=11)


# -- checkpoints -------------------------------------------------------------------------------
def trained_pair(rng, seed=0):
    model = randomize_batchnorm(tiny_segmenter(seed=seed), rng)
    opt = SGD(model, lr=0.1, momentum=0.9)
    for _, mod in model.modules():
        mod.grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in mod.params.items()}
    opt.step()
    return model, opt


def test_checkpoint_round_trip_is_exact(tmp_path, rng):
    model, opt = trained_pair(rng)
    path = save_checkpoint(tmp_path / "c.npz", model, opt, epoch=3, note="hi", rng={"s": 2**100 + 1})
    model2, opt2 = tiny_segmenter(seed=5), SGD(tiny_segmenter(seed=5), lr=0.1)
    opt2.model = model2
    meta = load_checkpoint(path, model2, opt2)
    assert meta == {"epoch": 3, "note": "hi", "rng": {"s": 2**100 + 1}}
    a, b = model.state_dict(), model2.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert opt.velocity.keys() == opt2.velocity.keys()
    assert all(np.array_equal(opt.velocity[k], opt2.velocity[k]) for k in opt.velocity)
    with np.load(path, allow_pickle=False) as data:                  # plain arrays only
        assert all(data[k].dtype != object for k in data.files)


def test_failed_write_keeps_previous_checkpoint(tmp_path, rng, monkeypatch):
    model, opt = trained_pair(rng)
    path = save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1)
    before = path.read_bytes()

    def broken_savez(f, **arrays):                                    # writes half, then dies
        f.write(b"PK\x03\x04 partial archive")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.np, "savez", broken_savez)
    for _, mod in model.modules():
        for k in mod.params:
            mod.params[k] += 1.0
    with pytest.raises(CheckpointError, match="disk full.*previous checkpoint.*unchanged"):
        save_checkpoint(path, model, opt, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]   # temp file removed
    assert load_checkpoint(path, tiny_segmenter())["epoch"] == 1


def test_corrupt_truncated_and_mismatched_checkpoints(tmp_path, rng):
    model, opt = trained_pair(rng)
    path = save_checkpoint(tmp_path / "c.npz", model, opt, epoch=1)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    flipped = tmp_path / "flipped.npz"
    corrupted = bytearray(data)
    start = data.index(b"model/") + 200                                # inside the first member's data
    corrupted[start:start + 16] = bytes(16)
    flipped.write_bytes(bytes(corrupted))
    for bad in (truncated, garbage, flipped):
        with pytest.raises(ValueError, match=bad.name):
            load_checkpoint(bad, tiny_segmenter())
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz"):
        load_checkpoint(empty, tiny_segmenter())
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_checkpoint(tmp_path / "missing.npz", tiny_segmenter())

    other = tiny_segmenter(num_classes=4)                             # head has a different shape
    kept = other.output_conv.params["kernel"].copy()
    with pytest.raises(ValueError, match=r"c\.npz.*output_conv\.kernel"):
        load_checkpoint(path, other)
    assert np.array_equal(other.output_conv.params["kernel"], kept)  # model untouched on failure
    with pytest.raises(ValueError, match=r"c\.npz.*(missing|not in the model)"):
        load_checkpoint(path, tiny_segmenter(plus=False))
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with open(tmp_path / "array.npz", "wb") as f:
        np.save(f, np.zeros(3))
    for name in ("foreign.npz", "array.npz"):
        with pytest.raises(ValueError, match=f"{name}.*not a tinydeeplab checkpoint"):
            load_checkpoint(tmp_path / name, tiny_segmenter())
    assert zipfile.is_zipfile(path)


# -- trainer -----------------------------------------------------------------------------------
class ListLoader:
    """Stand-in for the data loader: fixed images, shuffled by epoch, ``batch`` per step."""

    def __init__(self, x, y, batch=1):
        self.x, self.y, self.batch, self.epoch = x, y, batch, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __iter__(self):
        order = np.random.default_rng(self.epoch).permutation(len(self.x))
        for i in range(0, len(order), self.batch):
            idx = order[i:i + self.batch]
            yield self.x[idx], self.y[idx]


def toy_data(n=2, size=16):
    """Rectangles of 3 classes, each painted in its own colour plus noise; a few ignored pixels."""
    rng = np.random.default_rng(0)
    y = np.zeros((n, size, size), np.int32)
    for i in range(n):
        top, left = rng.integers(2, size // 2, 2)
        y[i, top:, :left] = 1
        y[i, :top, left:] = 2
    colours = np.array([[-1, -1, 1], [1, -1, -1], [-1, 1, -1]], np.float32)
    x = (colours[y] + 0.3 * rng.normal(size=(n, size, size, 3))).astype(np.float32)
    y[:, :2, :2] = 255
    return x, y


def make_trainer(out_dir, epochs, *, dropout=0.0, loader=None, **kw):
    model = tiny_segmenter(num_classes=3)
    model.backbone.aspp.projection.dropout.rate = dropout
    opt = SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
    loader = loader or ListLoader(*toy_data(4), batch=2)
    kw.setdefault("lr_schedule", Poly(4 * len(loader), 0.05, warmup=1))
    return Trainer(model, opt, loader, epochs=epochs, out_dir=out_dir, progress=False, **kw)


def test_trainer_overfits_and_writes_outputs(tmp_path, capsys):
    x, y = toy_data(2)
    images = [((xi * 40 + 128).clip(0, 255).astype(np.uint8), yi.astype(np.uint8)) for xi, yi in zip(x, y)]

    def val_fn(model):
        prep = lambda im: (((im.astype(np.float32) - 128) / 40)[None], (0, 0) + im.shape[:2])  # noqa: E731
        return evaluate(model, images, prep, 3, progress=False)

    trainer = make_trainer(tmp_path, 6, loader=ListLoader(x, y, batch=1), lr_schedule=lambda s: 0.1,
                           val_fn=val_fn, clip_norm=10.0)
    trainer.progress = True
    history = trainer.fit()
    losses = [r["train_loss"] for r in history]
    assert losses[-1] < 0.7 * losses[0], losses
    assert history[-1]["val_miou"] > history[0]["val_miou"]
    err = capsys.readouterr().err
    assert "epoch 6/6" in err and "img/s" in err
    assert "\r" not in err                   # stderr is not a terminal here: whole lines, no redraws

    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "train_loss", "lr"] and "val_miou" in rows[0]
    assert len(rows) == 7
    assert [r["epoch"] for r in json.loads((tmp_path / "metrics.json").read_text())] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = load_checkpoint(tmp_path / "checkpoint.npz", tiny_segmenter(num_classes=3))
    assert meta["epoch"] == 6 and meta["global_step"] == 12


def test_resume_after_interruption_gives_same_weights(tmp_path):
    straight = make_trainer(tmp_path / "a", 4, dropout=0.3)
    straight.fit()

    first = make_trainer(tmp_path / "b", 2, dropout=0.3)
    first.fit()
    second = make_trainer(tmp_path / "b", 4, dropout=0.3)             # fresh model and optimizer
    history = second.fit(resume=True)

    assert second.global_step == straight.global_step == 8
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a), [k for k in a if not np.array_equal(a[k], b[k])][:5]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in straight.history]
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 5

    fresh = make_trainer(tmp_path / "b", 1, dropout=0.3)              # resume=False starts over
    fresh.fit(resume=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.npz", tiny_segmenter(num_classes=3))["epoch"] == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    x, y = toy_data(2)

    class PoisonedLoader(ListLoader):
        def __iter__(self):
            for i, (xb, yb) in enumerate(super().__iter__()):
                yield (xb * np.nan if self.epoch == 1 and i == 1 else xb), yb

    trainer = make_trainer(tmp_path, 3, loader=PoisonedLoader(x, y, batch=1))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2/2"):
        trainer.fit()
    meta = load_checkpoint(tmp_path / "checkpoint.npz", tiny_segmenter(num_classes=3))
    assert meta["epoch"] == 1 and meta["global_step"] == 2


# -- inference ---------------------------------------------------------------------------------
class PixelModel:
    """A per-pixel model (logits = x @ A): any tiling or flip gives the same per-pixel answer."""

    num_classes = 3

    def __init__(self):
        self.a = np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32)
        self.calls = 0

    def forward(self, x, training=False):
        self.calls += 1
        return x @ self.a


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_single_view_tta_and_whole_image_window_equal_plain_forward(rng):
    model = tiny_segmenter(num_classes=3)
    x = rng.normal(size=(2, 24, 20, 3)).astype(np.float32)
    plain = model.forward(x)
    assert np.array_equal(predict_logits(model, x, scales=(1.0,), flip=False), plain)
    assert np.array_equal(predict_logits(model, x, window=(24, 20)), plain)
    multi = predict_logits(model, x, scales=(0.5, 1.0), flip=True)
    assert multi.shape == plain.shape
    np.testing.assert_allclose(np.exp(multi).sum(-1), 1.0, rtol=1e-5)   # log of averaged probabilities
    # flip only: the mean of the two views' probabilities, computed by hand
    softmax = lambda z: np.exp(log_softmax(z))  # noqa: E731
    by_hand = (softmax(plain) + softmax(model.forward(x[:, :, ::-1].copy())[:, :, ::-1])) / 2
    np.testing.assert_allclose(np.exp(predict_logits(model, x, flip=True)), by_hand, rtol=1e-5, atol=1e-7)


def test_sliding_window_covers_and_averages(rng):
    model = PixelModel()
    x = rng.normal(size=(1, 23, 17, 3)).astype(np.float32)
    expected = log_softmax(model.forward(x))
    out = predict_logits(model, x, window=(8, 6), stride=(5, 4))       # overlapping tiles, ragged ends
    assert model.calls > 2
    np.testing.assert_allclose(out, expected, atol=1e-5)
    small = predict_logits(model, x, window=(32, 32))                 # larger than the image: padded
    np.testing.assert_allclose(small, model.forward(x), atol=1e-6)
    np.testing.assert_allclose(predict_logits(model, x, flip=True, scales=(1.0,)), expected, atol=1e-5)


def test_evaluate_ignores_pixels_outside_the_crop():
    model = PixelModel()
    model.a = np.eye(3, dtype=np.float32)                             # prediction = argmax of the pixel
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :3, 0] = 200                                             # left half class 0, right half class 1
    image[:, 3:, 1] = 200
    label = np.zeros((4, 6), np.uint8)
    label[:, 3:] = 1
    label[0, 0] = 2                                                   # wrong on purpose, inside the crop
    label[:, 5] = 2                                                   # wrong, but outside the crop

    def preprocess(im):                                               # crop columns 0..4
        return im[None, :, :5].astype(np.float32) / 255, (0, 0, 4, 5)

    result = evaluate(model, [(image, label)], preprocess, 3, progress=False)
    cm = result["confusion"]
    assert isinstance(cm, ConfusionMatrix) and cm.matrix.sum() == 20
    assert cm.matrix[2, 0] == 1 and cm.matrix[2].sum() == 1           # column 5 never counted
    assert result["pixel_accuracy"] == pytest.approx(19 / 20)
    assert result["miou"] == pytest.approx(np.nanmean(result["iou"]))
