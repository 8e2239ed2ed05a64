"""ONNX export of a segmenter's inference graph, written node by node with the ``onnx`` package.

``pip install 'tinydeeplab[onnx]'`` (``onnx`` writes the file, ``onnxruntime`` runs it); tinydeeplab
itself never imports either outside this module.

**How the graph is found.** The model is not described again here: :func:`trace_layers` runs the
model's own ``forward`` once (NumPy reference backend, inference mode) with every *leaf* layer
(``Conv2D``, ``BatchNorm``, ``ReLU``, ``Add``, ``Resize``, ...) wrapped so that each call records which
tensors it read and which it made. The composites (ResNet blocks, ASPP, the V3/V3+ decoder, the
segmenter, any encoder of the registry) only route tensors between leaves, so the recorded calls *are*
the data-flow graph, whatever the model tree contains: ResNet v1/v2, basic or bottleneck blocks, any
output stride or dilation, DeepLabV3 or V3+, classifier before or after the last upsampling (kept in
the order the model computes it). Tensors are told apart by identity; an in-place layer (ReLU or the
residual add writing over its input) simply gives the array a new name. A leaf type without a
conversion, or a tensor that no recorded layer made (arithmetic done outside the layers), is a one-line
``OptionError``.

**Layout.** Input ``images`` (N, H, W, C) float32, output ``logits`` (N, H, W, num_classes): NHWC
like tinydeeplab, with one ``Transpose`` to NCHW after the input and one back before the output (ONNX
convolutions are NCHW; kernels are stored OIHW, ``w.transpose(3, 2, 0, 1)`` of the HWIO kernel). N is
always dynamic; H and W are dynamic unless ``size`` fixes them.

**Nodes**, per layer (NCHW)::

    Conv2D                 Conv(x, W[, b])  strides, dilations, pads = [top, left, bottom, right]
    DepthwiseConv2D        Conv(x, W[, b])  the same, group = C (W: the (KH, KW, C, M) kernel as (C*M, 1, KH, KW))
    BatchNorm              BatchNormalization(x, gamma, beta, moving_mean, moving_variance), epsilon:
                           y = gamma * (x - mean) / sqrt(var + eps) + beta  (inference; not folded here:
                           ONNX Runtime folds it into the preceding Conv when it loads the graph)
    ReLU / Add / Concatenate   Relu / Add / Concat(axis=1)
    ZeroPadding2D          Pad(x, [0, 0, top, left, 0, 0, bottom, right]) constant ``pad_value``
                           (0, or ResNet v2's -inf before its max pool)
    MaxPool2D              MaxPool  kernel_shape, strides, pads
    GlobalAveragePooling2D GlobalAveragePool
    Resize / UpSampling2D  Resize(x, sizes = [N, C, h, w]) mode "linear",
                           coordinate_transformation_mode "half_pixel" (src = (o + 0.5) * in / out - 0.5,
                           clamped to the edge, no antialias: :mod:`tinydeeplab.functional.resize_coeffs`)
    Dropout                Identity (inference)

**Padding.** Keras "same" pads ``total = max((ceil(H/s) - 1) * s + (k - 1) * d + 1 - H, 0)``, ``before =
total // 2`` (:func:`~tinydeeplab.functional.geometry.same_padding_1d`): the extra pixel of an odd total
goes after. Every padding is written as explicit ``pads``, except a strided "same" convolution or max
pool in a graph with dynamic H/W, whose pads depend on the input size: it is written as
``auto_pad="SAME_UPPER"``, ONNX's name for that same rule. (KerasHub's ResNet pads strided convolutions
with an explicit ``ZeroPadding2D`` and uses "valid", which exports as a ``Pad``.)

**Dynamic sizes.** To find where a resize's target size comes from (the input for the last upsampling,
the ASPP input for its pooling branch, the low-level map for V3+), the model is traced at three sizes
(:data:`TRACE_SIZES`) and the target is matched with the latest earlier tensor whose spatial size it
equals (or is an integer multiple of) in every trace: the graph then reads it with ``Shape``. With ``size`` given,
one trace at that size and constant targets.

Guide: docs/guides/onnx.md; tests (in ONNX Runtime): tests/test_onnx_export.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OptionError

OPSET = 17
IR_VERSION = 8                  # the IR of opset 17 (onnx 1.12): readable by every ONNX Runtime since 1.12
INPUT, OUTPUT = "images", "logits"
TRACE_SIZES = ((70, 90), (131, 107), (97, 161))
"""The (H, W) at which a graph with dynamic H/W is traced: odd and even sides, and every side of a 1/32
map larger than 1 (so that maps at different strides never have the same size)."""


def require_onnx():
    """The ``onnx`` module, or a one-line OptionError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise OptionError("ONNX export needs the onnx package: pip install 'tinydeeplab[onnx]' "
                          "(or pip install onnx onnxruntime)") from None
    return onnx


