"""One way to set up a training run: the loader, SGD, the schedule, validation and the :class:`Trainer`.

``tinydeeplab train`` and ``tinydeeplab demo`` both call :func:`build_trainer`, so a run from the
command line and one from Python are built the same way::

    images --(transform: random scale, crop, flip)--> loader (model.preprocessor.normalize: x = pixels * scale + offset)
    lr(step) = warm-up then cosine or poly decay from ``lr`` over ``epochs * len(loader)`` steps
    SGD(momentum, weight decay on conv kernels), global gradient norm clipped to ``clip_norm``

>>> import tempfile
>>> from tinydeeplab.data import SyntheticShapes
>>> from tinydeeplab.models.recipes import build_model
>>> data = SyntheticShapes(4, size=(32, 32))
>>> model = build_model("tiny", data.num_classes)
>>> with tempfile.TemporaryDirectory() as d:
...     trainer = build_trainer(model, data, out_dir=d, epochs=1, batch_size=2, crop=None, lr=0.01, progress=False)
...     len(trainer.fit())
1
"""
from __future__ import annotations

from .evaluate import evaluate
from .optim import SGD
from .schedules import Cosine, Poly
from .trainer import Trainer

SCHEDULES = {"cosine": Cosine, "poly": Poly}


def build_trainer(model, train_set, *, out_dir, epochs: int, batch_size: int = 8, crop=(256, 256),
                  scale_range=None, flip: bool = True, lr: float = 0.05,
                  schedule: str = "poly", warmup: int = 50, momentum: float = 0.9, weight_decay: float = 1e-4,
                  clip_norm: float | None = 5.0, seed: int = 0, val_set=None, progress: bool = True,
                  checkpoint_meta=None, run_config=None, allow_changes=(), world=None) -> Trainer:
    """A :class:`Trainer` for ``model`` on ``train_set`` (see the module docstring).

    ``crop=None`` trains on whole images (all of one size); ``scale_range=(lo, hi)`` adds a random
    rescale by a factor in ``[lo, hi]`` before the crop; ``warmup`` is capped at half the run; ``val_set`` is evaluated after every
    epoch (mIoU). ``checkpoint_meta`` defaults to the model's preset configs, so ``tinydeeplab
    evaluate --checkpoint`` can rebuild the model. ``world``: the ranks of a data-parallel run
    (:mod:`tinydeeplab.train.distributed`): ``batch_size`` is then the global batch, each rank loads its
    shard, and validation is shared out too.
    """
    from ..data import BatchLoader, Compose, RandomCrop, RandomHorizontalFlip, RandomScale
    from ..errors import OptionError
    from ..io.keras_preset import preset_configs

    if schedule not in SCHEDULES:
        raise OptionError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    steps = []
    if scale_range is not None:
        steps.append(RandomScale(*scale_range))
    if crop is not None:
        steps.append(RandomCrop(tuple(crop)))
    if flip:
        steps.append(RandomHorizontalFlip())
    shard = None if world is None or world.size == 1 else (world.rank, world.size)
    loader = BatchLoader(train_set, batch_size, transform=Compose(steps), seed=seed,
                         converter=model.preprocessor, shard=shard)   # the model's own normalisation
    total = int(epochs) * len(loader)
    lr_schedule = SCHEDULES[schedule](total, lr, warmup=min(int(warmup), total // 2))
    val_fn = (lambda m: evaluate(m, val_set, progress=False, world=world)) if val_set is not None else None
    meta = {"model_configs": preset_configs(model)} if checkpoint_meta is None else checkpoint_meta
    return Trainer(model, SGD(model, lr, momentum=momentum, weight_decay=weight_decay), loader, epochs=epochs,
                   lr_schedule=lr_schedule, out_dir=out_dir, clip_norm=clip_norm, val_fn=val_fn, progress=progress,
                   checkpoint_meta=meta, run_config=run_config, allow_changes=allow_changes, world=world)
