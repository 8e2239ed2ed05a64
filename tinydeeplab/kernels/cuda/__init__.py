"""Numba CUDA backend: the same ops as :mod:`tinydeeplab.functional`, on device arrays.

``backend.set_backend("cuda")`` selects this module. It exports exactly the op names of the reference
(``<op>_forward`` / ``<op>_backward`` for every op in :data:`OPS`, plus ``moving_average``) with the same
signatures and the same argument validation (shared ``functional/checks.py``), plus the helpers :func:`to_device`,
:func:`to_host`, :func:`is_device_array` and :func:`check_available`.

**Arrays stay on the GPU.** The ops take and return Numba device arrays (``DeviceNDArray``) and refuse
host arrays with a clear message. Copies happen at the ends: ``to_device(images)``, ``to_host(logits)``,
a model moves once with ``model.to("cuda")``; inside a step only the loss value and the gradient norm
come back (one float64 each), and dropout's host-drawn mask goes up (see :mod:`.dropout`).

Op modules have the names of their :mod:`tinydeeplab.functional` twins: :mod:`.conv` (im2col / col2im
around the GEMM), :mod:`.batchnorm`, :mod:`.activation` (ReLU), :mod:`.dropout`, :mod:`.padding`,
:mod:`.pooling`, :mod:`.resize`, :mod:`.loss`, :mod:`.tensor` (concat / split / add), and for the mobile
encoder families :mod:`.depthwise` (direct depthwise conv), :mod:`.elementwise` (sigmoid, swish, hard
sigmoid / swish, leaky ReLU), :mod:`.avg_pool`, :mod:`.channel_scale` (the squeeze-and-excitation
multiply) and :mod:`.stochastic_depth`; :mod:`.binary_loss` (the losses of a one-logit head) runs the
reference on a host copy of the one-channel logits instead. They only launch
kernels: validation and planning (the conv's live taps, the pooling windows) come from the functional
modules. Besides them:

* :mod:`.device`    device arrays: to/from the host, allocation, the grid-stride launch configuration;
* :mod:`.allocator` the caching device-memory manager (freed blocks are reused, no ``cuMemFree`` per step);
* :mod:`.gemm`      tiled shared-memory matrix product (the convolution's work horse);
* :mod:`.reduce`    deterministic column and vector sums (batch norm, bias gradient, loss, norm);
* :mod:`.optim`     the SGD update and the global gradient norm;
* :mod:`.simulator` a fix of the CUDA simulator's shared arrays (the tests run on it).

Caches are backend-private: hand a cache only to the backward of the module that made it.

Testing without a GPU: ``NUMBA_ENABLE_CUDASIM=1`` runs every kernel in Numba's CUDA simulator (each
thread a Python thread: slow, so tests use tiny shapes). ``tests/conftest.py`` sets it unless
``TINYDEEPLAB_REAL_CUDA=1``. Importing this package never touches the GPU; :func:`check_available`
(called by ``backend.set_backend("cuda")``) raises a one-line ``ImportError`` when there is neither a
GPU nor the simulator.
"""
from numba import cuda

from ...functional import DEVICE_CONTRACT, OPS
from . import allocator, simulator
from .activation import relu_backward, relu_forward
from .avg_pool import avg_pool2d_backward, avg_pool2d_forward
from .batchnorm import batchnorm_backward, batchnorm_forward, moving_average
from .binary_loss import (dice_loss_backward, dice_loss_forward, sigmoid_binary_cross_entropy_backward,
                          sigmoid_binary_cross_entropy_forward, sigmoid_focal_loss_backward, sigmoid_focal_loss_forward)
from .channel_scale import channel_scale_backward, channel_scale_forward
from .conv import conv2d_backward, conv2d_forward, conv2d_fused_backward, conv2d_fused_forward
from .depthwise import depthwise_conv2d_backward, depthwise_conv2d_forward
from .device import SIMULATED, is_device_array, to_device, to_host, zeros_like
from .dropout import dropout_backward, dropout_forward
from .elementwise import (hard_sigmoid_backward, hard_sigmoid_forward, hard_swish_backward, hard_swish_forward,
                          leaky_relu_backward, leaky_relu_forward, relu6_backward, relu6_forward, sigmoid_backward,
                          sigmoid_forward, swish_backward, swish_forward)
from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .optim import global_norm, scale_, sgd_update
from .padding import zero_pad2d_backward, zero_pad2d_forward
from .pooling import global_avg_pool_backward, global_avg_pool_forward, max_pool2d_backward, max_pool2d_forward
from .stochastic_depth import stochastic_depth_backward, stochastic_depth_forward
from .resize import (bilinear_resize_backward, bilinear_resize_forward, upsample_bilinear_backward,
                     upsample_bilinear_forward)
from .tensor import add_backward, add_forward, concat_backward, concat_forward, split_backward, split_forward


if SIMULATED:
    simulator.make_shared_arrays_thread_safe()   # the simulator's shared arrays, without a race
else:
    allocator.install()          # before any CUDA context exists: freed device blocks get reused

_available = False


def check_available() -> None:
    """Raise ``ImportError`` (one line, no driver traceback) unless a CUDA GPU or the simulator is usable."""
    global _available
    if SIMULATED or _available:
        return
    try:
        _available = bool(cuda.is_available())
    except Exception:  # a broken driver install: report it the same way
        _available = False
    if not _available:
        raise ImportError("no usable CUDA GPU was found (numba.cuda.is_available() is False); "
                          "set NUMBA_ENABLE_CUDASIM=1 to run the cuda backend on the CPU simulator")


__all__ = ([f"{op}_{half}" for op in OPS for half in ("forward", "backward")]
           + ["moving_average", "OPS", "DEVICE_CONTRACT", *DEVICE_CONTRACT, "check_available"])
