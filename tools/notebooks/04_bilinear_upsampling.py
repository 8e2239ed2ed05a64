# %% [markdown]
# # 4. Bilinear upsampling: sample positions, the adjoint, and why classifying first is exact
#
# **The question.** Where exactly does a bilinear resize read its input, what is its backward pass, and why may
# DeepLab classify its small feature map *before* upsampling it to the image size?
#
# **Why it matters.** DeepLab's encoder ends at a reduced resolution: the paper trains at output stride 16 and
# evaluates at output stride 8 (a ResNet without dilation ends at 32; notebook 03 measures tinydeeplab's
# recipes), and the V3+ decoder works at 1/4. Every mask therefore goes through one or two bilinear
# resizes. Two conventions for *where* the samples sit coexist (half-pixel centres and align-corners); mixing
# them is a classic reason for ported weights giving masks shifted by a few pixels. You write the resize and its
# backward (graded by `tinydeeplab.exercises.check`) and answer two inline questions.
#
# Along one axis, resizing $n_{in}$ samples to $n_{out}$ is a linear map $\mathrm{out} = R\,\mathrm{in}$ with a sparse
# $n_{out} \times n_{in}$ matrix $R$: output $o$ mixes two neighbouring inputs,
#
# $$\mathrm{out}[o] = (1 - t_o)\,\mathrm{in}[i_0(o)] + t_o\,\mathrm{in}[i_1(o)] .$$
#
# In 2-D the resize is separable: $Y = R_h\, X\, R_w^\top$ for every channel. Everything below uses
# `tinydeeplab.functional.bilinear_resize_forward` / `bilinear_resize_backward` and the matrix builder
# `tinydeeplab.functional.resize.interpolation_matrix`. Background: [Chen et al. 2017](../docs/bibliography.md#chen2017)
# (DeepLabV3), [Chen et al. 2018](../docs/bibliography.md#chen2018) (V3+), [Long et al. 2015](../docs/bibliography.md#long2015)
# (FCN, which first upsampled logits).

# %%
import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab import functional as F
from tinydeeplab.exercises import check
from tinydeeplab.functional.resize import interpolation_matrix
from tinydeeplab.functional.resize_coeffs import bilinear_coefficients
from tinydeeplab.gradcheck import check_gradients
from tinydeeplab.models.recipes import build_model

tinydeeplab.set_backend("numpy")
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## Where are the samples? Half-pixel centres vs align-corners
#
# Put the pixels on a continuous axis $u$: pixel $k$ of an $n$-pixel axis covers $[k, k+1)$, with its centre at
# $u = k + \tfrac12$. Resizing to $n_{out}$ pixels stretches the axis by $n_{out}/n_{in}$, so the centre of output
# pixel $o$, at $u_{out} = o + \tfrac12$, lands at $u = (o + \tfrac12)\, n_{in}/n_{out}$ on the input axis. Interpolation
# weights are easiest in *index* coordinates, where pixel $k$'s centre is at $k$ (subtract $\tfrac12$):
#
# $$\text{half-pixel centres:}\qquad \mathrm{src}(o) = \big(o + \tfrac12\big)\frac{n_{in}}{n_{out}} - \tfrac12 .$$
#
# Then $i_0 = \lfloor \mathrm{src} \rfloor$, $i_1 = i_0 + 1$, $t = \mathrm{src} - i_0$, and both indices are clamped to
# $[0, n_{in}-1]$ (the **edge clamp**: a sample left of the first centre just copies pixel 0). This is what Keras 3
# (`UpSampling2D(interpolation="bilinear")`, `Resizing`) and TensorFlow 2 do, and what KerasHub's DeepLab uses.
# The figure below draws the continuous axis $u$ (pixel intervals, centres at $k + \tfrac12$), so every sample
# is plotted at $\mathrm{src} + \tfrac12$.
#
# The older **align-corners** convention instead pins the centres of the corner pixels together:
#
# $$\text{align corners:}\qquad \mathrm{src}(o) = o\,\frac{n_{in}-1}{n_{out}-1}.$$
#
# Its effective scale is $(n_{in}-1)/(n_{out}-1)$, not $n_{in}/n_{out}$, so the image shifts slightly and is stretched
# differently. TensorFlow 1 code (including the original DeepLab release) often used it; mixing the two
# conventions is a classic reason for ported weights giving slightly wrong masks.

