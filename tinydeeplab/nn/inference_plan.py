"""An inference plan: batch norm folded into the convolution before it, and conv + bias + ReLU (and a
residual block's add + ReLU) run as one fused op, without touching the weights the model holds.

**Folding.** At inference a batch norm is a fixed affine map per channel, so after a convolution with
kernel ``W`` (KH, KW, C, F) and bias ``b`` (0 without one) it can be multiplied into them::

    BN(conv(x, W) + b) = gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta
                       = conv(x, W') + b'
    s  = gamma / sqrt(var + eps)                        # (F,)
    W' = W * s              (W'[i, j, c, f] = W[i, j, c, f] * s[f])
    b' = (b - mean) * s + beta

(for a depthwise kernel (KH, KW, C, M) output channel ``c * M + m`` takes ``s[c * M + m]``). The product is
computed in float64 from the model's *current* arrays when the plan is built and rounded once to the
model's dtype; the model's own ``params`` and ``buffers`` are only read, so a preset or checkpoint saved
after using the plan holds exactly the weights it held before.

**Fusion.** In every :class:`~tinydeeplab.nn.Sequential` (where adjacent children are a data flow) a run
``Conv2D [-> BatchNorm] [-> ReLU]`` becomes one ``conv2d_fused`` op (``y = relu(conv(x, W') + b')``, the
bias and ReLU applied as the GEMM writes its output), and ``DepthwiseConv2D -> BatchNorm`` a depthwise
conv with the folded kernel and bias (its ReLU stays a separate in-place pass). In a ResNet v1 residual
block whose last unit is ``conv -> BN``, the block's add and final ReLU join that conv's epilogue too::

    plain:  r = BN(conv(r0));  y = ReLU(r + s)                  (four passes over the output)
    plan:   y = conv2d_fused(r0, W', b', residual=s, relu=True)  (one)

Every other module runs as it is. The sums are the same but rounded differently (``W * s`` is rounded
before the products are summed, not after), so the logits agree with the plain path to float32 round-off,
not bit for bit; ``tests/test_inference_plan.py`` measures it.

**Use.** Either a context in which ``model.forward`` runs the plan (inside :func:`~tinydeeplab.nn.inference_mode`)::

    with inference_plan(model):
        logits = model.forward(x)

or a plan object called like the model: ``plan = InferencePlan(model); logits = plan(x)``. Both run
inference only: ``forward(x, training=True)`` inside the plan raises, and outside it the model and its
training are exactly as before (the plan installs its forwards on the instances for the duration of a
call or a ``with`` block and removes them afterwards; meanwhile the model runs the plan in every thread, so
do not train the same model in another thread at the same time).

**Stale plans are refused.** The folded weights are a copy made when the plan is built. Every fused op
checks, each time it runs, that the model still holds the same arrays (``load_state_dict``, ``to`` and
loaders put new ones) and, for host arrays, that :data:`FINGERPRINT_SAMPLES` evenly spaced entries of
every array it folded (all of a smaller one) still hold the values it saw (an optimizer step changes them
in place; an edit of single entries outside the sample goes unnoticed); otherwise it raises :class:`StalePlanError`: build a new plan. On the GPU only
the identity is checked (reading values back would cost a copy per layer): rebuild the plan after
training a device model.

>>> import numpy as np
>>> from tinydeeplab.nn import BatchNorm, Conv2D, ReLU, Sequential
>>> net = Sequential(("conv", Conv2D(3, 4, 3, seed=0)), ("bn", BatchNorm(4)), ("relu", ReLU()))
>>> net.bn.buffers["moving_mean"][:] = 0.5
>>> x = np.random.default_rng(0).normal(size=(1, 6, 6, 3)).astype(np.float32)
>>> plan = InferencePlan(net)
>>> plan.fused
['conv + bn + relu']
>>> bool(np.allclose(plan(x), net.forward(x), atol=1e-5))
True
>>> net.bn.params["gamma"][0] = 2.0                     # the weights changed: the plan is refused
>>> plan(x)
Traceback (most recent call last):
...
tinydeeplab.nn.inference_plan.StalePlanError: the weights of 'bn' changed since the inference plan was built; build a new one (InferencePlan(model))
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..backend import is_device_array, ops, ops_for, to_numpy
from .layers import Activation, BatchNorm, Conv2D, DepthwiseConv2D, ReLU
from .module import Module, Sequential, inference_mode

FINGERPRINT_SAMPLES = 64
"""Entries of each folded array (evenly spaced over it; all of a smaller one) that a host plan re-checks on
every call."""


class StalePlanError(RuntimeError):
    """The model's weights changed after the inference plan was built from them."""


def _refuse_training(training):
    if training:
        raise RuntimeError("an inference plan runs inference only (training=False); train outside the plan: "
                           "the model itself is unchanged")


def _is_relu(module) -> bool:
    return isinstance(module, ReLU) or (isinstance(module, Activation) and module.op == "relu")