# -- tracing: the model's own forward, every leaf layer recorded -----------------------------------------
class LayerCall:
    """One call of a leaf layer during a trace: its dotted ``path``, the ``layer``, and the names of the
    tensors it read (``inputs``) and made (``output``)."""

    def __init__(self, path, layer, inputs, output):
        self.path, self.layer, self.inputs, self.output = path, layer, inputs, output


def _leaves(model):
    return [(path, mod) for path, mod in model.modules() if not any(True for _ in mod.children())]


def trace_layers(model, x):
    """Run ``model.forward(x)`` in inference mode on the NumPy backend and return
    ``(calls, shapes, output_name)``: the leaf-layer calls in execution order, the NHWC shape of every
    tensor by name (the input is :data:`INPUT`), and the name of the returned tensor.

    >>> from tinydeeplab.nn import ReLU, Sequential
    >>> calls, shapes, out = trace_layers(Sequential(("a", ReLU()), ("b", ReLU())), np.ones((1, 2, 2, 1)))
    >>> [(c.path, c.inputs, c.output) for c in calls], out
    ([('a', ['images'], 'a'), ('b', ['a'], 'b')], 'b')
    """
    from ..backend import use_backend
    from ..nn import inference_mode

    names = {id(x): INPUT}                      # id(array) -> tensor name (the latest, for in-place layers)
    shapes = {INPUT: tuple(x.shape)}
    keep = [x]                                  # every traced array stays alive, so no id is reused
    calls, seen = [], {}

    def wrap(path, layer):
        plain = layer.forward

        def forward(inp, *args, **kwargs):
            arrays = list(inp) if isinstance(inp, (list, tuple)) else [inp]
            unknown = [i for i, a in enumerate(arrays) if id(a) not in names]
            if unknown:
                raise OptionError(f"ONNX export: {path} ({type(layer).__name__}) reads a tensor that no traced "
                                  "layer made (computed outside the layers); it cannot be exported")
            inputs = [names[id(a)] for a in arrays]
            out = plain(inp, *args, **kwargs)
            seen[path] = seen.get(path, 0) + 1
            name = path if seen[path] == 1 else f"{path}#{seen[path]}"       # a layer called twice
            keep.append(out)
            names[id(out)], shapes[name] = name, tuple(out.shape)
            calls.append(LayerCall(path, layer, inputs, name))
            return out
        return forward

    leaves = _leaves(model)
    try:
        for path, layer in leaves:
            layer.forward = wrap(path, layer)                # an instance attribute shadows the method
        with use_backend("numpy"), inference_mode():
            y = model.forward(x)
    finally:
        for _, layer in leaves:
            layer.__dict__.pop("forward", None)
    if id(y) not in names:
        raise OptionError("ONNX export: the model's output was not made by a traced layer")
    return calls, shapes, names[id(y)]


def _input_channels(model) -> int:
    """C of the model input: the input channels of the first convolution in the model tree."""
    from ..nn import Conv2D

    for _, mod in model.modules():
        if isinstance(mod, Conv2D):
            return int(mod.params["kernel"].shape[2])
    raise OptionError("ONNX export: the model has no Conv2D, so its input channels are unknown")


