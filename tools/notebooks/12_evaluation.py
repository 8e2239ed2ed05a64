# %% [markdown]
# # 12. Evaluation: the confusion matrix, which mean IoU, absent classes, test-time augmentation, failures
#
# **The question.** A segmentation model is trained; what number says how good it is, how exactly is that number
# computed, how much can inference tricks add to it, and where does the model fail?
#
# **Why it matters.** "mIoU" is not one number. Summing one confusion matrix over the whole dataset or averaging
# per-image scores gives different results for the same predictions; a class that occurs in no image can be
# dropped or counted as 0; multi-scale and flipped inference (used by DeepLab,
# [Chen et al. 2017](../docs/bibliography.md#chen2017), [2018](../docs/bibliography.md#chen2018)) adds points that a
# paper may or may not include. Comparing two numbers computed differently is comparing nothing. And an average
# hides the images on which the model is worst, which are the ones that teach you something.
#
# We train a small DeepLabV3+ for a few seconds on synthetic shapes (so that it makes mistakes worth looking at),
# then take its evaluation apart with `tinydeeplab.train.ConfusionMatrix` and `tinydeeplab.train.predict_logits`.
# You write per-class IoU with absent classes, the two mIoUs and the test-time-augmentation average (graded by
# `tinydeeplab.exercises.check`), and answer two inline questions. The benchmark protocol, that of PASCAL VOC
# ([Everingham et al. 2010](../docs/bibliography.md#everingham2010)) and of the CamVid results that followed
# ([Brostow et al. 2009](../docs/bibliography.md#brostow2009)), accumulates one confusion matrix over the whole test
# set; `tinydeeplab.train.evaluate` does the same.

# %%
import time

import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab import functional as F
from tinydeeplab.data import BatchLoader, RandomHorizontalFlip, SyntheticShapes
from tinydeeplab.exercises import check
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
from tinydeeplab.models.preprocessor import resize
from tinydeeplab.train import SGD, ConfusionMatrix, cosine, predict_logits
from tinydeeplab.viz import overlay

tinydeeplab.set_backend("numpy")            # tiny shapes: the NumPy reference is the fastest, and needs no compiling
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
T_START = time.perf_counter()

# %% [markdown]
# ## A small model, trained briefly
#
# A DeepLabV3+ of about 0.1 M parameters (a 4-stack bottleneck ResNet with 16 filters, ASPP with 32 channels, the
# V3+ decoder), built explicitly, trained for 80 steps of SGD (batch 6) on 48×48 synthetic shapes with flips, a
# warm-up and a cosine decay. It is deliberately undertrained: a model that is right everywhere has nothing to show.

# %%
SIZE, BATCH, STEPS, SCALE, OFFSET = 48, 6, 80, 1 / 127.5, -1.0
train_set = SyntheticShapes(length=STEPS * BATCH, size=(SIZE, SIZE), seed=0, max_shapes=3, colour_hints=True)
val_set = SyntheticShapes(length=32, size=(SIZE, SIZE), seed=1000, max_shapes=3, colour_hints=True)
names, palette, K = val_set.class_names, val_set.palette, val_set.num_classes

encoder = ResNetBackbone([16], [3], [16, 16, 16, 16], [1, 1, 1, 1], [1, 2, 2, 2], seed=0)
backbone = DeepLabV3Backbone(encoder, "P5", 8, [1, 2, 3], low_level_feature_key="P2", projection_filters=16,
                             num_channels=32, seed=1)
model = DeepLabV3ImageSegmenter(backbone, K, seed=2)
optimizer = SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-4)
loader = BatchLoader(train_set, BATCH, transform=RandomHorizontalFlip(), seed=0, scale=SCALE, offset=OFFSET)
losses, t0 = [], time.perf_counter()
for step, (x, y) in enumerate(loader):                        # x (8, 48, 48, 3), y (8, 48, 48)
    logits = model.forward(x, training=True)
    loss, cache = F.softmax_cross_entropy_forward(logits, y, ignore_label=255)
    model.zero_grad()
    model.backward(F.softmax_cross_entropy_backward(1.0, cache))
    optimizer.step(lr=cosine(step, STEPS, 0.1, warmup=10))
    losses.append(loss)
print(f"{model.num_parameters():,} parameters, {STEPS} steps in {time.perf_counter() - t0:.1f} s, "
      f"loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")

