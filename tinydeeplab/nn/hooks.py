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
def record_outputs(model, names):
    """Within the block, ``forward`` of each module named in ``names`` (dotted, as in
    ``model.modules()``) also stores a copy of its output in the yielded dict."""
    modules = dict(model.modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"no submodules named {unknown}; examples of names: {list(modules)[1:6]}")
    seen: dict = {}

    def wrap(name, module):
        plain = module.forward

        def forward(*args, **kwargs):
            out = plain(*args, **kwargs)
            seen[name] = out.copy() if hasattr(out, "copy") else out
            return out
        return forward

    for name in names:
        object.__setattr__(modules[name], "forward", wrap(name, modules[name]))
    try:
        yield seen
    finally:
        for name in names:
            modules[name].__dict__.pop("forward", None)
