# %% [markdown]
# # 0. What is semantic segmentation?
#
# **The question.** What exactly does a segmentation network predict, how are its targets stored on disk, and how
# is it scored?
#
# **Why it matters.** Semantic segmentation gives every pixel a class: road, car, sky. Before any convolution,
# three details decide whether training works at all: a label file stores class *indices* (reading its colours
# instead gives silently wrong targets), some pixels are marked "don't care" with the **ignore label 255**, and
# the score, the mean intersection-over-union (mIoU), treats a small class as much as a large one. This notebook
# shows all three on three datasets (PASCAL VOC, CamVid and tinydeeplab's synthetic shapes) and the trade-off that
# shapes DeepLab: fine resolution for thin objects versus wide context for recognising them. You write the IoU and
# a label reader (graded by `tinydeeplab.exercises.check`) and answer two inline questions.
# Background: [Long et al. 2015](../docs/bibliography.md#long2015) (FCN), [Everingham et al. 2010](../docs/bibliography.md#everingham2010)
# (VOC), [Brostow et al. 2009](../docs/bibliography.md#brostow2009) (CamVid), [Chen et al. 2017](../docs/bibliography.md#chen2017) (DeepLabV3).

# %%
import io

import numpy as np
import matplotlib.pyplot as plt
from PIL import Image

from tinydeeplab.data import CamVid, SyntheticShapes
from tinydeeplab.data.base import voc_palette
from tinydeeplab.data.files import read_index_png
from tinydeeplab.exercises import check
from tinydeeplab.train.metrics import ConfusionMatrix
from tinydeeplab.viz import colorize

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## Label maps
#
# An image is an $H \times W \times 3$ array; its **label map** is an $H \times W$ array of integers, one class index
# per pixel ($0 \dots K-1$). The network outputs $K$ scores (logits) per pixel, $H \times W \times K$, and its prediction
# is their arg-max, again a label map. Colours only appear when we *draw* a label map, through a palette: row
# $c$ of a $K \times 3$ table is the colour of class $c$.

# %%
camvid = CamVid("data/camvid_sample", split="train")     # 3 CamVid frames, downscaled (see data/README.md)
shapes = SyntheticShapes(length=4, size=(96, 96), seed=1)
image, label = shapes[0]
print("image", image.shape, image.dtype, "| label", label.shape, label.dtype, "| classes present:",
      {int(c): shapes.class_names[c] for c in np.unique(label)})
assert label.shape == image.shape[:2] and set(np.unique(label)) <= set(range(shapes.num_classes))
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), layout="constrained")
axes[0].imshow(image); axes[0].set_title("image (H, W, 3)")
im = axes[1].imshow(label, cmap="viridis"); axes[1].set_title("label map (H, W): class indices")
fig.colorbar(im, ax=axes[1], shrink=0.8, ticks=range(shapes.num_classes))
axes[2].imshow(colorize(label, shapes.palette)); axes[2].set_title("drawn with the palette")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Palette PNGs: read indices, not colours
#
# VOC ships its labels as **palette PNGs** (PIL mode `"P"`): each pixel stores an index, and the file carries a
# 256-colour table for viewers. Opened in an image viewer you see colours; read with `np.array(Image.open(path))`
# you get the indices, which is what a loss needs. VOC is not on this machine, so we generate a VOC-style label
# (a "person", class 15, and a "dog", class 12, outlined by the 255 border VOC draws around objects) and write it the
# way VOC does, with `voc_palette` (class $c$'s colour built from the bits of $c$). CamVid in the SegNet layout
# uses plain grey PNGs whose values are the indices (0..10, 11 = void).

# %%
voc_label = np.zeros((60, 80), np.uint8)
yy, xx = np.mgrid[:60, :80]
voc_label[(yy - 28) ** 2 / 20 ** 2 + (xx - 28) ** 2 / 12 ** 2 < 1] = 15          # a person
voc_label[(yy > 30) & (yy < 55) & (xx > 40) & (xx < 72)] = 12                    # a dog
border = np.zeros_like(voc_label, bool)
for axis in (0, 1):
    for step in (1, -1):
        border |= np.roll(voc_label, step, axis) != voc_label
voc_label[border & (yy > 0) & (yy < 59) & (xx > 0) & (xx < 79)] = 255            # VOC's "void" outline

