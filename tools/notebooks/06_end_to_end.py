# %% [markdown]
# # 6. End to end: train a DeepLabV3+, look at its predictions, export it as a KerasHub preset
#
# The previous notebooks took the ops apart; this one puts the whole model to work, offline, in about a minute of
# CPU time:
#
# 1. generate a segmentation dataset on the fly (`tinydeeplab.data.SyntheticShapes`);
# 2. build the `tiny` DeepLabV3+ recipe (`tinydeeplab.models.recipes.build_model`);
# 3. train it with SGD, writing the training step out by hand;
# 4. predict and measure the mean IoU;
# 5. save it in KerasHub's preset format, load it back, and compare the two stage by stage (`tinydeeplab.parity`).
#
# (`tinydeeplab demo` does the same with the larger `small` recipe for two minutes and reaches a validation mIoU
# around 0.95; `tinydeeplab.train.Trainer` wraps the loop below with checkpoints, metrics files and resuming.)

# %%
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab import parity
from tinydeeplab.backend import ops
from tinydeeplab.data import BatchLoader, Compose, RandomHorizontalFlip, SyntheticShapes
from tinydeeplab.models.recipes import build_model
from tinydeeplab.train import SGD, Cosine, clip_grad_norm, evaluate
from tinydeeplab.viz import overlay

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
print("ops backend:", tinydeeplab.get_backend())      # "cpu": the Numba kernels (the default)

# %% [markdown]
# ## The data: synthetic shapes
#
# Each image has 1–3 circles, squares and triangles on a smooth, striped, noisy background; the label map marks
# every pixel as background (0), circle (1), square (2) or triangle (3). With `colour_hints=True` the background is
# greyish and each class has its own hue range (red / green / blue ± 30°), so colour helps and shape decides between
# close hues. Item $i$ depends only on `(seed, i)`, so the dataset needs no files and is the same every run.
#
# The model sees $x = \text{pixel}/127.5 - 1 \in [-1, 1]$ (the loader and the model's preprocessor apply the same
# `scale` and `offset`).

# %%
SIZE, BATCH, STEPS_PER_EPOCH, EPOCHS = 64, 8, 20, 8
SCALE, OFFSET = 1 / 127.5, -1.0
train_set = SyntheticShapes(length=STEPS_PER_EPOCH * BATCH, size=(SIZE, SIZE), seed=0, max_shapes=3,
                            colour_hints=True)
val_set = SyntheticShapes(length=24, size=(SIZE, SIZE), seed=1000, max_shapes=3, colour_hints=True)
loader = BatchLoader(train_set, BATCH, transform=Compose([RandomHorizontalFlip()]), seed=0,
                     scale=SCALE, offset=OFFSET)
names, palette = train_set.class_names, train_set.palette
print(f"{len(train_set)} training images, {len(val_set)} validation images, classes {names}")

fig, axes = plt.subplots(2, 5, figsize=(10, 4.4), layout="constrained")
for k in range(5):
    image, label = train_set[k]
    axes[0, k].imshow(image, interpolation="nearest")
    axes[1, k].imshow(overlay(image, label, palette, alpha=0.6), interpolation="nearest")
for ax in axes.ravel():
    ax.axis("off")
axes[0, 0].set_title("images", loc="left"); axes[1, 0].set_title("labels over the images", loc="left")
fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=palette[k] / 255) for k in range(4)], labels=names,
           loc="outside lower center", ncol=4)
plt.show()

# %% [markdown]
# ## The model: a tiny DeepLabV3+
#
# The `tiny` recipe is the DeepLabV3+ architecture of KerasHub with narrow layers: a ResNet encoder (stem + 4 stacks
# of one bottleneck block, 16 filters), ASPP on the 1/32 map $P_5$ with rates 6/12/18 (32 channels instead of 256), and
# the V3+ decoder that upsamples the ASPP output to the 1/4 map $P_2$, concatenates a $1\times1$ projection of $P_2$,
# mixes with a $1\times1$ conv, classifies (4 classes) and upsamples the logits to the input size. The left panel
# counts the parameters per part, the right one follows the feature maps through the stages for a 64×64 input
# (recorded with `parity.tinydeeplab_stages`).