images = np.stack([val_set[i][0] for i in range(len(val_set))])             # (32, 48, 48, 3) uint8
labels = np.stack([val_set[i][1] for i in range(len(val_set))]).astype(np.int64)   # (32, 48, 48)
x_val = images.astype(np.float32) * SCALE + OFFSET
plain_logits = predict_logits(model, x_val)                                  # one view: the plain forward
preds = plain_logits.argmax(-1)                                              # (32, 48, 48)

# %%
fig, axes = plt.subplots(1, 5, figsize=(13, 2.8), layout="constrained")
axes[0].plot(losses); axes[0].set(xlabel="step", ylabel="cross-entropy", yscale="log", title="training loss")
for k, ax in enumerate(axes[1:]):
    ax.imshow(overlay(images[k], preds[k], palette, 0.6)); ax.set_axis_off(); ax.set_title(f"val {k}: prediction")
plt.show()

# %% [markdown]
# ## The confusion matrix
#
# Every evaluation starts from one table: $M_{ij}$ = the number of pixels labelled $i$ and predicted $j$ (pixels with
# the ignore label 255 are skipped). Per class $k$: $TP_k = M_{kk}$, $FN_k = \sum_j M_{kj} - TP_k$ (row $k$ without
# the diagonal: labelled $k$, predicted something else), $FP_k = \sum_i M_{ik} - TP_k$ (column $k$), and
#
# $$\mathrm{IoU}_k = \frac{TP_k}{TP_k + FP_k + FN_k} = \frac{|\text{pred}_k \cap \text{label}_k|}{|\text{pred}_k \cup
#   \text{label}_k|}.$$
#
# A class that is neither labelled nor predicted has $0/0$: its IoU is undefined, NaN. A class that is *predicted*
# somewhere but never labelled is present, with IoU 0 (all its pixels are false positives); likewise a class
# labelled but never predicted.
#
# ### Exercise 1: per-class IoU with absent classes
#
# Write `iou_with_absent_classes(matrix)`: the `(K,)` float array of IoUs of a `(K, K)` confusion matrix (rows:
# label, columns: prediction), NaN exactly where $TP + FP + FN = 0$. The checker uses matrices with absent,
# labelled-only and predicted-only classes and names recall, precision, Dice, a double-counted union, and a 0 (or
# NaN) in the wrong place.

# %%
def iou_with_absent_classes(matrix):
    """Per-class IoU TP / (TP + FP + FN) of a (K, K) confusion matrix (rows: label); NaN for absent classes."""
    # BEGIN SOLUTION
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp             # TP + FP + FN
    iou = np.full(len(matrix), np.nan)
    iou[union > 0] = tp[union > 0] / union[union > 0]
    return iou
    # END SOLUTION


# %%
print(check("iou_with_absent_classes", iou_with_absent_classes))

# %% [markdown]
# The library's `ConfusionMatrix` does the same from label maps (one `bincount` of $K \cdot \text{label} +
# \text{pred}$ over the valid pixels). On the validation set:

# %%
cm = ConfusionMatrix(K)
cm.update(preds, labels)
print(cm.table(names))
tp, rows, cols = np.diag(cm.matrix), cm.matrix.sum(1), cm.matrix.sum(0)
assert np.allclose(cm.iou(), tp / (rows + cols - tp))                 # every class is present here
assert cm.matrix.sum() == np.sum(labels != 255)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for ax, m, title, fmt in ((axes[0], cm.matrix, "pixel counts", "{:.0f}"),
                          (axes[1], cm.matrix / rows[:, None], "each row divided by its sum (recall)", "{:.2f}")):
    ax.imshow(m, cmap="Blues")
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, fmt.format(v), ha="center", va="center", color="w" if v > m.max() / 2 else "k", fontsize=8)
    ax.set(xticks=range(K), yticks=range(K), xticklabels=names, yticklabels=names, xlabel="predicted",
           ylabel="label", title=title)
    ax.tick_params(axis="x", rotation=30)
plt.show()

