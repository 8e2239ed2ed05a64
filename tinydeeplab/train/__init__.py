"""Training and evaluation: SGD, learning-rate schedules, the confusion matrix, checkpoints, the trainer.

* :mod:`.optim`       — :class:`SGD` (momentum, weight decay on conv kernels only), :func:`clip_grad_norm`
* :mod:`.schedules`   — :func:`cosine`, :func:`poly` (with linear warm-up), :class:`Cosine`, :class:`Poly`
* :mod:`.metrics`     — :class:`ConfusionMatrix` -> per-class IoU, mIoU, pixel accuracy
* :mod:`.checkpoint`  — atomic ``.npz`` checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint`
* :mod:`.trainer`     — :class:`Trainer` (progress line, metrics.csv/json, curves.png, resume)
* :mod:`.evaluate`    — :func:`predict_logits` (multi-scale / flip / sliding window), :func:`evaluate`
* :mod:`.tiling`      — :func:`segment_tiled`: large images tile by tile, labels band by band (bounded memory)
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate, predict_logits, sliding_window_logits
from .metrics import ConfusionMatrix
from .optim import SGD, clip_grad_norm
from .schedules import Cosine, Poly, constant, cosine, poly
from .tiling import segment_tiled
from .trainer import NonFiniteLossError, Trainer

__all__ = ["SGD", "clip_grad_norm", "Cosine", "Poly", "constant", "cosine", "poly", "ConfusionMatrix",
           "save_checkpoint", "load_checkpoint", "Trainer", "NonFiniteLossError", "evaluate", "predict_logits",
           "sliding_window_logits", "segment_tiled"]