palette = voc_palette(256)
buffer = io.BytesIO()
png = Image.fromarray(voc_label, mode="P")
png.putpalette(palette.ravel().tolist())
png.save(buffer, format="PNG")
buffer.seek(0)
as_indices = read_index_png(buffer)
buffer.seek(0)
as_grey = np.array(Image.open(buffer).convert("L"))
print("mode:", Image.open(buffer).mode, "| indices read back:", sorted(np.unique(as_indices).tolist()),
      "| .convert('L') gives:", sorted(np.unique(as_grey).tolist()))
assert np.array_equal(as_indices, voc_label)
assert not np.array_equal(as_grey, voc_label)                  # the classic bug: luminance, not classes

fig, axes = plt.subplots(1, 4, figsize=(13, 3), layout="constrained")
axes[0].imshow(palette[:21][None], aspect="auto")
axes[0].set_title("VOC palette, classes 0..20"); axes[0].set_yticks([])
axes[0].set_xticks(range(0, 21, 5))
axes[1].imshow(palette[voc_label]); axes[1].set_title("what a viewer shows (255 = cream border)")
im = axes[2].imshow(as_indices, cmap="viridis"); axes[2].set_title("np.array(Image.open(...)): indices")
fig.colorbar(im, ax=axes[2], shrink=0.8)
im = axes[3].imshow(as_grey, cmap="viridis"); axes[3].set_title(".convert('L'): luminance (wrong)")
fig.colorbar(im, ax=axes[3], shrink=0.8)
for ax in axes[1:]:
    ax.axis("off")
plt.show()

# %% [markdown]
# ### Exercise 1: read a label PNG
#
# Write `read_label(path)` returning the class indices of a palette (VOC) or grey (CamVid) PNG as an `(H, W)` uint8
# array. The checker writes one file of each kind and names a conversion to RGB or to grey.

# %%
def read_label(path):
    """Class indices (H, W) uint8 of a palette or grey label PNG."""
    # BEGIN SOLUTION
    with Image.open(path) as im:
        return np.array(im, dtype=np.uint8)                   # mode "P" or "L": the stored values
    # END SOLUTION


# %%
print(check("read_label_png", read_label))

# %% [markdown]
# **Inline question 1.** Reading a VOC label with `Image.open(path).convert("L")` raises no error and gives an
# integer map of the right shape. What exactly goes wrong, and how would you notice it during training?
#
# <!-- BEGIN ANSWER -->
# **Answer.** `convert("L")` first looks each index up in the palette and then returns the *luminance* of that colour
# ($0.299R + 0.587G + 0.114B$), so class 15 (person, colour (192, 128, 128)) becomes 147 and the 255 border
# (224, 224, 192) becomes 220: values that are not classes at all. With 21 classes most of them are out of range, so a loss that
# checks its labels stops with an error (tinydeeplab's does); one that does not check either crashes on an index
# error or, worse, learns a scrambled mapping in which different classes share a value. The cure is to read the
# indices (`np.array(Image.open(path))`) and to check that every value is a class or 255.
# <!-- END ANSWER -->

# %% [markdown]
# ## The 255 ignore label
#
# Some pixels have no trustworthy class: VOC's annotators outlined every object with a 5-pixel band of 255 (the
# boundary is ambiguous), CamVid marks unlabelled "void" pixels (11 in the files, which tinydeeplab's `CamVid`
# reader maps to 255). The loss and the metrics skip these pixels entirely (notebook 05). We measure how many there
# are in the CamVid sample and in the generated VOC label.

# %%
ignored = [float((camvid[i][1] == 255).mean()) for i in range(len(camvid))]
print("CamVid sample, fraction of void (255) pixels per image:", np.round(ignored, 3).tolist())
print(f"generated VOC label: {np.mean(voc_label == 255):.1%} border pixels")
assert all(0 <= f < 0.5 for f in ignored) and (voc_label == 255).any()
cv_image, cv_label = camvid[0]
fig, axes = plt.subplots(1, 3, figsize=(12, 3), layout="constrained")
axes[0].imshow(cv_image); axes[0].set_title("CamVid frame")
axes[1].imshow(cv_label == 255, cmap="Reds"); axes[1].set_title("void pixels (255, ignored)")
axes[2].imshow(voc_label == 255, cmap="Reds"); axes[2].set_title("VOC-style border (255, ignored)")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## VOC, CamVid and shapes side by side
#
# PASCAL VOC 2012: 20 object classes + background, photos of varying size, objects usually large and centred,
# 255 borders. CamVid (SegNet version): 11 road-scene classes at 360×480 (here downscaled to 144×192), thin classes
# such as poles and signs, void = ignore. SyntheticShapes: 3 shapes + background, generated on the fly, which makes
# it ideal for tests and for a notebook that must run offline. The numbers below come from the dataset objects.

