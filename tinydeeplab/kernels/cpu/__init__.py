"""Numba CPU backend: the same ops as :mod:`tinydeeplab.functional`, with ``parallel=True`` hot loops.

``backend.ops("cpu")`` returns this module; it exports exactly the names of the reference
(``<op>_forward`` / ``<op>_backward`` for every op in :data:`OPS`, plus ``moving_average``), with the
same signatures, validation (shared ``functional/checks.py``) and return conventions, so it is a drop-in.
Caches are backend-private: hand a cache only to the backward of the module that made it.

Kernels live next to their wrappers: ``conv.py`` (im2col + BLAS GEMM, col2im gather),
``batchnorm.py`` (chunked per-channel sums), ``resize.py`` (bilinear, gather adjoint),
``pooling.py`` (max pool, gather backward), ``activation.py`` (ReLU), ``loss.py`` (softmax CE),
``depthwise.py`` (depthwise conv: direct loops, gather backward), ``elementwise.py`` (sigmoid, swish,
hard sigmoid / swish, leaky ReLU), ``avg_pool.py`` (average pooling, gather backward).
Ops that are a single NumPy call already (concat, split, add, zero padding, global average pooling,
dropout, the squeeze-and-excitation channel scale, stochastic depth, the binary losses of a one-logit
head (sigmoid cross-entropy, Dice, focal: elementwise NumPy on N*H*W values), the moving average) are
re-exported from the reference, as is the host device contract (``to_device``/``to_host`` pass
arrays through; ``sgd_update``, ``global_norm``, ``scale_``).

All kernels are ``@njit(parallel=True, cache=True)``: the first call of a process compiles (or loads
the on-disk cache from ``__pycache__``); set ``NUMBA_DISABLE_JIT=1`` to step through them as Python.

Threads: Numba's OpenMP layer busy-waits after each parallel loop by default, which steals the cores
from the BLAS GEMM that follows every im2col chunk (measured: ~25% slower convolutions on 2 cores).
Importing this package therefore sets ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is already set
(it only takes effect if no Numba parallel code ran earlier in the process).

Memory: importing it also asks glibc to keep freed large blocks for reuse instead of returning them
to the OS, which saves a page fault per 4 KiB of every large activation in every step (see
:mod:`.allocator`; ``TINYDEEPLAB_KEEP_FREED_MEMORY=0`` turns it off).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before Numba starts its thread pool

from . import allocator  # noqa: E402,F401  (keeps freed activation memory in the heap, see allocator.py)

from ...functional import (OPS, DEVICE_CONTRACT, add_backward, add_forward, concat_backward,  # noqa: E402
                           concat_forward, dropout_backward, dropout_forward, global_norm, is_device_array,
                           dice_loss_backward, dice_loss_forward, sigmoid_binary_cross_entropy_backward,
                           sigmoid_binary_cross_entropy_forward, sigmoid_focal_loss_backward,
                           sigmoid_focal_loss_forward,
                           channel_scale_backward, channel_scale_forward, stochastic_depth_backward,
                           stochastic_depth_forward,
                           scale_, sgd_update, to_device, to_host, zeros_like,
                           global_avg_pool_backward, global_avg_pool_forward, moving_average,
                           split_backward, split_forward, zero_pad2d_backward, zero_pad2d_forward)
from .activation import relu_backward, relu_forward  # noqa: E402
from .avg_pool import avg_pool2d_backward, avg_pool2d_forward  # noqa: E402
from .batchnorm import batchnorm_backward, batchnorm_forward  # noqa: E402
from .conv import conv2d_backward, conv2d_forward, conv2d_fused_backward, conv2d_fused_forward  # noqa: E402
from .depthwise import depthwise_conv2d_backward, depthwise_conv2d_forward  # noqa: E402
from .elementwise import (hard_sigmoid_backward, hard_sigmoid_forward, hard_swish_backward,  # noqa: E402
                          hard_swish_forward, leaky_relu_backward, leaky_relu_forward, sigmoid_backward,
                          relu6_backward, relu6_forward, sigmoid_forward, swish_backward, swish_forward)
from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward  # noqa: E402
from .pooling import max_pool2d_backward, max_pool2d_forward  # noqa: E402
from .resize import (bilinear_resize_backward, bilinear_resize_forward,  # noqa: E402
                     upsample_bilinear_backward, upsample_bilinear_forward)

__all__ = ([f"{op}_{half}" for op in OPS for half in ("forward", "backward")]
           + ["moving_average", "OPS", "DEVICE_CONTRACT", *DEVICE_CONTRACT])
