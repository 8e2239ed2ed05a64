# %% [markdown]
# # 13. Importing weights and parity: preset anatomy, the HDF5 layout, and finding the first bad stage
#
# **The question.** What is inside a KerasHub preset, how does each array of a Keras file find its place in
# tinydeeplab's model, and how do we prove, offline, that the imported model computes what Keras computes, or
# find where it does not?
#
# **Why it matters.** A pretrained DeepLabV3+ ([Chen et al. 2018](../docs/bibliography.md#chen2018)) is 39 million
# numbers in a file that does not store layer names. A weight loaded into the wrong layer of the same shape
# raises no error, and the model still outputs plausible label maps, only worse. Parity, the same outputs to
# float32 round-off, is the only proof that a port is right, and comparing stage by stage is how a broken port
# is debugged. Everything below runs without Keras: the presets and the outputs KerasHub computed for them are
# committed under `tests/fixtures/` (written once by `tools/make_parity_fixtures.py` with `keras-hub`
# installed). You map parameter names to HDF5 paths and locate a broken stage (two exercises graded by
# `tinydeeplab.exercises.check`) and answer two inline questions.

# %%
import json
from pathlib import Path

import h5py
import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab import load_keras_preset, parity
from tinydeeplab.exercises import check
from tinydeeplab.exercises.parity import encoder_layers, first_diverging_stage, keras_fixture_stages
from tinydeeplab.io.keras_layout import keras_weight_paths

tinydeeplab.set_backend("numpy")               # the reference ops: nothing to compile
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
FIXTURES = Path("..") / "tests" / "fixtures"    # committed with the repository (notebooks/ is the cwd)
FIXTURE = FIXTURES / "v3plus_tiny"              # a small DeepLabV3+ saved by KerasHub, random weights
PRESET = FIXTURE / "preset"

# %% [markdown]
# ## Preset anatomy: three JSON files and two HDF5 files
#
# A KerasHub preset is a directory. `config.json` describes the *backbone* (`DeepLabV3Backbone`, with its
# `image_encoder`, here a `ResNetBackbone`, nested inside), `task.json` the *task* (`DeepLabV3ImageSegmenter`: the
# backbone again, `num_classes`, the output `activation`, and the preprocessor), `preprocessor.json` /
# `image_converter.json` how raw pixels become the model's input (resize to `image_size`, then
# `pixel * scale + offset`, per channel here: ImageNet's mean and standard deviation). The weights are in
# `model.weights.h5` (the backbone) and `task.weights.h5` (the segmenter's own $1\times1$ classifier, plus two
# optimizer scalars that a loader skips). Inside `model.weights.h5`, `layers/functional` is the image encoder (a
# nested functional model), `layers/spatial_pyramid_pooling` the ASPP, and the backbone's own top-level layers
# (the decoder's projection, then the head) are `layers/conv2d`, `layers/conv2d_1`, `layers/batch_normalization`,
# ... `metadata.json` records the Keras versions and the backbone's parameter
# count, which we check against the loaded model.

# %%
files = {f.name: f.stat().st_size for f in sorted(PRESET.iterdir())}
for name, size in files.items():
    print(f"  {name:22s} {size:>10,d} bytes")
config = json.loads((PRESET / "config.json").read_text())
task = json.loads((PRESET / "task.json").read_text())
converter = json.loads((PRESET / "image_converter.json").read_text())["config"]
metadata = json.loads((PRESET / "metadata.json").read_text())
encoder_config = config["config"]["image_encoder"]
print("config.json:", config["class_name"], "with image_encoder", encoder_config["class_name"])
print("  encoder:", {k: encoder_config["config"][k] for k in ("stackwise_num_filters", "stackwise_num_blocks",
                                                              "stackwise_num_strides", "block_type")})
print("  backbone:", {k: config["config"][k] for k in ("spatial_pyramid_pooling_key", "dilation_rates",
                                                       "low_level_feature_key", "projection_filters",
                                                       "upsampling_size")})
print("task.json:", task["class_name"], {k: task["config"][k] for k in ("num_classes", "activation")})
print("image_converter.json:", {k: converter[k] for k in ("image_size", "scale", "offset", "crop_to_aspect_ratio")})

model = load_keras_preset(PRESET)
n_params, n_buffers = model.num_parameters(), sum(v.size for _, v in model.named_buffers())
head = model.output_conv.params["kernel"].size
print(f"tinydeeplab: {n_params:,} trainable + {n_buffers:,} batch-norm statistics; "
      f"metadata.json: backbone {metadata['parameter_count']:,}")
assert n_params + n_buffers - head == metadata["parameter_count"]

# the image converter, against what Keras's own converter produced for the same raw images (cases.npz)
with np.load(FIXTURE / "cases.npz", allow_pickle=False) as data:
    cases = {k: data[k] for k in data.files if not k.startswith(("grad", "moving"))}
