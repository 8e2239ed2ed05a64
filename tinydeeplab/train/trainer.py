"""The training loop: epochs of SGD steps, validation, metrics files, plots and resumable checkpoints.

One step on a batch ``(x (N, H, W, 3) float32, y (N, H, W) int)`` at global step ``s``::

    logits = model.forward(x, training=True)                  (N, H, W, K); BN statistics updated
    loss   = softmax_cross_entropy(logits, y, ignore_label, class_weights)     (or a binary loss, see .losses)
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

Data parallel (``world=``, a :class:`~tinydeeplab.train.distributed.World` of N > 1 ranks, each with a
loader of its shard): rank 0 alone takes the run lock and writes the checkpoint, metrics, plot and
progress; every rank starts from rank 0's weights, back-propagates its share of the global loss, and
averages the gradients during the backward pass (:class:`~tinydeeplab.train.distributed.GradientBuckets`);
the loss is the global batch's, and a divergence is decided by all ranks together
(:meth:`~tinydeeplab.train.distributed.World.agree`), so they stop together.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..atomic import write_bytes
from ..backend import get_backend, to_device
from ..errors import DivergenceError, TrainingError
from ..nn.module import first_non_finite
from ..progress import Progress
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import GradientBuckets, World, average_buffers, broadcast_state, loss_weights
from .losses import SegmentationLoss
from .optim import clip_grad_norm
from .rundir import RunLock, check_same_run

CHECKPOINT, METRICS_CSV, METRICS_JSON, CURVES = "checkpoint.npz", "metrics.csv", "metrics.json", "curves.png"


NonFiniteLossError = DivergenceError   # the former name (a FloatingPointError then and now)


EXPLOSION_FACTOR = 1e3
"""A finite loss above this multiple of the running median of recent losses counts as divergence."""
EXPLOSION_WINDOW, EXPLOSION_MIN_STEPS = 50, 2


class LossMonitor:
    """Tells a diverging loss from a noisy one: non-finite, or ``> factor x`` the running median.

    The median of the last ``window`` losses (once ``min_steps`` are known) is robust to the spikes of
    ordinary training; a cross-entropy that grows a thousandfold over it is a run that blew up (with
    ``--lr 1e6`` losses of 1e9..1e17 appear long before the first NaN).

    >>> m = LossMonitor()
    >>> [m.check(v) for v in (2.0, 1.9, 1.8, 1.7, 1.9, 30.0)]    # noisy, even a 15x spike: fine
    [None, None, None, None, None, None]
    >>> m.check(5e3)
    'exploded (5000 > 1000 x the running median 1.9)'
    >>> LossMonitor().check(float("nan"))
    'became non-finite (nan)'
    """

    def __init__(self, factor: float = EXPLOSION_FACTOR, window: int = EXPLOSION_WINDOW,
                 min_steps: int = EXPLOSION_MIN_STEPS):
        self.factor, self.min_steps = float(factor), int(min_steps)
        self.recent: deque = deque(maxlen=int(window))

    def check(self, loss: float) -> str | None:
        """None if ``loss`` is plausible (then remembered), else what went wrong."""
        if not math.isfinite(loss):
            return f"became non-finite ({loss})"
        if len(self.recent) >= self.min_steps:
            median = float(np.median(self.recent))
            if loss > self.factor * max(median, 1e-12):
                return f"exploded ({loss:.4g} > {self.factor:.4g} x the running median {median:.4g})"
        self.recent.append(float(loss))
        return None


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
        loss: a :class:`~tinydeeplab.train.losses.SegmentationLoss`, or the name of one (``"ce"``, ``"bce"``,
            ``"dice"``, ``"focal"``, ``"bce+dice"``; None: ``ce``, or ``bce`` for a binary ``num_classes=1``
            model). A one-class model with ``ce`` is refused (a softmax over one class learns nothing).
        clip_norm: clip the global gradient L2 norm to this value (None: no clipping).
        val_fn: ``model -> dict`` of metrics after each epoch (scalars are recorded as ``val_<name>``).
        log_every: redraw the progress line every this many steps.
        progress: show the progress line and a summary per epoch on stderr (see :mod:`tinydeeplab.progress`).
        run_config: the run's hyperparameters (JSON); stored in the checkpoint and compared on resume:
            a change is refused (:class:`~tinydeeplab.errors.TrainingError`) unless its key is in
            ``allow_changes``. ``epochs`` may always grow (extending a run).
        world: the ranks of a data-parallel run (default: this process alone; see the module docstring).
    """

    def __init__(self, model, optimizer, train_loader, *, epochs: int, lr_schedule, out_dir,
                 class_weights=None, ignore_label=255, clip_norm=None, val_fn=None, log_every: int = 1,
                 progress: bool = True, stream=None, checkpoint_meta=None, run_config=None, allow_changes=(),
                 world=None, loss=None):
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
        self.loss = (loss if isinstance(loss, SegmentationLoss) else
                     SegmentationLoss(loss, model.num_classes, ignore_label=ignore_label,
                                      class_weights=self.class_weights))
        self.log_every, self.progress = max(int(log_every), 1), bool(progress)
        self.stream = stream
        self.checkpoint_meta = dict(checkpoint_meta or {})   # extra JSON stored in every checkpoint
        self.run_config = None if run_config is None else dict(run_config)   # compared on resume
        self.allow_changes = tuple(allow_changes)
        self.world = World.single() if world is None else world
        self.buckets = GradientBuckets(model, self.world) if self.world.size > 1 else None
        self._bar = Progress(self.progress, stream)
        self.loss_monitor = LossMonitor()     # divergence: the recent losses of this run
        self.epoch = 0            # completed epochs
        self.global_step = 0      # optimizer steps taken
        self.history: list[dict] = []

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, resume: bool = True) -> list[dict]:
        """Train up to ``epochs`` (resuming from ``out_dir/checkpoint.npz`` if ``resume``); returns the history.

        The run directory is locked for the whole call (:class:`~tinydeeplab.train.rundir.RunLock`).
        """
        with RunLock(self.out_dir) if self.world.is_root else nullcontext():     # one writer: rank 0
            if resume and self.checkpoint_path.exists():
                self.resume()
            else:
                self.epoch, self.global_step, self.history = 0, 0, []
            self.model.to(get_backend())     # parameters and buffers where the backend's ops want them
            broadcast_state(self.model, self.world)          # data parallel: every rank from rank 0's weights
            while self.epoch < self.epochs:
                row = self.train_epoch(self.epoch)
                average_buffers(self.model, self.world)      # (without SyncBN the ranks' statistics differ)
                self._check_state(row["epoch"])
                self.epoch += 1
                self.history.append(row)
                if self.world.is_root:
                    self.save()
                self.world.barrier("waiting for rank 0 to write the checkpoint")   # durable before going on
                self._say(self._summary(row) + "\n")
        return self.history

    def resume(self) -> dict:
        """Load ``checkpoint.npz`` into the model, optimizer and this trainer; rewrite the metrics files.

        Refuses (TrainingError) a checkpoint of a run with other hyperparameters (see ``run_config``) and
        a request for fewer epochs than the checkpoint already holds.
        """
        meta = load_checkpoint(self.checkpoint_path, self.model, self.optimizer)
        try:
            epoch, global_step = int(meta["epoch"]), int(meta["global_step"])
            history = list(meta.get("history", []))
        except (KeyError, TypeError, ValueError) as err:
            raise TrainingError(f"{self.checkpoint_path}: not a Trainer checkpoint ({err!r} in its metadata)") from None
        if self.run_config is not None:
            check_same_run(meta.get("run"), self.run_config, allowed=self.allow_changes,
                           source=str(self.checkpoint_path))
        if epoch > self.epochs:
            raise TrainingError(f"{self.checkpoint_path}: this run has already trained {epoch} epochs, more than the "
                                f"{self.epochs} asked for; ask for more epochs to extend it, or --restart")
        self.epoch, self.global_step, self.history = epoch, global_step, history
        self.model.set_rng_states(meta.get("rng", {}))
        if self.world.is_root:
            self._write_metrics()
        done = " (complete: nothing left to train)" if epoch == self.epochs else ""
        self._say(f"resumed from {self.checkpoint_path}: {self.epoch} of {self.epochs} epoch(s) done, "
                  f"step {self.global_step}{done}\n")
        return meta

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the loader (0-based ``epoch``); returns the epoch's metrics row."""
        loader = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        try:
            n_steps = len(loader)
        except TypeError:
            n_steps = None
        loss_sum, n_batches, n_images, lr = 0.0, 0, 0, float("nan")
        monitor = self.loss_monitor
        t0 = time.perf_counter()
        with self.bar:
            for i, (x, y) in enumerate(loader):
                lr = float(self.lr_schedule(self.global_step))
                x = to_device(x)                                      # images where the ops want them
                logits = self.model.forward(x, training=True)                         # (N, H, W, K)
                loss, cache = self.loss.forward(logits, y)
                loss, share = loss_weights(self.world, loss, cache["total"])    # the global batch's loss
                problem = self.world.agree(monitor.check(float(loss)))          # all ranks stop together
                if problem is not None:
                    self._diverged(f"the loss {problem}", epoch, i, n_steps, lr)
                self.model.zero_grad()
                dlogits = self.loss.backward(share, cache)
                if self.buckets is None:
                    self.model.backward(dlogits)                                  # fills model grads
                else:
                    self.buckets.backward(dlogits)      # fills model grads, averaged over the ranks
                if self.clip_norm is not None:
                    norm = clip_grad_norm(self.model, self.clip_norm)
                    if not math.isfinite(norm):
                        self._diverged(f"the gradient norm became non-finite ({norm})", epoch, i, n_steps, lr)
                self.optimizer.step(lr=lr)
                self.global_step += 1
                loss_sum, n_batches, n_images = loss_sum + loss, n_batches + 1, n_images + len(x) * self.world.size
                if (i + 1) % self.log_every == 0 or (n_steps is not None and i + 1 == n_steps):
                    rate = n_images / max(time.perf_counter() - t0, 1e-9)
                    self.bar.show(f"epoch {epoch + 1}/{self.epochs}  step {i + 1}/{n_steps or '?'}  "
                                  f"loss {loss_sum / n_batches:.4f}  lr {lr:.3e}  {rate:.1f} img/s")
        if n_batches == 0:
            raise TrainingError(f"epoch {epoch + 1}: the training loader yielded no batches")
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n_batches, "lr": lr}
        if self.val_fn is not None:
            for key, value in dict(self.val_fn(self.model)).items():
                if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                    row[f"val_{key}"] = float(value)
        row["seconds"] = time.perf_counter() - t0
        row["images_per_s"] = n_images / max(train_seconds, 1e-9)
        return row

    def _kept(self) -> str:
        return (f"{self.checkpoint_path} still holds the last good epoch ({self.epoch})"
                if self.checkpoint_path.exists() and self.epoch else "no checkpoint was written yet")

    def _advice(self, lr: float) -> str:
        clip = (f"clip gradients harder (their global norm is clipped to {self.clip_norm:g}: --clip-norm)"
                if self.clip_norm is not None else "clip the gradient norm (--clip-norm, e.g. 5)")
        return f"Lower the learning rate (it was {lr:.3g} at this step: --lr) or {clip}."

    def _diverged(self, what, epoch, i, n_steps, lr):
        raise DivergenceError(f"training diverged: {what} at epoch {epoch + 1}, step {i + 1}/{n_steps or '?'} "
                              f"(global step {self.global_step}); stopped. {self._kept()}. {self._advice(lr)}")

    def _check_state(self, epoch: int) -> None:
        """Refuse to checkpoint a state with a NaN or an infinity (weights, BN statistics, momentum)."""
        bad = self.model.first_non_finite()
        if bad is None and hasattr(self.optimizer, "state_dict"):
            bad = first_non_finite(self.optimizer.state_dict())
            bad = None if bad is None else f"the optimizer's {bad}"
        if bad is not None:
            lr = float(self.lr_schedule(max(self.global_step - 1, 0)))
            raise DivergenceError(f"training diverged: {bad} holds NaN or infinite values at the end of epoch "
                                  f"{epoch}; stopped without writing it. {self._kept()}. {self._advice(lr)}")

    # -- outputs ------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the checkpoint (first: it is the source of truth), the metrics files and the plot."""
        run = {} if self.run_config is None else {"run": self.run_config}
        save_checkpoint(self.checkpoint_path, self.model, self.optimizer, epoch=self.epoch,
                        global_step=self.global_step, epochs=self.epochs, history=self.history,
                        rng=self.model.rng_states(), **run, **self.checkpoint_meta)
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
        write_bytes(self.out_dir / METRICS_CSV, buf.getvalue().encode())
        rows = [{k: _json_safe(v) for k, v in row.items()} for row in self.history]
        write_bytes(self.out_dir / METRICS_JSON, (json.dumps(rows, indent=1) + "\n").encode())

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
        write_bytes(self.out_dir / CURVES, buf.getvalue())

    # -- progress display ---------------------------------------------------------------------
    @property
    def bar(self) -> Progress:
        """The progress display (follows ``self.progress`` and ``self.stream``)."""
        self._bar.enabled, self._bar.stream = self.progress and self.world.is_root, self.stream
        return self._bar

    def _say(self, text: str) -> None:
        self.bar.write(text)

    def _summary(self, row: dict) -> str:
        val = "".join(f", {k} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
        return (f"epoch {row['epoch']}/{self.epochs}: train loss {row['train_loss']:.4f}{val}, "
                f"{row['seconds']:.1f} s, {row['images_per_s']:.1f} img/s")
