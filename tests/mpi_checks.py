"""What the ranks of ``tests/test_distributed.py`` run: ``mpiexec -n 2 python tests/mpi_checks.py CHECK OUT``.

Each check writes what it saw to ``OUT`` (rank 0: the run directory; every rank: ``rank<r>.npz``) and
the test compares it with a single-process run of the same thing. The shared setup (:func:`setup`) is
imported by the test too, so both sides build exactly the same model, data and trainer.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

GLOBAL_BATCH, IMAGES, SIZE = 4, 8, 32


def dataset():
    from tinydeeplab.data import SyntheticShapes

    return SyntheticShapes(IMAGES, size=(SIZE, SIZE), seed=3)


def model():
    """The tiny DeepLabV3+ without dropout (its masks would differ between one process and two)."""
    from tinydeeplab.models.recipes import build_model
    from tinydeeplab.nn.layers import Dropout

    net = build_model("tiny", dataset().num_classes, seed=0)
    for _, mod in net.modules():
        if isinstance(mod, Dropout):
            mod.rate = 0.0
    return net


def trainer(out, epochs, world=None, net=None):
    from tinydeeplab.train.builder import build_trainer

    return build_trainer(net or model(), dataset(), out_dir=out, epochs=epochs, batch_size=GLOBAL_BATCH, crop=None,
                         lr=0.05, warmup=1, seed=0, progress=False, world=world)


def arrays(net) -> dict:
    """Weights, moving statistics and the last step's gradients by name."""
    out = {f"w:{k}": np.asarray(v) for k, v in net.state_dict().items()}
    out.update({f"g:{k}": np.asarray(v) for k, v in net.named_gradients()})
    return out


def batch_statistics(net, x) -> dict:
    """Training-mode BN batch mean and variance of every batch norm of ``net`` (not synchronized) for ``x``."""
    from tinydeeplab.nn.layers import BatchNorm

    net.forward(x, training=True)
    return {f"{kind}:{name}": np.asarray(mod._cache[kind]) for name, mod in net.modules()
            if isinstance(mod, BatchNorm) for kind in ("mean", "var")}


def main(check: str, out: Path) -> int:
    from tinydeeplab.train.distributed import World, fail_all, sync_batchnorm

    world = World.from_environment(True, timeout=float(sys.argv[3]) if len(sys.argv) > 3 else 60.0)
    out.mkdir(parents=True, exist_ok=True)
    if check == "train":                       # SyncBN equivalence, per-rank BN statistics, resume phase 1
        net = model()
        sync_batchnorm(net, world)
        history = trainer(out / "sync", 2, world, net).fit()
        saved = {**arrays(net), "loss": np.array([r["train_loss"] for r in history])}
        from tinydeeplab.data import BatchLoader

        shard = BatchLoader(dataset(), GLOBAL_BATCH, shard=(world.rank, world.size), shuffle=False, prefetch=0,
                            converter=model().preprocessor)
        x, _ = next(iter(shard))
        saved.update({f"bn:{k}": v for k, v in batch_statistics(model(), x).items()})
        saved["x"] = x
        np.savez(out / f"rank{world.rank}.npz", **saved)
        trainer(out / "resume", 1, world, _synced(model(), world)).fit()          # stopped after epoch 1
        return 0
    if check == "fail":                        # rank 1 raises in epoch 2: every rank stops, one line
        from tinydeeplab.errors import DatasetError

        data = dataset()
        plain = type(data).__getitem__
        calls = {"n": 0}

        def failing(self, i):
            calls["n"] += 1
            if world.rank == 1 and calls["n"] > IMAGES // world.size:
                raise DatasetError(f"item {i}: truncated PNG (injected failure)")
            return plain(self, i)
        type(data).__getitem__ = failing
        try:
            trainer(out / "run", 3, world, _synced(model(), world)).fit()
        except DatasetError as err:
            return fail_all(world, "train", str(err))
        return 0
    if check == "hang":                        # rank 1 never joins: rank 0 gives up after the timeout
        if world.rank == 1:
            time.sleep(120)
            return 0
        from tinydeeplab.errors import DistributedError

        t0 = time.monotonic()
        try:
            world.allreduce(np.ones(4), "the test allreduce")
        except DistributedError as err:
            (out / "elapsed.txt").write_text(f"{time.monotonic() - t0:.3f}")
            return fail_all(world, "train", str(err))
        return 0
    raise SystemExit(f"unknown check {check!r}")


def _synced(net, world):
    from tinydeeplab.train.distributed import sync_batchnorm

    sync_batchnorm(net, world)
    return net


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