# %%
n_in, n_out = 4, 7
src_half = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
src_corners = np.arange(n_out) * (n_in - 1) / (n_out - 1)


def matrix_from_src(src, n_in):
    """Bilinear interpolation matrix from sample positions (clamped at both ends)."""
    r = np.zeros((len(src), n_in))
    i0 = np.floor(src).astype(int)
    t = src - i0
    for o, (i, w) in enumerate(zip(i0, t)):
        r[o, np.clip(i, 0, n_in - 1)] += 1 - w
        r[o, np.clip(i + 1, 0, n_in - 1)] += w
    return r


R_half, R_corners = matrix_from_src(src_half, n_in), matrix_from_src(src_corners, n_in)
i0, i1, t = bilinear_coefficients(n_in, n_out)
print("src (half-pixel):   ", src_half.round(3))
print("src (align corners):", src_corners.round(3))
print("library i0, i1, t:  ", i0, i1, t.round(3))
print("library matrix == half-pixel formula:", np.allclose(interpolation_matrix(n_in, n_out), R_half))
print("rows sum to 1:", R_half.sum(1), R_corners.sum(1))
u_half = src_half + 0.5                                   # the samples on the continuous axis u
assert np.allclose(u_half, (np.arange(n_out) + 0.5) * n_in / n_out)   # output centres, scaled: nothing else
assert np.allclose(interpolation_matrix(n_in, n_out), R_half) and np.allclose(R_half.sum(1), 1)

signal = np.array([0.0, 3.0, 1.0, 2.0])

# %%
fig = plt.figure(figsize=(13, 3.8), layout="constrained")
ax_axis, ax_sig, ax_m1, ax_m2 = fig.subplots(1, 4, gridspec_kw={"width_ratios": [2.2, 2, 1, 1]})
for k in range(n_in):                                                 # input pixels as intervals
    ax_axis.add_patch(plt.Rectangle((k, 0.75), 1, 0.5, fc="0.85", ec="0.4"))   # pixel k covers [k, k + 1)
    ax_axis.plot(k + 0.5, 1, "ks")                                            # its centre at k + 1/2
ax_axis.plot(src_half + 0.5, np.full(n_out, 0.4), "o", color="C0", label="half-pixel centres")
ax_axis.plot(src_corners + 0.5, np.full(n_out, 0.1), "^", color="C1", label="align corners")
for o in range(n_out):
    ax_axis.annotate("", (u_half[o], 0.75), (u_half[o], 0.45), arrowprops=dict(arrowstyle="-", color="C0", lw=0.5))
ax_axis.axvspan(0, 0.5, color="C3", alpha=0.15)                          # outside the first/last centre:
ax_axis.axvspan(n_in - 0.5, n_in, color="C3", alpha=0.15)                # the edge clamp copies the edge pixel
ax_axis.text(0.05, 1.35, "edge clamp", color="C3", fontsize=8)
ax_axis.set(xlim=(-0.2, n_in + 0.2), ylim=(-0.1, 1.6), yticks=[], xticks=range(n_in + 1),
            xlabel="u (pixel k covers [k, k+1), centre k + 1/2)",
            title=f"where {n_out} output samples read a {n_in}-pixel input")
