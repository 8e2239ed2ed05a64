# %% [markdown]
# # 6. End to end: train a DeepLabV3+, score it, export it, and check it against Keras
#
# **The question.** Do the ops of notebooks 01–05 add up to a segmentation model that learns, how do we score
# its predictions, and how do we know that its numbers are the ones KerasHub computes?
#
# **Why it matters.** Every op can be right on its own and the model still fail: an atrous branch on a map too
# small for its rate never learns (notebook 03), an mIoU that averages the wrong classes flatters or punishes
# a model, and an exported preset is worth nothing unless Keras computes the same outputs from it. This
# notebook, offline and in about a minute of CPU time:
#
# 1. generates a segmentation dataset on the fly (`tinydeeplab.data.SyntheticShapes`);
# 2. builds a tiny DeepLabV3+ ([Chen et al. 2018](../docs/bibliography.md#chen2018)) whose encoder trades stride
#    for dilation ([Chen et al. 2017](../docs/bibliography.md#chen2017)) so that the ASPP map is large enough
#    for its rates, and checks that every atrous tap is live;
# 3. trains it with SGD, writing the training step out by hand;
# 4. scores it with a confusion matrix and the mean IoU (you write both: two exercises graded by
#    `tinydeeplab.exercises.check`, and two inline questions);
# 5. saves it as a KerasHub preset and loads it back, then compares tinydeeplab with *real Keras numbers*: the
#    outputs KerasHub computed for the small presets committed under `tests/fixtures/` (no Keras needed here).
#
# (`tinydeeplab demo` trains a larger model for two minutes; `tinydeeplab.train.Trainer` wraps the loop below
# with checkpoints, metrics files and resuming. Notebook 13 takes weight import and parity apart.)

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
from tinydeeplab import functional as F
from tinydeeplab import parity
from tinydeeplab.backend import ops
from tinydeeplab.data import BatchLoader, Compose, RandomHorizontalFlip, SyntheticShapes
from tinydeeplab.exercises import check
from tinydeeplab.exercises.parity import keras_fixture_stages
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
from tinydeeplab.models.preprocessor import ImageConverter
from tinydeeplab.train import SGD, Cosine, clip_grad_norm, evaluate
from tinydeeplab.train.metrics import ConfusionMatrix
from tinydeeplab.viz import overlay

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
FIXTURES = Path("..") / "tests" / "fixtures"            # committed with the repository (notebooks/ is the cwd)
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
SIZE, BATCH, STEPS_PER_EPOCH, EPOCHS = 64, 8, 16, 6
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
# ## The model: a tiny DeepLabV3+ whose ASPP can see
#
# The architecture is KerasHub's DeepLabV3+ with narrow layers: a ResNet encoder
# ([He et al. 2016](../docs/bibliography.md#he2016)): a stem and 4 stacks of one bottleneck block with 16 filters;
# ASPP with 32 channels instead of 256; the V3+ decoder, which upsamples the ASPP output to the 1/4 map $P_2$,
# concatenates a $1\times1$ projection of $P_2$, mixes with a $1\times1$ conv, classifies (4 classes) and
# upsamples the logits to the input size.
#
# **Where ASPP sits, and with which rates.** With KerasHub's strides the encoder divides by 32: a 64×64 training
# image gives a 2×2 map $P_5$, and a 3×3 tap at rate $r \ge 2$ lands only in the zero padding: the rates-6/12/18
# branches are $1\times1$ convolutions whose 8 outer taps never get a gradient (notebook 03). So we build the
# encoder explicitly with `output_stride=16`: the last stack keeps stride 1 and dilates its 3×3 convolution by 2
# instead (same weights, a larger map), $P_5$ is 4×4 at this size, and the ASPP rates are scaled to that map:
# 1/2/3, all below its side. (DeepLabV3 trains at output stride 16 on 513 crops, a 33×33 map, with rates
# 6/12/18: rates below the map side are the point, not the numbers 6/12/18.) The cells below compute the map
# sizes and *assert* that every tap of every ASPP branch reads real pixels at the training size, then show it
# with gradients: one backward pass through our model and through the same architecture at output stride 32
# with rates 6/12/18.

# %%
RATES, OUTPUT_STRIDE = [1, 2, 3], 16


