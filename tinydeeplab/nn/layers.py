"""Layers: thin stateful wrappers around the op pairs of the current backend.

Each layer's ``forward`` calls ``<op>_forward`` of the backend selected by
:func:`tinydeeplab.backend.ops`, keeps the cache (and which backend made it), and its
``backward`` hands that cache to the matching ``<op>_backward``. Names and defaults follow
Keras (``filters``, ``kernel_size``, ``strides``, ``dilation_rate``, ``epsilon``, ``momentum``),
so a KerasHub config reads the same here.
"""
from __future__ import annotations

import numpy as np

from ..backend import ops
from ..functional.checks import pair
from .module import Module, in_inference_mode


def _rng(seed_or_rng) -> np.random.Generator:
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


class OpLayer(Module):
    """A layer that runs one op pair of the current backend: ``_run(op, ...)`` calls ``<op>_forward`` and
    remembers the backend module and the cache; ``_back(op, dout)`` hands that cache to ``<op>_backward``.

    Subclass it for a new layer (``forward`` calls ``self._run``, ``backward`` calls ``self._back``).
    """

    def _run(self, op: str, *args, **kwargs):
        self._ops = ops()
        out, cache = getattr(self._ops, op + "_forward")(*args, **kwargs)
        # under inference_mode() nothing is kept for a backward (batch norm in training mode still
        # needs its batch statistics for the moving averages, so it keeps them)
        self._cache = None if in_inference_mode() and not kwargs.get("training", False) else cache
        return out

    def _back(self, op: str, dout):
        return getattr(self._ops, op + "_backward")(dout, self._saved_cache())

    def _saved_cache(self):
        """The cache of the last forward, or RuntimeError when there is none to go backward through."""
        if getattr(self, "_cache", None) is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward "
                               "(or after a forward under inference_mode)")
        return self._cache


class _Convolution(OpLayer):
    """The forward / backward shared by :class:`Conv2D` and :class:`DepthwiseConv2D`: op ``self.op`` with
    ``params["kernel"]`` (and ``params["bias"]`` if any), ``strides``, ``dilation_rate``, ``padding``."""

    op = ""

    op_kernel_shape = None      # the op's kernel shape when the stored one differs (same memory order)

    def forward(self, x, training=False):
        kernel = self.params["kernel"]
        if self.op_kernel_shape is not None:
            kernel = kernel.reshape(self.op_kernel_shape)
        return self._run(self.op, x, kernel, self.params.get("bias"),
                         stride=self.strides, dilation=self.dilation_rate, padding=self.padding)

    def backward(self, dout):
        dx, dw, db = self._back(self.op, dout)
        self.grads["kernel"] = dw if self.op_kernel_shape is None else dw.reshape(self.params["kernel"].shape)
        if db is not None:
            self.grads["bias"] = db
        return dx


class Conv2D(_Convolution):
    """2-D convolution, NHWC input, HWIO ``kernel``: ``y = sum_taps x_window @ kernel[i, j] (+ bias)``.

    >>> conv = Conv2D(3, 8, kernel_size=3, strides=2, seed=0)
    >>> conv(np.zeros((1, 9, 9, 3), np.float32)).shape      # Keras "same": ceil(9 / 2) = 5
    (1, 5, 5, 8)
    """

    def __init__(self, in_channels: int, filters: int, kernel_size=1, *, strides=1, dilation_rate=1,
                 padding="same", use_bias: bool = False, seed=None):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.dilation_rate = pair(dilation_rate, "dilation_rate")
        self.padding = padding
        fan_in = kh * kw * in_channels
        # He-normal initialisation: keeps activation variance ~constant through ReLU layers.
        w = _rng(seed).normal(0.0, np.sqrt(2.0 / fan_in), size=(kh, kw, in_channels, filters))
        self.params["kernel"] = w.astype(np.float32)  # (KH, KW, C_in, C_out)
        if use_bias:
            self.params["bias"] = np.zeros(filters, np.float32)

    op = "conv2d"