# %%
model = build_model("tiny", num_classes=train_set.num_classes, seed=0, scale=SCALE, offset=OFFSET)
print(f"{model.num_parameters():,} parameters")

groups = {}
for name, p in model.named_parameters():
    parts = name.split(".")                      # e.g. backbone.image_encoder.stack1.block0.conv2.kernel
    if parts[0] != "backbone":
        key = parts[0]                           # output_conv (the classifier)
    elif parts[1] == "image_encoder":
        key = "encoder " + parts[2]              # stem, stack0..3
    else:
        key = parts[1]                           # aspp, low_level_projection, head
    groups[key] = groups.get(key, 0) + p.size
x_probe = np.zeros((1, SIZE, SIZE, 3), np.float32)
stages = parity.tinydeeplab_stages(model, x_probe)
for name, value in stages.items():
    print(f"{name:44s} {value.shape}")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")
axes[0].barh(list(groups), list(groups.values()), color="C0")
axes[0].invert_yaxis(); axes[0].set(xlabel="parameters", title="where the parameters are")
short = [n.replace("backbone.", "").replace("image_encoder.", "") for n in stages]
axes[1].plot(short, [v.shape[1] for v in stages.values()], "o-", label="height of the map")
axes[1].set_ylabel("height (pixels)"); axes[1].set_yscale("log", base=2)
twin = axes[1].twinx()
twin.plot(short, [v.shape[3] for v in stages.values()], "s--", color="C1", label="channels")
twin.set_ylabel("channels", color="C1")
axes[1].tick_params(axis="x", rotation=45, labelsize=8)
axes[1].set_title("feature maps through the stages (64x64 input)")
plt.show()

# %% [markdown]
# ## Training
#
# One training step on a batch $(x, y)$ is the chain of the previous notebooks, forward then backward:
#
# $$z = f_\theta(x)\ \text{(training mode: BN uses batch statistics)},\qquad
#   \mathcal L = \mathrm{CE}(z, y),\qquad g = \frac{\partial \mathcal L}{\partial \theta}\ \text{(hand-written backward)},$$
#
# then the gradient's global norm is clipped to 5 and SGD with momentum $\mu = 0.9$ and weight decay $\lambda$
# (on conv kernels only) updates $v \leftarrow \mu v + g + \lambda\theta$, $\theta \leftarrow \theta - \eta_t v$, with a
# short linear warm-up followed by a cosine decay of the learning rate $\eta_t$. After each epoch we measure the
# validation mean IoU,
#
# $$\mathrm{IoU}_k = \frac{TP_k}{TP_k + FP_k + FN_k}, \qquad \mathrm{mIoU} = \frac1K \sum_k \mathrm{IoU}_k ,$$
#
# with `tinydeeplab.train.evaluate` (inference mode, moving BN statistics, a confusion matrix over all pixels).

# %%
total_steps = EPOCHS * len(loader)
optimizer = SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-4)
schedule = Cosine(total_steps, base_lr=0.1, warmup=12)
ce = ops()                                       # the current backend's op functions
step_loss, epoch_miou, step = [], [], 0
t0 = time.perf_counter()
for epoch in range(EPOCHS):
    loader.set_epoch(epoch)                      # the shuffle and flips depend only on (seed, epoch)
    for x, y in loader:                          # x (8, 64, 64, 3) float32, y (8, 64, 64) int32
        logits = model.forward(x, training=True)                                  # (8, 64, 64, 4)
        loss, cache = ce.softmax_cross_entropy_forward(logits, y, ignore_label=255)
        model.zero_grad()
        model.backward(ce.softmax_cross_entropy_backward(1.0, cache))            # fills every module's grads
        clip_grad_norm(model, 5.0)
        optimizer.step(lr=schedule(step))
        step_loss.append(loss)
        step += 1
    result = evaluate(model, val_set, progress=False)
    epoch_miou.append(result["miou"])
    print(f"epoch {epoch + 1}: mean train loss {np.mean(step_loss[-len(loader):]):.3f}, "
          f"validation mIoU {result['miou']:.3f}  ({time.perf_counter() - t0:.0f} s)")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
