"""Average pooling on the GPU, Keras ``AveragePooling2D``: the mean over each window's real pixels.

Same maths as :mod:`tinydeeplab.functional.avg_pool`; the windows come from the shared
:func:`~tinydeeplab.functional.avg_pool.avg_pool2d_geometry`. Nothing is uploaded: a window's count is
the product of its clipped row and column ranges, which the kernels work out where they need it
(:func:`_window_count`). Forward: one thread per output element adds the window's real pixels (loops
clipped to the input) and divides by the count. Backward, a gather (one thread per element of ``dx``, no
atomics): pixel ``(h, w)`` lies in the windows ``oh in [ceil((h + pt - KH + 1) / sh), floor((h + pt) / sh)]``
(likewise ``ow``) and receives ``dy / count`` of each.
"""
from __future__ import annotations

from numba import cuda

from ...functional.avg_pool import avg_pool2d_geometry
from ...functional.checks import check_grad_shape, check_nhwc
from .device import empty, launch_1d, require_device, spec, unravel_nhwc


@cuda.jit(device=True)
def _window_count(oh, ow, h_in, w_in, kh, kw, sh, sw, pt, pl):
    """Real pixels of window ``(oh, ow)``: clipped rows times clipped columns (as ``window_counts_1d``)."""
    rows = min(oh * sh - pt + kh, h_in) - max(oh * sh - pt, 0)
    cols = min(ow * sw - pl + kw, w_in) - max(ow * sw - pl, 0)
    return float(rows * cols)


@cuda.jit
def _avg_pool(x, y, kh, kw, sh, sw, pt, pl):
    """``y[n, oh, ow, c] = sum of the window's real pixels / count[oh, ow]``."""
    _, h_in, w_in, _ = x.shape
    _, out_h, out_w, c_n = y.shape
    for idx in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        n, oh, ow, c = unravel_nhwc(idx, out_h, out_w, c_n)
        acc = 0.0
        for h in range(max(oh * sh - pt, 0), min(oh * sh - pt + kh, h_in)):
            for w in range(max(ow * sw - pl, 0), min(ow * sw - pl + kw, w_in)):
                acc += x[n, h, w, c]
        y[n, oh, ow, c] = acc / _window_count(oh, ow, h_in, w_in, kh, kw, sh, sw, pt, pl)


@cuda.jit
def _avg_pool_grad(dy, dx, kh, kw, sh, sw, pt, pl):
    """``dx[n, h, w, c] = sum over the windows containing (h, w) of dy / count``."""
    _, h_in, w_in, c_n = dx.shape
    _, out_h, out_w, _ = dy.shape
    for idx in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, h, w, c = unravel_nhwc(idx, h_in, w_in, c_n)
        acc = 0.0
        for oh in range(max(0, -(-(h + pt - kh + 1) // sh)), min(out_h, (h + pt) // sh + 1)):
            for ow in range(max(0, -(-(w + pl - kw + 1) // sw)), min(out_w, (w + pl) // sw + 1)):
                acc += dy[n, oh, ow, c] / _window_count(oh, ow, h_in, w_in, kh, kw, sh, sw, pt, pl)
        dx[n, h, w, c] = acc


def avg_pool2d_forward(x, *, pool_size=2, stride=None, padding="valid"):
    """Mean over the real pixels of each window, on device arrays; returns ``(y, cache)``."""
    check_nhwc(spec(x), "x")
    require_device(x, "x")
    pool, stride, pads, out_hw, _ = avg_pool2d_geometry(tuple(x.shape), pool_size, stride, padding)
    y = empty((x.shape[0], *out_hw, x.shape[3]), x.dtype)       # (N, H_out, W_out, C)
    args = (pool[0], pool[1], stride[0], stride[1], pads[0][0], pads[1][0])
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
