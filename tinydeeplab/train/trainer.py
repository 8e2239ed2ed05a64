"""The training loop: epochs of SGD steps, validation, metrics files, plots and resumable checkpoints.

One step on a batch ``(x (N, H, W, 3) float32, y (N, H, W) int)`` at global step ``s``::

    logits = model.forward(x, training=True)                  (N, H, W, K); BN statistics updated
    loss   = softmax_cross_entropy(logits, y, ignore_label, class_weights)
    grads  = model.backward(dloss/dlogits)
    [clip the global gradient norm to clip_norm]
    optimizer.step(lr = lr_schedule(s));  s += 1

After every epoch ``out_dir`` gets, in this order:

* ``checkpoint.npz`` (atomic): model, optimizer momentum, completed epoch, global step, the metrics
  history and the state of every random generator inside the model (dropout), as plain ints;
* ``metrics.csv`` and ``metrics.json``: one row per epoch: ``epoch``, ``train_loss`` (mean of the
  batch losses), ``lr`` (of the epoch's last step), ``val_<name>`` for each scalar returned by
  ``val_fn``, ``seconds`` (wall time, validation included), ``images_per_s`` (training only);
* ``curves.png``: train loss per epoch, and validation mIoU (or the learning rate without it).

``fit(resume=True)`` continues from ``checkpoint.npz``: the next epoch, the same global step
(hence the same learning rates) and the same generator states, and the metrics files are
rewritten from the checkpoint's history. If the loader has ``set_epoch(e)`` it is called with the
0-based epoch index before each epoch, so the batch order depends only on the epoch: a run stopped
and resumed produces the same weights as one that never stopped. The epoch numbers in the files
count completed epochs (1 = after the first epoch).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..backend import get_backend, ops
from ..errors import DivergenceError
from .checkpoint import load_checkpoint, save_checkpoint
from .optim import clip_grad_norm

CHECKPOINT, METRICS_CSV, METRICS_JSON, CURVES = "checkpoint.npz", "metrics.csv", "metrics.json", "curves.png"


NonFiniteLossError = DivergenceError   # the former name (a FloatingPointError then and now)


def _rng_states(model) -> dict:
    """``{module name: bit-generator state}`` of every ``np.random.Generator`` held by a module."""
    return {path: mod._rng.bit_generator.state for path, mod in model.modules()
            if isinstance(getattr(mod, "_rng", None), np.random.Generator)}


def _set_rng_states(model, states: dict) -> None:
    for path, mod in model.modules():
        if path in states and isinstance(getattr(mod, "_rng", None), np.random.Generator):
            mod._rng.bit_generator.state = states[path]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


class Trainer:
    """Runs ``epochs`` epochs over ``train_loader`` (see the module docstring for what it writes).

    Args:
        model: a segmenter with ``forward(x, training)`` -> logits (N, H, W, K) and ``backward``.
        optimizer: e.g. :class:`tinydeeplab.train.optim.SGD` over ``model``.
        train_loader: iterable of ``(x, y)`` batches with ``len()``; optional ``set_epoch(e)``.
        epochs: total number of epochs (a resumed run stops at the same total).
        lr_schedule: ``step -> lr`` for the global step (e.g. :class:`~tinydeeplab.train.schedules.Poly`).
        out_dir: directory for the checkpoint, metrics and plot (created).
        class_weights, ignore_label: passed to the softmax cross-entropy.
        clip_norm: clip the global gradient L2 norm to this value (None: no clipping).
        val_fn: ``model -> dict`` of metrics after each epoch (scalars are recorded as ``val_<name>``).
        log_every: redraw the progress line every this many steps.
        progress: show the progress line and a summary per epoch on stderr.
    """

    def __init__(self, model, optimizer, train_loader, *, epochs: int, lr_schedule, out_dir,
                 class_weights=None, ignore_label=255, clip_norm=None, val_fn=None, log_every: int = 1,
                 progress: bool = True, stream=None, checkpoint_meta=None):
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if not callable(lr_schedule):
            raise ValueError("lr_schedule must be a callable step -> lr (see tinydeeplab.train.schedules)")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {clip_norm}")
        self.model, self.optimizer, self.train_loader = model, optimizer, train_loader
        self.epochs, self.lr_schedule = int(epochs), lr_schedule
        self.out_dir = Path(out_dir)
        self.class_weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        self.ignore_label, self.clip_norm, self.val_fn = ignore_label, clip_norm, val_fn
        self.log_every, self.progress = max(int(log_every), 1), bool(progress)
        self.stream = stream
        self.checkpoint_meta = dict(checkpoint_meta or {})   # extra JSON stored in every checkpoint
        self.epoch = 0            # completed epochs
        self.global_step = 0      # optimizer steps taken
        self.history: list[dict] = []

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, resume: bool = True) -> list[dict]:
        """Train up to ``epochs`` (resuming from ``out_dir/checkpoint.npz`` if ``resume``); returns the history."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.checkpoint_path.exists():
            self.resume()
        else:
            self.epoch, self.global_step, self.history = 0, 0, []
        if get_backend() == "cuda":
            self.model.to("cuda")        # parameters, buffers and momentum live on the GPU from here on
        while self.epoch < self.epochs:
            row = self.train_epoch(self.epoch)
            self.epoch += 1
            self.history.append(row)
            self.save()
            self._say(self._summary(row) + "\n")
        return self.history

    def resume(self) -> dict:
        """Load ``checkpoint.npz`` into the model, optimizer and this trainer; rewrite the metrics files."""
        meta = load_checkpoint(self.checkpoint_path, self.model, self.optimizer)
        try:
            self.epoch, self.global_step = int(meta["epoch"]), int(meta["global_step"])
            self.history = list(meta.get("history", []))
            _set_rng_states(self.model, meta.get("rng", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{self.checkpoint_path}: not a Trainer checkpoint ({err!r} in its metadata)") from None
        self._write_metrics()
        self._say(f"resumed from {self.checkpoint_path}: {self.epoch} epoch(s) done, step {self.global_step}\n")
        return meta

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the loader (0-based ``epoch``); returns the epoch's metrics row."""
        loader, ce = self.train_loader, ops()
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        try:
            n_steps = len(loader)
        except TypeError:
            n_steps = None
        loss_sum, n_batches, n_images, lr = 0.0, 0, 0, float("nan")
        t0 = time.perf_counter()
        try:
            for i, (x, y) in enumerate(loader):
                lr = float(self.lr_schedule(self.global_step))
                if get_backend() == "cuda":
                    x = ce.to_device(x)                                               # images to the GPU
                logits = self.model.forward(x, training=True)                         # (N, H, W, K)
                loss, cache = ce.softmax_cross_entropy_forward(logits, y, ignore_label=self.ignore_label,
                                                               class_weights=self.class_weights)
                if not math.isfinite(loss):
                    self._diverged("loss", loss, epoch, i, n_steps)
                self.model.zero_grad()
                self.model.backward(ce.softmax_cross_entropy_backward(1.0, cache))   # fills model grads
                if self.clip_norm is not None:
                    norm = clip_grad_norm(self.model, self.clip_norm)
                    if not math.isfinite(norm):
                        self._diverged("gradient norm", norm, epoch, i, n_steps)
                self.optimizer.step(lr=lr)
                self.global_step += 1
                loss_sum, n_batches, n_images = loss_sum + loss, n_batches + 1, n_images + len(x)
                if (i + 1) % self.log_every == 0 or (n_steps is not None and i + 1 == n_steps):
                    rate = n_images / max(time.perf_counter() - t0, 1e-9)
                    self._bar(f"epoch {epoch + 1}/{self.epochs}  step {i + 1}/{n_steps or '?'}  "
                              f"loss {loss_sum / n_batches:.4f}  lr {lr:.3e}  {rate:.1f} img/s")
        finally:
            self._bar_done()
        if n_batches == 0:
            raise ValueError(f"epoch {epoch + 1}: the training loader yielded no batches")
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n_batches, "lr": lr}
        if self.val_fn is not None:
            for key, value in dict(self.val_fn(self.model)).items():
                if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                    row[f"val_{key}"] = float(value)
        row["seconds"] = time.perf_counter() - t0
        row["images_per_s"] = n_images / max(train_seconds, 1e-9)
        return row

    def _diverged(self, what, value, epoch, i, n_steps):
        kept = (f"{self.checkpoint_path} still holds the last good epoch ({self.epoch})"
                if self.checkpoint_path.exists() and self.epoch else "no checkpoint was written yet")
        raise NonFiniteLossError(f"non-finite {what} ({value}) at epoch {epoch + 1}, step {i + 1}/{n_steps or '?'} "
                                 f"(global step {self.global_step}); stopped. {kept}. Lower the learning rate "
                                 f"or set clip_norm.")

    # -- outputs ------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the checkpoint (first: it is the source of truth), the metrics files and the plot."""
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, epoch=self.epoch,
                        global_step=self.global_step, epochs=self.epochs, history=self.history,
                        rng=_rng_states(self.model), **self.checkpoint_meta)
        self._write_metrics()
        self._plot()

    def _write_metrics(self) -> None:
        columns = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        _atomic_write(self.out_dir / METRICS_CSV, buf.getvalue().encode())
        rows = [{k: _json_safe(v) for k, v in row.items()} for row in self.history]
        _atomic_write(self.out_dir / METRICS_JSON, (json.dumps(rows, indent=1) + "\n").encode())

    def _plot(self) -> None:
        from matplotlib.figure import Figure   # no pyplot: leaves the user's matplotlib backend alone

        epochs = [r["epoch"] for r in self.history]
        fig = Figure(figsize=(9, 3.5), layout="constrained")
        ax1, ax2 = fig.subplots(1, 2)
        ax1.plot(epochs, [r["train_loss"] for r in self.history], "o-")
        ax1.set(xlabel="epoch", ylabel="train loss", title="training loss")
        if any("val_miou" in r for r in self.history):
            pts = [(r["epoch"], r["val_miou"]) for r in self.history if "val_miou" in r]
            ax2.plot(*zip(*pts), "o-", color="C1")
            ax2.set(xlabel="epoch", ylabel="mIoU", title="validation mIoU")
        else:
            ax2.plot(epochs, [r["lr"] for r in self.history], "o-", color="C2")
            ax2.set(xlabel="epoch", ylabel="learning rate", title="learning rate (end of epoch)")
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        _atomic_write(self.out_dir / CURVES, buf.getvalue())

    # -- progress display ---------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.progress:
            stream = self.stream or sys.stderr
            stream.write(text)
            stream.flush()

    _width = 0

    def _bar(self, text: str) -> None:
        self._say("\r" + text.ljust(self._width))
        self._width = len(text)

    def _bar_done(self) -> None:
        if self._width:
            self._say("\n")
            self._width = 0

    def _summary(self, row: dict) -> str:
        val = "".join(f", {k} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
        return (f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f}{val}, "
                f"{row['seconds']:.1f} s, {row['images_per_s']:.1f} img/s")