raw = cases["raw_pp"].astype(np.uint8)                                          # (N, 50, 70, 3) raw pixels
ours_pp = np.concatenate([model.preprocessor(im)[0] for im in raw])             # (N, 64, 64, 3)
err_pp = float(np.abs(ours_pp - cases["pre_pp"]).max())
print(f"preprocessed input vs Keras's: max |difference| {err_pp:.2e}")
assert err_pp <= 1e-4 * float(np.abs(cases["pre_pp"]).max())

# the HDF5 files: every dataset, by group
datasets = {}


def collect(fname):
    def visit(name, obj):                       # visititems stops at the first visitor that returns a value
        if isinstance(obj, h5py.Dataset):
            datasets[f"{fname}/{name}"] = obj.shape
    return visit


for fname in ("model.weights.h5", "task.weights.h5"):
    with h5py.File(PRESET / fname, "r") as f:
        f.visititems(collect(fname))
groups = {}
for key, shape in datasets.items():
    fname, path = key.split("/", 1)
    part = path.split("/")[1] if path.startswith("layers/") else path.split("/")[0]
    part = {"functional": "image encoder (layers/functional)"}.get(part, part)
    groups[f"{fname}: {part}"] = groups.get(f"{fname}: {part}", 0) + int(np.prod(shape))
print(f"{len(datasets)} datasets in the two files")

fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
ax.barh(list(groups), list(groups.values()), color="C0")
ax.set(xscale="log", xlabel="numbers stored", title="where the preset's numbers live (HDF5 groups)")
ax.invert_yaxis()
plt.show()

# %% [markdown]
# ## The HDF5 layout: class name + counter, in Keras's order
#
# Keras 3 does not store layer names in `*.weights.h5`. It walks the model's layers and names each group after the
# layer's **class** in snake case plus a **counter** per class: the image encoder's first `Conv2D` is
# `layers/functional/layers/conv2d`, the next `conv2d_1`, ...; its `BatchNormalization` layers are
# `batch_normalization`, `batch_normalization_1`, ... Inside a group the arrays are `vars/0`, `vars/1`, ... in the
# layer's own order: a `Conv2D` has `kernel` (HWIO, no transpose needed) [and `bias`; KerasHub's ResNet has none],
# a `BatchNormalization` has `gamma`, `beta`, `moving_mean`, `moving_variance`. The nested ASPP names its
# sub-models the same way (`spatial_pyramid_pooling/aspp_parallel_channels/sequential_2/layers/conv2d`).
#
# So loading is a matter of listing tinydeeplab's `Conv2D` / `BatchNorm` modules **in Keras's order**, which is
# not always the order of the forward pass: inside a functional graph Keras sorts layers by depth, and for a
# ResNet block that puts the shortcut's convolution right before the residual branch's *last* one
# (`Encoder.keras_weight_layers`, `tinydeeplab.io.keras_layout.keras_weight_paths`). The figure shows that
# permutation for the encoder's convolutions.
#
# ### Exercise 1: the HDF5 path of every encoder weight
#
# Write `my_encoder_paths(layers)`: `layers` lists the encoder's weighted layers in Keras's order as
# `(module name, Keras class name)`, e.g. `("stem.conv1.conv", "Conv2D")`,
# `("stem.conv1.bn", "BatchNormalization")`; return `{dotted parameter name: HDF5 dataset path}`, e.g.
# `{"stem.conv1.conv.kernel": "layers/functional/layers/conv2d/vars/0", ...}`, one entry per array (a
# convolution has only `kernel`).

# %%
def my_encoder_paths(layers):
    """{"<module>.<array>": "layers/functional/layers/<snake class>[_<k>]/vars/<j>"} for the encoder's layers."""
    # BEGIN SOLUTION
    snake = {"Conv2D": "conv2d", "BatchNormalization": "batch_normalization"}
    arrays = {"Conv2D": ["kernel"], "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"]}
    counters, paths = {}, {}
    for module, cls in layers:
        k = counters[cls] = counters.get(cls, -1) + 1                  # a counter per class, from 0
        group = snake[cls] if k == 0 else f"{snake[cls]}_{k}"
        for j, var in enumerate(arrays[cls]):
            paths[f"{module}.{var}"] = f"layers/functional/layers/{group}/vars/{j}"
    return paths
    # END SOLUTION


# %%
print(check("keras_encoder_paths", my_encoder_paths))

# %% [markdown]
# The library's `keras_weight_paths(model)` does this for the whole segmenter (encoder, ASPP, decoder, head). Below,
# every path it gives exists in the files with the shape of the model's array and holds exactly the loaded
# numbers, and every dataset of the files except the optimizer's is claimed by exactly one array.

