"""Input validation shared by the NumPy reference ops and every backend (Numba CPU, CUDA).

Every public op validates its arguments here first, so a bad call fails with a
``ValueError`` that names the argument and its shape instead of an ``IndexError``
from deep inside a loop, and every backend fails with the same message. The checks read only
``shape``, ``dtype`` and ``ndim`` (the CUDA backend hands them shape-only stand-ins of device arrays).

>>> check_split_sizes([2, 3], (1, 4, 4, 5))
[2, 3]
>>> check_dloss(np.array([0.5]))
0.5
"""
from __future__ import annotations

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_array(x, name: str, ndim: int | None = None, *, float_only: bool = True) -> np.ndarray:
    """Return ``x`` if it is a float32/float64 ndarray with ``ndim`` axes, else raise ValueError."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        layout = {4: " (N, H, W, C)", 2: " (rows, cols)", 1: " (C,)"}.get(ndim, "")
        raise ValueError(f"{name} must have {ndim} dimensions{layout}, got shape {x.shape}")
    if float_only and x.dtype.type not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got dtype {x.dtype} (shape {x.shape})")
    return x


def check_nhwc(x, name: str = "x") -> np.ndarray:
    """Validate a 4-D float activation tensor ``(N, H, W, C)``."""
    return check_array(x, name, 4)


def check_same_dtype(**arrays) -> None:
    """Raise if the given (non-None) arrays do not all share one dtype."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    dtypes = {v.dtype for _, v in items}
    if len(dtypes) > 1:
        desc = ", ".join(f"{k}: {v.dtype}" for k, v in items)
        raise ValueError(f"arrays must share one dtype, got {desc}")


def pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Turn an int or a 2-sequence of ints into ``(a, b)``, each ``>= minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        out = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


def check_channels(x_shape, w_shape, x_name: str = "x", w_name: str = "w") -> None:
    """Input channels of an NHWC tensor must match the I axis of an HWIO kernel."""
    if x_shape[-1] != w_shape[2]:
        raise ValueError(
            f"channel mismatch: {x_name} has {x_shape[-1]} channels (shape {tuple(x_shape)}) but "
            f"{w_name} expects {w_shape[2]} input channels (HWIO shape {tuple(w_shape)})")


def check_vector(v, name: str, length: int, what: str) -> np.ndarray:
    """Validate a float 1-D parameter of shape ``(length,)``; ``what`` says where the length comes from."""
    check_array(v, name, 1)
    if v.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},) to match {what}, got shape {v.shape}")
    return v


def check_grad_shape(dy, expected_shape, name: str = "dy") -> np.ndarray:
    """Validate the upstream gradient of a backward pass: a float array shaped like the forward output."""
    check_array(dy, name)
    if dy.shape != tuple(expected_shape):
        raise ValueError(f"{name} must have the forward output's shape {tuple(expected_shape)}, got {dy.shape}")
    return dy


def check_same_shape(**arrays) -> None:
    """Raise if the given arrays do not all share one shape (e.g. the two inputs of a residual add)."""
    shapes = {k: v.shape for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k}: {s}" for k, s in shapes.items())
        raise ValueError(f"arrays must share one shape, got {desc}")


def check_nhwc_list(xs, name: str = "xs") -> list:
    """Validate a non-empty list of NHWC float arrays with equal N, H, W and one dtype (for concat)."""
    if not isinstance(xs, (list, tuple)) or len(xs) == 0:
        raise ValueError(f"{name} must be a non-empty list of (N, H, W, C) arrays, got {type(xs).__name__}"
                         + (" of length 0" if isinstance(xs, (list, tuple)) else ""))
    for i, x in enumerate(xs):
        check_nhwc(x, f"{name}[{i}]")
    nhw = {x.shape[:3] for x in xs}
    if len(nhw) > 1:
        shapes = ", ".join(f"{name}[{i}]: {x.shape}" for i, x in enumerate(xs))
        raise ValueError(f"{name} must agree on N, H, W to be concatenated along channels, got {shapes}")
    check_same_dtype(**{f"{name}[{i}]": x for i, x in enumerate(xs)})
    return list(xs)


def check_labels(labels, logits_shape, ignore_label, *, binary: bool = False) -> np.ndarray:
    """Validate sparse integer labels ``(N, H, W)`` for logits ``(N, H, W, K)``.

    Every label must be in ``[0, K)`` or equal ``ignore_label``; the error lists the offending values.
    ``binary``: one foreground logit (K = 1) and labels 0 (background) or 1 (foreground).
    """
    check_array(labels, "labels", 3, float_only=False)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype} (shape {labels.shape})")
    if labels.shape != tuple(logits_shape[:3]):
        raise ValueError(f"labels must have shape (N, H, W) = {tuple(logits_shape[:3])} to match logits "
                         f"{tuple(logits_shape)}, got {labels.shape}")
    k = 2 if binary else logits_shape[3]
    bad = (labels < 0) | (labels >= k)
    if ignore_label is not None:
        bad &= labels != ignore_label
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if values.size > 10 else "")
        what = ("binary: 0 background, 1 foreground" if binary
                else f"K = {k} classes from logits {tuple(logits_shape)}")
        raise ValueError(f"labels must be in [0, {k}) ({what}) "
                         f"or equal ignore_label={ignore_label}; found bad values {shown}")
    return labels


