"""Weight-import and parity exercises (notebook 13), and the committed Keras fixtures read stage by stage.

====================  ===========================================================  ===============================
name                  the student writes                                           reference
====================  ===========================================================  ===============================
keras_encoder_paths   ``fn(layers) -> {dotted parameter name: HDF5 dataset path}``  ``io.keras_layout.
                      for the image encoder, from its weighted layers in Keras's    keras_weight_paths``
                      order ``[(module name, Keras class name), ...]``
first_diverging_stage ``fn(ours, theirs, tolerance) -> stage name or None``: the    relative max difference,
                      first stage (in ``theirs``' order) whose max |ours - theirs|  stages in forward order
                      exceeds ``tolerance * max |theirs|``
====================  ===========================================================  ===============================

Keras 3 names an HDF5 group by the layer's class in snake case plus a per-class counter in the order
it walks the layers: the image encoder's ``k``-th ``Conv2D`` (from 0) is
``layers/functional/layers/conv2d_<k>`` (``conv2d`` for ``k = 0``), and its arrays are ``vars/0``,
``vars/1``, ... in the layer's own order (Conv2D: kernel [, bias]; BatchNormalization: gamma, beta,
moving_mean, moving_variance).

:func:`keras_fixture_stages` reads the per-layer Keras activations committed under
``tests/fixtures/<name>/`` (written by ``tools/make_parity_fixtures.py`` with real KerasHub) and
keys them like :func:`tinydeeplab.parity.tinydeeplab_stages`, so a notebook compares tinydeeplab with
Keras's numbers without Keras installed.

>>> from tinydeeplab.exercises import check
>>> def worst(ours, theirs, tolerance):              # the stage with the largest difference, not the first
...     rel = {k: np.abs(ours[k] - v).max() / np.abs(v).max() for k, v in theirs.items()}
...     k = max(rel, key=rel.get)
...     return k if rel[k] > tolerance else None
>>> check("first_diverging_stage", worst)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: first_diverging_stage: wrong in ... you returned the stage with the largest...
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from . import exercise
from ._grading import attempt, fail, judge_cases

_VARS = {"Conv2D": ("kernel",), "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance")}
_PREFIX = "layers/functional/layers/"


def keras_fixture_stages(fixture_dir, model) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(x, {stage: Keras output})`` from a fixture's ``activations.npz`` / ``activations.json``, keyed by
    the stage names of :func:`tinydeeplab.parity.stage_names` (``model`` is the fixture's preset loaded in
    tinydeeplab) plus ``"logits"``, in forward order; ``x`` is the input Keras saw (inference mode).

    >>> from pathlib import Path
    >>> from tinydeeplab import load_keras_preset
    >>> d = Path(__file__).parents[2] / "tests" / "fixtures" / "v3_tiny"
    >>> x, keras = keras_fixture_stages(d, load_keras_preset(d / "preset"))
    >>> x.shape, list(keras)[-2:], keras["logits"].shape
    ((1, 32, 32, 3), ['backbone.head', 'logits'], (1, 32, 32, 5))
    """
    from ..parity import stage_names

    fixture_dir = Path(fixture_dir)
    layers = json.loads((fixture_dir / "activations.json").read_text(encoding="utf-8"))["layers"]
    with np.load(fixture_dir / "activations.npz", allow_pickle=False) as data:
        acts = {k: data[k] for k in data.files}
    out = {}
    for module, scope, layer in stage_names(model):
        if layer == "SpatialPyramidPooling":                 # its Keras name carries a counter: look it up
            layer = next(k.split("/", 1)[1] for k, v in layers.items()
                         if k.startswith("backbone/") and v["class_name"] == layer)
        out[module] = acts[f"act/{scope}/{layer}"]
    out["logits"] = acts["act/segmenter/segmentation_output"]
    return acts["input_act"], out


# --- keras_encoder_paths -------------------------------------------------------------------------------------------

def _snake(class_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z][a-z])", "_", class_name).lower()     # BatchNormalization -> batch_...


