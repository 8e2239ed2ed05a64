"""Layer-by-layer comparison of tinydeeplab with KerasHub on the same preset and input.

The stages compared are the points where both implementations expose a tensor with the same
meaning (tinydeeplab module name -> KerasHub layer name)::

    backbone.image_encoder.<stage>           the encoder's stages()     e.g. ResNet's stem: pool1_pool,
                                                                        stack{i}.block{j}: stack{i}_block{j}_out
    backbone.aspp                            spatial_pyramid_pooling    (N, H/2^k, W/2^k, 256)
    backbone.low_level_projection            decoder_relu               (V3+ only)
    backbone.head                            segmentation_head_relu     (N, H/4, W/4, 256) for V3+
    logits                                   the segmenter's output     (N, H, W, num_classes)

For each stage: max |ours - keras|, that divided by max |keras| ("relative"), and for the logits
the fraction of pixels whose arg-max agrees. The first stage whose relative difference jumps is
where a port diverges. Keras is imported only by :func:`keras_stages` (install keras-hub and a
backend, e.g. ``pip install keras-hub jax``, in a separate environment).
"""
from __future__ import annotations

import numpy as np

from .models.head import predicted_labels
from .nn.hooks import record_outputs


def stage_names(model) -> list[tuple[str, str, str]]:
    """``[(tinydeeplab module, keras scope, keras layer)]``; scope is "encoder" or "backbone".

    The encoder's rows are the :meth:`~tinydeeplab.models.encoder.Encoder.stages` that name a Keras layer.
    """
    out = [(f"backbone.image_encoder.{st.module}", "encoder", st.keras_layer)
           for st in model.backbone.image_encoder.stages() if st.keras_layer is not None]
    out.append(("backbone.aspp", "backbone", "SpatialPyramidPooling"))
    if model.backbone.low_key is not None:
        out.append(("backbone.low_level_projection", "backbone", "decoder_relu"))
    out.append(("backbone.head", "backbone", "segmentation_head_relu"))
    return out


def tinydeeplab_stages(model, x) -> dict[str, np.ndarray]:
    """Inference-mode outputs of every stage of :func:`stage_names`, plus ``"logits"``."""
    names = [n for n, _, _ in stage_names(model)]
    with record_outputs(model, names) as seen:
        logits = model.forward(x, training=False)
    return {**seen, "logits": logits}


def keras_stages(preset_dir, x, model) -> dict[str, np.ndarray]:
    """The same stages from ``keras_hub.models.DeepLabV3ImageSegmenter.from_preset(preset_dir)``."""
    try:
        import keras
        import keras_hub
    except ImportError:
        raise RuntimeError("the parity report needs keras-hub with a backend (pip install keras-hub jax); "
                           "without it, compare against stored Keras logits with --cases") from None
    import warnings

    warnings.filterwarnings("ignore", message="The structure of `inputs`", category=UserWarning)
    seg = keras_hub.models.DeepLabV3ImageSegmenter.from_preset(str(preset_dir))
    backbone = seg.backbone
    encoder = backbone.image_encoder

    def layer_output(net, name):
        if name == "SpatialPyramidPooling":
            return next(lay for lay in net.layers if type(lay).__name__ == name).output
        return net.get_layer(name).output

    stages = stage_names(model)
    result = {}
    for scope, net in (("encoder", encoder), ("backbone", backbone)):
        picked = [(ours, lname) for ours, sc, lname in stages if sc == scope]
        probe = keras.Model(net.inputs, [layer_output(net, lname) for _, lname in picked])
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        result.update({ours: np.asarray(o) for (ours, _), o in zip(picked, outs)})
    result["logits"] = np.asarray(seg(x, training=False))   # training=False: KerasHub's bare call is not inference
    return result


def logits_at_size(model, x, size, training=False):
    """Logits (N, *size, K) computed like KerasHub computes them.

    KerasHub upsamples by fixed factors, so at sizes that are not multiples of the output stride its
    output is larger than the input (e.g. 62x93 -> 64x96) while tinydeeplab resizes to the input size.
    Classify-before-upsample gives the same computation: classify the 1/4-resolution features (which
    agree) and upsample them to Keras's size.
    """
    if tuple(size) == tuple(x.shape[1:3]):
        return model.forward(x, training=training)
    from .models.preprocessor import resize

    f = model.backbone.forward(x, training)                                          # (N, h, w, 256)
    return resize(model.output_conv.forward(f), size)                                # (N, *size, K)


def compare(ours: dict, theirs: dict) -> list[dict]:
    """Rows ``{stage, shape, max_abs, relative, argmax}`` for each stage present in both."""
    rows = []
    for name, want in theirs.items():
        got = ours.get(name)
        row = {"stage": name, "shape": tuple(want.shape)}
        if got is None or got.shape != want.shape:
            row.update(max_abs=np.inf, relative=np.inf, argmax=None,
                       note=f"shape {None if got is None else got.shape} vs keras {want.shape}")
        else:
            diff = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
            row.update(max_abs=diff, relative=diff / max(float(np.abs(want).max()), 1e-30),
                       argmax=float((predicted_labels(got) == predicted_labels(want)).mean())   # z > 0 if K = 1
                       if name.startswith("logits") else None)
        rows.append(row)
    return rows


def format_table(rows, tolerance: float = 1e-4) -> str:
    """A text table; stages whose relative difference exceeds ``tolerance`` are flagged with ``<--``."""
    lines = [f"{'stage':44s} {'shape':>22s} {'max|diff|':>10s} {'relative':>10s} {'argmax':>8s}"]
    for r in rows:
        arg = "" if r["argmax"] is None else f"{r['argmax']:.4%}"
        flag = "  <-- " + r.get("note", "exceeds tolerance") if not r["relative"] <= tolerance else ""
        lines.append(f"{r['stage']:44s} {str(r['shape']):>22s} {r['max_abs']:10.3e} {r['relative']:10.3e} "
                     f"{arg:>8s}{flag}")
    return "\n".join(lines)


def compare_with_cases(model, cases) -> list[dict]:
    """Compare with stored Keras logits: ``cases`` maps ``input_<c>`` / ``logits_<c>`` arrays (npz)."""
    ours, theirs = {}, {}
    for key in sorted(cases):
        case = key[len("input_"):]
        if key.startswith("input_") and f"logits_{case}" in cases:
            want = cases[f"logits_{case}"]
            x = cases[key].astype(np.float32)
            ours[f"logits_{case}"], theirs[f"logits_{case}"] = logits_at_size(model, x, want.shape[1:3]), want
    if not theirs:
        raise ValueError("the cases file holds no input_<case> / logits_<case> pairs")
    return compare(ours, theirs)