axes[0].plot(step_loss, lw=0.8, label="per step")
smooth = np.convolve(step_loss, np.ones(10) / 10, mode="valid")
axes[0].plot(np.arange(9, len(step_loss)), smooth, lw=2, label="10-step mean")
axes[0].set(xlabel="step", ylabel="cross-entropy", yscale="log", title="training loss"); axes[0].legend()
axes[1].plot(np.arange(1, EPOCHS + 1) * len(loader), epoch_miou, "o-", color="C1")
axes[1].set(xlabel="step", ylabel="mIoU", ylim=(0, 1), title="validation mean IoU")
axes[2].plot([schedule(s) for s in range(total_steps)], color="C2")
axes[2].set(xlabel="step", ylabel="learning rate", title="warm-up + cosine schedule")
plt.show()

# %% [markdown]
# ## Predictions
#
# `model.segment(image)` takes raw uint8 RGB images, applies the model's preprocessor (scale and offset), runs the
# network in inference mode and returns the arg-max label map at the image's size. Below: validation images, their
# labels and the predictions, and the confusion matrix of the whole validation set (rows: true class, columns:
# predicted class, each row normalised).

# %%
final = evaluate(model, val_set, progress=False)
print(final["confusion"].table(names))

shown = [val_set[i] for i in range(4)]
predictions = [model.segment(image) for image, _ in shown]
fig = plt.figure(figsize=(13, 5.4), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[2.2, 1])
axes = left.subplots(3, 4)
for k, ((image, label), pred) in enumerate(zip(shown, predictions)):
    for row, picture in enumerate((image, overlay(image, label, palette, 0.6), overlay(image, pred, palette, 0.6))):
        axes[row, k].imshow(picture, interpolation="nearest")
        axes[row, k].set_xticks([]); axes[row, k].set_yticks([])
for row, title in enumerate(("image", "ground truth", "prediction")):
    axes[row, 0].set_ylabel(title)
ax = right.subplots()
m = final["confusion"].matrix
rates = m / np.maximum(m.sum(1, keepdims=True), 1)
ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
for (r, c), v in np.ndenumerate(rates):
    ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="w" if v > 0.5 else "k")
ax.set(xticks=range(4), yticks=range(4), xticklabels=names, yticklabels=names, xlabel="predicted", ylabel="true",
       title=f"validation mIoU {final['miou']:.3f}")
ax.tick_params(axis="x", rotation=30)
plt.show()

# %% [markdown]
# ## Export as a KerasHub preset, load it back, compare stage by stage
#
# `tinydeeplab.save_keras_preset(model, directory)` writes the files of a KerasHub `DeepLabV3ImageSegmenter` preset:
# `config.json` (the backbone), `task.json` (the segmenter), `preprocessor.json` / `image_converter.json`, and the
# weights in Keras's HDF5 layout (`model.weights.h5`, `task.weights.h5`). KerasHub fixes the ASPP and decoder at 256
# channels; our tiny model uses 32, so the preset gets an extra `num_channels` key and a warning says that only
# tinydeeplab can load it. `tinydeeplab.load_keras_preset(directory)` rebuilds the model from the JSON and loads
# the weights.
#
# `tinydeeplab.parity` compares two implementations at every point where both expose a tensor with the same meaning
# (the stem, every residual block, the ASPP, the decoder's projection, the head, the logits): the maximum absolute
# difference, that divided by the largest value ("relative") and, for the logits, the fraction of pixels whose
# arg-max agrees. Here both sides are tinydeeplab, so every stage should agree exactly: the preset stores the float32
# weights bit for bit.