def _paths(layers, *, start=0, shared=False, snake=_snake, prefix=_PREFIX, bn_order=None):
    """The layout rule (defaults) and its characteristic mistakes (the keyword arguments)."""
    counters, out = {}, {}
    for module, cls in layers:
        key = "all" if shared else cls
        k = counters[key] = counters.get(key, start - 1) + 1
        name = snake(cls) if k == 0 else f"{snake(cls)}_{k}"
        var_names = bn_order if (bn_order and cls == "BatchNormalization") else _VARS[cls]
        for j, var in enumerate(var_names):
            out[f"{module}.{var}"] = f"{prefix}{name}/vars/{j}"
    return out


_PATH_MISTAKES = [
    (dict(start=1), "the counter starts at 0 and the first layer of a class has no suffix: conv2d, conv2d_1, "
                    "conv2d_2, ..."),
    (dict(shared=True), "the counter is per class: the 3rd Conv2D is conv2d_2 however many BatchNormalization "
                        "layers came before it"),
    (dict(snake=str.lower), "class names are snake case: BatchNormalization -> batch_normalization"),
    (dict(snake=lambda c: c), "the group name is the class name in snake case (conv2d, batch_normalization), "
                              "not the class name itself"),
    (dict(prefix="layers/"), "the image encoder is a nested functional model: its layers live under "
                             "layers/functional/layers/"),
    (dict(bn_order=("beta", "gamma", "moving_mean", "moving_variance")),
     "a BatchNormalization stores gamma, beta, moving_mean, moving_variance as vars/0..3, in that order"),
    (dict(bn_order=("moving_mean", "moving_variance", "gamma", "beta")),
     "a BatchNormalization stores gamma, beta, moving_mean, moving_variance as vars/0..3, in that order"),
]


def encoder_layers(encoder) -> list[tuple[str, str]]:
    """``[(dotted module name, Keras class name)]`` of an encoder's weighted layers in Keras's saving order
    (what the exercise gets as input).

    >>> from tinydeeplab.models import ResNetBackbone
    >>> encoder_layers(ResNetBackbone([8], [7], [4], [1], [1], seed=0))[:3]
    [('stem.conv1.conv', 'Conv2D'), ('stem.conv1.bn', 'BatchNormalization'), ('stack0.block0.conv1.conv', 'Conv2D')]
    """
    names = {id(m): name for name, m in encoder.modules()}
    classes = {"conv2d": "Conv2D", "batch_normalization": "BatchNormalization"}
    return [(names[id(layer.module)], classes[layer.name]) for layer in encoder.keras_weight_layers()]


def _encoder_cases():
    from ..models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone

    out = []
    for args in (([8], [7], [4, 4], [1, 2], [1, 2], "bottleneck_block"),
                 ([8], [7], [4, 4, 4], [2, 1, 1], [1, 2, 2], "basic_block")):
        enc = ResNetBackbone(*args[:5], block_type=args[5], seed=0)
        seg = DeepLabV3ImageSegmenter(DeepLabV3Backbone(enc, "P3", 2, [1], num_channels=4, seed=0), 2, seed=0)
        from ..io.keras_layout import keras_weight_paths

        full = keras_weight_paths(seg)
        prefix = "backbone.image_encoder."
        want = {k[len(prefix):]: p for k, (_, p) in full.items() if k.startswith(prefix)}
        out.append((f"ResNet {args[5]}, blocks {args[3]}", encoder_layers(enc), want))
    return out


@exercise("keras_encoder_paths", "HDF5 dataset path of every encoder weight: snake-case class + per-class counter")
def _check_keras_encoder_paths(fn):
    n = 0
    for what, layers, want in _encoder_cases():
        case = {"encoder": what, "layers": f"{len(layers)} layers, first {layers[0]}"}
        got = attempt(fn, case, [tuple(la) for la in layers])
        if not isinstance(got, dict):
            fail(f"expected a dict {{dotted parameter name: HDF5 path}}, got {type(got).__name__}", case)
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        if missing or extra:
            fail(f"wrong keys: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
                 f"{extra[:3]}{'...' if len(extra) > 3 else ''} (one key per array: '<module>.kernel', "
                 f"'<module>.gamma', ...; ResNet convolutions have no bias)", case)
        wrong = [k for k in want if got[k] != want[k]]
        if wrong:
            for kwargs, message in _PATH_MISTAKES:
                if got == _paths(layers, **kwargs):
                    fail(f"{len(wrong)} of {len(want)} paths are wrong: {message}", case)
            k = wrong[0]
            fail(f"{len(wrong)} of {len(want)} paths are wrong, first {k}: got {got[k]!r}, expected {want[k]!r}",
                 case)
        n += len(want)
    return f"{n} cases"


