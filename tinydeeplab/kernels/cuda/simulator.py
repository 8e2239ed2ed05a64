"""Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), made safe for kernels that use shared memory.

The simulator runs every thread of a block as a Python thread. ``cuda.shared.array(shape, dtype)`` must
hand all of them the *same* array, so the simulator keeps the block's arrays in a dict keyed by the
calling source line and does::

    res = allocations.get(line)          # a thread switch can happen here...
    if res is None:
        res = np.empty(shape, dtype)     # ...so two threads may both find nothing
        allocations[line] = res          # and each keep an array of its own

A thread left with its own array writes where nobody reads and reads uninitialised memory: wrong
results, rarely (it takes a switch of the interpreter lock inside that window; our CUDA tests hit it
once, as a gradient norm of 4848 instead of 1.05). :func:`make_shared_arrays_thread_safe` replaces the
method with one that does the look-up and the store under a lock. It changes nothing on a real GPU.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

_LOCK = threading.Lock()
original_shared_array = None
"""The simulator's own ``FakeCUDAShared.array``, kept once replaced (the tests show its race with it)."""


def shared_array(self, shape, dtype):
    """``FakeCUDAShared.array`` with the look-up and the store made atomic; same keys (file, line)."""
    from numba.core import types
    from numba.np import numpy_support

    if shape == 0:                                    # dynamic shared memory: one buffer, no look-up
        return original_shared_array(self, shape, dtype)
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    caller = sys._getframe(1)                         # the kernel line that asked for the array
    key = (caller.f_code.co_filename, caller.f_lineno)
    with _LOCK:
        res = self._allocations.get(key)
        if res is None:
            res = np.empty(shape, dtype)
            self._allocations[key] = res
    return res


def make_shared_arrays_thread_safe() -> bool:
    """Install :func:`shared_array` in the simulator; False (and no change) if its internals are not the
    ones this was written for."""
    try:
        from numba.cuda.simulator.kernelapi import FakeCUDAShared
    except ImportError:
        return False
    if FakeCUDAShared.array is shared_array:
        return True
    if not isinstance(getattr(FakeCUDAShared(0), "_allocations", None), dict):
        return False
    global original_shared_array
    original_shared_array = FakeCUDAShared.array
    FakeCUDAShared.array = shared_array
    return True