class _Sources:
    """The arrays a fused op was folded from, to notice when the model's weights change: the same objects
    must still sit in the model's tables, and (host arrays) hold the values seen at build time."""

    def __init__(self, name, tables):
        self.name = name
        self.slots = [(table, key, table[key]) for table, key in tables]
        self.picks = [None if is_device_array(a) else self._picks(a.size) for _, _, a in self.slots]
        self.seen = [None if p is None else np.asarray(a).reshape(-1)[p]
                     for (_, _, a), p in zip(self.slots, self.picks)]

    @staticmethod
    def _picks(size):
        """Flat indices of the entries re-checked: all of a small array, else evenly spaced samples."""
        return np.linspace(0, size - 1, min(size, FINGERPRINT_SAMPLES)).astype(np.int64)

    def check(self):
        for (table, key, a), picks, seen in zip(self.slots, self.picks, self.seen):
            now = table.get(key)
            if now is not a or (picks is not None and not np.array_equal(np.asarray(now).reshape(-1)[picks], seen)):
                raise StalePlanError(f"the weights of {self.name!r} changed since the inference plan was built; "
                                     "build a new one (InferencePlan(model))")


def fold_batchnorm(kernel, bias, bn, *, depthwise=False):
    """``(W', b')`` of a convolution ``(kernel, bias)`` followed by the inference-mode batch norm ``bn``, as host
    arrays of the kernel's dtype (the model's arrays are only read):
    ``s = gamma / sqrt(var + eps)``, ``W' = W * s`` (per output channel), ``b' = (b - mean) * s + beta``.
    ``kernel`` (KH, KW, C, F), or a depthwise (KH, KW, C, M) with output channel ``c * M + m``.

    >>> bn = BatchNorm(2, epsilon=0.0); bn.params["gamma"][:] = [2.0, 1.0]; bn.buffers["moving_variance"][:] = 4.0
    >>> w, b = fold_batchnorm(np.ones((1, 1, 1, 2), np.float32), None, bn)
    >>> w.ravel().tolist(), b.tolist()                   # s = gamma / 2
    ([1.0, 0.5], [0.0, 0.0])
    """
    kernel = to_numpy(kernel)
    dtype = kernel.dtype
    gamma, beta, mean, var = (to_numpy(a).astype(np.float64) for a in (
        bn.params["gamma"], bn.params["beta"], bn.buffers["moving_mean"], bn.buffers["moving_variance"]))
    s = gamma / np.sqrt(var + bn.epsilon)                                       # (F,)
    w64 = kernel.astype(np.float64)
    w_folded = w64 * (s.reshape(kernel.shape[2], kernel.shape[3]) if depthwise else s)
    b64 = np.zeros_like(s) if bias is None else to_numpy(bias).astype(np.float64)
    return w_folded.astype(dtype), ((b64 - mean) * s + beta).astype(dtype)


class _FusedConv:
    """One ``conv [-> BN] [-> ReLU]`` run as a single op with the folded kernel and bias."""

    def __init__(self, name, conv, bn, relu: bool):
        self.conv, self.relu = conv, relu
        self.depthwise = isinstance(conv, DepthwiseConv2D)
        kernel = conv.params["kernel"]
        if conv.op_kernel_shape is not None:
            kernel = kernel.reshape(conv.op_kernel_shape)
        tables = [(conv.params, k) for k in ("kernel", "bias") if k in conv.params]
        if bn is None:                                      # conv [+ bias] -> ReLU: the model's own arrays
            self.kernel, self.bias = kernel, conv.params.get("bias")
        else:
            tables += [(bn.params, "gamma"), (bn.params, "beta"), (bn.buffers, "moving_mean"),
                       (bn.buffers, "moving_variance")]
            w, b = fold_batchnorm(kernel, conv.params.get("bias"), bn, depthwise=self.depthwise)
            place = ops_for(conv.params["kernel"]).to_device           # where the model's arrays live
            self.kernel, self.bias = place(w), place(b)
        self.sources = _Sources(name, tables)

    def run(self, x, residual=None):
        self.sources.check()
        c, o = self.conv, ops()
        geometry = dict(stride=c.strides, dilation=c.dilation_rate, padding=c.padding)
        if self.depthwise:
            y = o.depthwise_conv2d_forward(x, self.kernel, self.bias, **geometry)[0]
            return o.relu_forward(y, inplace=True)[0] if self.relu else y
        return o.conv2d_fused_forward(x, self.kernel, self.bias, residual, relu=self.relu, **geometry)[0]


def _chain(prefix, children):
    """``(steps, labels)`` of a Sequential's ``(name, module)`` children: each step a child to run as it is or a
    :class:`_FusedConv` standing for a run ``conv [-> BN] [-> ReLU]``, labelled ``"conv + bn + relu"``."""
    steps, labels, i = [], [], 0
    while i < len(children):
        name, m = children[i]
        nxt = children[i + 1][1] if i + 1 < len(children) else None
        if isinstance(m, (Conv2D, DepthwiseConv2D)) and (isinstance(nxt, BatchNorm) or
                                                         (isinstance(m, Conv2D) and _is_relu(nxt))):
            bn = nxt if isinstance(nxt, BatchNorm) else None
            j = i + 1 + (bn is not None)
            relu = j < len(children) and _is_relu(children[j][1])
            names = [children[k][0] for k in range(i, j + relu)]
            watched = names[1] if bn is not None else name  # named in the stale-plan error
            steps.append(_FusedConv(f"{prefix}.{watched}" if prefix else watched, m, bn, relu))
            labels.append(" + ".join(names))
            i = j + relu
        else:
            steps.append(m)
            i += 1
    return steps, labels