def tiny_deeplab(output_stride, rates, seed=0):
    """The notebook's model, built explicitly (not from a recipe, whose defaults may change)."""
    encoder = ResNetBackbone([16], [7], [16] * 4, [1] * 4, [1, 2, 2, 2], output_stride=output_stride, seed=seed)
    backbone = DeepLabV3Backbone(encoder, "P5", 8, rates, low_level_feature_key="P2", projection_filters=16,
                                 num_channels=32, seed=seed + 1)
    net = DeepLabV3ImageSegmenter(backbone, train_set.num_classes, seed=seed + 2)
    net.preprocessor = ImageConverter(None, SCALE, OFFSET)          # raw 0..255 pixels -> [-1, 1]
    return net


model = tiny_deeplab(OUTPUT_STRIDE, RATES)
print(f"{model.num_parameters():,} parameters")
x_probe = np.zeros((1, SIZE, SIZE, 3), np.float32)
stages = parity.tinydeeplab_stages(model, x_probe)
for name, value in stages.items():
    print(f"{name:44s} {value.shape}")


def live_taps(h, w, rate):
    """The taps (i, j) of a 3x3 "same" conv at this rate that read a real pixel for some output position
    (what the library's conv op records in its cache; a tap that only meets padding is skipped there)."""
    _, cache = F.conv2d_forward(np.ones((1, h, w, 1)), np.ones((3, 3, 1, 1)), dilation=rate, padding="same")
    return cache["live_taps"]


p5 = model.backbone.image_encoder(x_probe)["P5"].shape[1:3]
print(f"P5 at {SIZE}x{SIZE}: {p5} (output stride {SIZE // p5[0]}); taps live per rate:",
      {r: len(live_taps(*p5, r)) for r in RATES})
assert SIZE // p5[0] == OUTPUT_STRIDE
assert all(len(live_taps(*p5, r)) == 9 for r in model.backbone.aspp.dilation_rates), "a dead ASPP tap"

# %%
def tap_gradient_norms(net, x, y):
    """Per-tap norm of the kernel gradient of each 3x3 ASPP branch after one training-mode backward pass."""
    o = ops()
    loss, cache = o.softmax_cross_entropy_forward(net.forward(x, training=True), y, ignore_label=255)
    net.zero_grad()
    net.backward(o.softmax_cross_entropy_backward(1.0, cache))
    return [np.sqrt((branch.conv.grads["kernel"] ** 2).sum(axis=(2, 3))) for branch in net.backbone.aspp.branches()[1:]]


x_batch, y_batch = next(iter(loader))                                 # (8, 64, 64, 3), (8, 64, 64)
ours = tap_gradient_norms(tiny_deeplab(OUTPUT_STRIDE, RATES), x_batch, y_batch)
os32 = tiny_deeplab(None, [6, 12, 18])
os32_p5 = os32.backbone.image_encoder(x_probe)["P5"].shape[1:3]
theirs = tap_gradient_norms(os32, x_batch, y_batch)
centre = np.zeros((3, 3), bool); centre[1, 1] = True
assert all((g[~centre] > 0).all() for g in ours), "every tap of our ASPP gets a gradient"
assert all((g[~centre] == 0).all() and g[1, 1] > 0 for g in theirs), "at output stride 32 only the centres learn"
print(f"output stride 32: P5 {os32_p5}, outer-tap gradients exactly 0 in all three branches; "
      f"ours: smallest outer-tap gradient norm {min(g[~centre].min() for g in ours):.2e}")

fig = plt.figure(figsize=(12, 5.2), layout="constrained")
left, right = fig.subfigures(1, 2, width_ratios=[3, 2])
axes = left.subplots(2, 3)
for row, (grads, rates, title) in enumerate(((theirs, [6, 12, 18], f"output stride 32\nP5 {os32_p5}"),
                                             (ours, RATES, f"output stride {OUTPUT_STRIDE}\nP5 {p5}"))):
    for k, (g, r) in enumerate(zip(grads, rates)):
        im = axes[row, k].imshow(g / g.max(), cmap="viridis", vmin=0, vmax=1)
        axes[row, k].set(xticks=[], yticks=[], title=f"rate {r}")
        for (i, j), v in np.ndenumerate(g / g.max()):
            axes[row, k].text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.5 else "k", fontsize=8)
    axes[row, 0].set_ylabel(title)