ax_axis.legend(loc="upper right", fontsize=7)
ax_sig.plot(np.arange(n_in) + 0.5, signal, "ks-", label="input (at pixel centres)")
ax_sig.plot(src_half + 0.5, R_half @ signal, "o", color="C0", label="half-pixel")
ax_sig.plot(src_corners + 0.5, R_corners @ signal, "^", color="C1", label="align corners")
ax_sig.set(xlabel="u", title="the resized values, plotted where they were sampled")
ax_sig.legend(fontsize=7)
for ax, m, title in ((ax_m1, R_half, "R, half-pixel"), (ax_m2, R_corners, "R, align corners")):
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(m):
        if v:
            ax.text(c, r, f"{v:.2f}".rstrip("0").rstrip("."), ha="center", va="center", fontsize=7)
    ax.set(title=title, xlabel="input", ylabel="output", xticks=range(n_in), yticks=range(n_out))
plt.show()

# %% [markdown]
# ### Exercise 1: the resize, by hand
#
# Write `resize_bilinear(x, size)` for `x` of shape `(N, H, W, C)` and `size = (H_out, W_out)`: half-pixel centres,
# edge clamp, no antialiasing (the same two-tap formula when shrinking), the dtype of `x`. Loops over output rows
# and columns are fine; the checker compares with `bilinear_resize_forward` on six cases (up, down, mixed, float32)
# and recognises align-corners, TensorFlow 1's `src = o n_in / n_out`, swapped weights and a missing clamp.

# %%
def resize_bilinear(x, size):
    """Bilinear resize of x (N, H, W, C) to size (H_out, W_out), half-pixel centres and edge clamp."""
    # BEGIN SOLUTION
    def taps(n_in, n_out):                                   # (i0, i1, t) per output index
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        i0 = np.floor(src).astype(int)
        return np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1), src - i0

    r0, r1, tr = taps(x.shape[1], size[0])
    c0, c1, tc = taps(x.shape[2], size[1])
    rows = (1 - tr)[None, :, None, None] * x[:, r0] + tr[None, :, None, None] * x[:, r1]    # (N, H_out, W, C)
    out = (1 - tc)[None, None, :, None] * rows[:, :, c0] + tc[None, None, :, None] * rows[:, :, c1]
    return out.astype(x.dtype)                               # (N, H_out, W_out, C)
    # END SOLUTION


# %%
print(check("bilinear_resize", resize_bilinear))

# %% [markdown]
# **Inline question 1.** A model trained with align-corners resizing is run with half-pixel resizing (or the
# reverse), upsampling its logits by a factor 16. Where in the mask is the misplacement largest, and how large
# is it? (The cell below measures it; answer from the two formulas first.)
#
# <!-- BEGIN ANSWER -->
# **Answer.** The difference of the two sample positions, $d(o) = (o + \tfrac12)\,s - \tfrac12 - o\,\frac{n_{in}-1}{n_{out}-1}$
# with $s = n_{in}/n_{out}$, is linear in $o$ and zero in the middle of the image, so the centre is right and the
# error grows towards the borders, reaching $\tfrac12(1 - s)$ *input* pixels at the first and last output pixel
# (the two conventions disagree by a slight stretch, not a shift). For a factor 16 that is
# $\tfrac12 \cdot \tfrac{15}{16} \approx 0.47$ feature pixels, about 7.5 image pixels at the image border: enough to
# move a thin object's mask off the object, and a classic sign of a porting mistake.
# <!-- END ANSWER -->

# %%
n_feat, factor = 33, 16
n_img = n_feat * factor
shift = (np.arange(n_img) + 0.5) / factor - 0.5 - np.arange(n_img) * (n_feat - 1) / (n_img - 1)   # input px
image_px = shift * factor                                                                             # image px
print(f"largest misplacement {np.abs(image_px).max():.2f} image pixels at output {np.argmax(np.abs(image_px))}, "
      f"{np.abs(image_px[n_img // 2]):.2f} in the middle")
assert np.isclose(np.abs(shift).max(), 0.5 * (1 - 1 / factor))
assert np.argmax(np.abs(image_px)) in (0, n_img - 1)
fig, ax = plt.subplots(figsize=(6, 2.4), layout="constrained")
ax.plot(image_px)
ax.axhline(0, color="k", lw=0.5)
ax.set(xlabel="output pixel (image row)", ylabel="half-pixel minus align-corners\n(image pixels)",
       title=f"{n_feat} feature pixels upsampled x{factor}: where the conventions disagree")