# %% [markdown]
# ## Dataset-level vs per-image mIoU
#
# Two ways to average, both called mIoU:
#
# * **dataset-level** (the benchmarks' way): sum one confusion matrix over all images, then
#   $\mathrm{mIoU} = \operatorname{mean}_{k\ \text{present}} \mathrm{IoU}_k$. Every *pixel* weighs the same: a large
#   object dominates, a small one barely counts.
# * **per-image**: compute each image's own mIoU (over the classes present in *that* image), then average over the
#   images. Every *image* weighs the same, and within an image every present class: a 30-pixel triangle counts as
#   much as the background, and a handful of false-positive pixels of a class the image does not contain adds a
#   class with IoU 0 to that image's mean.
#
# The link between them is exact: with $U_{ik} = TP_{ik} + FP_{ik} + FN_{ik}$ the union of class $k$ in image $i$,
# the dataset IoU $\sum_i TP_{ik} / \sum_i U_{ik}$ is the $U$-weighted mean of the per-image IoUs. Going from one
# mIoU to the other takes two steps, each with its own sign: drop the weights (small objects, which score lower,
# count as much as large ones), then average per image first (each image's mean runs over the classes it has, and
# the background, easy and present in every image, weighs more than its $1/K$). The two steps can nearly cancel
# (the printout below says by how much each moves the number): a small gap between the two mIoUs does not mean that
# they weigh the same things.
#
# ### Exercise 2: both mIoUs
#
# Write `dataset_vs_image_miou(preds, labels, num_classes, ignore_label)` for label maps `(N, H, W)`: return the
# pair `(dataset_miou, image_miou)`. Use `ConfusionMatrix` (it skips the ignore label and gives NaN for absent
# classes) or your function above. The checker names swapped values, absent classes counted as 0 (per image or in
# the dataset), ignored pixels that count, and the same number returned twice.

# %%
def dataset_vs_image_miou(preds, labels, num_classes, ignore_label):
    """(dataset-level mIoU, mean over images of per-image mIoU) of label maps (N, H, W)."""
    # BEGIN SOLUTION
    total, per_image = ConfusionMatrix(num_classes, ignore_label), []
    for pred, label in zip(preds, labels):
        one = ConfusionMatrix(num_classes, ignore_label)
        one.update(pred, label)
        total.merge(one)
        per_image.append(one.miou())
    return total.miou(), float(np.nanmean(per_image))
    # END SOLUTION


# %%
print(check("dataset_vs_image_miou", dataset_vs_image_miou))

# %%
def image_ious(preds, labels):
    """Per-image, per-class IoU (N, K), NaN where the class is absent from that image, and the unions (N, K)."""
    ious, unions = [], []
    for pred, label in zip(preds, labels):
        one = ConfusionMatrix(K)
        one.update(pred, label)
        ious.append(one.iou())
        unions.append(one.matrix.sum(0) + one.matrix.sum(1) - np.diag(one.matrix))    # TP + FP + FN
    return np.array(ious), np.array(unions)


per_image, unions = image_ious(preds, labels)                            # (32, 4) each
image_miou = np.nanmean(per_image, axis=1)                               # (32,)
dataset_miou = cm.miou()
print(f"dataset-level mIoU {dataset_miou:.4f}, per-image mIoU {image_miou.mean():.4f}: "
      f"they differ by {dataset_miou - image_miou.mean():+.4f}")

# the dataset IoU of a class is the union-weighted mean of its per-image IoUs: sum_i TP_ik / sum_i U_ik
weighted = np.nansum(per_image * unions, axis=0) / unions.sum(axis=0)    # (K,)
assert np.allclose(weighted, cm.iou())
# step 1, drop the weights: each (image, class) IoU counts the same, still averaged per class first
class_first = np.nanmean(per_image, axis=0).mean()
# step 2, average per image first: the per-image mIoU
print(f"dataset mIoU {dataset_miou:.4f} -> without the union weights {class_first:.4f} "
      f"({class_first - dataset_miou:+.4f}: small objects, which score lower, now weigh as much as large ones)")
print(f"           -> averaged per image first {image_miou.mean():.4f} "
      f"({image_miou.mean() - class_first:+.4f}: an image's mean runs over the classes *it* has, "
      f"so the background counts in every image)")
size = np.stack([np.bincount(l.ravel(), minlength=K) for l in labels])   # pixels of each class in each image
shape_iou, shape_size = per_image[:, 1:][size[:, 1:] > 0], size[:, 1:][size[:, 1:] > 0]
small = shape_size < np.median(shape_size)
print(f"shape IoU per image: small objects (< {np.median(shape_size):.0f} px) {shape_iou[small].mean():.3f}, "
      f"large ones {shape_iou[~small].mean():.3f}; background IoU per image {np.nanmean(per_image[:, 0]):.3f}")