# %%
sh_image, sh_label = shapes[1]
rows = [("VOC (generated)", palette[voc_label], voc_label, 21),
        ("CamVid sample", cv_image, cv_label, camvid.num_classes),
        ("SyntheticShapes", sh_image, sh_label, shapes.num_classes)]
for name, img, lab, k in rows:
    present = sorted(int(c) for c in np.unique(lab) if c != 255)
    print(f"{name:16s} image {img.shape}, {k} classes, present here: {present}, ignored {np.mean(lab == 255):.1%}")
fig, axes = plt.subplots(2, 3, figsize=(12, 5.5), layout="constrained")
for col, (name, img, lab, k) in enumerate(rows):
    pal = palette if k == 21 else (camvid.palette if k == camvid.num_classes else shapes.palette)
    axes[0, col].imshow(img); axes[0, col].set_title(name)
    axes[1, col].imshow(colorize(lab, pal)); axes[1, col].set_title("label (black = ignore)" if col < 2 else "label")
for ax in axes.ravel():
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Resolution versus context
#
# A network recognises a pixel from its surroundings (a grey patch is road or sky depending on what is around it),
# so it must see a wide context; but it also has to place boundaries within a pixel or two, so it must keep
# resolution. Classification networks reach wide context by striding down to 1/32 of the image; DeepLab instead
# stops striding at output stride 16 or 8 and keeps the context with dilated convolutions (notebooks 01 and 03).
# How much does resolution alone cost? An **oracle** that knows the true label but can only predict at output
# stride $s$ (one label per $s \times s$ block, then nearest-neighbour upsampling) bounds every network working at that
# stride. Thin classes (pole, sign, pedestrian) suffer first. (The sample is downscaled 2.5x, so stride $s$ here
# corresponds to stride $2.5 s$ on full-size CamVid frames.)

