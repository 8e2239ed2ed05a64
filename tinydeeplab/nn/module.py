"""The Module base class: parameters, gradients, buffers and child modules.

A module owns three dicts with string keys:

* ``params``  — trainable arrays (``kernel``, ``bias``, ``gamma``, ``beta``);
* ``grads``   — the same keys, filled by :meth:`backward`;
* ``buffers`` — non-trainable state (batch norm's ``moving_mean`` / ``moving_variance``).

Child modules assigned as attributes are registered in assignment order, so every
array is reachable by a readable dotted name such as
``backbone.image_encoder.stack2.block1.conv2.kernel``.

There is no autograd tape: ``forward(x, training)`` stores what ``backward`` needs on the
module itself, and a composite module writes its backward out by hand in reverse order.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ..backend import zeros_like


def _place_like(new, old):
    """``new`` (a host array) in the memory where ``old`` lives (:mod:`tinydeeplab.backend`)."""
    from ..backend import ops_for

    return ops_for(old).to_device(new)


def first_non_finite(named_arrays) -> str | None:
    """The first name in ``{name: array}`` whose array holds a NaN or an infinity (device arrays are
    copied to the host first), or None when every value is finite.

    >>> first_non_finite({"a": np.ones(2), "b": np.array([1.0, np.inf]), "c": np.array([np.nan])})
    'b'
    >>> first_non_finite({"a": np.ones(2)}) is None
    True
    """
    from ..backend import to_numpy

    for name, a in dict(named_arrays).items():
        a = to_numpy(a)
        if a is not None and a.dtype.kind in "fc" and not np.isfinite(a).all():
            return name
    return None


_INFERENCE = threading.local()


@contextmanager
def inference_mode():
    """Forward passes inside this block keep nothing for a backward pass.

    Every layer normally keeps its op's cache (its input, at least) until the next forward, so during a
    forward *all* activations stay alive: memory grows with depth. Inside ``inference_mode()`` a layer
    running with ``training=False`` drops its cache at once, so an activation is freed as soon as the
    next layer has read it. The outputs are the same; calling ``backward`` afterwards raises.
    ``predict``, ``segment`` and evaluation use it.

    >>> import numpy as np
    >>> from tinydeeplab.nn import ReLU
    >>> relu = ReLU()
    >>> with inference_mode():
    ...     y = relu(np.array([-1.0, 2.0]))
    >>> relu.backward(np.ones(2))
    Traceback (most recent call last):
    ...
    RuntimeError: ReLU.backward called before forward (or after a forward under inference_mode)
    """
    previous = getattr(_INFERENCE, "active", False)
    _INFERENCE.active = True
    try:
        yield
    finally:
        _INFERENCE.active = previous


def in_inference_mode() -> bool:
    """Whether the calling thread is inside :func:`inference_mode`."""
    return getattr(_INFERENCE, "active", False)


class Module:
    def __init__(self):
        object.__setattr__(self, "_children", OrderedDict())
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    # -- registration -------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def children(self) -> Iterator[tuple[str, "Module"]]:
        return iter(self._children.items())

    def modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """Yield ``(dotted_name, module)`` for this module and every descendant, depth first."""
        yield prefix, self
        for name, child in self._children.items():
            yield from child.modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        for path, mod in self.modules():
            for key, value in mod.params.items():
                yield (f"{path}.{key}" if path else key), value

    def named_gradients(self) -> Iterator[tuple[str, np.ndarray]]:
        """Gradients by dotted name; a parameter the last backward did not reach (e.g. ResNet v2's
        ``post_bn``, which no pyramid output uses) has gradient zero."""
        for path, mod in self.modules():
            for key, value in mod.params.items():
                g = mod.grads.get(key)
                yield (f"{path}.{key}" if path else key), zeros_like(value) if g is None else g

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for path, mod in self.modules():
            for key, value in mod.buffers.items():
                yield (f"{path}.{key}" if path else key), value

    def state_dict(self) -> dict[str, np.ndarray]:
        """All parameters and buffers by dotted name (the checkpoint content)."""
        return {**dict(self.named_parameters()), **dict(self.named_buffers())}

    def rng_states(self) -> dict:
        """``{module name: bit-generator state}`` of every module holding a random generator as ``rng``
        (dropout): plain JSON, stored in checkpoints so a resumed run draws the same masks."""
        return {path: mod.rng.bit_generator.state for path, mod in self.modules()
                if isinstance(getattr(mod, "rng", None), np.random.Generator)}

    def set_rng_states(self, states: dict) -> None:
        """Restore what :meth:`rng_states` returned (modules not named in ``states`` are left alone)."""
        for path, mod in self.modules():
            if path in states and isinstance(getattr(mod, "rng", None), np.random.Generator):
                mod.rng.bit_generator.state = states[path]

    def first_non_finite(self) -> str | None:
        """Dotted name of the first parameter or buffer holding a NaN or an infinity, else None.

        Written before every checkpoint and preset: a diverged model must never replace a good one.
        """
        return first_non_finite(self.state_dict())

    def load_state_dict(self, state: dict[str, np.ndarray], *, strict: bool = True, source: str = "state") -> None:
        """Copy arrays into this module, checking every name and shape.

        Raises ``ValueError`` listing missing / unexpected names (``strict``) or the first
        shape mismatch, naming ``source`` (for example the checkpoint path).
        """
        own = self.slots()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(f"{source}: missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
                             f"unexpected {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}")
        for name, (table, key) in own.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != table[key].shape:
                raise ValueError(f"{source}: {name} has shape {value.shape}, the model expects {table[key].shape}")
            new = value.astype(table[key].dtype, copy=True)
            table[key] = _place_like(new, table[key])                          # stay where it was

    def slots(self) -> dict[str, tuple[dict, str]]:
        """``{dotted name: (table, key)}`` for every parameter and buffer: ``table[key]`` is the array, and
        assigning ``table[key] = new`` replaces it in the model (how loaders write weights in).

        >>> from tinydeeplab.nn import Conv2D
        >>> table, key = Conv2D(1, 2, 1, seed=0).slots()["kernel"]
        >>> key, table[key].shape
        ('kernel', (1, 1, 1, 2))
        """
        slots = {}
        for path, mod in self.modules():
            for table in (mod.params, mod.buffers):
                for key in table:
                    slots[f"{path}.{key}" if path else key] = (table, key)
        return slots

    def astype(self, dtype) -> "Module":
        """Cast every parameter and buffer in place (float64 for gradient checks); returns self."""
        for _, mod in self.modules():
            for table in (mod.params, mod.buffers):
                for key in table:
                    table[key] = table[key].astype(dtype)
        return self

    def to(self, name: str) -> "Module":
        """Move every parameter and buffer to the memory of backend ``name``; drops the gradients; returns self.

        A device backend (see :data:`tinydeeplab.backend.DEVICE_BACKENDS`): device arrays, copied once, after
        which the ops keep everything on the device; a host backend (``"numpy"``, ``"cpu"``): NumPy arrays.
        Select the same backend for the ops: ``backend.set_backend(name); model.to(name)``.

        >>> from tinydeeplab.nn import Conv2D
        >>> type(Conv2D(1, 2, 1, seed=0).to("numpy").params["kernel"]).__name__
        'ndarray'
        """
        from ..backend import BACKENDS, transfer

        if name not in BACKENDS:
            raise ValueError(f"Module.to: name must be one of {BACKENDS}, got {name!r}")
        for _, mod in self.modules():
            for table in (mod.params, mod.buffers):
                for key in table:
                    table[key] = transfer(table[key], name)
            mod.grads = {}
        return self

    def num_parameters(self) -> int:
        return int(sum(p.size for _, p in self.named_parameters()))

    def zero_grad(self) -> None:
        for _, mod in self.modules():
            mod.grads = {k: zeros_like(v) for k, v in mod.params.items()}

    # -- computation --------------------------------------------------------------------------
    def forward(self, x, training: bool = False):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x, training: bool = False):
        return self.forward(x, training=training)

    def __repr__(self) -> str:
        lines = [type(self).__name__ + "("]
        for name, child in self._children.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + ")" if len(lines) > 1 else type(self).__name__ + "()"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Children are named ``"0"``, ``"1"``, ... unless given as ``(name, module)`` pairs.
    """

    def __init__(self, *layers):
        super().__init__()
        for i, layer in enumerate(layers):
            name, module = layer if isinstance(layer, tuple) else (str(i), layer)
            setattr(self, name, module)

    def forward(self, x, training: bool = False):
        for _, layer in self.children():
            x = layer.forward(x, training=training)
        return x

    def backward(self, dout):
        for _, layer in reversed(list(self.children())):
            dout = layer.backward(dout)
        return dout
