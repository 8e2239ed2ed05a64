"""Stochastic gradient descent with momentum, and global gradient-norm clipping.

For every parameter ``p`` with gradient ``g`` (``mu`` = momentum, ``wd`` = weight decay)::

    d = g + wd * p          only for conv kernels (key ``"kernel"``); d = g for everything else
    v = mu * v + d          velocity, starts at 0
    p = p - lr * v          plain momentum
    p = p - lr * (d + mu * v)   with nesterov=True (the same convention as PyTorch)

Weight-decay rule: decay is applied to parameters stored under the key ``"kernel"`` (the conv
weights, HWIO) and to nothing else: batch-norm ``gamma`` / ``beta`` and conv ``bias`` are never
decayed (decaying the BN scale only fights the next layer's normalisation).

Parameters are updated in place (``p -= ...``) through ``module.params``, so layers that read
``self.params[key]`` see the new values; parameters are looked up afresh at every step, so the
optimizer keeps working after ``model.load_state_dict`` replaced the arrays.

The arithmetic is the backends' ``sgd_update``, ``global_norm`` and ``scale_`` (the reference is
:mod:`tinydeeplab.functional.optim`), called on the backend that holds each parameter
(:func:`tinydeeplab.backend.ops_for`): on a device backend the update is one kernel per parameter,
the velocity lives beside the parameter, and the gradient norm comes back as one number.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import ops_for, to_numpy

DECAYED_KEYS = ("kernel",)
"""Parameter keys that weight decay applies to (conv kernels only)."""


def _params_and_grads(model):
    """Yield ``(dotted_name, key, param, grad or None)`` for every parameter of ``model``."""
    for path, mod in model.modules():
        for key, p in mod.params.items():
            yield (f"{path}.{key}" if path else key), key, p, mod.grads.get(key)


class SGD:
    """SGD with (Nesterov) momentum and weight decay on conv kernels only.

    ``step(lr)`` applies ``v = mu*v + g + wd*p`` (``wd`` only for ``kernel``) and ``p -= lr*v``.
    A parameter without a gradient (the last backward did not reach it) is left untouched.

    >>> from tinydeeplab.nn import Conv2D
    >>> conv = Conv2D(1, 1, 1, seed=0)
    >>> conv.params["kernel"][...] = 2.0
    >>> conv.grads["kernel"] = np.ones((1, 1, 1, 1), np.float32)
    >>> opt = SGD(conv, lr=0.1, momentum=0.9, weight_decay=0.5)
    >>> opt.step(); round(float(conv.params["kernel"][0, 0, 0, 0]), 6)   # v = 1 + 0.5*2 = 2; p = 2 - 0.1*2
    1.8
    >>> opt.step(); round(float(conv.params["kernel"][0, 0, 0, 0]), 6)   # v = 0.9*2 + 1 + 0.9 = 3.7
    1.43
    >>> sorted(opt.state_dict())
    ['kernel']
    """

    def __init__(self, model, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False):
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.model = model
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.nesterov = bool(nesterov)
        self.velocity: dict[str, np.ndarray] = {}   # dotted name -> v, same shape/dtype as the parameter

    def step(self, lr: float | None = None) -> None:
        """One update of every parameter that has a gradient, with ``lr`` (default: ``self.lr``)."""
        lr = self.lr if lr is None else float(lr)
        mu, wd = self.momentum, self.weight_decay
        for name, key, p, g in _params_and_grads(self.model):
            if g is None:
                continue
            owner = ops_for(p)                               # the backend whose memory holds p
            v = None
            if mu:
                v = self.velocity.get(name)
                if v is None or tuple(v.shape) != tuple(p.shape):
                    v = owner.zeros_like(p)
                self.velocity[name] = v = owner.to_device(v)  # e.g. restored from a checkpoint
            owner.sgd_update(p, owner.to_device(g), v, lr=lr, momentum=mu,
                             weight_decay=wd if key in DECAYED_KEYS else 0.0, nesterov=self.nesterov)

    def zero_grad(self) -> None:
        self.model.zero_grad()

    def state_dict(self) -> dict[str, np.ndarray]:
        """The momentum buffers by parameter name (copies): the optimizer's checkpoint content."""
        return {name: np.array(to_numpy(v), copy=True) for name, v in self.velocity.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], *, source: str = "optimizer state") -> None:
        """Restore momentum buffers; ``ValueError`` naming ``source`` and the parameter on a mismatch."""
        shapes = {name: p.shape for name, _, p, _ in _params_and_grads(self.model)}
        for name, v in state.items():
            if name not in shapes:
                raise ValueError(f"{source}: momentum buffer for {name!r}, which is not a parameter of the model")
            if np.shape(v) != shapes[name]:
                raise ValueError(f"{source}: momentum buffer {name} has shape {np.shape(v)}, "
                                 f"the parameter has shape {shapes[name]}")
        dtypes = {name: p.dtype for name, _, p, _ in _params_and_grads(self.model)}
        self.velocity = {name: np.array(v, dtype=dtypes[name], copy=True) for name, v in state.items()}

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov}

    def __repr__(self) -> str:
        return "SGD(" + ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items()) + ")"


def clip_grad_norm(model, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    ``total = sqrt(sum_p ||g_p||^2)``; when ``total > max_norm`` every ``g`` becomes
    ``g * max_norm / total``. Returns ``total`` (before clipping; ``inf`` / ``nan`` pass through
    unchanged and leave the gradients as they are, for the caller to report).

    >>> from tinydeeplab.nn import Conv2D
    >>> conv = Conv2D(1, 2, 1, seed=0)
    >>> conv.grads["kernel"] = np.array([3.0, 4.0], np.float32).reshape(1, 1, 1, 2)
    >>> clip_grad_norm(conv, 1.0)
    5.0
    >>> conv.grads["kernel"].ravel().tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    grads = [g for _, _, _, g in _params_and_grads(model) if g is not None]
    if not grads:
        return 0.0
    owner = ops_for(grads[0])
    total = owner.global_norm(grads)
    if math.isfinite(total) and total > max_norm:
        for g in grads:
            owner.scale_(g, max_norm / total)
    return total