# -- the graph ------------------------------------------------------------------------------------------
class _Graph:
    """Nodes and initializers being written; ``shapes`` holds one ``{name: NHWC shape}`` per trace."""

    def __init__(self, onnx, shapes, static):
        self.onnx, self.helper = onnx, onnx.helper
        self.shapes, self.static = shapes, static
        self.nodes, self.initializers, self._shape_of = [], [], {}

    def const(self, name, array):
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, output, name, **attrs):
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def same_in_every_trace(self, fn):
        """``fn(shapes)`` if it gives the same value for every trace, else None."""
        values = [fn(s) for s in self.shapes]
        return values[0] if all(v == values[0] for v in values) else None

    def spatial_shape(self, name):
        """An int64 tensor [h, w] of tensor ``name``'s spatial size, read from the graph (cached)."""
        if name not in self._shape_of:
            self._shape_of[name] = self.node("Shape", [name], f"{name}/hw", f"{name}/hw", start=2, end=4)
        return self._shape_of[name]


def _pads(graph, call, kernel, stride, dilation, padding):
    """Conv/MaxPool padding attributes: explicit ``pads`` [top, left, bottom, right], or, for a strided
    "same" in a graph with dynamic H/W (its pads depend on the input size), ``auto_pad`` SAME_UPPER."""
    from ..functional.geometry import resolve_padding

    if not graph.static and isinstance(padding, str) and padding.lower() == "same" and max(stride) > 1:
        return {"auto_pad": "SAME_UPPER"}                # ONNX's name for the rule: before = total // 2
    (t, b), (l, r) = resolve_padding(padding, graph.shapes[0][call.inputs[0]][1:3], kernel, stride, dilation)
    return {"pads": [t, l, b, r]}                         # any other padding is the same at every size


def _conv(graph, call, layer, params):
    from ..nn import DepthwiseConv2D

    kernel = params["kernel"]                                                   # (KH, KW, C_in, C_out)
    group = 1
    if isinstance(layer, DepthwiseConv2D):       # (KH, KW, C, M) -> (KH, KW, 1, C*M), output channel c*M + m
        kh, kw, group, m = layer.op_kernel_shape or kernel.shape      # a grouped-layout kernel is stored (KH, KW, 1, C)
        kernel = kernel.reshape(kh, kw, 1, group * m)
    w = graph.const(f"{call.path}.kernel", kernel.transpose(3, 2, 0, 1))         # (C_out, C_in / group, KH, KW)
    inputs = [call.inputs[0], w]
    if "bias" in params:
        inputs.append(graph.const(f"{call.path}.bias", params["bias"]))
    attrs = _pads(graph, call, kernel.shape[:2], layer.strides, layer.dilation_rate, layer.padding)
    graph.node("Conv", inputs, call.output, call.path, kernel_shape=list(kernel.shape[:2]),
               strides=list(layer.strides), dilations=list(layer.dilation_rate), group=group, **attrs)


def _batchnorm(graph, call, layer, params):
    names = [graph.const(f"{call.path}.{k}", params[k]) for k in ("gamma", "beta", "moving_mean", "moving_variance")]
    graph.node("BatchNormalization", [call.inputs[0], *names], call.output, call.path, epsilon=layer.epsilon)


def _pad(graph, call, layer, params):
    from ..functional.padding import resolve_zero_padding

    (t, b), (l, r) = resolve_zero_padding(layer.padding)
    pads = graph.const(f"{call.path}.pads", np.array([0, 0, t, l, 0, 0, b, r], np.int64))
    value = graph.const(f"{call.path}.value", np.array(layer.pad_value, np.float32))
    graph.node("Pad", [call.inputs[0], pads, value], call.output, call.path, mode="constant")


def _max_pool(graph, call, layer, params):
    from ..functional.checks import pair

    pool, stride = pair(layer.pool_size, "pool_size"), pair(layer.strides, "strides")
    attrs = _pads(graph, call, pool, stride, (1, 1), layer.padding)
    graph.node("MaxPool", [call.inputs[0]], call.output, call.path, kernel_shape=list(pool), strides=list(stride),
               **attrs)