class InferencePlan:
    """The folded and fused inference of ``model`` (see the module docstring); ``plan(x)`` returns what
    ``model.forward(x)`` returns under :func:`inference_mode`, to float32 round-off.

    Built from the model's current weights; ``fused`` lists what was fused (``"conv + bn + relu"``,
    ``"conv3.conv + conv3.bn + add + out_relu"`` for a residual block's tail); a changed weight makes every later call
    raise :class:`StalePlanError`.
    """

    def __init__(self, model: Module):
        if not isinstance(model, Module):
            raise ValueError(f"InferencePlan takes a tinydeeplab Module, got {type(model).__name__}")
        from ..models.resnet import Block                   # here: models import nn

        self.model = model
        self.fused: list[str] = []
        self._forwards: list[tuple[Module, object]] = []    # (module, the forward installed on it)
        self._installed = False
        tails = set()                                       # the last units of fused blocks: fused there
        for name, m in model.modules():                     # depth first: a block before its units
            if isinstance(m, Block) and self._fusable_block(m):
                last = m.residual_layers()[-1]
                unit = next(n for n, u in m.children() if u is last)
                step = _FusedConv(f"{name}.{unit}.bn".lstrip("."), last.conv, last.bn, relu=True)
                self._forwards.append((m, self._block_forward(m, step)))
                self.fused.append(f"{unit}.conv + {unit}.bn + add + out_relu")
                tails.add(id(last))
            elif type(m).forward is Sequential.forward and id(m) not in tails:
                steps, labels = _chain(name, list(m.children()))
                if labels:
                    self._forwards.append((m, self._sequential_forward(steps)))
                    self.fused += labels

    @staticmethod
    def _fusable_block(block) -> bool:
        """A v1 block ``ReLU(BN(conv(r)) + s)``: its last residual unit is exactly conv -> BN."""
        units = block.residual_layers()
        return (not block.pre_activation and _is_relu(block.out_relu) and bool(units)
                and [n for n, _ in units[-1].children()] == ["conv", "bn"]
                and isinstance(units[-1].conv, Conv2D) and isinstance(units[-1].bn, BatchNorm))

    @staticmethod
    def _sequential_forward(steps):
        def forward(x, training=False):
            _refuse_training(training)
            for step in steps:
                x = step.run(x) if isinstance(step, _FusedConv) else step.forward(x, training=False)
            return x
        return forward

    @staticmethod
    def _block_forward(block, tail):
        units = block.residual_layers()

        def forward(x, training=False):
            _refuse_training(training)
            r = x
            for unit in units[:-1]:
                r = unit.forward(r, training=False)                           # (N, H', W', F)
            s = x if block.shortcut is None else block.shortcut.forward(x, training=False)
            return tail.run(r, residual=s)                                    # ReLU(BN(conv(r)) + s)
        return forward

    # -- installing the plan's forwards on the instances ---------------------------------------------------
    def __enter__(self):
        if self._installed:
            raise RuntimeError("this inference plan is already in use (plans do not nest)")
        for module, forward in self._forwards:
            if "forward" in module.__dict__:
                self._uninstall()
                raise RuntimeError(f"{type(module).__name__} already has a forward installed on it (a hook or "
                                   "another plan): remove it first")
            object.__setattr__(module, "forward", forward)
        self._installed = True
        return self

    def __exit__(self, *exc):
        self._uninstall()
        return False

    def _uninstall(self):
        for module, forward in self._forwards:
            if module.__dict__.get("forward") is forward:
                del module.__dict__["forward"]
        self._installed = False

    def __call__(self, x):
        """``model.forward(x)`` through the plan, under :func:`inference_mode`."""
        with self, inference_mode():
            return self.model.forward(x)

    def __repr__(self):
        return f"InferencePlan({type(self.model).__name__}: {len(self.fused)} fused ops)"


@contextmanager
def inference_plan(model: Module):
    """Within the block ``model.forward(x)`` runs the model's :class:`InferencePlan`, built on entry from
    its current weights, under :func:`inference_mode`; yields the plan. Training forwards inside raise.

    >>> import numpy as np
    >>> from tinydeeplab.nn import BatchNorm, Conv2D, Sequential
    >>> net = Sequential(("conv", Conv2D(2, 3, 1, seed=0)), ("bn", BatchNorm(3)))
    >>> x = np.ones((1, 2, 2, 2), np.float32)
    >>> with inference_plan(net) as plan:
    ...     y = net.forward(x)
    >>> plan.fused, bool(np.allclose(y, net.forward(x), atol=1e-6))
    (['conv + bn'], True)
    """
    plan = InferencePlan(model)
    with plan, inference_mode():
        yield plan