left.colorbar(im, ax=axes, shrink=0.7, label="|dL/dkernel| per tap / its max")
left.suptitle("ASPP kernel gradient per 3x3 tap, one backward pass")
ax = right.subplots()
short = [n.replace("backbone.", "").replace("image_encoder.", "") for n in stages]
ax.plot(short, [v.shape[1] for v in stages.values()], "o-", label=f"ours (output stride {OUTPUT_STRIDE})")
ax.plot(short, [v.shape[1] for v in parity.tinydeeplab_stages(os32, x_probe).values()], "s--",
        label="output stride 32")
ax.set_yscale("log", base=2)
ax.set(ylabel="height of the map (pixels)", title=f"feature maps through the stages ({SIZE}x{SIZE} input)")
ax.tick_params(axis="x", rotation=60, labelsize=7)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Inline question 1.** At output stride 32 the three atrous branches above got gradients only at their centre
# tap. Why exactly zero, and not merely small? And why does making $P_5$ larger with `output_stride=8` keep the
# *pretrained* meaning of a ResNet's weights, while simply removing the strides would not?
#
# <!-- BEGIN ANSWER -->
# **Answer.** On a 2×2 map with "same" padding, an outer tap of a rate-$r \ge 2$ filter reads position
# $i \pm r$, outside the map for every output $i$: it multiplies padding zeros, so the output does not depend on
# that weight and $\partial L/\partial w_{\text{tap}} = \sum (\text{input at the tap}) \cdot \delta y = 0$ exactly.
# The weight never moves; the branch is a 1×1 convolution. Output stride 16 replaces the last stride by
# dilation 2 in the 3×3 convolutions after it: each filter then reads the same neighbours *in the input's
# coordinates* as before (at twice the sampling density), so learned or imported weights keep their receptive
# fields while the map grows 2×2 = 4 times. Dropping the stride without dilating would halve every later
# receptive field relative to the image and change what the weights see.
# <!-- END ANSWER -->

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
# validation mean IoU with `tinydeeplab.train.evaluate` (inference mode, moving BN statistics, one confusion
# matrix over all the validation pixels); the next section defines it precisely.

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
assert np.mean(step_loss[-len(loader):]) < 0.5 * np.mean(step_loss[:len(loader)]), "the loss did not drop"

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
# ## Scoring: the confusion matrix and the mean IoU
#
# Segmentation is scored per pixel, over the whole validation set at once. The confusion matrix $M$ counts
# pixels: $M_{ij}$ = number of pixels whose label is $i$ and whose prediction is $j$, skipping the pixels labelled
# with the ignore label 255 (void, unlabelled). With $TP_k = M_{kk}$, $FN_k = \sum_j M_{kj} - TP_k$ (row) and
# $FP_k = \sum_i M_{ik} - TP_k$ (column),
#
# $$\mathrm{IoU}_k = \frac{TP_k}{TP_k + FP_k + FN_k}, \qquad
#   \mathrm{mIoU} = \frac{1}{|P|} \sum_{k \in P} \mathrm{IoU}_k, \qquad P = \{k : TP_k + FP_k + FN_k > 0\}.$$
#
# The mean runs over the **present** classes $P$: those that occur in the labels *or* in the predictions. A class
# absent from both has $\mathrm{IoU} = 0/0$, undefined: it says nothing about the model, and counting it as 0 (or
# 1) would make the score depend on how many unused classes the label set declares. A class that is predicted
# but never labelled stays in $P$ with IoU 0: its pixels are all false positives. This is what
# `ConfusionMatrix.miou` (and so `evaluate`) computes. Other evaluation scripts differ on exactly this point
# (some average over all $K$ declared classes), so a reported mIoU should say which mean it is.
#
# ### Exercise 1: the confusion matrix
#
# Write `my_confusion(pred, label, num_classes, ignore_label)`: `pred` and `label` are integer arrays of the same
# shape (any shape); return the `(K, K)` int64 counts, rows = label, columns = prediction, without the pixels
# whose label is `ignore_label` (`None`: keep every pixel). One `np.bincount` of `K * label + pred` does it.

