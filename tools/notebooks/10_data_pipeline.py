# %% [markdown]
# # 10. The data pipeline: joint transforms, label resizing, class weights
#
# **The question.** How do you augment a segmentation training pair without breaking it, and how do you stop the
# frequent classes (road, sky) from drowning the rare ones (poles, pedestrians)?
#
# **Why it matters.** In segmentation the target is an image too: every geometric transform (scale, crop, flip)
# must move image and label together, and the label must never be *interpolated*: blending class indices
# invents classes along every boundary, silently, with no error. Class frequencies in road scenes span two orders
# of magnitude, so an unweighted loss barely sees the thin classes. You write a joint random crop and
# median-frequency class weights (graded by `tinydeeplab.exercises.check`) and answer two inline questions.
# References: [Brostow et al. 2009](../docs/bibliography.md#brostow2009) (CamVid),
# [Badrinarayanan et al. 2017](../docs/bibliography.md#badrinarayanan2017) (SegNet, median-frequency balancing),
# [Chen et al. 2017](../docs/bibliography.md#chen2017) (DeepLab's scale / crop / flip augmentation).

# %%
import csv

import numpy as np
import matplotlib.pyplot as plt

from tinydeeplab import functional as F
from tinydeeplab.data import CamVid, SyntheticShapes
from tinydeeplab.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale
from tinydeeplab.exercises import check
from tinydeeplab.exercises.data import median_frequency_weights
from tinydeeplab.functional.resize_coeffs import bilinear_coefficients
from tinydeeplab.viz import colorize

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## Joint transforms
#
# tinydeeplab's transforms take and return a *pair*: `t(image, label, rng) -> (image, label)`. `RandomScale`
# resizes both (the image bilinearly, the label by nearest neighbour), `RandomCrop` cuts the same window from
# both (padding the label with 255 where the image is too small), `RandomHorizontalFlip` mirrors both or neither.
# Below, four draws on a CamVid frame (the 3-frame sample committed in `notebooks/data/`). The check: with only
# crop and flip (no resampling), drawing the transformed label with the palette gives exactly the transformed
# drawing of the original label, i.e. the label stayed on its pixels.

# %%
camvid = CamVid("data/camvid_sample", split="train")
image, label = camvid[0]
train = Compose([RandomScale(0.5, 2.0), RandomCrop(128), RandomHorizontalFlip()])
geometric = Compose([RandomCrop(128), RandomHorizontalFlip(p=0.5)])
drawn = colorize(label, camvid.palette)
for seed in range(8):
    _, lab_t = geometric(image, label, np.random.default_rng(seed))
    drawn_t, lab_again = geometric(drawn, label, np.random.default_rng(seed))
    assert np.array_equal(lab_t, lab_again) and np.array_equal(colorize(lab_t, camvid.palette), drawn_t)
fig, axes = plt.subplots(2, 4, figsize=(12, 6), layout="constrained")
for col in range(4):
    img_t, lab_t = train(image, label, np.random.default_rng(col))
    assert set(np.unique(lab_t)) <= set(np.unique(label)) | {255}          # nearest: no new label values
    axes[0, col].imshow(img_t); axes[0, col].set_title(f"draw {col}: image")
    axes[1, col].imshow(colorize(lab_t, camvid.palette)); axes[1, col].set_title("label (black = 255)")
for ax in axes.ravel():
    ax.axis("off")
plt.show()

# %% [markdown]
# ### Exercise 1: a joint random crop
#
# Write `joint_crop(image, label, size, rng)`: `image` `(H, W, 3)` uint8, `label` `(H, W)` uint8, `size = (h, w)`.
# Where the pair is smaller than `size`, pad it first at the bottom and right (image with 0, label with 255); then
# draw one offset uniformly among all valid ones with `rng` and cut the same window from both. The checker feeds
# images whose pixels encode their own coordinates: it finds the window the image came from and checks that the
# label came from the same one, the padding values, and that every offset occurs over many draws.

# %%
def joint_crop(image, label, size, rng):
    """The same random (h, w) window of image and label; pads bottom/right (image 0, label 255) first."""
    # BEGIN SOLUTION
    h, w = size
    ph, pw = max(h - label.shape[0], 0), max(w - label.shape[1], 0)
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=255)
    top = int(rng.integers(0, label.shape[0] - h + 1))               # high is exclusive: + 1
    left = int(rng.integers(0, label.shape[1] - w + 1))
    return image[top:top + h, left:left + w], label[top:top + h, left:left + w]
    # END SOLUTION