def check_split_sizes(sizes, x_shape) -> list:
    """Validate the channel counts of a split of an ``(N, H, W, C)`` tensor: ints >= 1 adding up to C."""
    if (not isinstance(sizes, (list, tuple)) or len(sizes) == 0
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise ValueError(f"sizes must be a non-empty list of ints >= 1, got {sizes!r}")
    if sum(sizes) != x_shape[3]:
        raise ValueError(f"sizes {list(sizes)} add up to {sum(sizes)} but x (shape {tuple(x_shape)}) "
                         f"has {x_shape[3]} channels")
    return [int(s) for s in sizes]


def check_split_grads(dys, x_shape, sizes) -> None:
    """Validate the gradients of a split's pieces: a list with one ``(N, H, W, sizes[k])`` array per piece."""
    n, h, w, _ = x_shape
    if not isinstance(dys, (list, tuple)) or len(dys) != len(sizes):
        raise ValueError(f"dys must be a list of {len(sizes)} gradients (one per piece), got {type(dys).__name__}"
                         + (f" of length {len(dys)}" if isinstance(dys, (list, tuple)) else ""))
    for k, (dy, size) in enumerate(zip(dys, sizes)):
        check_grad_shape(dy, (n, h, w, size), f"dys[{k}]")


def check_dloss(dloss):
    """The upstream gradient of a scalar loss: a real number (a one-element array is unwrapped)."""
    if isinstance(dloss, np.ndarray) and dloss.size == 1:
        dloss = dloss.item()
    if not isinstance(dloss, numbers.Real) or isinstance(dloss, bool):
        raise ValueError(f"dloss must be a real number (1.0 for the loss itself), got {dloss!r}")
    return dloss


def check_dropout_rate(rate) -> None:
    """A dropout rate is a number in ``[0, 1)``."""
    if not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")


# -- whole-argument checks shared by the reference ops and the kernels -----------------------------
def check_add_args(a, b) -> None:
    """The two inputs of a residual add: float arrays of one shape and one dtype."""
    check_array(a, "a")
    check_array(b, "b")
    check_same_shape(a=a, b=b)
    check_same_dtype(a=a, b=b)


def check_moving_average_args(moving, batch_value, momentum) -> None:
    """A moving statistic and its batch value share one shape; ``momentum`` is a number in ``[0, 1]``."""
    check_array(moving, "moving")
    check_array(batch_value, "batch_value")
    if tuple(moving.shape) != tuple(batch_value.shape):
        raise ValueError(f"moving {tuple(moving.shape)} and batch_value {tuple(batch_value.shape)} "
                         f"must share one shape")
    if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")


def check_conv2d_args(x, w, b, stride, dilation):
    """Validate conv2d inputs; returns ``(stride, dilation)`` as pairs."""
    check_nhwc(x, "x")
    check_array(w, "w", 4)
    check_channels(x.shape, w.shape, "x", "w")
    if b is not None:
        check_vector(b, "b", w.shape[3], f"the F axis of w {w.shape}")
    check_same_dtype(x=x, w=w, b=b)
    return pair(stride, "stride"), pair(dilation, "dilation")


def check_conv_epilogue(residual, out_shape, dtype, relu) -> None:
    """The epilogue of a fused convolution: ``residual`` None or a float array of the output's shape
    ``out_shape`` and ``dtype``; ``relu`` True or False."""
    if residual is not None:
        check_array(residual, "residual")
        if tuple(residual.shape) != tuple(out_shape):
            raise ValueError(f"residual has shape {tuple(residual.shape)}, "
                             f"the convolution's output is {tuple(out_shape)}")
        if residual.dtype != dtype:
            raise ValueError(f"residual has dtype {residual.dtype}, the convolution's output {np.dtype(dtype)}")
    if not isinstance(relu, (bool, np.bool_)):
        raise ValueError(f"relu must be True or False, got {relu!r}")


def check_batchnorm_args(x, gamma, beta, moving_mean, moving_var, training, eps):
    """Validate batch-norm inputs (per-channel vectors of length C, dtypes, flags)."""
    check_nhwc(x, "x")
    c = x.shape[3]
    for name, v in (("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean), ("moving_var", moving_var)):
        check_vector(v, name, c, f"the channels of x {x.shape}")
    check_same_dtype(x=x, gamma=gamma, beta=beta, moving_mean=moving_mean, moving_var=moving_var)
    if not isinstance(training, (bool, np.bool_)):
        raise ValueError(f"training must be True or False, got {training!r}")
    if not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")


def loss_class_weights(logits, labels, ignore_label, class_weights):
    """Validate cross-entropy inputs; returns the per-class weights (K,) in the logits' dtype."""
    check_nhwc(logits, "logits")
    k = logits.shape[3]
    check_labels(labels, logits.shape, ignore_label)
    if class_weights is None:
        return np.ones(k, dtype=logits.dtype)
    check_vector(class_weights, "class_weights", k, f"the K axis of logits {logits.shape}")
    if np.any(class_weights < 0) or not np.all(np.isfinite(class_weights)):
        raise ValueError(f"class_weights must be finite and >= 0, got {class_weights.tolist()}")
    return class_weights.astype(logits.dtype)


def check_binary_loss_args(logits, labels, ignore_label) -> None:
    """The inputs of a binary loss: one foreground logit per pixel ``(N, H, W, 1)`` and labels
    ``(N, H, W)`` in ``{0, 1}`` or ``ignore_label``."""
    check_nhwc(logits, "logits")
    if logits.shape[3] != 1:
        raise ValueError(f"logits must have one channel (N, H, W, 1) for a binary loss (the foreground logit), "
                         f"got shape {tuple(logits.shape)}")
    check_labels(labels, logits.shape, ignore_label, binary=True)


def check_loss_option(value, name: str, *, low: float = 0.0, high: float = math.inf, optional: bool = False):
    """A real-valued loss option in ``[low, high]`` (None allowed when ``optional``); returned as a float."""
    if value is None and optional:
        return None
    if (not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value)
            or not low <= value <= high):
        limits = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"{name} must be a finite number {limits}{' or None' if optional else ''}, got {value!r}")
    return float(value)


# -- the mobile encoder families' ops (issue 16) ---------------------------------------------------
def check_depthwise_conv2d_args(x, w, b, stride, dilation):
    """Validate depthwise conv inputs: ``x`` (N, H, W, C), ``w`` (KH, KW, C, M) (the channel axis of ``w``
    must match ``x``), ``b`` ``(C * M,)`` or None; returns ``(stride, dilation)`` as pairs."""
    check_nhwc(x, "x")
    check_array(w, "w", 4)
    if x.shape[3] != w.shape[2]:
        raise ValueError(f"channel mismatch: x has {x.shape[3]} channels (shape {tuple(x.shape)}) but the depthwise "
                         f"kernel w (KH, KW, C, M) = {tuple(w.shape)} has {w.shape[2]}")
    if b is not None:
        check_vector(b, "b", w.shape[2] * w.shape[3], f"C * M of w {tuple(w.shape)}")
    check_same_dtype(x=x, w=w, b=b)
    return pair(stride, "stride"), pair(dilation, "dilation")


def check_negative_slope(negative_slope) -> float:
    """The slope of leaky ReLU below 0: a finite real number."""
    if (not isinstance(negative_slope, numbers.Real) or isinstance(negative_slope, bool)
            or not np.isfinite(negative_slope)):
        raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
    return float(negative_slope)


def check_pool_padding(padding):
    """Average pooling takes Keras's two padding modes, ``"valid"`` or ``"same"`` (lower case returned), or
    explicit ``((top, bottom), (left, right))`` non-negative ints (a tinydeeplab extension, returned as tuples)."""
    if isinstance(padding, str) and padding.lower() in ("valid", "same"):
        return padding.lower()
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding)
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
                    for p in padding for v in p)):
        return tuple(tuple(int(v) for v in p) for p in padding)
    raise ValueError(f'padding must be "valid", "same" (Keras AveragePooling2D) or ((top, bottom), (left, right)), '
                     f'got {padding!r}')


def check_channel_scale_args(x, s) -> None:
    """Squeeze-and-excitation multiply: ``x`` (N, H, W, C) and per-sample channel scales ``s`` (N, 1, 1, C)."""
    check_nhwc(x, "x")
    check_array(s, "s", 4)
    n, _, _, c = x.shape
    if tuple(s.shape) != (n, 1, 1, c):
        raise ValueError(f"s must have shape (N, 1, 1, C) = {(n, 1, 1, c)} to scale x {tuple(x.shape)}, "
                         f"got {tuple(s.shape)}")
    check_same_dtype(x=x, s=s)


def check_stochastic_depth_args(x, rate, training) -> None:
    """Stochastic depth: ``x`` has a batch axis first, ``rate`` in ``[0, 1)``, ``training`` a bool."""
    check_array(x, "x")
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis (N, ...), got shape {tuple(x.shape)}")
    if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate!r}")
    if not isinstance(training, (bool, np.bool_)):
        raise ValueError(f"training must be True or False, got {training!r}")
