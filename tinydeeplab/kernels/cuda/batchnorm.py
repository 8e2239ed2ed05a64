"""Batch normalisation on the GPU. Same maths as :mod:`tinydeeplab.functional.batchnorm`, in the form of
the CPU kernel (:mod:`tinydeeplab.kernels.cpu.batchnorm`): with ``inv_std = 1 / sqrt(var + eps)`` and the
per-channel sums ``sdy = sum dy``, ``sdyx = sum dy * xhat`` over the ``M = N*H*W`` pixels,
``y = gamma * (x - mean) * inv_std + beta``, ``dbeta = sdy``, ``dgamma = sdyx`` and, in training,
``dx = gamma * inv_std * (dy - sdy / M - xhat * sdyx / M)`` (inference: ``dx = gamma * inv_std * dy``).

``x`` is viewed as an ``(M, C)`` matrix. The per-channel sums are the deterministic two-stage column
reductions of :mod:`.reduce` (float64, two passes for the variance: ``sum (x - mean)^2``). Per-channel
coefficients are then formed once, in float64, and stored in the activation dtype::

    forward:   y  = (x - mean) * scale + beta,            scale = gamma * inv_std
    backward:  dx = p * dy + q * (x - mean) + r,          p = gamma * inv_std,
                                                          q = -p * inv_std * sdyx / M,  r = -p * sdy / M

so the two elementwise kernels do a few float32 multiply-adds per element. They run over rows with the
threads of a block along the channels (:func:`.device.launch_rows`): no per-element ``i % C``.

**Synchronized** (``reduce=``): the local column sums ``[sum x, sum x^2, M]`` and ``[sum dy, sum dy * xhat]``
are copied to the host (a few kB), go through ``reduce`` (e.g. an MPI allreduce) and come back as the
global batch's statistics, as in :mod:`tinydeeplab.functional.batchnorm` (which derives the backward).
"""
from __future__ import annotations

import math

from numba import cuda, float64

from ...functional.batchnorm import batch_stats_from_sums, synced_sums
from ...functional.checks import check_batchnorm_args, check_grad_shape, check_moving_average_args
from .device import cast, empty, flat, launch_1d, launch_rows, require_device, spec, to_device, zeros
from .reduce import MODE_CENTRED_SQUARES, MODE_TIMES_XHAT, column_sums


@cuda.jit
def _coefficients(mean_src, var_src, gamma, eps, mean64, inv_std64, stats):
    """Per channel, from the batch's float64 (or the moving) mean and variance::

        mean64 = mean,  inv_std64 = 1 / sqrt(var + eps)                       (float64)
        stats  = [mean, var, inv_std, gamma * inv_std]                         (activation dtype, (4, C))
    """
    for c in range(cuda.grid(1), mean64.size, cuda.gridsize(1)):
        m = mean_src[c]
        v = var_src[c]
        inv = 1.0 / math.sqrt(float64(v) + eps)
        mean64[c] = m
        inv_std64[c] = inv
        stats[0, c] = m
        stats[1, c] = v
        stats[2, c] = inv
        stats[3, c] = gamma[c] * inv


@cuda.jit
def _normalize(x2, mean, scale, beta, y2):
    """``y2[m, c] = (x2[m, c] - mean[c]) * scale[c] + beta[c]`` (threads x along C, rows grid-strided)."""
    m_rows, c_n = x2.shape
    for m in range(cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y, m_rows, cuda.gridDim.x * cuda.blockDim.y):
        for c in range(cuda.threadIdx.x, c_n, cuda.blockDim.x):
            y2[m, c] = (x2[m, c] - mean[c]) * scale[c] + beta[c]


