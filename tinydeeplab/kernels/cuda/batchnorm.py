"""Batch normalisation on the GPU. Same maths as :mod:`tinydeeplab.functional.batchnorm`::

    xhat = (x - mean) * inv_std,  inv_std = 1 / sqrt(var + eps)
    y    = gamma * xhat + beta                       # per channel, over the M = N*H*W pixels

Backward (``sdy = sum dy``, ``sdyx = sum dy * xhat``, sums over the M pixels)::

    dbeta = sdy,  dgamma = sdyx
    training:   dx = gamma * inv_std * (dy - sdy / M - xhat * sdyx / M)
    inference:  dx = gamma * inv_std * dy

``x`` is viewed as an ``(M, C)`` matrix. The per-channel sums are the deterministic two-stage column
reductions of :mod:`.reduce` (float64, two passes for the variance: ``sum (x - mean)^2``). Per-channel
coefficients are then formed once, in float64, and stored in the activation dtype::

    forward:   y  = (x - mean) * scale + beta,            scale = gamma * inv_std
    backward:  dx = p * dy + q * (x - mean) + r,          p = gamma * inv_std,
                                                          q = -p * inv_std * sdyx / M,  r = -p * sdy / M

so the two elementwise kernels do a few float32 multiply-adds per element. They run over rows with the
threads of a block along the channels (:func:`.memory.launch_rows`): no per-element ``i % C``.
"""
from __future__ import annotations

import math
import numbers

from numba import cuda

from ...functional._checks import check_array, check_batchnorm_args, check_grad_shape
from .memory import empty, flat, launch_1d, launch_rows, require_device, spec
from .reduce import MODE_CENTRED_SQUARES, MODE_TIMES_XHAT, column_sums
from .tensor import cast


@cuda.jit
def _divide(sums, m_rows, out):
    """``out[c] = sums[c] / m_rows`` (a mean from a float64 sum)."""
    for c in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[c] = sums[c] / m_rows


@cuda.jit
def _inv_std(var64, eps, out):
    """``out[c] = 1 / sqrt(var[c] + eps)`` in float64."""
    for c in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[c] = 1.0 / math.sqrt(var64[c] + eps)


@cuda.jit
def _scale(gamma, inv_std64, scale):
    """``scale[c] = gamma[c] * inv_std[c]`` (float64 product, stored in the activation dtype)."""
    for c in range(cuda.grid(1), scale.size, cuda.gridsize(1)):
        scale[c] = gamma[c] * inv_std64[c]


@cuda.jit
def _normalize(x2, mean, scale, beta, y2):
    """``y2[m, c] = (x2[m, c] - mean[c]) * scale[c] + beta[c]`` (threads x along C, rows grid-strided)."""
    m_rows, c_n = x2.shape
    for m in range(cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y, m_rows, cuda.gridDim.x * cuda.blockDim.y):
        for c in range(cuda.threadIdx.x, c_n, cuda.blockDim.x):
            y2[m, c] = (x2[m, c] - mean[c]) * scale[c] + beta[c]


@cuda.jit
def _grad_coefficients(gamma, inv_std64, sdy, sdyx, m_rows, training, p, q, r):
    """Per channel, ``dx = p * dy + q * (x - mean) + r``: ``p = gamma * inv_std``; training
    ``q = -p * inv_std * sdyx / M`` and ``r = -p * sdy / M`` (inference: 0)."""
    for c in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        k = gamma[c] * inv_std64[c]
        p[c] = k
        q[c] = -k * inv_std64[c] * sdyx[c] / m_rows if training else 0.0
        r[c] = -k * sdy[c] / m_rows if training else 0.0


@cuda.jit
def _input_grad(x2, dy2, mean, p, q, r, dx2):
    """``dx2[m, c] = p[c] * dy2[m, c] + q[c] * (x2[m, c] - mean[c]) + r[c]`` (layout as :func:`_normalize`)."""
    m_rows, c_n = x2.shape
    for m in range(cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y, m_rows, cuda.gridDim.x * cuda.blockDim.y):
        for c in range(cuda.threadIdx.x, c_n, cuda.blockDim.x):
            dx2[m, c] = p[c] * dy2[m, c] + q[c] * (x2[m, c] - mean[c]) + r[c]


