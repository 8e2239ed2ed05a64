"""Counting kernel launches: how many kernels a forward pass or a training step starts, by kernel name.

Every launch costs the host a few microseconds (Numba checks and packs the arguments, the driver queues
the launch) whatever the kernel does, so a step of ``L`` launches cannot take less than ``L`` times that
cost, and fusing kernels lowers ``L``. The count depends on the layer list and the shapes' *kinds*, not on
the GPU, so it can be taken under the simulator (``NUMBA_ENABLE_CUDASIM=1``) at tiny image sizes.

:func:`count_launches` wraps the one method every launch goes through, ``kernel[grid, block](*args)``
as well as ``kernel.forall(n)(*args)``:

==============  ==============================================  ==========================================
where           class                                           method
==============  ==============================================  ==========================================
GPU             ``numba.cuda.dispatcher.CUDADispatcher``        ``call(args, grid, block, stream, shmem)``
simulator       ``numba.cuda.simulator.kernel.FakeCUDAKernel``  ``__call__(*args)`` (device functions are
                                                                called the same way: not counted)
==============  ==============================================  ==========================================

``execute=False`` counts without running the kernels (the outputs keep whatever memory held): the host
code between launches only looks at shapes, so the count is the same (``tests/test_launches.py`` checks
that on a small segmenter) and a ResNet50 step is counted in seconds on the simulator instead of hours.
One difference with a real GPU remains: automatic split-K (:func:`.gemm.choose_split_k`) is off under the
simulator, and on a GPU each split GEMM adds one launch (the sum of its splits).

>>> import numpy as np
>>> from tinydeeplab.kernels import cuda as G
>>> x = G.to_device(np.ones((2, 3, 3, 4), np.float32))
>>> with count_launches() as counts:
...     y = G.relu_forward(x)[0]
>>> sum(counts.values()) >= 1, float(G.to_host(y).sum())
(True, 72.0)
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

from .device import SIMULATED


def _launch_method():
    """``(class, method name)`` that every kernel launch goes through (simulator or GPU)."""
    if SIMULATED:
        from numba.cuda.simulator.kernel import FakeCUDAKernel

        return FakeCUDAKernel, "__call__"
    from numba.cuda.dispatcher import CUDADispatcher

    return CUDADispatcher, "call"


def kernel_name(kernel) -> str:
    """The Python name of a ``@cuda.jit`` kernel (simulator or GPU)."""
    return getattr(getattr(kernel, "py_func", kernel), "__name__", type(kernel).__name__)


@contextmanager
def count_launches(execute: bool = True):
    """Within the block, count kernel launches by kernel name in the yielded ``Counter``.

    ``execute=False`` skips the kernels themselves (see the module docstring). The launch method is put
    back on exit; blocks do not nest (the inner one would see no launches).
    """
    cls, method = _launch_method()
    original = cls.__dict__[method]
    counts: Counter = Counter()

    def counted(kernel, *args, **kwargs):
        if getattr(kernel, "_device", False):         # a device function called inside a simulated kernel
            return original(kernel, *args, **kwargs)
        counts[kernel_name(kernel)] += 1
        if execute:
            return original(kernel, *args, **kwargs)
        return None

    setattr(cls, method, counted)
    try:
        yield counts
    finally:
        setattr(cls, method, original)