# %%
def oracle_iou(label, s, k):
    """Per-class IoU of the true label sampled at stride s (block centres) and upsampled by nearest neighbour."""
    h, w = label.shape
    small = label[s // 2::s, s // 2::s]
    up = np.repeat(np.repeat(small, s, 0), s, 1)[:h, :w]
    pad_h, pad_w = h - up.shape[0], w - up.shape[1]
    up = np.pad(up, ((0, pad_h), (0, pad_w)), mode="edge")
    up = np.where(up == 255, 0, up)                       # a block centred on void predicts class 0
    cm = ConfusionMatrix(k)
    cm.update(up.astype(np.int64), label.astype(np.int64))
    return cm.iou()


strides = [1, 2, 4, 8, 16, 32]
per_class = np.array([np.nanmean([oracle_iou(camvid[i][1], s, camvid.num_classes) for i in range(len(camvid))],
                                 axis=0) for s in strides])           # (strides, K)
names = camvid.class_names
for s, row in zip(strides, per_class):
    print(f"stride {s:2d}: oracle mIoU {np.nanmean(row):.3f}   Pole {row[names.index('Pole')]:.3f}   "
          f"Road {row[names.index('Road')]:.3f}")
miou_by_stride = np.nanmean(per_class, 1)
assert np.isclose(miou_by_stride[0], 1.0) and miou_by_stride[-1] < miou_by_stride[2] < miou_by_stride[0]
assert per_class[4, names.index("Pole")] < per_class[4, names.index("Road")]

fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
for c in ("Road", "Sky", "Car", "Pedestrian", "Pole", "SignSymbol"):
    axes[0].plot(strides, per_class[:, names.index(c)], "o-", label=c)
axes[0].plot(strides, np.nanmean(per_class, 1), "k--", lw=2, label="mIoU")
axes[0].set(xscale="log", xticks=strides, xticklabels=strides, xlabel="output stride s",
            ylabel="oracle IoU", title="the best any prediction at stride s can do (CamVid sample)")
axes[0].legend(fontsize=7, ncol=2)
cy, cx = 75, 120
axes[1].imshow(cv_image)
for size, colour in ((8, "C3"), (32, "C1"), (96, "C0")):
    axes[1].add_patch(plt.Rectangle((cx - size / 2, cy - size / 2), size, size, fill=False, ec=colour, lw=2,
                                    label=f"{size} px context"))
axes[1].legend(loc="lower right", fontsize=7); axes[1].axis("off")
axes[1].set_title("context: what a pixel's neighbourhood shows")
plt.show()

# %% [markdown]
# ## IoU in one picture
#
# For a class $k$, compare the predicted region with the labelled one: **true positives** (both), **false positives**
# (predicted, not labelled) and **false negatives** (labelled, missed). Then
#
# $$\mathrm{IoU}_k = \frac{|\text{pred}_k \cap \text{label}_k|}{|\text{pred}_k \cup \text{label}_k|} = \frac{TP_k}{TP_k + FP_k + FN_k},
# \qquad \mathrm{mIoU} = \text{mean of } \mathrm{IoU}_k \text{ over the classes that occur}.$$
#
# All counts come from the **confusion matrix** $M$, $M_{ij}$ = pixels labelled $i$ and predicted $j$ (ignored pixels
# skipped): $TP_k = M_{kk}$, $FN_k$ = the rest of row $k$, $FP_k$ = the rest of column $k$. Below, a "prediction" that
# is the label shifted by 4 pixels: the IoU of each shape is what is left of the overlap.

# %%
pred = np.roll(sh_label, (4, 4), axis=(0, 1))
k = int(max(set(np.unique(sh_label)) - {0}))
tp, fp, fn = (pred == k) & (sh_label == k), (pred == k) & (sh_label != k), (pred != k) & (sh_label == k)
cm = ConfusionMatrix(shapes.num_classes)
cm.update(pred.astype(np.int64), sh_label.astype(np.int64))
print(f"class {k} ({shapes.class_names[k]}): TP {tp.sum()}, FP {fp.sum()}, FN {fn.sum()}, "
      f"IoU {tp.sum() / (tp.sum() + fp.sum() + fn.sum()):.3f} (ConfusionMatrix: {cm.iou()[k]:.3f})")
assert np.isclose(tp.sum() / (tp.sum() + fp.sum() + fn.sum()), cm.iou()[k])
picture = np.zeros(sh_label.shape + (3,))
picture[tp], picture[fp], picture[fn] = (0.2, 0.7, 0.2), (0.9, 0.6, 0.1), (0.8, 0.1, 0.1)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
axes[0].imshow(colorize(sh_label, shapes.palette)); axes[0].set_title("label")
axes[1].imshow(colorize(pred, shapes.palette)); axes[1].set_title("prediction (shifted by 4 px)")
axes[2].imshow(picture)
axes[2].set_title(f"class {shapes.class_names[k]}: TP green, FP orange, FN red\nIoU = {cm.iou()[k]:.2f}")
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ### Exercise 2: IoU and mIoU from a confusion matrix
#
# Write `iou_and_miou(matrix)` for a `(K, K)` confusion matrix (rows: label, columns: prediction): return the
# per-class IoU `(K,)` float64, NaN for a class that occurs neither in the labels nor in the predictions (its IoU is
# $0/0$), and the mIoU, the mean over the classes whose IoU is defined. A class that is only *predicted* has IoU 0,
# not NaN. The checker names recall or precision in place of IoU, Dice, absent classes scored 0 or 1, and a mean
# over all $K$ classes.

# %%
def iou_and_miou(matrix):
    """(per-class IoU with NaN for absent classes, mean IoU over the classes that occur)."""
    # BEGIN SOLUTION
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp                    # TP + FP + FN
    iou = np.full(len(tp), np.nan)
    iou[union > 0] = tp[union > 0] / union[union > 0]
    return iou, float(np.nanmean(iou)) if (union > 0).any() else float("nan")
    # END SOLUTION


# %%
print(check("iou_from_confusion", iou_and_miou))

# %% [markdown]
# **Inline question 2.** A validation set of road scenes contains no bicyclist at all, and the model never predicts
# one. Why should the bicyclist class be left out of the mIoU rather than counted as 0 (or 1)? And why is mIoU
# computed from one confusion matrix summed over the whole set, not averaged over per-image mIoUs?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Its IoU is $0/0$: there is no evidence either way. Counting it as 0 would penalise the model for a
# class it never had a chance to get right (every absent class drags the mean down by $1/K$); counting it as 1
# would reward it for nothing. A class that is only *predicted* (false positives, no label) is different: its IoU is
# a genuine 0. Summing the confusion matrix over the set first weighs every pixel of a class equally: per-image
# means would let a single image in which a class covers 20 pixels count as much as one in which it covers 20 000,
# and would make many more classes absent per image, so the two numbers differ and only the dataset-level one is
# what VOC and CamVid results report.
# <!-- END ANSWER -->