@cuda.jit
def _moving_average(moving, batch, momentum, out):
    """``out = moving * momentum + batch * (1 - momentum)``."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = moving[i] * momentum + batch[i] * (1.0 - momentum)


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, *, training, eps=1e-3):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel; returns ``(y, cache)``.

    Arguments, results and ``cache["mean"]`` / ``cache["var"]`` as :func:`tinydeeplab.functional.batchnorm_forward`,
    as device arrays.
    """
    check_batchnorm_args(spec(x), spec(gamma), spec(beta), spec(moving_mean), spec(moving_var), training, eps)
    for a, name in ((x, "x"), (gamma, "gamma"), (beta, "beta"), (moving_mean, "moving_mean"),
                    (moving_var, "moving_var")):
        require_device(a, name)
    c = x.shape[3]
    m_rows = x.size // c
    x2 = x.reshape(m_rows, c)                                          # (M, C)
    mean64, var64, inv_std64 = (empty((c,), "float64") for _ in range(3))   # (C,) each
    if training:
        launch_1d(_divide, c, column_sums(x2), m_rows, mean64)                       # mean = sum x / M
        launch_1d(_divide, c, column_sums(x2, mode=MODE_CENTRED_SQUARES, mean=mean64), m_rows, var64)
        mean, var = cast(mean64, x.dtype), cast(var64, x.dtype)                     # biased variance
    else:
        mean, var = moving_mean, moving_var
        mean64, var64 = cast(moving_mean, "float64"), cast(moving_var, "float64")
    launch_1d(_inv_std, c, var64, float(eps), inv_std64)
    inv_std = cast(inv_std64, x.dtype)                                 # (C,)
    scale = empty((c,), x.dtype)
    launch_1d(_scale, c, gamma, inv_std64, scale)                      # gamma * inv_std, (C,)
    y2 = empty((m_rows, c), x.dtype)
    launch_rows(_normalize, m_rows, x2, mean, scale, beta, y2)
    cache = {"mean": mean, "var": var, "x": x2, "mean64": mean64, "inv_std64": inv_std64, "inv_std": inv_std,
             "gamma": gamma, "training": bool(training), "x_shape": tuple(x.shape)}
    return y2.reshape(*x.shape), cache                                 # (N, H, W, C)


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward`; returns ``(dx, dgamma, dbeta)`` device arrays.

    ``dbeta = sum dy``, ``dgamma = sum dy * xhat``; training
    ``dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))``, inference ``dx = gamma * inv_std * dy``.
    """
    x2, gamma = cache["x"], cache["gamma"]
    mean64, inv_std64 = cache["mean64"], cache["inv_std64"]
    check_grad_shape(spec(dy), cache["x_shape"])
    require_device(dy, "dy")
    m_rows, c = x2.shape
    dy2 = (dy if dy.dtype == x2.dtype else cast(dy, x2.dtype)).reshape(m_rows, c)   # (M, C)
    sdy = column_sums(dy2)                                                          # (C,) float64
    sdyx = column_sums(dy2, mode=MODE_TIMES_XHAT, z2=x2, mean=mean64, inv_std=inv_std64)
    p, q, r = (empty((c,), x2.dtype) for _ in range(3))                         # (C,) each
    launch_1d(_grad_coefficients, c, gamma, inv_std64, sdy, sdyx, m_rows, cache["training"], p, q, r)
    dx2 = empty((m_rows, c), x2.dtype)
    launch_rows(_input_grad, m_rows, x2, dy2, cache["mean"], p, q, r, dx2)
    return dx2.reshape(*cache["x_shape"]), cast(sdyx, x2.dtype), cast(sdy, x2.dtype)


def moving_average(moving, batch_value, momentum):
    """Keras moving-statistic update ``moving * momentum + batch_value * (1 - momentum)``; a new device array."""
    check_array(spec(moving), "moving")
    check_array(spec(batch_value), "batch_value")
    if tuple(moving.shape) != tuple(batch_value.shape):
        raise ValueError(f"moving {tuple(moving.shape)} and batch_value {tuple(batch_value.shape)} "
                         f"must share one shape")
    if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    require_device(moving, "moving")
    require_device(batch_value, "batch_value")
    out = empty(moving.shape, moving.dtype)
    launch_1d(_moving_average, out.size, flat(moving), flat(batch_value), float(momentum), flat(out))
    return out

