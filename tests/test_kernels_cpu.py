"""What is particular to the Numba CPU backend (``tinydeeplab.kernels.cpu``) beyond its ops.

The ops themselves (and the CPU convolution's paths, chunks and reused im2col buffer) are compared with
the reference on every backend in ``tests/test_ops_*.py``. Here: the heap setting of
:mod:`tinydeeplab.kernels.cpu.allocator`.
"""
import platform
import resource

import numpy as np
import pytest

from tinydeeplab.kernels.cpu import allocator


def test_freed_activations_are_reused_without_page_faults():
    """With the CPU backend imported (glibc), a freed 64 MiB array's pages come back for the next
    array of that size: touching it costs no page fault (fresh mmap pages fault at least once per
    2 MiB huge page, i.e. >= 32 times; ~550 measured here, ~16k with 4 KiB pages)."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting is glibc-specific")
    assert allocator.APPLIED
    n = 16 * 2**20                                    # float32: 64 MiB
    a = np.ones(n, np.float32)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.empty(n, np.float32)
    b[:] = 1.0                                        # touch every page
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults <= 8, f"{faults} page faults re-touching a reused 64 MiB block"
