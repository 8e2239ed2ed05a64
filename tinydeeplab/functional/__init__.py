"""The pure-NumPy reference ops: the spec every backend must reproduce.

Each op is a pair (see ``docs/ops.md``)::

    y, cache = <op>_forward(inputs..., *, options...)
    grads    = <op>_backward(dy, cache)

Activations are NHWC, kernels HWIO, float32 (float64 also works, for gradient checks).

>>> import numpy as np
>>> from tinydeeplab import functional as F
>>> y, cache = F.conv2d_forward(np.zeros((1, 8, 8, 3), np.float32), np.zeros((3, 3, 3, 4), np.float32), stride=2)
>>> y.shape
(1, 4, 4, 4)
"""
from .activation import relu_backward, relu_forward
from .avg_pool import avg_pool2d_backward, avg_pool2d_forward
from .binary_loss import (dice_loss_backward, dice_loss_forward, sigmoid_binary_cross_entropy_backward,
                          sigmoid_binary_cross_entropy_forward, sigmoid_focal_loss_backward, sigmoid_focal_loss_forward)
from .batchnorm import batchnorm_backward, batchnorm_forward, moving_average
from .channel_scale import channel_scale_backward, channel_scale_forward
from .conv import conv2d_backward, conv2d_forward, conv2d_fused_backward, conv2d_fused_forward
from .depthwise import depthwise_conv2d_backward, depthwise_conv2d_forward
from .dropout import dropout_backward, dropout_forward
from .elementwise import (hard_sigmoid_backward, hard_sigmoid_forward, hard_swish_backward, hard_swish_forward,
                          leaky_relu_backward, leaky_relu_forward, relu6_backward, relu6_forward, sigmoid_backward,
                          sigmoid_forward, swish_backward, swish_forward)
from .loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from .optim import global_norm, is_device_array, scale_, sgd_update, to_device, to_host, zeros_like
from .padding import zero_pad2d_backward, zero_pad2d_forward
from .pooling import global_avg_pool_backward, global_avg_pool_forward, max_pool2d_backward, max_pool2d_forward
from .stochastic_depth import stochastic_depth_backward, stochastic_depth_forward
from .resize import (bilinear_resize_backward, bilinear_resize_forward, upsample_bilinear_backward,
                     upsample_bilinear_forward)
from .tensor import add_backward, add_forward, concat_backward, concat_forward, split_backward, split_forward

OPS = ("conv2d", "zero_pad2d", "batchnorm", "relu", "max_pool2d", "global_avg_pool", "bilinear_resize",
       "upsample_bilinear", "concat", "split", "add", "softmax_cross_entropy", "dropout",
       "depthwise_conv2d", "sigmoid", "swish", "hard_sigmoid", "hard_swish", "leaky_relu", "avg_pool2d",
       "channel_scale", "stochastic_depth", "sigmoid_binary_cross_entropy", "dice_loss", "sigmoid_focal_loss",
       "relu6", "conv2d_fused")
"""Names of the op pairs every backend module exports as ``<op>_forward`` / ``<op>_backward``."""

DEVICE_CONTRACT = ("to_device", "to_host", "is_device_array", "zeros_like", "sgd_update", "global_norm", "scale_")
"""What every backend exports besides the op pairs: array placement and the optimizer's arithmetic."""

__all__ = ([f"{op}_{half}" for op in OPS for half in ("forward", "backward")]
           + ["moving_average", "OPS", "DEVICE_CONTRACT", *DEVICE_CONTRACT])