# %%
workdir = Path(tempfile.mkdtemp(prefix="tinydeeplab-notebook-"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    preset_dir = tinydeeplab.save_keras_preset(model, workdir / "preset")
for w in caught:
    print("warning:", w.message)
for f in sorted(preset_dir.iterdir()):
    print(f"  {f.name:22s} {f.stat().st_size:>8,d} bytes")
config = json.loads((preset_dir / "config.json").read_text())["config"]
print("config.json:", {k: config[k] for k in ("spatial_pyramid_pooling_key", "low_level_feature_key",
                                              "dilation_rates", "upsampling_size", "num_channels")})

reloaded = tinydeeplab.load_keras_preset(preset_dir)
x_val = np.stack([val_set[i][0] for i in range(4)]).astype(np.float32) * SCALE + OFFSET     # (4, 64, 64, 3)
original_stages = parity.tinydeeplab_stages(model, x_val)
rows = parity.compare(parity.tinydeeplab_stages(reloaded, x_val), original_stages)
print(parity.format_table(rows))
print("same label maps:", all(np.array_equal(reloaded.segment(im), p) for (im, _), p in zip(shown, predictions)))

# %%
fig, ax = plt.subplots(figsize=(10, 3.4), layout="constrained")
stage_names = [r["stage"].replace("backbone.", "").replace("image_encoder.", "") for r in rows]
ax.bar(stage_names, [float(np.abs(original_stages[r["stage"]]).max()) for r in rows], color="0.75",
       label="max |activation| of the stage")
floor = 1e-9
ax.plot(stage_names, [max(r["max_abs"], floor) for r in rows], "v", color="C3", ms=8,
        label=f"max |difference| (an exact 0 is drawn at {floor:g})")
ax.set(yscale="log", ylim=(floor / 10, 1e5), title="trained model vs the model re-loaded from its preset")
ax.tick_params(axis="x", rotation=30, labelsize=8)
ax.legend(loc="upper center", ncol=2)
plt.show()

# %% [markdown]
# With [keras-hub](https://keras.io/keras_hub/) installed (`pip install keras-hub jax`, not a tinydeeplab
# dependency), the same table can compare tinydeeplab with Keras itself: `parity.keras_stages(preset_dir, x, model)`
# loads the preset with `keras_hub.models.DeepLabV3ImageSegmenter.from_preset` and records the same stages. KerasHub
# only builds 256-channel ASPP/decoder layers (and its ResNet needs 64 filters in the first stack), so the cell
# below builds such a model, small otherwise, with randomised batch-norm statistics (fresh 0/1 statistics would hide
# mistakes), saves it, and compares. Without keras-hub it says so and skips; the differences, when it runs, are
# float32 round-off (relative $\sim10^{-6}$).

# %%
try:
    import keras_hub  # noqa: F401  (optional: only for this comparison)
except ImportError:
    keras_hub = None
    print("keras-hub is not installed: skipping the comparison with Keras (pip install keras-hub jax)")

if keras_hub is not None:
    from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
    from tinydeeplab.nn import BatchNorm

    rng = np.random.default_rng(0)
    encoder = ResNetBackbone([64], [7], [64, 16, 16, 16], [1, 1, 1, 1], [1, 2, 2, 2], seed=0)
    backbone = DeepLabV3Backbone(encoder, "P5", 8, [6, 12, 18], low_level_feature_key="P2", projection_filters=48,
                                 num_channels=256, seed=1)
    keras_sized = DeepLabV3ImageSegmenter(backbone, 4, seed=2)
    for _, module in keras_sized.modules():
        if isinstance(module, BatchNorm):
            n = module.params["gamma"].size
            module.params["gamma"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
            module.params["beta"] = rng.normal(0, 0.2, n).astype(np.float32)
            module.buffers["moving_mean"] = rng.normal(0, 0.2, n).astype(np.float32)
            module.buffers["moving_variance"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
    keras_dir = tinydeeplab.save_keras_preset(keras_sized, workdir / "keras_preset")
    x_k = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # Keras's notes about optimizer variables
        keras_out = parity.keras_stages(keras_dir, x_k, keras_sized)
    rows_k = parity.compare(parity.tinydeeplab_stages(keras_sized, x_k), keras_out)
    print(parity.format_table(rows_k))
    fig, ax = plt.subplots(figsize=(10, 3.2), layout="constrained")
    ax.bar([r["stage"].replace("backbone.", "").replace("image_encoder.", "") for r in rows_k],
           [max(r["relative"], 1e-12) for r in rows_k])
    ax.axhline(1e-4, color="C3", lw=0.8, ls="--", label="format_table's tolerance")
    ax.set(yscale="log", ylim=(1e-9, 1e-2), ylabel="relative max |difference|",
           title="tinydeeplab vs KerasHub, stage by stage")
    ax.legend()
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    plt.show()

shutil.rmtree(workdir)                           # the presets were only for this demonstration