class DepthwiseConv2D(_Convolution):
    """Depthwise 2-D convolution (Keras ``DepthwiseConv2D``): every input channel ``c`` gets its own
    ``depth_multiplier`` filters, ``y[..., c*M + m] = sum_taps x_window[..., c] * kernel[i, j, c, m] (+ bias)``,
    with the (KH, KW, C, M) ``kernel`` of Keras. No sum over channels: ``C * M * KH * KW`` weights instead
    of a full conv's ``C * F * KH * KW``.

    The op skips every tap that reads only padding (:func:`~tinydeeplab.functional.conv.conv2d_plan`), as
    :class:`Conv2D` does: a dilated tap that never lands on the map costs nothing and its gradient is 0.

    >>> dw = DepthwiseConv2D(4, 3, dilation_rate=6, seed=0)
    >>> y = dw(np.ones((1, 5, 5, 4), np.float32))             # rate 6 >= 5: only the centre tap is live
    >>> y.shape, bool(np.allclose(y[0, 0, 0], dw.params["kernel"][1, 1, :, 0]))
    ((1, 5, 5, 4), True)
    """

    def __init__(self, channels: int, kernel_size=3, *, strides=1, dilation_rate=1, padding="same",
                 depth_multiplier: int = 1, use_bias: bool = False, seed=None):
        super().__init__()
        kh, kw = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.dilation_rate = pair(dilation_rate, "dilation_rate")
        self.padding = padding
        # He-normal on the fan-in of one output channel: its KH * KW taps of one input channel
        w = _rng(seed).normal(0.0, np.sqrt(2.0 / (kh * kw)), size=(kh, kw, channels, depth_multiplier))
        self.params["kernel"] = w.astype(np.float32)  # (KH, KW, C, M)
        if use_bias:
            self.params["bias"] = np.zeros(channels * depth_multiplier, np.float32)

    op = "depthwise_conv2d"


class BatchNorm(OpLayer):
    """Batch normalisation over N, H, W per channel.

    ``y = gamma * (x - mean) / sqrt(var + epsilon) + beta`` with batch statistics (biased
    variance) when training, moving statistics otherwise; after a training step
    ``moving = moving * momentum + batch * (1 - momentum)`` (Keras convention).

    ``sync``: None (statistics of this process's batch), or a ``reduce`` callable that sums per-channel
    statistics over the processes of a data-parallel run (synchronized batch norm: training statistics
    of the *global* batch; see :mod:`tinydeeplab.functional.batchnorm` and
    :func:`tinydeeplab.train.distributed.sync_batchnorm`). Inference never reduces.
    """

    def __init__(self, channels: int, *, epsilon: float = 1e-3, momentum: float = 0.99):
        super().__init__()
        self.epsilon, self.momentum = float(epsilon), float(momentum)
        self.sync = None
        self.params["gamma"] = np.ones(channels, np.float32)
        self.params["beta"] = np.zeros(channels, np.float32)
        self.buffers["moving_mean"] = np.zeros(channels, np.float32)
        self.buffers["moving_variance"] = np.ones(channels, np.float32)

    def forward(self, x, training=False):
        synced = {"reduce": self.sync} if training and self.sync is not None else {}
        y = self._run("batchnorm", x, self.params["gamma"], self.params["beta"],
                      self.buffers["moving_mean"], self.buffers["moving_variance"],
                      training=training, eps=self.epsilon, **synced)
        if training:
            update = self._ops.moving_average
            self.buffers["moving_mean"] = update(self.buffers["moving_mean"], self._cache["mean"], self.momentum)
            self.buffers["moving_variance"] = update(self.buffers["moving_variance"], self._cache["var"],
                                                     self.momentum)
        return y

    def backward(self, dout):
        dx, self.grads["gamma"], self.grads["beta"] = self._back("batchnorm", dout)
        return dx