false_only = (per_image == 0) & (size == 0)
print(f"{int(false_only.sum())} (image, class) pairs have IoU 0 only because the class is predicted in an image "
      f"that does not contain it")
assert dataset_miou != image_miou.mean()
assert np.isclose(dataset_miou + (class_first - dataset_miou) + (image_miou.mean() - class_first), image_miou.mean())

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.3), layout="constrained", width_ratios=[1.2, 1.2, 1])
axes[0].hist(image_miou, bins=16, range=(0, 1), color="C0", alpha=0.8)
axes[0].axvline(image_miou.mean(), color="C1", lw=2, label=f"per-image mIoU {image_miou.mean():.3f}")
axes[0].axvline(dataset_miou, color="C3", lw=2, ls="--", label=f"dataset-level mIoU {dataset_miou:.3f}")
axes[0].set(xlabel="mIoU of one image", ylabel="images", title="the same predictions, two averages")
axes[0].legend(loc="upper left")
axes[1].semilogx(shape_size, shape_iou, "o", ms=4)
axes[1].xaxis.set_minor_formatter(plt.NullFormatter())
axes[1].set(xlabel="pixels of the object's class in the image", ylabel="IoU of that class in the image",
            title="per image, small objects score lower")
steps = {"dataset\n(union-weighted)": dataset_miou, "unweighted,\nclass first": class_first,
         "per image\nfirst": image_miou.mean()}
axes[2].bar(list(steps), list(steps.values()), color=["C3", "0.6", "C1"])
lo = min(steps.values())
axes[2].set(ylim=(max(0, lo - 0.08), min(1, max(steps.values()) + 0.04)), title="from one mIoU to the other")
for k, v in enumerate(steps.values()):
    axes[2].text(k, v + 0.005, f"{v:.3f}", ha="center")
plt.show()

# %% [markdown]
# ## Absent classes: what "present" means
#
# In one image most classes do not occur: an image with one circle has no square and no triangle. If the model
# predicts none either, that class has $0/0$ in this image: NaN, and it is left out of the image's mean
# (`np.nanmean`). If it predicts a few pixels of it, the class is *present* (as false positives) with IoU 0. The map
# below shows, for every validation image (column) and class (row), the IoU in that image: grey cells are absent
# classes, excluded; dark red cells have IoU 0, a class either hallucinated (predicted, not labelled: the count is
# printed) or missed entirely. At the dataset level every class occurs
# somewhere, so nothing is excluded there: absence matters once the confusion matrix is small (per image, per
# sequence, or a class that a whole test set lacks).

# %%
absent = np.isnan(per_image)
print(f"{int(absent.sum())} of {absent.size} (image, class) cells are absent (NaN, excluded); "
      f"{int(false_only.sum())} are hallucinated (IoU 0)")
zero_filled = np.nan_to_num(per_image, nan=0.0).mean(axis=1).mean()
print(f"per-image mIoU with absent classes excluded {image_miou.mean():.4f}, counted as 0 instead {zero_filled:.4f}")
assert absent.any() and zero_filled < image_miou.mean()

fig, ax = plt.subplots(figsize=(11, 2.6), layout="constrained")
cmap = plt.get_cmap("RdYlGn").copy(); cmap.set_bad("0.8")
im = ax.imshow(per_image.T, cmap=cmap, vmin=0, vmax=1, aspect="auto")
ax.set(yticks=range(K), yticklabels=names, xlabel="validation image", title="IoU per image and class (grey: absent)")
fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# **Inline question 1.** A test set of street scenes contains no image with a train. Model A never predicts
# "train"; model B predicts it on 50 pixels of one image. What is the train IoU of each at the dataset level, and
# how does it change their mIoU? Is counting an absent class as IoU 1 (a "perfect" non-prediction) a better rule?
#
# <!-- BEGIN ANSWER -->
# **Answer.** For A the train class has $TP = FP = FN = 0$: IoU NaN, excluded, and the mean runs over the other
# classes. For B it has $FP = 50$, $TP = FN = 0$: IoU 0, included, so B's mIoU over $K$ classes is that of A times
# $(K-1)/K$ (plus the small effect of the 50 pixels on the class they were taken from): a few stray pixels cost
# $1/K$ of the whole score, which is why per-image mIoU, where this happens in every image, is harsh. Counting
# absent classes as 1 would make every "correctly not predicted" class a free perfect score: the mean would rise
# with the number of classes a dataset happens to lack and would reward a model for being silent. NaN-and-exclude
# measures only what can be measured; the price is that scores over different class sets are not comparable.
# <!-- END ANSWER -->