# %%
print(check("joint_random_crop", joint_crop))

# %% [markdown]
# ## The "bilinear-resized labels" bug
#
# Resizing the label like the image, bilinearly, is an easy mistake (one `interpolation=` argument). Interpolation
# blends the *numbers*: between Sky (0) and Road (3) it produces 1 and 2, Building and Pole, classes that are not
# there; next to void (255) it produces values such as 130 that are no class at all. We resize the label map
# of a CamVid frame by 1.5 with `bilinear_resize_forward` and round, and count an output pixel as **invented**
# when its value occurs in none of the (up to 4) input pixels it was interpolated from.

# %%
h, w = label.shape
H, W = int(h * 1.5), int(w * 1.5)
as_float = label.astype(np.float64)[None, :, :, None]
bilinear = np.rint(F.bilinear_resize_forward(as_float, (H, W))[0][0, :, :, 0]).astype(int)     # the bug
r0, r1, _ = bilinear_coefficients(h, H)
c0, c1, _ = bilinear_coefficients(w, W)
sources = np.stack([label[np.ix_(r, c)] for r in (r0, r1) for c in (c0, c1)])                  # (4, H, W)
invented = ~(sources == bilinear[None]).any(0)
not_a_class = (bilinear >= camvid.num_classes) & (bilinear != 255)
nearest = label[np.ix_(np.minimum((np.arange(H) + 0.5) * h / H, h - 1).astype(int),
                       np.minimum((np.arange(W) + 0.5) * w / W, w - 1).astype(int))]
print(f"bilinear labels: {invented.sum()} invented pixels ({invented.mean():.2%}), {not_a_class.sum()} of them "
      f"not a class at all (values like {sorted(set(bilinear[not_a_class].tolist()))[:5]})")
print("nearest-neighbour labels: invented pixels =", int((~np.isin(nearest, np.unique(label))).sum()))
assert invented.any() and not_a_class.any()
assert set(np.unique(nearest)) <= set(np.unique(label))
zoom = (slice(40, 120), slice(60, 180))
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
axes[0].imshow(colorize(nearest, camvid.palette)[zoom]); axes[0].set_title("nearest (correct)")
axes[1].imshow(colorize(np.where(not_a_class, 255, bilinear), camvid.palette)[zoom])
axes[1].set_title("bilinear, rounded (the bug)")
axes[2].imshow(invented[zoom], cmap="Reds"); axes[2].set_title(f"invented labels: {invented.sum()} pixels")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# **Inline question 1.** The invented labels sit in one- or two-pixel bands along boundaries, a few percent of the
# pixels. Why is that worse than the number suggests, and why does nearest neighbour not have the problem even
# though it also moves boundaries?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The errors are *systematic*, not noise: every Sky/Road boundary is taught to be Building and Pole, every
# Road/Car boundary gets the classes numbered between them, so the network learns wrong classes exactly where
# segmentation is hardest, and thin classes such as Pole (whose area is small) receive a large share of false
# examples; values next to void (like 130) are not classes at all and either crash the loss or, unchecked, index
# garbage. Nearest neighbour only ever *copies* an existing label: a boundary may move by up to half a pixel, but
# every pixel keeps a class that really occurs next to it. (The image, by contrast, should be resampled
# bilinearly: its values are intensities, for which blending is meaningful.)
# <!-- END ANSWER -->

# %% [markdown]
# ## Class frequencies and median-frequency weights
#
# In road scenes a few classes own most of the pixels. Median-frequency balancing (used by SegNet on CamVid) weighs
# each class by
#
# $$w_c = \frac{\mathrm{median}(f)}{f_c}, \qquad f_c = \frac{\text{pixels of class } c}{\text{pixels of the images that contain } c},$$
#
# so the class of median frequency gets weight 1, rarer ones more, frequent ones less. The per-image denominator
# keeps a class that appears in few images from looking rarer than it is where it does appear. The counts of the
# full CamVid training split (367 labels at 360×480, void excluded) are committed in
# `notebooks/data/camvid_train_class_counts.csv`; for shapes we count them here.