@cuda.jit
def _grad_coefficients(gamma, inv_std64, sdy, sdyx, m_rows, training, coef):
    """Per channel, ``coef = [p, q, r, dgamma, dbeta]`` (activation dtype, (5, C)) with
    ``dx = p * dy + q * (x - mean) + r``: ``p = gamma * inv_std``; training ``q = -p * inv_std * sdyx / M``
    and ``r = -p * sdy / M`` (inference: 0); ``dgamma = sdyx``, ``dbeta = sdy``."""
    for c in range(cuda.grid(1), coef.shape[1], cuda.gridsize(1)):
        k = gamma[c] * inv_std64[c]
        coef[0, c] = k
        coef[1, c] = -k * inv_std64[c] * sdyx[c] / m_rows if training else 0.0
        coef[2, c] = -k * sdy[c] / m_rows if training else 0.0
        coef[3, c] = sdyx[c]
        coef[4, c] = sdy[c]


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


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, *, training, eps=1e-3, reduce=None):
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
    count = m_rows
    if training and reduce is not None:                                # synchronized: one fused reduction
        local_sum = column_sums(x2).copy_to_host()
        local_sq = column_sums(x2, mode=MODE_CENTRED_SQUARES, mean=zeros((c,), "float64")).copy_to_host()
        sums = synced_sums(reduce, local_sum, local_sq, [count] * c)
        mean_src, var_src = (to_device(v) for v in batch_stats_from_sums(sums, "float64"))
        count = sums[2].copy()
    elif training:                                                       # float64 batch statistics
        mean_src = column_sums(x2, divide_by=m_rows)                                  # mean = sum x / M
        var_src = column_sums(x2, mode=MODE_CENTRED_SQUARES, mean=mean_src, divide_by=m_rows)  # biased
    else:
        mean_src, var_src = moving_mean, moving_var
    mean64, inv_std64 = empty((c,), "float64"), empty((c,), "float64")
    stats = empty((4, c), x.dtype)                                     # mean, var, inv_std, scale
    launch_1d(_coefficients, c, mean_src, var_src, gamma, float(eps), mean64, inv_std64, stats)
    mean, var, inv_std, scale = stats[0], stats[1], stats[2], stats[3]
    y2 = empty((m_rows, c), x.dtype)
    launch_rows(_normalize, m_rows, x2, mean, scale, beta, y2)
    cache = {"mean": mean, "var": var, "x": x2, "mean64": mean64, "inv_std64": inv_std64, "inv_std": inv_std,
             "gamma": gamma, "training": bool(training), "x_shape": tuple(x.shape)}
    if training and reduce is not None:
        cache.update(reduce=reduce, count=count)
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
    coef = empty((5, c), x2.dtype)                                                 # p, q, r, dgamma, dbeta
    if cache.get("reduce") is not None:             # synchronized: p, q, r from the global sums over M pixels
        total = synced_sums(cache["reduce"], sdy.copy_to_host(), sdyx.copy_to_host())
        launch_1d(_grad_coefficients, c, gamma, inv_std64, to_device(total[0]), to_device(total[1]),
                  float(cache["count"][0]), True, coef)
        coef[3].copy_to_device(cast(sdyx, x2.dtype))                              # dgamma, dbeta: local sums
        coef[4].copy_to_device(cast(sdy, x2.dtype))
    else:
        launch_1d(_grad_coefficients, c, gamma, inv_std64, sdy, sdyx, m_rows, cache["training"], coef)
    dx2 = empty((m_rows, c), x2.dtype)
    launch_rows(_input_grad, m_rows, x2, dy2, cache["mean"], coef[0], coef[1], coef[2], dx2)
    return dx2.reshape(*cache["x_shape"]), coef[3], coef[4]


def moving_average(moving, batch_value, momentum):
    """Keras moving-statistic update ``moving * momentum + batch_value * (1 - momentum)``; a new device array."""
    check_moving_average_args(spec(moving), spec(batch_value), momentum)
    require_device(moving, "moving")
    require_device(batch_value, "batch_value")
    out = empty(moving.shape, moving.dtype)
    launch_1d(_moving_average, out.size, flat(moving), flat(batch_value), float(momentum), flat(out))
    return out

