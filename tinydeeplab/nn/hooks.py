"""Record the outputs of named submodules during a forward pass (for parity reports and teaching).

>>> import numpy as np
>>> from tinydeeplab.nn import Sequential, ReLU
>>> net = Sequential(("a", ReLU()), ("b", ReLU()))
>>> with record_outputs(net, ["a"]) as seen:
...     _ = net.forward(np.array([[-1.0, 2.0]], np.float32))
>>> seen["a"]
array([[0., 2.]], dtype=float32)
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def _watch_forward(model, names, note):
    """Within the block, ``forward`` of each module named in ``names`` also calls ``note(name, args, out)``."""
    modules = dict(model.modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"no submodules named {unknown}; examples of names: {list(modules)[1:6]}")

    def wrap(name, module):
        plain = module.forward

        def forward(*args, **kwargs):
            out = plain(*args, **kwargs)
            note(name, args, out)
            return out
        return forward

    for name in names:
        object.__setattr__(modules[name], "forward", wrap(name, modules[name]))
    try:
        yield
    finally:
        for name in names:
            modules[name].__dict__.pop("forward", None)


@contextmanager
def record_outputs(model, names):
    """Within the block, ``forward`` of each module named in ``names`` (dotted, as in
    ``model.modules()``) also stores a copy of its output in the yielded dict."""
    seen: dict = {}

    def note(name, args, out):
        seen[name] = out.copy() if hasattr(out, "copy") else out

    with _watch_forward(model, names, note):
        yield seen


@contextmanager
def record_shapes(model, names):
    """Within the block, ``forward`` of each module named in ``names`` also stores ``(input shape, output
    shape)`` in the yielded dict (nothing is copied: for counting costs and the maps a layer sees).

    >>> import numpy as np
    >>> from tinydeeplab.nn import Sequential, Conv2D
    >>> net = Sequential(("a", Conv2D(3, 8, 3, strides=2, seed=0)))
    >>> with record_shapes(net, ["a"]) as seen:
    ...     _ = net.forward(np.zeros((1, 9, 9, 3), np.float32))
    >>> seen["a"]
    ((1, 9, 9, 3), (1, 5, 5, 8))
    """
    seen: dict = {}

    def note(name, args, out):
        seen[name] = (tuple(int(s) for s in args[0].shape), tuple(int(s) for s in out.shape))

    with _watch_forward(model, names, note):
        yield seen


@contextmanager
def gradients_ready(model, callback):
    """Within the block, ``callback(name, module)`` runs right after the ``backward`` of every submodule
    that owns parameters (a convolution, a batch norm) has filled that module's ``grads``.

    A composite's backward runs its children in reverse order, so the callbacks arrive while the rest
    of the backward pass is still to come: data-parallel training starts the allreduce of finished
    gradients there (:class:`tinydeeplab.train.distributed.GradientBuckets`), overlapping communication
    with computation.

    >>> import numpy as np
    >>> from tinydeeplab.nn import Sequential, Conv2D, ReLU
    >>> net = Sequential(("a", Conv2D(1, 1, 1, seed=0)), ("r", ReLU()), ("b", Conv2D(1, 1, 1, seed=1)))
    >>> y = net.forward(np.ones((1, 2, 2, 1), np.float32))
    >>> with gradients_ready(net, lambda name, module: print(name, sorted(module.grads))):
    ...     _ = net.backward(np.ones_like(y))
    b ['kernel']
    a ['kernel']
    """
    owners = [(name, mod) for name, mod in model.modules() if mod.params]

    def wrap(name, module):
        plain = module.backward

        def backward(*args, **kwargs):
            out = plain(*args, **kwargs)
            callback(name, module)
            return out
        return backward

    for name, mod in owners:
        object.__setattr__(mod, "backward", wrap(name, mod))
    try:
        yield
    finally:
        for _, mod in owners:
            mod.__dict__.pop("backward", None)