# %% [markdown]
# ## Test-time augmentation and sliding windows
#
# A trained network can be run on several *views* of the same image: rescaled by $s$ (bilinear), mirrored
# left-right, or cut into overlapping windows. Each view's logits are mapped back (un-mirrored, resized to the
# image) and the views are combined by averaging their **probabilities**:
#
# $$p = \frac1V \sum_{v} \operatorname{softmax}(z_v),\qquad \texttt{predict\_logits} = \log p .$$
#
# Averaging probabilities rather than logits keeps a confident view from dominating by its scale alone. With a single
# view nothing is averaged, and `predict_logits` returns the model's own logits.
#
# ### Exercise 3: the TTA average
#
# Write `tta_average(forward, x, scales, flip)`: `forward(v)` maps a batch `(N, h, w, 3)` to logits `(N, h, w, K)`.
# For each scale $s$, resize `x` to $(\mathrm{round}(H s), \mathrm{round}(W s))$ with
# `resize(x, size)` (skip the resize when the size is unchanged), run `forward` on it and, if `flip`, also on its
# mirror `v[:, :, ::-1]` (mirror that output back); resize every view's logits back to $(H, W)$, take its softmax
# and return the mean probability `(N, H, W, K)`. The checker names averaged logits, a flip that is not undone or on
# the wrong axis, log-probabilities, and probabilities resized instead of logits.

# %%
def tta_average(forward, x, scales, flip):
    """Mean softmax probability (N, H, W, K) over the scaled (and, with flip, mirrored) views of x."""
    # BEGIN SOLUTION
    H, W = x.shape[1:3]
    probs = []
    for s in scales:
        size = (max(int(round(H * s)), 1), max(int(round(W * s)), 1))
        xs = x if size == (H, W) else resize(x, size)
        for mirrored in ((False, True) if flip else (False,)):
            z = forward(np.ascontiguousarray(xs[:, :, ::-1]) if mirrored else xs)
            z = np.ascontiguousarray(z[:, :, ::-1]) if mirrored else z
            if z.shape[1:3] != (H, W):
                z = resize(z, (H, W))
            e = np.exp(z - z.max(-1, keepdims=True))
            probs.append(e / e.sum(-1, keepdims=True))
    return sum(probs) / len(probs)
    # END SOLUTION


# %%
print(check("tta_average", tta_average))

# %% [markdown]
# Now the library's `predict_logits` on the validation set: the plain forward, flip, three scales, both, and a
# sliding window of 32×32 tiles with stride 16 (each pixel covered by up to four tiles, overlapping probabilities
# averaged). First the claim about one view, then a TTA result recomputed by hand from the views.

# %%
one_view = predict_logits(model, x_val[:4], scales=(1.0,), flip=False)
assert np.array_equal(one_view, model.forward(x_val[:4]))                 # one view: exactly the plain forward
flipped = predict_logits(model, x_val[:4], flip=True)
def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

mirrored = model.forward(np.ascontiguousarray(x_val[:4, :, ::-1]))[:, :, ::-1]     # mirrored back
by_hand = np.log((softmax(model.forward(x_val[:4])) + softmax(mirrored)) / 2)
print("flip TTA vs the two views averaged by hand: max |diff| =", float(np.abs(flipped - by_hand).max()))
assert np.allclose(flipped, by_hand, atol=1e-5)

settings = {"plain": dict(), "flip": dict(flip=True), "scales 0.75/1/1.25": dict(scales=(0.75, 1.0, 1.25)),
            "scales + flip": dict(scales=(0.75, 1.0, 1.25), flip=True),
            "window 32, stride 16": dict(window=(32, 32), stride=(16, 16))}
results, tta_preds, t0 = {}, {}, time.perf_counter()
for name, kwargs in settings.items():
    tta_preds[name] = predict_logits(model, x_val, **kwargs).argmax(-1)
    one = ConfusionMatrix(K)
    one.update(tta_preds[name], labels)
    results[name] = one.miou()
    changed = float((tta_preds[name] != preds).mean())
    print(f"{name:22s} dataset mIoU {results[name]:.4f}  ({changed:.1%} of the pixels change label)")