def _resize_to(graph, call, hw):
    """Resize ``call.inputs[0]`` to the spatial size given by the int64 tensor ``hw`` ([h, w])."""
    nc = graph.node("Shape", [call.inputs[0]], f"{call.path}/nc", f"{call.path}/nc", start=0, end=2)
    sizes = graph.node("Concat", [nc, hw], f"{call.path}/sizes", f"{call.path}/sizes", axis=0)
    graph.node("Resize", [call.inputs[0], "", "", sizes], call.output, call.path, mode="linear",
               coordinate_transformation_mode="half_pixel")


def _target_source(graph, call, order):
    """``(tensor, m)``: an earlier tensor whose spatial size times ``m`` is the resize's target in every
    trace (the latest such tensor), or None. ``order`` lists the tensors made before this call."""
    for name in reversed(order):
        def ratio(s, name=name):
            (h, w), (th, tw) = s[name][1:3], s[call.output][1:3]
            return th // h if th % h == 0 and tw % w == 0 and th // h == tw // w else None
        m = graph.same_in_every_trace(ratio)
        if m is not None:
            return name, m
    return None


def _resize(graph, call, layer, params, order):
    if graph.static:
        h, w = graph.shapes[0][call.output][1:3]
        return _resize_to(graph, call, graph.const(f"{call.path}.hw", np.array([h, w], np.int64)))
    found = _target_source(graph, call, order)
    if found is None:
        raise OptionError(f"ONNX export: {call.path}: the resize target is not a multiple of any earlier "
                          "tensor's size; export with a fixed --size H W")
    source, m = found
    hw = graph.spatial_shape(source)
    if m != 1:
        hw = graph.node("Mul", [hw, graph.const(f"{call.path}.factor", np.array([m, m], np.int64))],
                        f"{call.path}/hw", f"{call.path}/hw")
    _resize_to(graph, call, hw)


def _simple(op, **attrs):
    def convert(graph, call, layer, params):
        graph.node(op, call.inputs, call.output, call.path, **attrs)
    return convert


def _activation(graph, call, layer, params):
    """Keras's activations as ONNX ops (opset 17):

    relu6 = Clip(x, 0, 6); hard_sigmoid = HardSigmoid(alpha=1/6, beta=1/2) = clip(x / 6 + 1/2, 0, 1) (Keras 3's
    definition); hard_swish = HardSwish = x hard_sigmoid(x); swish = x Sigmoid(x) (ONNX 17 has no Swish)."""
    x, out, name = call.inputs[0], call.output, call.path
    if layer.op == "relu":
        graph.node("Relu", [x], out, name)
    elif layer.op == "relu6":
        lo, hi = (graph.const(f"{name}.{k}", np.array(v, np.float32)) for k, v in (("min", 0.0), ("max", 6.0)))
        graph.node("Clip", [x, lo, hi], out, name)
    elif layer.op == "sigmoid":
        graph.node("Sigmoid", [x], out, name)
    elif layer.op == "hard_sigmoid":
        graph.node("HardSigmoid", [x], out, name, alpha=1.0 / 6.0, beta=0.5)
    elif layer.op == "hard_swish":
        graph.node("HardSwish", [x], out, name)
    elif layer.op == "swish":
        gate = graph.node("Sigmoid", [x], f"{name}/sigmoid", f"{name}/sigmoid")
        graph.node("Mul", [x, gate], out, name)
    else:
        raise OptionError(f"ONNX export: {name}: activation {layer.name!r} has no ONNX conversion")


def _converters():
    """``{layer class: convert(graph, call, layer, params)}``; looked up along the layer's MRO."""
    from .. import nn

    return {nn.Conv2D: _conv, nn.DepthwiseConv2D: _conv, nn.BatchNorm: _batchnorm, nn.ZeroPadding2D: _pad,
            nn.MaxPool2D: _max_pool,
            nn.ReLU: _simple("Relu"), nn.Add: _simple("Add"), nn.Concatenate: _simple("Concat", axis=1),
            nn.GlobalAveragePooling2D: _simple("GlobalAveragePool"), nn.Dropout: _simple("Identity"),
            nn.Resize: _resize, nn.UpSampling2D: _resize,
            nn.Activation: _activation, nn.ChannelScale: _simple("Mul")}   # (N, C, H, W) * (N, C, 1, 1)