# %%
def my_confusion(pred, label, num_classes, ignore_label=255):
    """(K, K) int64 counts M[label, prediction] over the pixels whose label is not ignore_label."""
    # BEGIN SOLUTION
    label, pred = label.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    if ignore_label is not None:
        keep = label != ignore_label
        label, pred = label[keep], pred[keep]
    counts = np.bincount(num_classes * label + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)
    # END SOLUTION


# %%
print(check("confusion_counts", my_confusion))

# %% [markdown]
# ### Exercise 2: the mean IoU over the present classes
#
# Write `my_miou(confusion)`: the mIoU of the formula above, from a `(K, K)` count matrix. The checker compares
# with `ConfusionMatrix.miou` on matrices with absent classes and with predicted-but-unlabelled classes, and names
# the usual mistakes (averaging over all $K$ classes, dropping the predicted-only classes, recall or precision in
# place of IoU, TP counted twice in the union, pixel accuracy).

# %%
def my_miou(confusion):
    """Mean of TP / (TP + FP + FN) over the classes with TP + FP + FN > 0."""
    # BEGIN SOLUTION
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean())
    # END SOLUTION


# %%
print(check("miou_present_classes", my_miou))

# %% [markdown]
# `evaluate` returns the same numbers from its own `ConfusionMatrix`: below we rebuild the matrix from the
# model's label maps (`model.segment`) and recompute the validation mIoU with the formula.

# %%
final = evaluate(model, val_set, progress=False)
cm = ConfusionMatrix(train_set.num_classes)
for image, label in val_set:
    cm.update(model.segment(image), label)
tp = np.diag(cm.matrix).astype(np.float64)
union = cm.matrix.sum(0) + cm.matrix.sum(1) - tp
assert np.array_equal(cm.matrix, final["confusion"].matrix)
assert np.isclose(final["miou"], np.mean(tp[union > 0] / union[union > 0]))
print(final["confusion"].table(names))

fp, fn = cm.matrix.sum(0) - tp, cm.matrix.sum(1) - tp
fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
ax.barh(names, tp / union, color="C2", label="TP / union = IoU")
ax.barh(names, fn / union, left=tp / union, color="C1", label="FN / union (missed)")
ax.barh(names, fp / union, left=(tp + fn) / union, color="C3", label="FP / union (false alarms)")
for k, v in enumerate(tp / union):
    ax.text(v / 2, k, f"{v:.2f}", va="center", ha="center", color="w")
ax.set(xlim=(0, 1), xlabel="fraction of the union TP + FP + FN",
       title=f"each class's union split into its terms (validation set); mIoU {final['miou']:.3f}")
ax.invert_yaxis(); ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
plt.show()

# %% [markdown]
# **Inline question 2.** A CamVid validation split has no "Bicyclist" pixel, and the model predicts none. What
# happens to an mIoU over all 11 classes with the absent class counted as 0, and to the mean over the present
# classes? And if the model then predicts Bicyclist on 10 pixels out of millions?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Counted as 0, the absent class multiplies the mean of the other ten by 10/11 (0.66 becomes 0.60)
# whatever the model does: the score measures the split, not the model. Over the present classes it is simply
# left out. Ten predicted Bicyclist pixels make the class present with IoU 0 (ten false positives, no true
# positive): now both conventions agree and the mean falls to 10/11 of the ten-class mean. Dataset-level mIoU is
# that harsh on rare classes: a handful of false pixels cost a whole class, which is why a report must say how
# its mean is taken and over which classes.
# <!-- END ANSWER -->

# %% [markdown]
# ## Predictions
#
# `model.segment(image)` takes raw uint8 RGB images, applies the model's preprocessor (scale and offset), runs the
# network in inference mode and returns the arg-max label map at the image's size. Below: validation images, their
# labels and the predictions, and the confusion matrix of the whole validation set (rows: true class, columns:
# predicted class, each row normalised).

