"""Channel concat / split and the residual add on the GPU.

All kernels are elementwise with a grid-stride loop (one thread per output element, see
:mod:`.device`), so they read and write neighbouring addresses and never race:

* ``concat``: ``y[..., off_k : off_k + C_k] = x_k`` (one launch per input); backward slices ``dy``;
* ``split``: the inverse; backward writes each ``dy_k`` into its channel range;
* ``add``: ``y = a + b``; backward returns two copies of ``dy`` (``da = db = dy``).
"""
from __future__ import annotations

from numba import cuda

from ...functional.checks import (check_add_args, check_grad_shape, check_nhwc, check_nhwc_list, check_split_grads,
                                  check_split_sizes)
from .device import copy, empty, flat, launch_1d, require_device, spec


@cuda.jit
def _channel_copy(src, dst, src_off, dst_off, n_ch):
    """``dst[..., dst_off + k] = src[..., src_off + k]`` for ``k < n_ch`` over all pixels (N, H, W)."""
    pixels = dst.shape[0] * dst.shape[1] * dst.shape[2]
    for idx in range(cuda.grid(1), pixels * n_ch, cuda.gridsize(1)):
        k = idx % n_ch
        p = idx // n_ch
        w = p % dst.shape[2]
        h = (p // dst.shape[2]) % dst.shape[1]
        n = p // (dst.shape[2] * dst.shape[1])
        dst[n, h, w, dst_off + k] = src[n, h, w, src_off + k]


@cuda.jit
def _add(a, b, y):
    """``y = a + b`` on flat arrays."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = a[i] + b[i]


def _nhwc_channels(src, dst, src_off, dst_off, n_ch):
    launch_1d(_channel_copy, dst.shape[0] * dst.shape[1] * dst.shape[2] * n_ch, src, dst, src_off, dst_off, n_ch)


# ---------------------------------------------------------------------------------------------------
# Public ops
# ---------------------------------------------------------------------------------------------------

def concat_forward(xs):
    """Concatenate NHWC device arrays with equal N, H, W along channels: ``y = [x_0 | x_1 | ...]``."""
    if isinstance(xs, (list, tuple)):
        check_nhwc_list([spec(x) for x in xs], "xs")
        for k, x in enumerate(xs):
            require_device(x, f"xs[{k}]")
    else:
        check_nhwc_list(xs, "xs")
    n, h, w = xs[0].shape[:3]
    sizes = [x.shape[3] for x in xs]
    y = empty((n, h, w, sum(sizes)), xs[0].dtype)                       # (N, H, W, C_0 + C_1 + ...)
    off = 0
    for x, size in zip(xs, sizes):
        _nhwc_channels(x, y, 0, off, size)
        off += size
    return y, {"sizes": sizes, "y_shape": tuple(y.shape)}


def concat_backward(dy, cache):
    """Gradient of :func:`concat_forward`: ``dx_k = dy[..., offset_k : offset_k + C_k]``; returns a list."""
    check_grad_shape(spec(dy), cache["y_shape"])
    require_device(dy, "dy")
    n, h, w, _ = dy.shape
    parts, off = [], 0
    for size in cache["sizes"]:
        part = empty((n, h, w, size), dy.dtype)
        _nhwc_channels(dy, part, off, 0, size)
        parts.append(part)
        off += size
    return parts


def split_forward(x, sizes):
    """Split ``x`` along channels into pieces of ``sizes`` channels; returns ``(list, cache)``."""
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    sizes = check_split_sizes(sizes, x.shape)
    ys = concat_backward(x, {"y_shape": tuple(x.shape), "sizes": sizes})
    return ys, {"x_shape": tuple(x.shape), "sizes": sizes}


def split_backward(dys, cache):
    """Gradient of :func:`split_forward`: ``dx = [dy_0 | dy_1 | ...]`` along channels."""
    check_split_grads([spec(dy) for dy in dys] if isinstance(dys, (list, tuple)) else dys,
                      cache["x_shape"], cache["sizes"])
    for k, dy in enumerate(dys):
        require_device(dy, f"dys[{k}]")
    return concat_forward(list(dys))[0]


def add_forward(a, b, *, inplace=False):
    """Residual add ``y = a + b`` (same shape and dtype); returns ``(y, cache)``; ``inplace`` writes over ``a``."""
    check_add_args(spec(a), spec(b))
    require_device(a, "a")
    require_device(b, "b")
    y = a if inplace else empty(a.shape, a.dtype)
    launch_1d(_add, y.size, flat(a), flat(b), flat(y))
    return y, {"shape": tuple(a.shape)}


def add_backward(dy, cache):
    """Gradient of :func:`add_forward`: ``da = dy``, ``db = dy`` (two independent copies)."""
    check_grad_shape(spec(dy), cache["shape"])
    require_device(dy, "dy")
    return copy(dy), copy(dy)