# %%
with open("data/camvid_train_class_counts.csv") as fh:
    rows = list(csv.reader(fh))
header, table = rows[0], np.array([[int(v) for v in row[1:]] for row in rows[1:]])
class_counts = table[:, :camvid.num_classes]                               # (367, 11), void column dropped
assert header[1:1 + camvid.num_classes] == camvid.class_names

# %% [markdown]
# ### Exercise 2: median-frequency weights
#
# Write `median_frequency(counts)`: `counts[i, c]` is the number of pixels of class `c` in image `i` (ignored pixels
# already excluded), `(N, K)`. Return the weights `(K,)` float64; the median runs over the classes that occur and a
# class that never occurs gets weight 0. The checker names the plain frequency (dividing by all pixels), the
# inverted ratio, a mean instead of the median, and a median that includes absent classes.

# %%
def median_frequency(counts):
    """w_c = median(f) / f_c, f_c = pixels of c / pixels of the images containing c; 0 for absent classes."""
    # BEGIN SOLUTION
    counts = np.asarray(counts, np.float64)                       # (N, K)
    per_image = counts.sum(1, keepdims=True)                      # (N, 1)
    images_with = ((counts > 0) * per_image).sum(0)               # (K,) pixels of images containing c
    present = images_with > 0
    f = np.zeros(counts.shape[1])
    f[present] = counts.sum(0)[present] / images_with[present]
    w = np.zeros(counts.shape[1])
    w[present] = np.median(f[present]) / f[present]
    return w
    # END SOLUTION


# %%
print(check("median_frequency_weights", median_frequency))

# %% [markdown]
# With the reference implementation (`tinydeeplab.exercises.data.median_frequency_weights`) on the CamVid training
# counts and on 200 synthetic-shapes labels:

# %%
weights = median_frequency_weights(class_counts)
share = class_counts.sum(0) / class_counts.sum()
for name, s, wt in sorted(zip(camvid.class_names, share, weights), key=lambda t: -t[1]):
    print(f"{name:11s} {s:7.2%} of the pixels   weight {wt:6.3f}")
assert weights[np.argmax(share)] < 1 < weights[np.argmin(share)]
assert np.isclose(np.median(weights[weights > 0]), 1.0)            # 11 classes: the median class gets 1
shapes = SyntheticShapes(length=200, size=(64, 64), seed=0)
shape_counts = np.array([np.bincount(shapes[i][1].ravel(), minlength=shapes.num_classes) for i in range(200)])
shape_weights = median_frequency_weights(shape_counts)
print("shapes:", {n: round(float(v), 3) for n, v in zip(shapes.class_names, shape_weights)})

fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
order = np.argsort(-share)
axes[0].bar(np.array(camvid.class_names)[order], share[order], color=camvid.palette[order] / 255, ec="k")
axes[0].set(yscale="log", ylabel="share of labelled pixels", title="CamVid train: class frequencies")
axes[1].bar(np.array(camvid.class_names)[order], weights[order], color=camvid.palette[order] / 255, ec="k")
axes[1].axhline(1, color="k", lw=0.8)
axes[1].set(ylabel="median-frequency weight", title="weights w_c = median(f) / f_c")
for ax in axes:
    ax.tick_params(axis="x", rotation=60)
plt.show()

# %% [markdown]
# **Inline question 2.** Median-frequency weights usually raise the mean IoU on CamVid but lower the overall pixel
# accuracy. Why both? And the loss divides by the sum of the weights (notebook 05): what would change without that
# normalisation?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The weights make a Pole pixel count tens of times as much as a Road pixel, so the network moves ambiguous
# pixels (a pole's blurry edge, a far-away pedestrian) towards the rare classes. That raises the rare classes' IoU,
# and mIoU averages classes equally, so it rises; but many of the moved pixels really were road or building, and
# pixel accuracy counts pixels, dominated by the frequent classes, so it drops. Without dividing by
# $\sum_{p} w_{y_p}$, the loss (and its gradient) would scale with how much rare content a batch happens to contain:
# the effective learning rate would jump from batch to batch. Normalising keeps the loss a weighted *mean*, of the
# same scale as the unweighted one.
# <!-- END ANSWER -->
