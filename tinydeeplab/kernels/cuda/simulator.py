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

**Poisoned shared memory.** A fresh shared array holds whatever ``np.empty`` found, often zeros or the
values of an earlier launch, so a kernel that reads shared memory before every thread has written it
(a missing ``cuda.syncthreads()``) can still give the right answer by luck. Inside
:func:`poisoned_shared_memory`, new shared arrays are filled with NaN (floats) or the largest value of
the type (integers), so such a read shows up in the result; the exercise checkers of notebook 16 use it.
"""
from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np

_LOCK = threading.Lock()
_poison = False
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
            if _poison:
                _fill_with_poison(res)
            self._allocations[key] = res
    return res


def _fill_with_poison(array) -> None:
    """NaN for floating-point arrays, the type's largest value for integers; other dtypes are left."""
    if array.dtype.kind in "fc":
        array.fill(np.nan)
    elif array.dtype.kind in "iu":
        array.fill(np.iinfo(array.dtype).max)


@contextlib.contextmanager
def poisoned_shared_memory():
    """Within the block, shared arrays made by the simulator start as NaN (floats) or the type's maximum
    (integers) instead of ``np.empty`` garbage; a no-op on a real GPU (or if the fix is not installed).

    Arrays are made once per launch (at the first thread's ``cuda.shared.array`` call) and shared by all
    the blocks of that launch, so the poison shows in the first block that reads before writing.
    """
    global _poison
    previous, _poison = _poison, True
    try:
        yield
    finally:
        _poison = previous


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