# %%
paths = keras_weight_paths(model)
slots = model.slots()
with h5py.File(PRESET / "model.weights.h5", "r") as fm, h5py.File(PRESET / "task.weights.h5", "r") as ft:
    handles = {"model.weights.h5": fm, "task.weights.h5": ft}
    for name, (fname, path) in paths.items():
        table, key = slots[name]
        stored = handles[fname][path][()]
        assert stored.shape == table[key].shape and np.array_equal(stored, table[key]), name
claimed = {f"{f}/{p}" for f, p in paths.values()}
assert len(claimed) == len(paths) and claimed == {k for k in datasets if "/optimizer/" not in k}
print(f"{len(paths)} arrays, each at its own HDF5 path, equal to the stored numbers; unclaimed: "
      f"{sorted(set(datasets) - claimed)}")

layers = encoder_layers(model.backbone.image_encoder)
convs_keras = [m for m, cls in layers if cls == "Conv2D"]
convs_forward = [n for n, mod in model.backbone.image_encoder.modules() if type(mod).__name__ == "Conv2D"]
for i, name in enumerate(convs_keras[:9]):
    print(f"  conv2d{'' if i == 0 else f'_{i}':3s} <- {name}")

fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
ax.plot([convs_forward.index(n) for n in convs_keras], range(len(convs_keras)), "o-")
for i, n in enumerate(convs_keras):
    if "shortcut" in n:
        ax.annotate("shortcut", (convs_forward.index(n), i), xytext=(6, -3), textcoords="offset points", fontsize=7)
ax.set(xlabel="position in tinydeeplab's module order (forward)", ylabel="Keras counter k (conv2d_k)",
       title="encoder convolutions: Keras's saving order vs forward order")
plt.show()

# %% [markdown]
# **Inline question 1.** Keras's HDF5 file has no layer names, only class names and counters. What happens if a
# port adds one extra `Conv2D` to the stem that KerasHub does not have, and the loader maps the files by
# counter? Which check above would catch it, and which kind of mistake would it *not* catch?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Every later `conv2d_k` shifts by one: the port reads `conv2d_k` into what is really layer $k+1$.
# Where two consecutive convolutions have different shapes a loader that checks shapes (tinydeeplab's does, and
# so does the assertion above) fails at once; where they happen to have equal shapes (e.g. two
# identity blocks of one stack) the weights load silently into the wrong layers. The path check only proves
# that arrays land in slots of the right shape; it cannot tell two same-shaped layers apart. Only comparing
# *outputs* with Keras, as below, catches that.
# <!-- END ANSWER -->

# %% [markdown]
# ## Parity against Keras's own numbers, stage by stage
#
# `activations.npz` holds the output of every Keras layer for one input, `cases.npz` the logits for three inputs
# (including an odd size 50×70, where KerasHub's fixed upsampling factors give a larger output; see
# `parity.logits_at_size`). `keras_fixture_stages` picks, from the Keras layers, those with the same meaning as
# tinydeeplab's stages (`parity.stage_names`: the stem, every residual block, ASPP, the decoder's projection,
# the head, the logits). For each stage `parity.compare` reports the relative difference
#
# $$\rho = \frac{\max |a_{\text{ours}} - a_{\text{Keras}}|}{\max |a_{\text{Keras}}|},$$
#
# which for two correct float32 implementations is round-off: a few $10^{-7}$ per layer, growing slowly with
# depth. The tolerance used throughout is $10^{-4}$.

# %%
x_act, keras_acts = keras_fixture_stages(FIXTURE, model)
ours = parity.tinydeeplab_stages(model, x_act)
rows = parity.compare(ours, keras_acts) + parity.compare_with_cases(model, cases)
print(parity.format_table(rows))
TOL = 1e-4
assert all(r["relative"] <= TOL for r in rows)

fig, ax = plt.subplots(figsize=(10, 3.4), layout="constrained")
labels = [r["stage"].replace("backbone.", "").replace("image_encoder.", "") for r in rows]
ax.bar(labels, [r["relative"] for r in rows], color=["C1" if r["stage"].startswith("logits_") else "C0" for r in rows])
ax.axhline(TOL, color="C3", ls="--", lw=0.8, label="tolerance")
ax.set(yscale="log", ylim=(1e-9, 1e-2), ylabel="relative max |difference|",
       title="tinydeeplab vs stored KerasHub outputs (v3plus_tiny)")
ax.tick_params(axis="x", rotation=45, labelsize=8)
ax.legend()
plt.show()