print(f"all settings in {time.perf_counter() - t0:.1f} s")
assert results["plain"] == dataset_miou

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.3), layout="constrained", width_ratios=[1.6, 1, 1])
axes[0].barh(list(results), list(results.values()), color=["0.6"] + ["C0"] * (len(results) - 1))
lo = min(results.values())
axes[0].set(xlim=(max(0, lo - 0.1), min(1, max(results.values()) + 0.05)), xlabel="dataset mIoU",
            title="test-time augmentation on the validation set")
axes[0].invert_yaxis()
k = int(np.argmax([(tta_preds["scales + flip"][i] != preds[i]).sum() for i in range(len(preds))]))
axes[1].imshow(overlay(images[k], preds[k], palette, 0.6)); axes[1].set_title(f"val {k}: plain")
axes[2].imshow(overlay(images[k], tta_preds["scales + flip"][k], palette, 0.6))
axes[2].contour(tta_preds["scales + flip"][k] != preds[k], levels=[0.5], colors="w", linewidths=0.8)
axes[2].set_title("scales + flip (white: changed pixels)")
for ax in axes[1:]:
    ax.set_axis_off()
plt.show()

# %% [markdown]
# Whether each setting helps this small, undertrained model is in the table above (it need not: a model trained
# only at scale 1 may do worse at 0.75). What is certain is the cost: a forward pass costs about the number of
# pixels, so the views cost $\sum_s s^2$ full-size forward passes, twice that with flip ($2 \times 3.125$ for
# 0.75/1/1.25 + flip). Report the evaluation setting with the number: a "+TTA" mIoU and a single-scale one are
# different measurements.
#
# ## A gallery of failures
#
# The mean hides the worst images. Sort the validation images by their own mIoU and look at the bottom of the list:
# image, label and prediction overlaid (`tinydeeplab.viz.overlay`), and the wrong pixels. A pattern in the failures
# (one class, small objects, touching shapes, low contrast, the border) says what to fix, be it the data, the
# resolution (output stride) or the training time.

# %%
order = np.argsort(image_miou)
worst = order[:4]
print("worst images:", worst.tolist(), "mIoU", np.round(image_miou[worst], 3).tolist(),
      f"(median {np.median(image_miou):.3f})")
for i in worst:
    wrong = preds[i] != labels[i]
    confused = ConfusionMatrix(K); confused.update(preds[i][wrong], labels[i][wrong])
    r, c = np.unravel_index(np.argmax(confused.matrix), confused.matrix.shape)
    print(f"  image {i}: {wrong.mean():.1%} of pixels wrong; most common error: {names[r]} predicted as {names[c]}")
assert image_miou[worst].max() <= np.median(image_miou)

fig, axes = plt.subplots(len(worst), 4, figsize=(9, 2.3 * len(worst)), layout="constrained")
for row, i in enumerate(worst):
    axes[row, 0].imshow(images[i])
    axes[row, 1].imshow(overlay(images[i], labels[i], palette, 0.6))
    axes[row, 2].imshow(overlay(images[i], preds[i], palette, 0.6))
    axes[row, 3].imshow(preds[i] != labels[i], cmap="gray_r")
    axes[row, 0].set_ylabel(f"val {i}\nmIoU {image_miou[i]:.2f}")
for col, title in enumerate(("image", "label", "prediction", "wrong pixels")):
    axes[0, col].set_title(title)
for ax in axes.ravel():
    ax.set_xticks([]); ax.set_yticks([])
fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=palette[k] / 255) for k in range(K)], labels=names,
           loc="outside lower center", ncol=K)
plt.show()
print(f"notebook executed in {time.perf_counter() - T_START:.0f} s")

# %% [markdown]
# **Inline question 2.** You rank a validation set by per-image mIoU to find failures, and the bottom of the list is
# dominated by images that contain one tiny shape. Is the model bad on these images? What other ranking would you use
# alongside, and why?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Not necessarily. Per image, each present class weighs the same, so an image with background and one
# tiny shape has a mean of two IoUs, one of which is computed on a few dozen pixels: a one-pixel-wide error along its
# boundary (which the 1/4-resolution logits make likely, notebook 11) halves it, and a few hallucinated pixels of
# another class add an IoU of 0. The ranking then finds *small objects*, a real but specific weakness, and hides
# large-area errors elsewhere. Rank also by the number (or fraction) of wrong pixels, which weighs pixels as the
# dataset-level mIoU does, and per class (the images with the lowest IoU of each class), or by the loss; look at the
# images that are bad under several rankings first.
# <!-- END ANSWER -->
