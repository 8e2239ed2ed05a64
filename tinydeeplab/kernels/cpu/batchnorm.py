"""Batch normalisation on the CPU (Numba). Same maths as :mod:`tinydeeplab.functional.batchnorm`::

    xhat = (x - mean) * inv_std,  inv_std = 1 / sqrt(var + eps)
    y    = gamma * xhat + beta                       # per channel, over the M = N*H*W pixels

Backward (``sdy = sum dy``, ``sdyx = sum dy * xhat``, sums over the M pixels)::

    dbeta = sdy,  dgamma = sdyx
    training:   dx = gamma * inv_std * (dy - sdy / M - xhat * sdyx / M)
    inference:  dx = gamma * inv_std * dy

**Per-channel sums in parallel.** ``x`` is viewed as an ``(M, C)`` matrix. A ``prange`` over rows that
adds into one ``(C,)`` array would race (two threads updating ``sum[c]`` at once), so the rows are cut
into :data:`N_CHUNKS` fixed blocks: each block writes its own row of a ``(N_CHUNKS, C)`` table of partial
sums (float64), and the table is then added up serially. The chunk count does not depend on the number
of threads, so the result is the same on any machine. Mean and variance take two passes
(``var = mean((x - mean)^2)``), which is stable where ``E[x^2] - mean^2`` is not.

**Synchronized** (``reduce=``): the local sums ``[sum x, sum x^2, M]`` (:func:`channel_sums`) and
``[sum dy, sum dy * xhat]`` (:func:`grad_sums`) go through ``reduce`` and the op finishes with the global
sums, exactly as in :mod:`tinydeeplab.functional.batchnorm` (whose docstring derives the backward).
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from ...functional.batchnorm import batch_stats_from_sums, synced_sums
from ...functional.checks import check_batchnorm_args, check_grad_shape

N_CHUNKS = 64
"""Number of row blocks whose partial sums are computed in parallel (fixed: deterministic results)."""


@njit(parallel=True, cache=True, fastmath=False)
def channel_mean_var(x2):
    """Per-column mean and biased variance of ``x2 (M, C)``, in float64, by chunked partial sums."""
    m_rows, c_n = x2.shape
    n_chunks = min(N_CHUNKS, m_rows)
    step = (m_rows + n_chunks - 1) // n_chunks
    part = np.zeros((n_chunks, c_n))                    # (chunks, C) float64 partial sums
    for k in prange(n_chunks):
        for m in range(k * step, min(m_rows, (k + 1) * step)):
            for c in range(c_n):
                part[k, c] += x2[m, c]
    mean = np.zeros(c_n)
    for k in range(n_chunks):
        mean += part[k]
    mean /= m_rows
    part[:, :] = 0.0
    for k in prange(n_chunks):                          # second pass: centred squares
        for m in range(k * step, min(m_rows, (k + 1) * step)):
            for c in range(c_n):
                d = x2[m, c] - mean[c]
                part[k, c] += d * d
    var = np.zeros(c_n)
    for k in range(n_chunks):
        var += part[k]
    var /= m_rows
    return mean, var


@njit(parallel=True, cache=True, fastmath=False)
def channel_sums(x2):
    """``(sum x, sum x^2)`` per column of ``x2 (M, C)``, float64, by chunked partial sums (synchronized BN).

    Not :func:`grad_sums` with ``dy = x``: that multiplies in float32, and ``var = E[x^2] - mean^2`` cancels
    (a channel whose mean is large against its spread), so float32 squares moved the two-rank loss by
    1e-2 where these float64 ones agree with the single process to 1e-6.
    """
    m_rows, c_n = x2.shape
    n_chunks = min(N_CHUNKS, m_rows)
    step = (m_rows + n_chunks - 1) // n_chunks
    part = np.zeros((n_chunks, c_n))
    part_sq = np.zeros((n_chunks, c_n))
    for k in prange(n_chunks):
        for m in range(k * step, min(m_rows, (k + 1) * step)):
            for c in range(c_n):
                v = np.float64(x2[m, c])
                part[k, c] += v
                part_sq[k, c] += v * v
    s = np.zeros(c_n)
    sq = np.zeros(c_n)
    for k in range(n_chunks):
        s += part[k]
        sq += part_sq[k]
    return s, sq


@njit(parallel=True, cache=True, fastmath=False)
def grad_sums(x2, dy2, mean, inv_std):
    """``(sum dy, sum dy * xhat)`` per column of ``(M, C)`` inputs, float64, by chunked partial sums."""
    m_rows, c_n = x2.shape
    n_chunks = min(N_CHUNKS, m_rows)
    step = (m_rows + n_chunks - 1) // n_chunks
    part_dy = np.zeros((n_chunks, c_n))
    part_dyx = np.zeros((n_chunks, c_n))
    for k in prange(n_chunks):
        for m in range(k * step, min(m_rows, (k + 1) * step)):
            for c in range(c_n):
                g = dy2[m, c]
                part_dy[k, c] += g
                part_dyx[k, c] += g * ((x2[m, c] - mean[c]) * inv_std[c])
    sdy = np.zeros(c_n)
    sdyx = np.zeros(c_n)
    for k in range(n_chunks):
        sdy += part_dy[k]
        sdyx += part_dyx[k]
    return sdy, sdyx


@njit(parallel=True, cache=True, fastmath=False)
def normalize(x2, mean, inv_std, gamma, beta, y2):
    """``y2 = gamma * (x2 - mean) * inv_std + beta``, rows in parallel (``(M, C)``, params ``(C,)``)."""
    m_rows, c_n = x2.shape
    for m in prange(m_rows):
        for c in range(c_n):
            y2[m, c] = gamma[c] * ((x2[m, c] - mean[c]) * inv_std[c]) + beta[c]


@njit(parallel=True, cache=True, fastmath=False)
def input_grad(x2, dy2, mean, inv_std, scale, shift, slope, dx2):
    """``dx2 = scale * (dy2 - shift - xhat * slope)`` with ``xhat = (x2 - mean) * inv_std``, per column.

    Training: ``scale = gamma*inv_std, shift = sum(dy)/M, slope = sum(dy*xhat)/M``; inference: shift = slope = 0.
    """
    m_rows, c_n = x2.shape
    for m in prange(m_rows):
        for c in range(c_n):
            xhat = (x2[m, c] - mean[c]) * inv_std[c]
            dx2[m, c] = scale[c] * (dy2[m, c] - shift[c] - xhat * slope[c])


def batchnorm_forward(x, gamma, beta, moving_mean, moving_var, *, training, eps=1e-3, reduce=None):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel; returns ``(y, cache)``.

    Arguments, results and the ``cache["mean"]`` / ``cache["var"]`` fields as
    :func:`tinydeeplab.functional.batchnorm_forward`.

    >>> x = np.array([1.0, 3.0, 5.0, 7.0]).reshape(2, 1, 2, 1)
    >>> ones, zeros = np.ones(1), np.zeros(1)
    >>> y, cache = batchnorm_forward(x, ones, zeros, zeros, ones, training=True, eps=0.0)
    >>> cache["mean"].tolist(), cache["var"].tolist()          # biased variance: 20 / 4
    ([4.0], [5.0])
    """
    check_batchnorm_args(x, gamma, beta, moving_mean, moving_var, training, eps)
    c = x.shape[3]

    x2 = np.ascontiguousarray(x).reshape(-1, c)              # (M, C), M = N*H*W
    count = x2.shape[0]
    if training and reduce is not None:                      # synchronized: one fused reduction
        sums = synced_sums(reduce, *channel_sums(x2), np.full(c, count))
        mean, var = batch_stats_from_sums(sums, x.dtype)     # (C,) of the global batch
        count = sums[2]
    elif training:
        mean64, var64 = channel_mean_var(x2)                 # (C,) float64
        mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
    else:
        mean, var = moving_mean, moving_var
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)     # (C,)
    y2 = np.empty_like(x2)
    normalize(x2, mean, inv_std, gamma, beta, y2)
    cache = {"mean": mean, "var": var, "x": x2, "inv_std": inv_std, "gamma": gamma,
             "training": bool(training), "x_shape": x.shape}
    if training and reduce is not None:
        cache.update(reduce=reduce, count=count)
    return y2.reshape(x.shape), cache                        # (N, H, W, C)


