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
the fraction of pixels whose arg-max agrees. Against stored Keras cases that also hold labels and
Keras's weight gradients (``tools/make_parity_fixtures.py`` writes them), a row per gradient set
gives the worst weight: max over weights of ``max |g_ours - g_keras| / max |g_keras|``, held to
``GRAD_TOLERANCE`` (gradients sum over every pixel, so they carry more round-off than logits). The first stage whose relative difference jumps is
where a port diverges. Keras is imported only by :func:`keras_stages` (install keras-hub and a
backend, e.g. ``pip install keras-hub jax``, in a separate environment).
"""
from __future__ import annotations

import numpy as np

from .models.head import predicted_labels
from .nn.hooks import record_outputs

GRAD_TOLERANCE = 1e-3   # worst weight gradient, relative to its largest Keras entry


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
    if tuple(size) == tuple(model.output_size(x.shape[1:3])):     # the input's size (2x it for CSPNet)
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


def _within(row, tolerance) -> bool:
    return row["relative"] <= row.get("tolerance", tolerance)


def format_table(rows, tolerance: float = 1e-4) -> str:
    """A text table; stages whose relative difference exceeds ``tolerance`` (or the row's own
    ``tolerance``) are flagged with ``<--``; a row's ``detail`` follows it."""
    lines = [f"{'stage':44s} {'shape':>22s} {'max|diff|':>10s} {'relative':>10s} {'argmax':>8s}"]
    for r in rows:
        arg = "" if r["argmax"] is None else f"{r['argmax']:.4%}"
        flag = "  <-- " + r.get("note", "exceeds tolerance") if not _within(r, tolerance) else ""
        detail = f"  {r['detail']}" if r.get("detail") else ""
        lines.append(f"{r['stage']:44s} {str(r['shape']):>22s} {r['max_abs']:10.3e} {r['relative']:10.3e} "
                     f"{arg:>8s}{detail}{flag}")
    return "\n".join(lines)


def verdict(rows, tolerance: float = 1e-4) -> tuple[bool, str]:
    """``(every row within its tolerance, a one-line summary)``."""
    ok = all(_within(r, tolerance) for r in rows)
    stages = [r["relative"] for r in rows if "tolerance" not in r]
    grads = [r["relative"] for r in rows if "tolerance" in r]
    line = f"worst relative difference {max(stages):.3e}"
    if grads:
        line += f", worst weight gradient {max(grads):.3e} (tolerance {GRAD_TOLERANCE:g})"
    return ok, f"{line}: {'OK' if ok else 'DIFFERENT'} (tolerance {tolerance:g})"


def gradient_errors(model, x, labels, keras_grads, *, training=False, ignore_label=255, floor=0.0):
    """The loss, and ``[(relative error, max |diff|, dotted name)]`` of every trainable weight's gradient.

    ``keras_grads`` maps ``"<file>/<HDF5 path>"`` (:func:`~tinydeeplab.io.keras_layout.keras_weight_paths`)
    to Keras's gradient of the mean sparse cross-entropy (``ignore_label`` masked) for inputs ``x``
    (N, H, W, 3) and ``labels`` (N, H, W); the error of a weight ``w`` is
    ``max |dL/dw - dL/dw_keras| / max |dL/dw_keras|``. A training-mode call updates the model's
    batch-norm moving statistics, as Keras's does. ``floor`` > 0 divides by at least ``floor`` x the largest
    Keras gradient of the model instead: a gradient that is exactly zero in exact arithmetic (a BN beta
    whose every path ends in a training-mode BN, e.g. EfficientNet's project_bn) is float32 noise on both sides.
    """
    from . import functional as F
    from .io.keras_layout import keras_weight_paths

    logits = model.forward(x, training=training)                                    # (N, H, W, K)
    loss, cache = F.softmax_cross_entropy_forward(logits, labels, ignore_label=ignore_label)
    model.zero_grad()
    model.backward(F.softmax_cross_entropy_backward(1.0, cache))
    paths = keras_weight_paths(model)
    errors = []
    least = floor * max((float(np.abs(v).max()) for v in keras_grads.values()), default=0.0)
    for dotted, g in model.named_gradients():
        key = "/".join(paths[dotted])
        want = keras_grads.get(key)
        if want is None or want.shape != g.shape:
            raise ValueError(f"{dotted}: Keras gradient {key} is "
                             f"{'missing' if want is None else f'of shape {want.shape}, ours {g.shape}'}")
        diff = float(np.abs(g - want).max())
        errors.append((diff / max(float(np.abs(want).max()), least, 1e-12), diff, dotted))
    return loss, errors


def compare_with_cases(model, cases, ignore_label=255) -> list[dict]:
    """Compare with stored Keras results: ``cases`` maps ``input_<c>`` / ``logits_<c>`` arrays (npz),
    optionally ``labels_<c>`` with ``grad_<c>/<file>/<HDF5 path>`` (inference-mode BN) or
    ``grad_train_<c>/...`` (training mode): then one row per gradient set, the worst weight named.
    The model's moving statistics are restored after each training-mode gradient set."""
    ours, theirs = {}, {}
    for key in sorted(cases):
        case = key[len("input_"):]
        if key.startswith("input_") and f"logits_{case}" in cases:
            want = cases[f"logits_{case}"]
            x = cases[key].astype(np.float32)
            ours[f"logits_{case}"], theirs[f"logits_{case}"] = logits_at_size(model, x, want.shape[1:3]), want
    if not theirs:
        raise ValueError("the cases file holds no input_<case> / logits_<case> pairs")
    rows = compare(ours, theirs)
    saved = {name: b.copy() for name, b in model.named_buffers()}
    for stage in ours:
        case = stage[len("logits_"):]
        for training, prefix in ((False, f"grad_{case}/"), (True, f"grad_train_{case}/")):
            grads = {k[len(prefix):]: v for k, v in cases.items() if k.startswith(prefix)}
            if not grads or f"labels_{case}" not in cases:
                continue
            _, errors = gradient_errors(model, cases[f"input_{case}"].astype(np.float32), cases[f"labels_{case}"],
                                        grads, training=training, ignore_label=ignore_label)
            model.load_state_dict(saved, strict=False)                         # undo a training-mode update
            rel, diff, worst = max(errors)
            rows.append({"stage": f"{prefix[:-1]} ({'training' if training else 'inference'} BN)",
                         "shape": (len(errors),), "max_abs": diff, "relative": rel, "argmax": None,
                         "tolerance": GRAD_TOLERANCE, "detail": f"worst of {len(errors)} weights: {worst}"})
    return rows