# %%
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
# ## Export as a KerasHub preset, and parity with Keras's own numbers
#
# `tinydeeplab.save_keras_preset(model, directory)` writes the files of a KerasHub `DeepLabV3ImageSegmenter` preset:
# `config.json` (the backbone), `task.json` (the segmenter), `preprocessor.json` / `image_converter.json`, and the
# weights in Keras's HDF5 layout (`model.weights.h5`, `task.weights.h5`). KerasHub fixes the ASPP and decoder at 256
# channels; our tiny model uses 32, so the preset gets an extra `num_channels` key and a warning says that only
# tinydeeplab can load it. `tinydeeplab.load_keras_preset(directory)` rebuilds the model from the JSON and loads
# the weights. The round trip must be exact: the preset stores the float32 weights bit for bit, and the output
# stride (not a KerasHub setting) is given again when loading.

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

reloaded = tinydeeplab.load_keras_preset(preset_dir, output_stride=OUTPUT_STRIDE)
x_val = np.stack([val_set[i][0] for i in range(4)]).astype(np.float32) * SCALE + OFFSET     # (4, 64, 64, 3)
round_trip = parity.compare(parity.tinydeeplab_stages(reloaded, x_val), parity.tinydeeplab_stages(model, x_val))
assert all(r["max_abs"] == 0.0 for r in round_trip), "the reloaded model differs"
assert all(np.array_equal(reloaded.segment(im), p) for (im, _), p in zip(shown, predictions))
print(f"reloaded model: all {len(round_trip)} stages bit-identical, same label maps")
shutil.rmtree(workdir)                           # the preset was only for this demonstration

# %% [markdown]
# That only shows that tinydeeplab reads back what it wrote. The real question is whether **Keras** computes the
# same numbers from a preset. `tests/fixtures/` holds two small KerasHub presets (a DeepLabV3 with ASPP on $P_4$,
# and a DeepLabV3+) with random weights and perturbed batch-norm statistics, saved *by KerasHub itself*
# (`tools/make_parity_fixtures.py`, run once with `keras-hub` installed), together with what Keras computed:
# `activations.npz` holds the output of every Keras layer for one input, `cases.npz` the logits of three inputs
# (square, non-square, and an odd 50×70 size, where KerasHub's output is larger than its input; see
# `parity.logits_at_size`). Below, tinydeeplab loads each preset and is compared with those stored Keras numbers,
# stage by stage (`parity.compare`: max |difference| divided by max |Keras value|) and logit by logit
# (`parity.compare_with_cases`, with the fraction of pixels whose arg-max agrees). Agreement is float32 round-off.

# %%
parity_rows = {}
for name in ("v3_tiny", "v3plus_tiny"):
    fixture = FIXTURES / name
    keras_model = tinydeeplab.load_keras_preset(fixture / "preset")
    x_act, keras_acts = keras_fixture_stages(fixture, keras_model)       # Keras's outputs, by stage
    stage_rows = parity.compare(parity.tinydeeplab_stages(keras_model, x_act), keras_acts)
    with np.load(fixture / "cases.npz", allow_pickle=False) as data:
        cases = {k: data[k] for k in data.files if k.startswith(("input_", "logits_"))}
    case_rows = parity.compare_with_cases(keras_model, cases)
    parity_rows[name] = stage_rows + case_rows
    print(f"{name}: tinydeeplab vs KerasHub (stored outputs)")
    print(parity.format_table(parity_rows[name]))
    assert all(r["relative"] <= 1e-4 for r in parity_rows[name]), f"{name}: a stage differs from Keras"
    assert all(r["argmax"] >= 0.9999 for r in case_rows)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained", sharey=True)
for ax, (name, rows) in zip(axes, parity_rows.items()):
    labels = [r["stage"].replace("backbone.", "").replace("image_encoder.", "") for r in rows]
    colours = ["C1" if r["stage"].startswith("logits_") else "C0" for r in rows]
    ax.bar(labels, [max(r["relative"], 1e-12) for r in rows], color=colours)
    ax.axhline(1e-4, color="C3", lw=0.8, ls="--", label="tolerance 1e-4")
    ax.set(yscale="log", ylim=(1e-9, 1e-2), title=f"{name}: tinydeeplab vs stored KerasHub outputs")
    ax.tick_params(axis="x", rotation=60, labelsize=7)
axes[0].set_ylabel("max |difference| / max |Keras value|")
axes[0].legend(loc="upper left")
plt.show()
