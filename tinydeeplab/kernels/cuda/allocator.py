"""A caching device-memory allocator for Numba (an EMM plugin): freed blocks are kept and handed out again.

Every op allocates its outputs and scratch buffers (``cuda.device_array``). With Numba's own manager each
allocation is a ``cuMemAlloc`` and each freed array joins a queue that is flushed with ``cuMemFree`` every
few frees; ``cuMemFree`` waits for the whole device, so the CPU can no longer queue kernels ahead of the
GPU. A training step repeats the same shapes, so this manager keeps freed blocks in a pool keyed by their
(rounded) size and serves the next request of that size from it::

    memalloc(n):  b = pool[round(n)].pop()  or  cuMemAlloc(round(n))       # steady state: no driver call
    array freed:  pool[round(n)].append(b)                                 # no cuMemFree, no sync

Reusing a block at once is safe because every op runs on the default stream: a kernel that still reads the
old array was queued before any kernel that writes the new one. When the GPU runs out of memory the pool is
emptied (its blocks really freed) and the allocation retried. :func:`empty_cache` does that on request;
:func:`stats` tells what is cached.

Numba instantiates the manager when it creates a CUDA context, so :func:`install` (called when
:mod:`tinydeeplab.kernels.cuda` is imported) must come first; ``TINYDEEPLAB_CUDA_CACHING=0`` keeps Numba's
own manager. The simulator has no device memory and ignores all of this.
"""
from __future__ import annotations

import os
import weakref

SMALL, SMALL_STEP, LARGE_STEP = 2**20, 512, 2 * 2**20


def round_size(nbytes: int) -> int:
    """Size class of a request: a multiple of 512 B up to 1 MiB, of 2 MiB above (waste at most 2 MiB).

    >>> round_size(1), round_size(513), round_size(3 * 2**20 + 1) == 4 * 2**20
    (512, 1024, True)
    """
    step = SMALL_STEP if nbytes <= SMALL else LARGE_STEP
    return max(step, -(-int(nbytes) // step) * step)


class BlockPool:
    """Free blocks by size class; ``take`` returns one or None, ``give`` files one back.

    >>> pool = BlockPool()
    >>> pool.take(512) is None
    True
    >>> pool.give(512, "block"); pool.take(512), pool.take(512)
    ('block', None)
    """

    def __init__(self):
        self.free: dict[int, list] = {}
        self.hits = self.misses = 0

    def take(self, size: int):
        blocks = self.free.get(size)
        if blocks:
            self.hits += 1
            return blocks.pop()
        self.misses += 1
        return None

    def give(self, size: int, block) -> None:
        self.free.setdefault(size, []).append(block)

    def cached_bytes(self) -> int:
        return sum(size * len(blocks) for size, blocks in self.free.items())

    def clear(self) -> None:
        self.free.clear()


_managers: "weakref.WeakSet" = weakref.WeakSet()


def _manager_class():
    """The plugin class, built on Numba's own manager (which does the real ``cuMemAlloc``)."""
    from numba.cuda.cudadrv.driver import CudaAPIError, MemoryPointer, NumbaCUDAMemoryManager

    class CachingMemoryManager(NumbaCUDAMemoryManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.pool = BlockPool()
            if self.context is not None:
                _managers.add(self)

        def memalloc(self, size):
            rounded = round_size(size)
            block = self.pool.take(rounded)
            if block is None:
                try:
                    block = super().memalloc(rounded)          # owns the allocation while it lives
                except CudaAPIError:                           # out of memory even after Numba's retry:
                    self.pool.clear()                          # drop the cached blocks for real
                    self.deallocations.clear()
                    block = super().memalloc(rounded)
            pool = self.pool
            return MemoryPointer(weakref.proxy(self.context), block.device_pointer, size,
                                 finalizer=lambda: pool.give(rounded, block))

        def reset(self):
            self.pool.clear()
            super().reset()

    return CachingMemoryManager


def install() -> bool:
    """Make Numba use the caching manager for contexts created from now on; False when disabled or simulated."""
    from numba import cuda

    if os.environ.get("TINYDEEPLAB_CUDA_CACHING", "1") == "0" or not hasattr(cuda, "set_memory_manager"):
        return False
    cuda.set_memory_manager(_manager_class())
    return True


def stats() -> dict:
    """``{"cached_bytes", "hits", "misses"}`` summed over the live caching managers (zeros if none)."""
    out = {"cached_bytes": 0, "hits": 0, "misses": 0}
    for m in list(_managers):
        out["cached_bytes"] += m.pool.cached_bytes()
        out["hits"] += m.pool.hits
        out["misses"] += m.pool.misses
    return out


def empty_cache() -> None:
    """Free every cached block (``cuMemFree``): what ``nvidia-smi`` shows drops to what live arrays use."""
    for m in list(_managers):
        m.pool.clear()
        m.deallocations.clear()