def batchnorm_backward(dy, cache):
    """Gradients of :func:`batchnorm_forward`; returns ``(dx, dgamma, dbeta)``.

    ``dbeta = sum dy``, ``dgamma = sum dy * xhat``; training
    ``dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))``, inference ``dx = gamma * inv_std * dy``.
    """
    x2, mean, inv_std, gamma = cache["x"], cache["mean"], cache["inv_std"], cache["gamma"]
    check_grad_shape(dy, cache["x_shape"])
    dtype = x2.dtype
    m_rows, c = x2.shape
    dy2 = np.ascontiguousarray(dy, dtype=dtype).reshape(-1, c)   # (M, C)
    sdy, sdyx = grad_sums(x2, dy2, mean, inv_std)                # (C,) float64 each
    scale = (gamma * inv_std).astype(dtype)
    if cache.get("reduce") is not None:                          # synchronized: the global sums
        total_dy, total_dyx = synced_sums(cache["reduce"], sdy, sdyx) / cache["count"]
        shift, slope = total_dy.astype(dtype), total_dyx.astype(dtype)
    elif cache["training"]:
        shift, slope = (sdy / m_rows).astype(dtype), (sdyx / m_rows).astype(dtype)
    else:
        shift = slope = np.zeros(c, dtype=dtype)
    dx2 = np.empty_like(x2)
    input_grad(x2, dy2, mean, inv_std, scale, shift, slope, dx2)
    return dx2.reshape(cache["x_shape"]), sdyx.astype(dtype), sdy.astype(dtype)
