"""Copies on the GPU: concat / split / residual add, zero padding, and small helpers of the other ops.

All kernels are elementwise with a grid-stride loop (one thread per output element, see
:mod:`.memory`), so they read and write neighbouring addresses and never race:

* ``concat``: ``y[..., off_k : off_k + C_k] = x_k`` (one launch per input); backward slices ``dy``;
* ``split``: the inverse; backward writes each ``dy_k`` into its channel range;
* ``add``: ``y = a + b``; backward returns two copies of ``dy`` (``da = db = dy``);
* ``zero_pad2d``: ``y[n, h, w, c] = x[n, h - t, w - l, c]`` inside, 0 in the border; backward crops.
"""
from __future__ import annotations

import numbers

from numba import cuda

from ...functional._checks import (check_array, check_grad_shape, check_nhwc, check_nhwc_list, check_same_dtype,
                                   check_same_shape)
from ...functional.padding import resolve_zero_padding
from .memory import copy, empty, flat, launch_1d, require_device, spec


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


@cuda.jit
def _add_bias(y2, b):
    """``y2[p, f] += b[f]`` for ``y2`` (P, F)."""
    f_n = y2.shape[1]
    for i in range(cuda.grid(1), y2.size, cuda.gridsize(1)):
        y2[i // f_n, i % f_n] += b[i % f_n]


@cuda.jit
def _pad(x, y, top, left):
    """``y[n, h, w, c] = x[n, h - top, w - left, c]`` where that is inside ``x``, else 0."""
    n_img, h_out, w_out, c_n = y.shape
    for idx in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        c = idx % c_n
        w = (idx // c_n) % w_out
        h = (idx // (c_n * w_out)) % h_out
        n = idx // (c_n * w_out * h_out)
        hs, ws = h - top, w - left
        if 0 <= hs < x.shape[1] and 0 <= ws < x.shape[2]:
            y[n, h, w, c] = x[n, hs, ws, c]
        else:
            y[n, h, w, c] = 0


@cuda.jit
def _crop(dy, dx, top, left):
    """``dx[n, h, w, c] = dy[n, h + top, w + left, c]``."""
    n_img, h_in, w_in, c_n = dx.shape
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        c = idx % c_n
        w = (idx // c_n) % w_in
        h = (idx // (c_n * w_in)) % h_in
        n = idx // (c_n * w_in * h_in)
        dx[n, h, w, c] = dy[n, h + top, w + left, c]


@cuda.jit
def _tap_copy(w, live, i0, n_th, j0, n_tw, to_taps):
    """Between a full HWIO kernel ``w`` (KH, KW, C, F) and its live taps ``live`` (TH*TW*C, F).

    ``to_taps``: ``live[(a*TW + b)*C + c, f] = w[i0 + a, j0 + b, c, f]``; else the reverse assignment.
    """
    c_n, f_n = w.shape[2], w.shape[3]
    for idx in range(cuda.grid(1), live.size, cuda.gridsize(1)):
        f = idx % f_n
        q = idx // f_n
        c = q % c_n
        b = (q // c_n) % n_tw
        a = q // (c_n * n_tw)
        if to_taps:
            live[q, f] = w[i0 + a, j0 + b, c, f]
        else:
            w[i0 + a, j0 + b, c, f] = live[q, f]


def add_bias(y2, b):
    """In place ``y2 += b`` broadcast over the rows of ``y2`` (P, F)."""
    launch_1d(_add_bias, y2.size, y2, b)


def cast(a, dtype):
    """A device copy of ``a`` in ``dtype`` (float64 sums -> float32 gradients)."""
    return copy(a, dtype)


def copy_into_taps(w, live, i0, n_th, j0, n_tw, *, to_taps):
    """Gather the live taps of ``w`` into ``live`` (``to_taps``) or scatter ``live`` back into ``w``."""
    launch_1d(_tap_copy, live.size, w, live, i0, n_th, j0, n_tw, bool(to_taps))


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
    if (not isinstance(sizes, (list, tuple)) or len(sizes) == 0
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise ValueError(f"sizes must be a non-empty list of ints >= 1, got {sizes!r}")
    if sum(sizes) != x.shape[3]:
        raise ValueError(f"sizes {list(sizes)} add up to {sum(sizes)} but x (shape {tuple(x.shape)}) "
                         f"has {x.shape[3]} channels")
    ys, _ = concat_backward(x, {"y_shape": tuple(x.shape), "sizes": list(sizes)}), None
    return ys, {"x_shape": tuple(x.shape), "sizes": [int(s) for s in sizes]}


def split_backward(dys, cache):
    """Gradient of :func:`split_forward`: ``dx = [dy_0 | dy_1 | ...]`` along channels."""
    n, h, w, _ = cache["x_shape"]
    sizes = cache["sizes"]
    if not isinstance(dys, (list, tuple)) or len(dys) != len(sizes):
        raise ValueError(f"dys must be a list of {len(sizes)} gradients (one per piece), got {type(dys).__name__}"
                         + (f" of length {len(dys)}" if isinstance(dys, (list, tuple)) else ""))
    for k, (dy, size) in enumerate(zip(dys, sizes)):
        check_grad_shape(spec(dy), (n, h, w, size), f"dys[{k}]")
        require_device(dy, f"dys[{k}]")
    return concat_forward(list(dys))[0]


def add_forward(a, b, *, inplace=False):
    """Residual add ``y = a + b`` (same shape and dtype); returns ``(y, cache)``; ``inplace`` writes over ``a``."""
    check_array(spec(a), "a")
    check_array(spec(b), "b")
    check_same_shape(a=spec(a), b=spec(b))
    check_same_dtype(a=spec(a), b=spec(b))
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


def zero_pad2d_forward(x, padding):
    """Pad H and W with zeros: ``y[:, t:t+H, l:l+W, :] = x``; returns ``(y, cache)``."""
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    (t, b), (l, r) = pads = resolve_zero_padding(padding)
    n, h, w, c = x.shape
    y = empty((n, h + t + b, w + l + r, c), x.dtype)                    # (N, H + t + b, W + l + r, C)
    launch_1d(_pad, y.size, x, y, t, l)
    return y, {"pads": pads, "x_shape": tuple(x.shape)}


def zero_pad2d_backward(dy, cache):
    """Gradient of :func:`zero_pad2d_forward`: the crop ``dx = dy[:, t:t+H, l:l+W, :]``."""
    (t, b), (l, r) = cache["pads"]
    n, h, w, c = cache["x_shape"]
    check_grad_shape(spec(dy), (n, h + t + b, w + l + r, c))
    require_device(dy, "dy")
    dx = empty((n, h, w, c), dy.dtype)
    launch_1d(_crop, dx.size, dy, dx, t, l)
    return dx
