"""Learning-rate schedules: step -> learning rate, with an optional linear warm-up.

With ``W`` warm-up steps, ``T`` total steps and ``t = clip((step - W) / (T - W), 0, 1)``::

    warm-up  (step < W):  lr = base_lr * step / W                    (0 at step 0, base_lr at step W)
    cosine:               lr = final_lr + (base_lr - final_lr) * (1 + cos(pi * t)) / 2
    poly:                 lr = base_lr * (1 - t) ** power           (DeepLab's "poly", power 0.9)

Both reach their end value at ``step = T`` and stay there afterwards. The functions take a scalar
step (returning a float) or an array of steps (returning an array), so a whole curve is one call::

    import matplotlib.pyplot as plt
    steps = np.arange(1000)
    plt.plot(steps, poly(steps, 1000, 0.01, warmup=50))

:class:`Cosine` and :class:`Poly` bind the settings and are the ``step -> lr`` callables the
trainer takes.
"""
from __future__ import annotations

import numpy as np


def _check(total, base_lr, warmup):
    if int(total) < 1:
        raise ValueError(f"total must be >= 1 step, got {total}")
    if not 0 <= int(warmup) <= int(total):
        raise ValueError(f"warmup must be in [0, total={total}], got {warmup}")
    if not base_lr >= 0:
        raise ValueError(f"base_lr must be >= 0, got {base_lr}")


def _split(step, total, base_lr, warmup):
    """Warm-up values and the progress ``t`` in [0, 1] of the decay phase."""
    _check(total, base_lr, warmup)
    step = np.asarray(step, np.float64)
    warm = base_lr * step / warmup if warmup else np.full_like(step, base_lr)
    t = np.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    return step, warm, t


def _out(step, value):
    return float(value) if np.ndim(step) == 0 else value


def cosine(step, total: int, base_lr: float, warmup: int = 0, final_lr: float = 0.0):
    """Cosine decay from ``base_lr`` (at ``step = warmup``) to ``final_lr`` (at ``step = total``).

    >>> cosine(0, 100, 0.1), cosine(50, 100, 0.1), cosine(100, 100, 0.1)
    (0.1, 0.05, 0.0)
    >>> cosine(5, 100, 0.1, warmup=10), cosine(10, 100, 0.1, warmup=10)     # linear warm-up
    (0.05, 0.1)
    >>> cosine(np.array([0, 100]), 100, 0.1, final_lr=0.01).round(6).tolist()
    [0.1, 0.01]
    """
    step, warm, t = _split(step, total, base_lr, warmup)
    decay = final_lr + (base_lr - final_lr) * 0.5 * (1.0 + np.cos(np.pi * t))
    return _out(step, np.where(step < warmup, warm, decay))


def poly(step, total: int, base_lr: float, power: float = 0.9, warmup: int = 0):
    """Polynomial decay ``base_lr * (1 - t) ** power`` from ``step = warmup`` to 0 at ``step = total``.

    >>> poly(0, 100, 0.1), poly(100, 100, 0.1), round(poly(50, 100, 0.1, power=1.0), 6)
    (0.1, 0.0, 0.05)
    >>> poly(0, 100, 0.1, warmup=10), poly(10, 100, 0.1, warmup=10)
    (0.0, 0.1)
    """
    step, warm, t = _split(step, total, base_lr, warmup)
    return _out(step, np.where(step < warmup, warm, base_lr * (1.0 - t) ** power))


class Cosine:
    """``Cosine(total, base_lr, warmup=0, final_lr=0)(step)`` = :func:`cosine` with those settings.

    >>> Cosine(10, 1.0, warmup=2)(1)
    0.5
    """

    def __init__(self, total: int, base_lr: float, warmup: int = 0, final_lr: float = 0.0):
        _check(total, base_lr, warmup)
        self.total, self.base_lr, self.warmup, self.final_lr = int(total), float(base_lr), int(warmup), float(final_lr)

    def __call__(self, step):
        return cosine(step, self.total, self.base_lr, self.warmup, self.final_lr)

    def __repr__(self):
        return f"Cosine(total={self.total}, base_lr={self.base_lr}, warmup={self.warmup}, final_lr={self.final_lr})"


class Poly:
    """``Poly(total, base_lr, power=0.9, warmup=0)(step)`` = :func:`poly` with those settings.

    >>> Poly(10, 1.0)(np.arange(0, 11, 5)).round(4).tolist()
    [1.0, 0.5359, 0.0]
    """

    def __init__(self, total: int, base_lr: float, power: float = 0.9, warmup: int = 0):
        _check(total, base_lr, warmup)
        self.total, self.base_lr, self.power, self.warmup = int(total), float(base_lr), float(power), int(warmup)

    def __call__(self, step):
        return poly(step, self.total, self.base_lr, self.power, self.warmup)

    def __repr__(self):
        return f"Poly(total={self.total}, base_lr={self.base_lr}, power={self.power}, warmup={self.warmup})"


def constant(lr: float):
    """A schedule that always returns ``lr``.

    >>> constant(0.01)(123)
    0.01
    """
    lr = float(lr)
    return lambda step: lr