# --- first_diverging_stage -----------------------------------------------------------------------------------------

def first_diverging_stage(ours, theirs, tolerance):
    """The reference: the first stage of ``theirs`` (forward order) with max|diff| > tolerance * max|theirs|."""
    for name, want in theirs.items():
        if np.abs(ours[name] - want).max() > tolerance * np.abs(want).max():
            return name
    return None


def _relative(ours, theirs, *, scale="theirs"):
    ref = {"theirs": theirs, "none": None}[scale]
    return {k: float(np.abs(ours[k] - v).max()) / (1.0 if ref is None else float(np.abs(ref[k]).max()))
            for k, v in theirs.items()}


def _stage_variants(ours, theirs, tol):
    rel, absolute = _relative(ours, theirs), _relative(ours, theirs, scale="none")
    bad = [k for k in theirs if rel[k] > tol]
    first = lambda r: next((k for k in theirs if r[k] > tol), None)  # noqa: E731
    return [
        (max(rel, key=rel.get) if bad else None,
         "you returned the stage with the largest relative difference; a bug spreads downstream and often grows, "
         "so the first stage past the tolerance (in forward order) is where it is"),
        (bad[-1] if bad else None, "you returned the last stage past the tolerance, not the first"),
        (first(absolute), "compare the *relative* difference max|ours - theirs| / max|theirs|: activations of "
                          "different stages have very different scales"),
        (next((k for k in sorted(theirs) if rel[k] > tol), None),
         "the stages must be visited in forward order (the dict's order), not sorted by name"),
    ]


def _stage_cases():
    """Stage dicts with an injected bug: stages of very different scales, the error growing downstream."""
    rng = np.random.default_rng(4)
    names = ["stem", "stack0.block0", "stack1.block0", "aspp", "head", "logits"]
    cases = []
    for k in range(12):
        scales = 10.0 ** rng.uniform(-2, 3, len(names))
        order = list(names) if k % 3 else [str(n) for n in rng.permutation(names[:4])] + names[4:]
        theirs = {n: rng.standard_normal((2, 3)) * s for n, s in zip(order, scales)}
        ours = {n: v + rng.standard_normal(v.shape) * 1e-7 * np.abs(v).max() for n, v in theirs.items()}
        bug = int(rng.integers(len(order) + 1))              # == len(order): no bug
        for j, n in enumerate(order[bug:]):
            ours[n] = ours[n] + rng.standard_normal(ours[n].shape) * np.abs(theirs[n]).max() * 1e-3 * 30.0 ** j
        if k % 4 == 1 and bug < len(order):                  # a broken stage that vanishes (zero output)
            ours[order[bug]] = theirs[order[bug]] * 1e-3
        cases.append(dict(ours=ours, theirs=theirs, tolerance=1e-4))
    cases.append(dict(ours=dict(cases[1]["theirs"]), theirs=cases[1]["theirs"], tolerance=1e-4))   # identical
    return cases


@exercise("first_diverging_stage", "the first stage, in forward order, whose relative difference exceeds the tolerance")
def _check_first_diverging_stage(fn):
    cases = _stage_cases()
    got = []
    for c in cases:
        shown = {"stages": list(c["theirs"]), "tolerance": c["tolerance"]}
        answer = attempt(fn, shown, {k: v.copy() for k, v in c["ours"].items()}, dict(c["theirs"]), c["tolerance"])
        if answer is not None and answer not in c["theirs"]:
            fail(f"return a stage name (a key of theirs) or None, got {answer!r}", shown)
        got.append(answer)
    expected = [first_diverging_stage(c["ours"], c["theirs"], c["tolerance"]) for c in cases]
    variants = [_stage_variants(c["ours"], c["theirs"], c["tolerance"]) for c in cases]
    shown = [{"stages": list(c["theirs"]), "tolerance": c["tolerance"]} for c in cases]
    judge_cases(shown, got, expected, variants, lambda a, b: a == b)
    return f"{len(cases)} cases"