def _converter(table, call):
    for cls in type(call.layer).__mro__:
        if cls in table:
            return table[cls]
    raise OptionError(f"ONNX export: {call.path} ({type(call.layer).__name__}) has no ONNX conversion "
                      f"(supported: {', '.join(sorted(c.__name__ for c in table))})")


def _out_dim(graph, output, axis, input_dim):
    """The output's size along ``axis``: the input's (a segmenter), the traced value, or unknown (None)."""
    if graph.static:
        return int(graph.shapes[0][output][axis])
    same = graph.same_in_every_trace(lambda s: s[output][axis] == s[INPUT][axis])
    return input_dim if same else None


def onnx_model(model, *, size=None, seed: int = 0):
    """The ONNX ``ModelProto`` of ``model``'s inference graph (see the module docstring).

    ``size`` ``(H, W)`` fixes the input's spatial size; None (default) keeps H and W dynamic. The batch
    dimension is always dynamic.
    """
    from ..backend import to_numpy

    onnx = require_onnx()
    helper = onnx.helper
    channels = _input_channels(model)
    sizes = [tuple(size)] if size is not None else list(TRACE_SIZES)
    rng = np.random.default_rng(seed)
    traces = [trace_layers(model, rng.normal(size=(1, h, w, channels)).astype(np.float32)) for h, w in sizes]
    calls, _, output = traces[0]
    for other, _, out in traces[1:]:                 # the same layers in the same order at every size
        if [(c.path, c.inputs) for c in other] != [(c.path, c.inputs) for c in calls] or out != output:
            raise OptionError("ONNX export: the model runs different layers at different input sizes; "
                              "export with a fixed --size H W")
    graph = _Graph(onnx, [t[1] for t in traces], static=size is not None)
    graph.node("Transpose", [INPUT], "nchw", "to_nchw", perm=[0, 3, 1, 2])
    table, order = _converters(), ["nchw"]
    renamed = {INPUT: "nchw"}
    for s in graph.shapes:
        s["nchw"] = s[INPUT]
    for call in calls:
        call.inputs = [renamed.get(i, i) for i in call.inputs]
        convert = _converter(table, call)
        params = {k: to_numpy(v).astype(np.float32) for k, v in call.layer.params.items()}
        params.update({k: to_numpy(v).astype(np.float32) for k, v in call.layer.buffers.items()})
        if convert is _resize:
            _resize(graph, call, call.layer, params, order)
        else:
            convert(graph, call, call.layer, params)
        order.append(call.output)
    graph.node("Transpose", [renamed.get(output, output)], OUTPUT, "to_nhwc", perm=[0, 2, 3, 1])

    in_dims = ["batch", *(size if size is not None else ("height", "width")), channels]
    out_dims = ["batch", *[_out_dim(graph, output, axis, in_dims[axis]) for axis in (1, 2)],
                int(graph.shapes[0][output][-1])]
    g = helper.make_graph(graph.nodes, type(model).__name__, [
        helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, in_dims)], [
        helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, out_dims)], graph.initializers)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="tinydeeplab", doc_string="NHWC float32 model-ready images -> logits")
    from .. import __version__

    proto.producer_version = __version__
    meta = {"layout": "NHWC", "num_classes": str(out_dims[-1]),
            "activation": str(getattr(model, "activation", None) or "none")}
    helper.set_model_props(proto, meta)
    return proto


def export_onnx(model, path, *, size=None, overwrite: bool = False) -> Path:
    """Write ``model``'s inference graph to ``path`` (atomically; an existing file only with ``overwrite``)
    and return the path. The graph passes ``onnx.checker.check_model`` before it is written.
    """
    from ..atomic import open_for_write

    path = Path(path)
    if path.exists() and not overwrite:
        raise OptionError(f"{path}: exists (overwrite=True replaces it)")
    onnx = require_onnx()
    proto = onnx_model(model, size=size)
    onnx.checker.check_model(proto)
    with open_for_write(path) as f:
        f.write(proto.SerializeToString())
    return path
