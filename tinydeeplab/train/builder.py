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

import numpy as np

from .evaluate import evaluate
from .optim import SGD
from .schedules import Cosine, Poly
from .trainer import Trainer

SCHEDULES = {"cosine": Cosine, "poly": Poly}


def build_trainer(model, train_set, *, out_dir, epochs: int, batch_size: int = 8, crop=(256, 256),
                  scale_range=None, flip: bool = True, lr: float = 0.05,
                  schedule: str = "poly", warmup: int = 50, momentum: float = 0.9, weight_decay: float = 1e-4,
                  clip_norm: float | None = 5.0, seed: int = 0, val_set=None, progress: bool = True,
                  checkpoint_meta=None, run_config=None, allow_changes=(), world=None,
                  class_weights=None, loss=None) -> Trainer:
    """A :class:`Trainer` for ``model`` on ``train_set`` (see the module docstring).

    ``crop=None`` trains on whole images (all of one size); ``scale_range=(lo, hi)`` adds a random
    rescale by a factor in ``[lo, hi]`` before the crop; ``warmup`` is capped at half the run; ``val_set`` is evaluated after every
    epoch (mIoU); ``class_weights`` (one per class, e.g. :func:`median_frequency_weights`) weight the
    cross-entropy. ``loss``: a name of :data:`~tinydeeplab.train.losses.LOSSES` or a
    :class:`~tinydeeplab.train.losses.SegmentationLoss` (None: ``ce``, or ``bce`` for a binary model,
    ``num_classes=1``). ``checkpoint_meta`` defaults to the model's preset configs, so ``tinydeeplab
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
                   checkpoint_meta=meta, run_config=run_config, allow_changes=allow_changes,
                   world=world, class_weights=class_weights, loss=loss)


def median_frequency_weights(dataset, ignore_label: int = 255) -> np.ndarray:
    """Median-frequency class weights (Eigen & Fergus; SegNet's CamVid weights) from the labels of ``dataset``::

        f_c = (pixels of class c) / (pixels of the images that contain c),    w_c = median_c(f) / f_c

    so a class as frequent as the median gets weight 1 and rarer classes more. A class that appears in no
    image gets weight 0 (it cannot be learnt from this data). Reads every label once (``read_label``).

    >>> class Two:                                   # image 0: 3 pixels of class 0, 1 of class 1; image 1: all 0
    ...     num_classes = 2
    ...     def __len__(self): return 2
    ...     def read_label(self, i): return np.array([[0, 0], [0, 1]]) if i == 0 else np.zeros((2, 2), int)
    >>> median_frequency_weights(Two())              # f = (7/8, 1/4), median 9/16
    array([0.64285713, 2.25      ], dtype=float32)
    """
    k = dataset.num_classes
    class_pixels = np.zeros(k, np.float64)
    image_pixels = np.zeros(k, np.float64)
    for i in range(len(dataset)):
        label = np.asarray(dataset.read_label(i))                                      # (H, W)
        counts = np.bincount(label[label != ignore_label].ravel(), minlength=k)[:k]
        class_pixels += counts
        image_pixels += (counts > 0) * label.size
    present = class_pixels > 0
    freq = np.where(present, class_pixels / np.maximum(image_pixels, 1), np.nan)
    weights = np.where(present, np.nanmedian(freq) / np.where(present, freq, 1.0), 0.0)
    return weights.astype(np.float32)