plt.show()

# %% [markdown]
# ## The backward pass is the adjoint
#
# Flatten one channel of an $H \times W$ image to a vector $x$; the 2-D resize is $y = A x$ with $A = R_h \otimes R_w$
# (Kronecker product). For $L = \langle y, c\rangle$ the gradient is
#
# $$\frac{\partial L}{\partial x} = A^\top c, \qquad\text{i.e.}\qquad \delta X = R_h^\top\, \delta Y\, R_w ,$$
#
# the **adjoint** (transpose) of the forward map, which is what `bilinear_resize_backward` computes. The defining
# property of the adjoint is $\langle A x, y\rangle = \langle x, A^\top y\rangle$ for all $x, y$; we check it with random
# arrays, check that $A$ built with `np.kron` reproduces the forward op, and run the library's gradient checker.
#
# Where the forward *gathers* (each output reads up to 4 inputs), the backward *splats*: a gradient at one output
# pixel is spread over the (up to) 4 input pixels it was interpolated from, with the same bilinear weights. The total
# an input pixel receives from an all-ones gradient is the column sum of $A$: uniform for an integer factor, uneven
# for a fractional one.

# %%
h, w, H, W = 5, 7, 9, 12
x = rng.standard_normal((2, h, w, 3))
y, cache = F.bilinear_resize_forward(x, (H, W))
c = rng.standard_normal(y.shape)
dx = F.bilinear_resize_backward(c, cache)
print("<A x, c> =", np.sum(y * c))
print("<x, A^T c> =", np.sum(x * dx))

A = np.kron(interpolation_matrix(h, H), interpolation_matrix(w, W))               # (H*W, h*w)
print("kron(R_h, R_w) @ x == forward:", np.allclose(A @ x[0, :, :, 0].ravel(), y[0, :, :, 0].ravel()))
print("A^T @ c == backward:          ", np.allclose(A.T @ c[0, :, :, 0].ravel(), dx[0, :, :, 0].ravel()))
print(check_gradients(F.bilinear_resize_forward, F.bilinear_resize_backward, {"x": x}, kwargs={"size": (H, W)},
                      rng=1))

# %% [markdown]
# ### Exercise 2: the backward pass (the adjoint)
#
# Write `resize_bilinear_backward(dy, in_size)`: given the gradient `dy` `(N, H_out, W_out, C)` of a resize from
# `in_size = (H, W)`, return `dx` `(N, H, W, C)`. Each output pixel gives its `dy`, times the same bilinear weights,
# to the (up to four) input pixels it read; where the edge clamp makes two taps the same pixel, both
# contributions add up. The checker compares with `bilinear_resize_backward` and then runs the float64
# central-difference check against the reference forward.

# %%
def resize_bilinear_backward(dy, in_size):
    """Gradient of a half-pixel bilinear resize from in_size (H, W): dx = R_h^T dy R_w per image and channel."""
    # BEGIN SOLUTION
    def matrix(n_in, n_out):                                 # R, (n_out, n_in): out = R @ in
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        i0 = np.floor(src).astype(int)
        r = np.zeros((n_out, n_in))
        np.add.at(r, (np.arange(n_out), np.clip(i0, 0, n_in - 1)), 1 - (src - i0))
        np.add.at(r, (np.arange(n_out), np.clip(i0 + 1, 0, n_in - 1)), src - i0)
        return r

    r_h, r_w = matrix(in_size[0], dy.shape[1]), matrix(in_size[1], dy.shape[2])
    return np.einsum("ah,nabc,bw->nhwc", r_h, dy, r_w)      # (N, H, W, C)
    # END SOLUTION


# %%
print(check("bilinear_resize_backward", resize_bilinear_backward))