class ReLU(OpLayer):
    """``y = max(x, 0)``. ``ReLU(inplace=True)`` overwrites its input: the models use it right after a
    batch norm, a convolution or an add, whose fresh output nothing else reads (their caches keep their
    inputs, not their outputs), which saves one activation-sized buffer per layer."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x, training=False):
        return self._run("relu", x, inplace=self.inplace)

    def backward(self, dout):
        return self._back("relu", dout)


class ZeroPadding2D(OpLayer):
    """Pads H and W with zeros: int, ``(ph, pw)`` or ``((top, bottom), (left, right))``.

    ``pad_value`` is the value of the padded cells: 0 here; a subclass that pads with another constant
    (ResNet v2's -inf before its max pool) says so there, and exporters (ONNX) read it.
    """

    pad_value = 0.0

    def __init__(self, padding):
        super().__init__()
        self.padding = padding

    def forward(self, x, training=False):
        return self._run("zero_pad2d", x, self.padding)

    def backward(self, dout):
        return self._back("zero_pad2d", dout)


class MaxPool2D(OpLayer):
    """Max over ``pool_size`` windows moved by ``strides``."""

    def __init__(self, pool_size=3, strides=2, padding="valid"):
        super().__init__()
        self.pool_size, self.strides, self.padding = pool_size, strides, padding

    def forward(self, x, training=False):
        return self._run("max_pool2d", x, pool_size=self.pool_size, stride=self.strides, padding=self.padding)

    def backward(self, dout):
        return self._back("max_pool2d", dout)


class AveragePooling2D(OpLayer):
    """Keras ``AveragePooling2D``: the mean over each ``pool_size`` window's real pixels, moved by ``strides``
    (None: ``pool_size``), ``padding`` "valid" or "same" (Keras's rule), or explicit
    ``((top, bottom), (left, right))``; ``dilation_rate`` spaces the window's taps (a tinydeeplab extension
    that atrous encoders use where a strided pool becomes a stride-1 one on a dilated map).

    >>> AveragePooling2D(2, 2)(np.ones((1, 5, 4, 3), np.float32)).shape     # "valid": floor(5 / 2) = 2
    (1, 2, 2, 3)
    """

    def __init__(self, pool_size=2, strides=None, padding="valid", dilation_rate=1):
        super().__init__()
        self.pool_size, self.strides, self.padding = pool_size, strides, padding
        self.dilation_rate = pair(dilation_rate, "dilation_rate")

    def forward(self, x, training=False):
        return self._run("avg_pool2d", x, pool_size=self.pool_size, stride=self.strides, padding=self.padding,
                         dilation=self.dilation_rate)

    def backward(self, dout):
        return self._back("avg_pool2d", dout)


class GlobalAveragePooling2D(OpLayer):
    """Mean over H and W, kept as ``(N, 1, 1, C)``."""

    def forward(self, x, training=False):
        return self._run("global_avg_pool", x)

    def backward(self, dout):
        return self._back("global_avg_pool", dout)


class Resize(OpLayer):
    """Bilinear resize (half-pixel centres) to a size given at call time: ``forward(x, size=(H, W))``."""

    def forward(self, x, training=False, *, size=None):
        if size is None:
            raise ValueError("Resize.forward needs size=(H, W)")
        return self._run("bilinear_resize", x, tuple(size))

    def backward(self, dout):
        return self._back("bilinear_resize", dout)


class UpSampling2D(OpLayer):
    """Bilinear upsampling by an integer factor (Keras ``UpSampling2D(interpolation="bilinear")``)."""

    def __init__(self, size):
        super().__init__()
        self.size = pair(size, "size")

    def forward(self, x, training=False):
        return self._run("upsample_bilinear", x, self.size)

    def backward(self, dout):
        return self._back("upsample_bilinear", dout)


class Dropout(OpLayer):
    """Inverted dropout: training ``y = x * mask / (1 - rate)`` with ``mask ~ Bernoulli(1 - rate)``
    (the ``dropout`` op, drawing from this layer's generator); inference ``y = x``. The backward applies
    the same mask."""

    op = "dropout"                        # the op pair it runs (StochasticDepth: "stochastic_depth")

    def __init__(self, rate: float = 0.0, seed=None):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{self.op} rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = _rng(seed)             # public: checkpoints save and restore its state
        self._cache = None

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._cache = None
            return x
        return self._run(self.op, x, rate=self.rate, rng=self.rng)

    def backward(self, dout):
        return dout if self._cache is None else self._back(self.op, dout)


class StochasticDepth(Dropout):
    """Stochastic depth / drop-connect on a residual branch, as KerasHub's EfficientNet blocks apply it
    (``Dropout(rate, noise_shape=(None, 1, 1, 1))``): in training each *sample*'s branch is dropped with
    probability ``rate`` and kept ones are divided by ``1 - rate``; inference is the identity.

    >>> sd = StochasticDepth(0.5, seed=1)
    >>> sd(np.ones((4, 1, 1, 1), np.float32), training=True).ravel().tolist()
    [2.0, 2.0, 0.0, 2.0]
    """

    op = "stochastic_depth"


ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "swish": "swish", "silu": "swish",
               "hard_sigmoid": "hard_sigmoid", "hard_swish": "hard_swish", "hard_silu": "hard_swish",
               "leaky_relu": "leaky_relu"}
"""Keras activation name -> tinydeeplab op (``keras.activations``: ``silu`` is ``swish``, ``hard_silu`` is
``hard_swish``)."""


class Activation(OpLayer):
    """Keras ``Activation(name)``: an elementwise activation by its Keras name (:data:`ACTIVATIONS`).

    ``negative_slope`` is leaky ReLU's ``a`` in ``y = x if x >= 0 else a x`` (only for ``"leaky_relu"``;
    default 0.2, ``keras.activations.leaky_relu``'s).

    >>> Activation("silu")(np.array([0.0, 2.0])).round(6).tolist()
    [0.0, 1.761594]
    >>> Activation("leaky_relu", negative_slope=0.01)(np.array([-2.0, 3.0])).tolist()
    [-0.02, 3.0]
    """

    def __init__(self, name: str, *, negative_slope: float | None = None):
        super().__init__()
        if name not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
        if negative_slope is not None and ACTIVATIONS[name] != "leaky_relu":
            raise ValueError(f"negative_slope is leaky_relu's option, not {name!r}'s")
        self.name, self.op = name, ACTIVATIONS[name]
        self.kwargs = {} if self.op != "leaky_relu" else {
            "negative_slope": 0.2 if negative_slope is None else float(negative_slope)}

    def forward(self, x, training=False):
        return self._run(self.op, x, **self.kwargs)

    def backward(self, dout):
        return self._back(self.op, dout)


class LeakyReLU(Activation):
    """Keras's ``LeakyReLU(negative_slope)`` layer: ``y = x if x >= 0 else a x``; the layer's default ``a`` is
    0.3 (the function ``keras.activations.leaky_relu``'s is 0.2). KerasHub's CSPNet passes 0.01.

    >>> LeakyReLU(0.01)(np.array([-1.0, 0.0, 2.0])).tolist()
    [-0.01, 0.0, 2.0]
    """

    def __init__(self, negative_slope: float = 0.3):
        super().__init__("leaky_relu", negative_slope=negative_slope)


class Split(OpLayer):
    """Keras ``ops.split(x, sections, axis=-1)`` along channels: ``forward(x)`` returns the list of pieces
    ``x[..., o_k : o_k + sizes[k]]``; ``backward([dy_0, dy_1, ...])`` concatenates them back into ``dx``.

    ``sizes`` is a list of channel counts, or an int ``n`` for ``n`` equal pieces (as ``ops.split``, which
    fails when ``n`` does not divide the channels).

    >>> a, b = Split(2)(np.arange(4.0).reshape(1, 1, 1, 4))
    >>> a.ravel().tolist(), b.ravel().tolist()
    ([0.0, 1.0], [2.0, 3.0])
    """

    def __init__(self, sizes):
        super().__init__()
        if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
            if sizes < 1:
                raise ValueError(f"sections must be a positive int, got {sizes}")
        self.sizes = sizes

    def forward(self, x, training=False):
        sizes = self.sizes
        if not isinstance(sizes, (list, tuple)):
            c = x.shape[len(x.shape) - 1]                # (the CUDA simulator's shapes take no -1)
            if c % sizes:
                raise ValueError(f"cannot split {c} channels into {sizes} equal pieces")
            sizes = [c // sizes] * sizes
        return self._run("split", x, list(sizes))

    def backward(self, dout):
        return self._back("split", list(dout))


class ChannelScale(OpLayer):
    """Squeeze-and-excitation's rescaling (Keras ``Multiply()([x, s])``): ``forward([x, s])`` with ``x``
    (N, H, W, C) and ``s`` (N, 1, 1, C) returns ``x * s``; ``backward(dy)`` returns ``[dx, ds]``."""

    def forward(self, xs, training=False):
        x, s = xs
        return self._run("channel_scale", x, s)

    def backward(self, dout):
        return list(self._back("channel_scale", dout))


class Concatenate(OpLayer):
    """Concatenation along channels: ``forward([a, b, ...])``; ``backward`` returns the list of slices."""

    def forward(self, xs, training=False):
        return self._run("concat", list(xs))

    def backward(self, dout):
        return self._back("concat", dout)


class Add(OpLayer):
    """Residual add ``y = a + b`` of two same-shaped tensors: ``forward([a, b])``; ``backward(dy)``
    returns ``[dy, dy]`` (the add hands the same gradient to both inputs).

    ``Add(inplace=True)`` writes the sum over ``a``: for an ``a`` that nothing else reads afterwards
    (a residual branch's fresh output), which saves one activation-sized buffer per block. The two
    gradients are the same array, not copies (``add_backward`` would copy twice): a layer's backward
    reads its ``dout`` and returns a new array, so both branches can read the one ``dy``.

    >>> add = Add()
    >>> add([np.ones((1, 1, 1, 2), np.float32), np.full((1, 1, 1, 2), 2.0, np.float32)]).ravel().tolist()
    [3.0, 3.0]
    >>> da, db = add.backward(np.ones((1, 1, 1, 2), np.float32))
    >>> da is db
    True
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, xs, training=False):
        a, b = xs
        return self._run("add", a, b, inplace=self.inplace)

    def backward(self, dout):
        self._saved_cache()          # the same check as every layer: a forward must have kept its cache
        return [dout, dout]


def sum_gradients(fresh, other):
    """``fresh + other``, written over ``fresh``: the gradient of a tensor that several branches read is
    the sum of their gradients (the adjoint of the fork). ``fresh`` must be an array nothing else reads
    (a backward's own output); the values are those of ``fresh + other``.

    >>> g = np.ones(2, np.float32)
    >>> sum_gradients(g, np.ones(2, np.float32)) is g, g.tolist()
    (True, [2.0, 2.0])
    """
    return ops().add_forward(fresh, other, inplace=True)[0]


# -- mobile-network layers: the grouped-layout depthwise convolution, squeeze-and-excitation -----------------
class GroupedDepthwiseConv2D(DepthwiseConv2D):
    """:class:`DepthwiseConv2D` (depth multiplier 1) with the kernel as Keras ``Conv2D(filters=C, groups=C)``
    stores the same operator: ``params["kernel"]`` is ``(KH, KW, 1, C)``, the op reads it as ``(KH, KW, C, 1)``
    (the same numbers in the same memory order; KerasHub's MobileNet writes its depthwise convs this way).

    >>> dw = GroupedDepthwiseConv2D(4, 3, strides=2, seed=0)
    >>> dw.params["kernel"].shape, dw(np.zeros((1, 9, 9, 4), np.float32)).shape
    ((3, 3, 1, 4), (1, 5, 5, 4))
    """

    def __init__(self, channels: int, kernel_size=3, **kwargs):
        super().__init__(channels, kernel_size, **kwargs)
        kh, kw, c, m = self.op_kernel_shape = self.params["kernel"].shape
        self.params["kernel"] = self.params["kernel"].reshape(kh, kw, m, c)
        if m != 1:
            raise ValueError(f"a grouped-layout depthwise kernel has depth multiplier 1, got {m}")


class SqueezeExcite(Module):
    """Squeeze-and-excitation: ``y = x * gate(W2 act(W1 mean_hw(x) + b1) + b2)``, per sample and channel.

    ``conv_reduce`` (C -> bottleneck) and ``conv_expand`` (bottleneck -> C) are 1x1 convolutions with bias
    (KerasHub's ``SqueezeAndExcite2D``: ``squeeze_activation`` relu, ``excite_activation`` hard_sigmoid;
    EfficientNet: swish and sigmoid). Backward: ``x`` feeds both the product and the pooled branch, so
    ``dx = dy * s + broadcast(d mean) / (H W)`` (:func:`sum_gradients` of the two).

    >>> se = SqueezeExcite(8, 2, seed=0)
    >>> se(np.ones((2, 3, 3, 8), np.float32)).shape
    (2, 3, 3, 8)
    """

    def __init__(self, channels: int, bottleneck: int, *, squeeze_activation="relu", excite_activation="hard_sigmoid",
                 seed=None):
        super().__init__()
        rng = _rng(seed)
        self.pool = GlobalAveragePooling2D()
        self.conv_reduce = Conv2D(channels, bottleneck, 1, use_bias=True, seed=rng)
        self.squeeze = Activation(squeeze_activation)
        self.conv_expand = Conv2D(bottleneck, channels, 1, use_bias=True, seed=rng)
        self.gate = Activation(excite_activation)
        self.scale = ChannelScale()

    def forward(self, x, training=False):
        s = self.pool.forward(x)                                         # (N, 1, 1, C)
        for layer in (self.conv_reduce, self.squeeze, self.conv_expand, self.gate):
            s = layer.forward(s, training)                               # (N, 1, 1, C'), then (N, 1, 1, C)
        return self.scale.forward([x, s])                                # (N, H, W, C)

    def backward(self, dout):
        dx, ds = self.scale.backward(dout)
        for layer in (self.gate, self.conv_expand, self.squeeze, self.conv_reduce):
            ds = layer.backward(ds)
        return sum_gradients(self.pool.backward(ds), dx)
