"""Average pooling on the GPU, Keras ``AveragePooling2D``: the mean over each window's real pixels.

Same maths as :mod:`tinydeeplab.functional.avg_pool`; the windows come from the shared
:func:`~tinydeeplab.functional.avg_pool.avg_pool2d_geometry`. Nothing is uploaded: a window's count is
the product of its real rows and columns, which the kernels work out where they need it
(:func:`_window_count`). Forward: one thread per output element adds the window's real pixels (taps
``oh*sh - pt + i*dh`` inside the input) and divides by the count. Backward, a gather (one thread per
element of ``dx``, no atomics): tap ``i`` of window ``oh`` reads row ``h`` exactly when
``h + pt - i*dh = oh*sh`` (likewise columns); pixel ``(h, w)`` receives ``dy / count`` of each such window.
"""
from __future__ import annotations

from numba import cuda

from ...functional.avg_pool import avg_pool2d_geometry
from ...functional.checks import check_grad_shape, check_nhwc, pair
from .device import empty, launch_1d, require_device, spec, unravel_nhwc


@cuda.jit(device=True)
def _taps_inside(o, s, p, k, d, size):
    """Taps ``i < k`` of window ``o`` whose pixel ``o*s - p + i*d`` is inside ``[0, size)`` (as ``window_counts_1d``)."""
    n = 0
    for i in range(k):
        t = o * s - p + i * d
        if t >= 0 and t < size:
            n += 1
    return n


@cuda.jit(device=True)
def _window_count(oh, ow, h_in, w_in, kh, kw, sh, sw, pt, pl, dh, dw):
    """Real pixels of window ``(oh, ow)``: real rows times real columns."""
    return float(_taps_inside(oh, sh, pt, kh, dh, h_in) * _taps_inside(ow, sw, pl, kw, dw, w_in))


@cuda.jit
def _avg_pool(x, y, kh, kw, sh, sw, pt, pl, dh, dw):
    """``y[n, oh, ow, c] = sum of the window's real pixels / count[oh, ow]``."""
    _, h_in, w_in, _ = x.shape
    _, out_h, out_w, c_n = y.shape
    for idx in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, oh, ow, c = unravel_nhwc(idx, out_h, out_w, c_n)
        acc = 0.0
        for i in range(kh):
            h = oh * sh - pt + i * dh
            if h >= 0 and h < h_in:
                for j in range(kw):
                    w = ow * sw - pl + j * dw
                    if w >= 0 and w < w_in:
                        acc += x[n, h, w, c]
        y[n, oh, ow, c] = acc / _window_count(oh, ow, h_in, w_in, kh, kw, sh, sw, pt, pl, dh, dw)


@cuda.jit
def _avg_pool_grad(dy, dx, kh, kw, sh, sw, pt, pl, dh, dw):
    """``dx[n, h, w, c] = sum over the windows containing (h, w) of dy / count`` (tap ``i`` of window ``oh``
    reads row ``h`` when ``h + pt - i*dh = oh*sh``)."""
    _, h_in, w_in, c_n = dx.shape
    _, out_h, out_w, _ = dy.shape
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_in, w_in, c_n)
        acc = 0.0
        for i in range(kh):
            th = h + pt - i * dh
            if th >= 0 and th % sh == 0 and th // sh < out_h:
                for j in range(kw):
                    tw = w + pl - j * dw
                    if tw >= 0 and tw % sw == 0 and tw // sw < out_w:
                        acc += dy[n, th // sh, tw // sw, c] / _window_count(th // sh, tw // sw, h_in, w_in, kh, kw,
                                                                            sh, sw, pt, pl, dh, dw)
        dx[n, h, w, c] = acc


def avg_pool2d_forward(x, *, pool_size=2, stride=None, padding="valid", dilation=1):
    """Mean over the real pixels of each window, on device arrays; returns ``(y, cache)``."""
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    pool, stride, pads, out_hw, _ = avg_pool2d_geometry(tuple(x.shape), pool_size, stride, padding, dilation)
    dil = pair(dilation, "dilation")
    y = empty((x.shape[0], *out_hw, x.shape[3]), x.dtype)       # (N, H_out, W_out, C)
    args = (pool[0], pool[1], stride[0], stride[1], pads[0][0], pads[1][0], dil[0], dil[1])
    launch_1d(_avg_pool, y.size, x, y, *args)
    return y, {"x_shape": tuple(x.shape), "dtype": x.dtype, "out_hw": out_hw, "args": args}


def avg_pool2d_backward(dy, cache):
    """``dx[window] += dy / count`` (a gather)."""
    n, h, w, c = cache["x_shape"]
    check_grad_shape(spec(dy), (n, *cache["out_hw"], c))
    require_device(dy, "dy")
    dx = empty(cache["x_shape"], cache["dtype"])
    launch_1d(_avg_pool_grad, dx.size, dy, dx, *cache["args"])
    return dx