# %%
def splat(h, w, H, W, dy):
    _, cache = F.bilinear_resize_forward(np.zeros((1, h, w, 1)), (H, W))
    return F.bilinear_resize_backward(dy[None, :, :, None], cache)[0, :, :, 0]


one_hot = np.zeros((8, 8)); one_hot[3, 5] = 1.0
fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), layout="constrained")
axes[0].imshow(one_hot, cmap="Greys"); axes[0].set_title("one-hot gradient at output (3, 5)\n(8x8 output)")
s = splat(4, 4, 8, 8, one_hot)
axes[1].imshow(s, cmap="Blues", vmin=0)
for (r, cc), v in np.ndenumerate(s):
    if v:
        axes[1].text(cc, r, f"{v:.4g}", ha="center", va="center")
axes[1].set_title("splat onto the 4x4 input\n(bilinear weights, sum 1)")
for ax, (hi, wi) in zip(axes[2:], ((4, 4), (5, 5))):
    cover = splat(hi, wi, 8, 8, np.ones((8, 8)))
    im = ax.imshow(cover, cmap="viridis")
    for (r, cc), v in np.ndenumerate(cover):
        ax.text(cc, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_title(f"all-ones gradient, {hi}x{wi} -> 8x8:\ncolumn sums of A")
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.show()

# %% [markdown]
# **Inline question 2.** The backward of a 2x upsampling maps an $2h \times 2w$ gradient to $h \times w$. Why is it
# *not* a bilinear downsampling of `dy` by 2 (what would go wrong in the all-ones panels above)?
#
# <!-- BEGIN ANSWER -->
# **Answer.** A resize is an *interpolation*: each of its output pixels is a weighted **average** (the rows of $R$ sum
# to 1), so downsampling an all-ones gradient returns ones. The backward is the transpose $R^\top$, whose rows
# are the *columns* of $R$: an input pixel receives the **sum** of the gradients of every output that read it, so an
# all-ones gradient gives the column sums, 4 for a 2x upsampling in 2-D (the weights an input pixel gives to its
# outputs add up to 4), and uneven totals for a fractional factor (the 5x5 panel), where some input pixels are read more
# than others. Using a downsample would scale every gradient by about 1/4 and get the uneven weighting wrong.
# <!-- END ANSWER -->

# %% [markdown]
# ## Why classifying before upsampling is exact
#
# The segmenter ends with a $1\times1$ convolution (classifier, $C \to K$ channels) and a bilinear upsampling to the
# image size. Write the features of one image as a matrix $F$ (pixels × $C$). The $1\times1$ conv acts on the
# channel axis, $Z = F\,W + \mathbf 1\, b^\top$, and the resize acts on the pixel axis, $U = R_h \otimes R_w$. Then
#
# $$U\,(F W + \mathbf 1 b^\top) = (U F)\, W + (U \mathbf 1)\, b^\top = (U F)\, W + \mathbf 1 b^\top ,$$
#
# because matrix products associate and **every row of $U$ sums to 1** ($R_h \mathbf 1 = \mathbf 1$, $R_w \mathbf 1 = \mathbf 1$),
# so even a bias commutes with the resize. Classifying at 1/4 resolution and upsampling $K$ channels gives the same
# logits as upsampling $C$ channels and classifying every full-resolution pixel. For KerasHub's DeepLabV3+ at
# 512×512 ($C = 256$, $K = 21$, features 128×128) the classifier shrinks from $512^2 \cdot 256 \cdot 21 \approx 1.4$ G
# multiply-adds to 88 M, and the resize moves 21 channels instead of 256. tinydeeplab's
# `DeepLabV3ImageSegmenter` does this by default (`classify_before_upsample=True`).
#
# The argument needs linearity: put a nonlinearity between the two (e.g. take the arg-max labels first and upsample
# those) and the orders differ, which is why the model upsamples logits, not labels. How *many* pixels differ is
# not a constant of the method: the disagreement lives only in the upsampling blocks next to a label boundary
# of the small map, so the fraction is about (boundary length x upsampling factor) / area. The cell measures it
# on random logits (16x16, 5 classes, a boundary almost everywhere: the worst case) and on smooth ones with a few
# large regions, closer to what a trained network gives; asserted: it never happens away from a boundary.

# %%
f = rng.standard_normal((1, 16, 16, 64))                      # features at 1/4 resolution, float64
w = rng.standard_normal((1, 1, 64, 5)); b = rng.standard_normal(5)
z_small, _ = F.conv2d_forward(f, w, b)                          # classify first ...
route_a, _ = F.upsample_bilinear_forward(z_small, 4)            # ... then upsample 5 channels
f_big, _ = F.upsample_bilinear_forward(f, 4)                    # upsample 64 channels ...
route_b, _ = F.conv2d_forward(f_big, w, b)                      # ... then classify 64x64 pixels
print("max |classify-then-upsample - upsample-then-classify| =", np.abs(route_a - route_b).max())

# the same switch inside a whole (untrained) model, float32, default ops
model = build_model("tiny", num_classes=4, seed=0)
image = rng.uniform(-1, 1, size=(1, 64, 64, 3)).astype(np.float32)
model.classify_before_upsample = True
logits_a = model.forward(image)
model.classify_before_upsample = False
logits_b = model.forward(image)
model.classify_before_upsample = True
print("tiny DeepLabV3+, both orders: max |difference| =", np.abs(logits_a - logits_b).max(),
      "(float32 round-off), max |logit| =", np.abs(logits_a).max())

# a nonlinearity in between breaks it: upsampling the label map (nearest) vs arg-max of upsampled logits
labels_small = z_small[0].argmax(-1)
labels_nearest = np.repeat(np.repeat(labels_small, 4, 0), 4, 1)
labels_exact = route_a[0].argmax(-1)
differ = labels_nearest != labels_exact
# where they can differ: only in 4x4 blocks whose small pixel has one of its 8 neighbours of another label
# (if all the pixels a bilinear sample mixes agree on the arg-max, their convex combination does too)
padded = np.pad(labels_small, 1, mode="edge")
edge = np.zeros_like(labels_small, bool)
for di in range(3):
    for dj in range(3):
        edge |= padded[di:di + 16, dj:dj + 16] != labels_small
edge_blocks = np.repeat(np.repeat(edge, 4, 0), 4, 1)
assert not (differ & ~edge_blocks).any()
print(f"random logits: pixels where upsampled labels differ from labels of upsampled logits: {differ.mean():.1%} "
      f"(boundary blocks: {edge_blocks.mean():.0%} of the image)")

# the same comparison for smooth logits (few, large regions, as a trained network gives): far fewer pixels
smooth, _ = F.bilinear_resize_forward(rng.standard_normal((1, 4, 4, 5)), (16, 16))
smooth_small = smooth[0].argmax(-1)
smooth_up, _ = F.upsample_bilinear_forward(smooth, 4)
smooth_differ = np.repeat(np.repeat(smooth_small, 4, 0), 4, 1) != smooth_up[0].argmax(-1)
print(f"smooth logits: {smooth_differ.mean():.1%} of the pixels differ")
assert smooth_differ.mean() < differ.mean()

fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), layout="constrained")
axes[0].imshow(route_a[0, :, :, 0], cmap="viridis"); axes[0].set_title("classify, then upsample (class 0)")
axes[1].imshow(route_b[0, :, :, 0], cmap="viridis"); axes[1].set_title("upsample, then classify (class 0)")
im = axes[2].imshow(np.abs(route_a - route_b)[0].max(-1), cmap="magma")
fig.colorbar(im, ax=axes[2], shrink=0.8); axes[2].set_title("|difference| (round-off)")
axes[3].imshow(differ, cmap="Reds")
axes[3].set_title("nonlinear first (labels, then upsample):\npixels that differ")
for ax in axes:
    ax.axis("off")
plt.show()