# %% [markdown]
# ## Break one weight, find the first bad stage
#
# Now we play the broken port: change one weight array of the loaded model and compare with Keras again. Every
# stage that depends on the weight now differs, but the stages computed *before* it still agree to round-off,
# so the **first** stage (in forward order) past the tolerance is the one that contains the bug. (The largest
# difference is not: a bug's effect usually grows downstream, or is squashed by a ReLU.)
#
# ### Exercise 2: the first diverging stage
#
# Write `my_first_diverging_stage(ours, theirs, tolerance)`: `ours` and `theirs` map stage names to arrays,
# `theirs` in forward order; return the first stage of `theirs` whose $\rho$ exceeds `tolerance`, or `None`.

# %%
def my_first_diverging_stage(ours, theirs, tolerance):
    """First stage (in theirs' order) with max|ours - theirs| > tolerance * max|theirs|, else None."""
    # BEGIN SOLUTION
    for name, want in theirs.items():
        if np.abs(ours[name] - want).max() > tolerance * np.abs(want).max():
            return name
    return None
    # END SOLUTION


# %%
print(check("first_diverging_stage", my_first_diverging_stage))

# %% [markdown]
# Below, one weight array at a time is perturbed in the loaded model (a kernel scaled by 1.05, a BN variance
# doubled, ...) and restored afterwards; `first_diverging_stage` (the reference solution) must name the stage
# that owns the weight: the first stage whose module name is a prefix of the weight's dotted name (the
# classifier `output_conv` belongs to the logits). The heat map shows $\log_{10}\rho$ of every stage for every
# perturbation.

# %%
stage_list = list(keras_acts)


def owner(weight):
    """The stage whose module contains `weight` (dotted name)."""
    if weight.startswith("output_conv."):
        return "logits"
    return next(s for s in stage_list if weight.startswith(s + "."))


perturbations = {
    "backbone.image_encoder.stem.conv1.conv.kernel": 1.05,
    "backbone.image_encoder.stack1.block0.shortcut.bn.gamma": 1.05,
    "backbone.image_encoder.stack1.block1.conv2.bn.moving_variance": 2.0,
    "backbone.image_encoder.stack2.block0.conv2.conv.kernel": 1.05,
    "backbone.aspp.branch1.conv.kernel": 1.05,
    "backbone.low_level_projection.conv.kernel": 1.05,
    "backbone.head.bn.beta": 1.5,
    "output_conv.kernel": 1.05,
}
grid, found = [], {}
for weight, factor in perturbations.items():
    table, key = model.slots()[weight]
    original = table[key]
    table[key] = original * np.float32(factor)                     # break it ...
    stages = parity.tinydeeplab_stages(model, x_act)
    table[key] = original                                          # ... and repair it
    found[weight] = first_diverging_stage(stages, keras_acts, TOL)
    grid.append([r["relative"] for r in parity.compare(stages, keras_acts)])
    print(f"{weight:62s} x{factor:<5}  first bad stage: {found[weight]}")
    assert found[weight] == owner(weight), (weight, found[weight])
assert all(r["relative"] <= TOL for r in parity.compare(parity.tinydeeplab_stages(model, x_act), keras_acts))

fig, ax = plt.subplots(figsize=(11, 4.4), layout="constrained")
im = ax.imshow(np.log10(np.maximum(grid, 1e-12)), cmap="magma", vmin=-8, vmax=0, aspect="auto")
for i, weight in enumerate(perturbations):
    j = stage_list.index(found[weight])
    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="c", lw=2))
ax.set_xticks(range(len(stage_list)), [s.replace("backbone.", "").replace("image_encoder.", "") for s in stage_list],
              rotation=45, fontsize=8)
ax.set_yticks(range(len(perturbations)), [w.replace("backbone.", "").replace("image_encoder.", "")
                                          for w in perturbations], fontsize=8)
fig.colorbar(im, ax=ax, label="log10 relative difference to Keras")
ax.set_title(f"one weight perturbed per row; boxed: the first stage past {TOL:g}")
plt.show()

# %% [markdown]
# **Inline question 2.** Look at the row of `aspp.branch1.conv.kernel`: the `low_level_projection` stage, which
# comes after ASPP in the list, still agrees with Keras. Why? And why is checking the logits alone (say, "the
# arg-max agrees on 99.9 % of pixels") not enough to accept a port?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The stage list is in forward order of a graph with two branches: the ASPP reads $P_5$, the
# projection reads $P_2$, and neither depends on the other, so a broken projection leaves ASPP intact (and a
# broken ASPP would leave the projection intact); both meet only in the head. "First bad stage" means first in
# a topological order, and the owner is found among the stages that depend on the weight. As for the logits: a
# small error can leave most arg-maxes unchanged (the margin between the top two classes is usually large),
# and one pixel in a thousand is the whole error budget of a correct float32 port many times over; the relative
# difference of the logits, and of each stage, is what distinguishes round-off ($10^{-7}$ to $10^{-6}$) from a
# bug (here $10^{-3}$ and more), and the stage-by-stage comparison says where to look.
# <!-- END ANSWER -->
