# %% [markdown]
# # 3. Atrous Spatial Pyramid Pooling (ASPP)
#
# **The question.** How does DeepLab look at a pixel's surroundings at several scales at once, and when do its
# large atrous rates stop seeing anything but the pixel itself?
#
# **Why it matters.** Segmentation needs context (a grey patch is road or sky depending on what is around it)
# without losing resolution. ASPP provides it with parallel dilated convolutions, but a dilated tap that
# lands outside the feature map reads only padding: on a small map the big rates silently degenerate into
# $1\times1$ filters, and their weights never learn. Whether that happens depends on the map size, hence on
# the output stride, which you measure below for tinydeeplab's own recipes. You write two pieces (graded by
# `tinydeeplab.exercises.check`) and answer two inline questions.
#
# DeepLabV3's head looks at the deepest feature map $x$ of size $h \times w$. The paper trains with output stride
# 16 ($h = H/16$ for an $H \times H$ image) and rates 6/12/18, and evaluates at output stride 8 with the rates
# doubled; a ResNet without dilation ends at output stride 32. Five parallel branches with growing fields of
# view, then a $1\times1$ convolution mixing them:
#
# $$\begin{aligned}
# b_0 &= \mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{1\times1}(x))) \\
# b_r &= \mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{3\times3,\ \mathrm{dilation}\ r}(x))) \qquad r \in \{6, 12, 18\} \\
# b_{\mathrm{pool}} &= \mathrm{resize}_{h\times w}\big(\mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{1\times1}(\mathrm{GAP}(x))))\big) \\
# \mathrm{ASPP}(x) &= \mathrm{Dropout}\big(\mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{1\times1}([b_0, b_6, b_{12}, b_{18}, b_{\mathrm{pool}}])))\big)
# \end{aligned}$$
#
# ($\mathrm{GAP}$ = global average pooling, $[\cdot]$ = concatenation along channels; KerasHub uses 256 channels
# everywhere and no convolution biases). This notebook runs tinydeeplab's `ASPP` module
# (`tinydeeplab.models.ASPP`), looks inside it, and reproduces the observation in the DeepLabV3 paper
# (Chen et al., 2017, section 3.3) that motivated the image-pooling branch.

# %%
import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab import functional as F
from tinydeeplab.data import SyntheticShapes
from tinydeeplab.gradcheck import numerical_gradient
from tinydeeplab.exercises import check
from tinydeeplab.models import ASPP
from tinydeeplab.models.recipes import build_model
from tinydeeplab.nn.hooks import record_outputs

tinydeeplab.set_backend("numpy")      # the NumPy reference ops: nothing to compile
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## The branches, one by one
#
# We feed the ASPP a 65×65 "feature map": a synthetic image of shapes (3 channels, scaled to $[-1, 1]$), and record
# what each branch's convolution produces (`tinydeeplab.nn.hooks.record_outputs` captures the outputs of named
# submodules during a forward pass). The weights are random, so the outputs are not meaningful features, but the
# geometry is visible: a dilated $3\times3$ filter adds up 9 copies of its input shifted by $\pm r$, so with rate 18
# each shape appears as a ghostly 3×3 grid of copies 18 pixels apart, and the image-pooling branch is constant
# over the whole map.

# %%
image, label = SyntheticShapes(length=1, size=(65, 65), seed=3, max_shapes=2, colour_hints=True)[0]
x = (image.astype(np.float32) / 127.5 - 1.0)[None]            # (1, 65, 65, 3)

aspp = ASPP(in_channels=3, dilation_rates=[6, 12, 18], num_channels=8, seed=0)
print([name for name, _ in aspp.children()])
watch = ["branch0.conv", "branch1.conv", "branch2.conv", "branch3.conv", "pooling.gap", "pooling.relu",
         "pooling_resize", "concat"]
with record_outputs(aspp, watch) as seen:
    out = aspp.forward(x, training=False)
for name in watch:
    print(f"{name:15s} {seen[name].shape}")
print(f"{'output':15s} {out.shape}")

# %%
pooled = seen["pooling_resize"]                                  # (1, 65, 65, 8), constant over the map
alive = int(np.argmax(pooled[0, 0, 0]))                          # a channel the pooling ReLU left alive
assert pooled[0, 0, 0, alive] > 0
print("pooling branch per channel (after its ReLU):", pooled[0, 0, 0].round(3), "-> showing channel", alive)
panels = [("input", image, None), ("1x1 branch", seen["branch0.conv"][0, :, :, 0], None),
          ("3x3, rate 6", seen["branch1.conv"][0, :, :, 0], None),
          ("3x3, rate 12", seen["branch2.conv"][0, :, :, 0], None),
          ("3x3, rate 18", seen["branch3.conv"][0, :, :, 0], None),
          (f"image pooling, ch {alive}\n(constant {pooled[0, 0, 0, alive]:.2f})", pooled[0, :, :, alive],
           (0.0, float(pooled.max()) * 1.2)),
          ("ASPP output", out[0, :, :, 0], None)]
fig, axes = plt.subplots(1, len(panels), figsize=(16, 2.6), layout="constrained")
for ax, (title, picture, limits) in zip(axes, panels):
    vmin, vmax = limits if limits else (None, None)
    im = ax.imshow(picture, cmap=None if picture.ndim == 3 else "viridis", interpolation="nearest",
                   vmin=vmin, vmax=vmax)
    if picture.ndim == 2:
        fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Large rates on small maps: few valid taps
#
# With "same" padding, tap $(a, b) \in \{-1, 0, 1\}^2$ of a $3\times3$ filter at rate $r$ reads pixel
# $(i + r a,\ j + r b)$ for output $(i, j)$; if that lies outside the $S \times S$ map it reads zero padding and its
# weight does nothing. How many of the 9 weights touch real pixels? Convolve an **all-ones image** with an
# **all-ones kernel** and zero padding: the output at $(i, j)$ *is* the number of valid taps there. Averaging over
# the map gives the fraction of weights that are used.
#
# For a 513×513 input DeepLab's deepest map is 33×33 at output stride 16 (rates 6/12/18) and 65×65 at output
# stride 8 (rates doubled to 12/24/36).
#
# ### Exercise 1: the live-tap fraction without a convolution
#
# Write `live_tap_fraction(h, w, rate)`: the mean, over the output positions of an $h \times w$ map, of the
# fraction of the 9 taps of a 3×3 filter at this rate ("same" padding, stride 1) that read real pixels. Do not
# convolve: count per axis. Along an axis of length $S$, at how many of the $S$ output positions does the
# $+r$ tap land inside the map? The two axes are independent. The checker compares with the all-ones
# convolution on maps from 1×2 to 33×65 and rates 1 to 36.

# %%
def live_tap_fraction(h, w, rate):
    """Mean fraction of a 3x3 filter's taps, at this dilation rate, that read real pixels of an h x w map."""
    # BEGIN SOLUTION
    def per_axis(size):
        return (1 + 2 * max(size - rate, 0) / size) / 3        # centre always, each +-r tap at size - r places
    return per_axis(h) * per_axis(w)
    # END SOLUTION


# %%
print(check("live_tap_fraction", live_tap_fraction))

# %%
def valid_tap_counts(size, rate):
    """Number of 3x3 taps (of 9) that land inside a size x size map, at every output position."""
    ones = np.ones((1, size, size, 1))
    kernel = np.ones((3, 3, 1, 1))
    counts, cache = F.conv2d_forward(ones, kernel, dilation=rate, padding="same")
    return counts[0, :, :, 0], cache


rates = np.arange(1, 73)
curves = {}
for size in (65, 33):
    fractions, only_centre, all_nine = [], [], []
    for r in rates:
        counts, _ = valid_tap_counts(size, int(r))
        fractions.append(counts.mean() / 9)
        only_centre.append(np.mean(np.isclose(counts, 1)))
        all_nine.append(np.mean(np.isclose(counts, 9)))
    curves[size] = (np.array(fractions), np.array(only_centre), np.array(all_nine))
    print(f"{size}x{size}: rate 6 -> {curves[size][0][5]:.2f}, rate 12 -> {curves[size][0][11]:.2f}, "
          f"rate 18 -> {curves[size][0][17]:.2f}, rate 24 -> {curves[size][0][23]:.2f}, "
          f"rate 36 -> {curves[size][0][35]:.2f} of the weights used")

# %%
fig = plt.figure(figsize=(13, 3.6), layout="constrained")
sub = fig.subfigures(1, 2, width_ratios=[2, 1.3])
ax1, ax2 = sub[0].subplots(1, 2)
for size, colour in ((65, "C0"), (33, "C1")):
    frac, centre, nine = curves[size]
    ax1.plot(rates, frac, color=colour, label=f"{size}x{size} map")
    ax2.plot(rates, nine, color=colour, label=f"{size}x{size}: all 9 valid")
    ax2.plot(rates, centre, "--", color=colour, label=f"{size}x{size}: only the centre")
    ax1.axvline(size, color=colour, lw=0.5)
ax1.axhline(1 / 9, color="k", lw=0.5, ls=":")
ax1.text(70, 1 / 9 + 0.02, "1/9: a 1x1 filter", ha="right")
for r in (6, 12, 18):
    ax1.plot(r, curves[33][0][r - 1], "o", color="C1", ms=4)
for r in (12, 24, 36):
    ax1.plot(r, curves[65][0][r - 1], "s", color="C0", ms=4)
ax1.set(xlabel="atrous rate", ylabel="fraction of the 9 weights used", title="mean valid weights (markers: DeepLab rates)")
ax1.legend()
ax2.set(xlabel="atrous rate", ylabel="fraction of output positions", title="positions with 9 / 1 valid weights")
ax2.legend(fontsize=7)
axes = sub[1].subplots(1, 3)
for ax, r in zip(axes, (6, 18, 33)):
    counts, _ = valid_tap_counts(33, r)
    im = ax.imshow(counts, cmap="viridis", vmin=1, vmax=9)
    ax.set_title(f"33x33, rate {r}")
    ax.axis("off")
sub[1].colorbar(im, ax=axes, shrink=0.6, label="valid taps")
plt.show()

# %% [markdown]
# As the rate approaches the map size, the valid taps collapse to the centre one: for $r \ge S$ every off-centre tap
# reads only padding, and the $3\times3$ filter **degenerates to a $1\times1$ filter** (its centre weight). The
# DeepLabV3 paper draws the same curve for a 65×65 map and concludes that the largest rates no longer capture
# image-wide context; the image-pooling branch supplies that context instead.
#
# How large is the map in the models you train? tinydeeplab's from-scratch recipes put ASPP on the encoder's
# deepest level; the cell below measures its output stride (input side / ASPP map side) instead of assuming
# it, and what that means for a 512×512 training crop.

# %%
side = 64
for name in ("tiny", "small"):
    model = build_model(name, num_classes=2, seed=0)
    with record_outputs(model, ["backbone.aspp"]) as seen_model:
        model.forward(np.zeros((1, side, side, 3), np.float32), training=False)
    stride = side // seen_model["backbone.aspp"].shape[1]
    crop = 512 // stride
    used = {r: valid_tap_counts(crop, r)[0].mean() / 9 for r in model.backbone.aspp.dilation_rates}
    print(f"recipe {name!r}: ASPP at output stride {stride}; a 512x512 crop gives a {crop}x{crop} map, "
          f"where the rates use " + ", ".join(f"{r}: {u:.0%}" for r, u in used.items()) + " of their weights")

# %% [markdown]
# **Inline question 1.** A ResNet without dilation puts ASPP at output stride 32: a 512×512 crop gives a 16×16 map.
# For the rates 6, 12 and 18, which taps ever receive a gradient, and what fraction of the weights is used on
# average? What changes at output stride 16?
#
# <!-- BEGIN ANSWER -->
# **Answer.** On 16×16, per axis a $\pm r$ tap is inside at $\max(16 - r, 0)$ of 16 positions. Rate 6: all 9 taps
# are live somewhere, on average $((1 + 2 \cdot 10/16)/3)^2 = 56\,\%$ of the weights; rate 12: all 9 live, but only
# $((1 + 2\cdot 4/16)/3)^2 = 25\,\%$ on average; rate 18 $\ge 16$: only the centre tap, $1/9$, the branch is a
# $1\times1$ convolution and its 8 outer weights never get a gradient. At output stride 16 the map is 32×32:
# $77\,\%$, $56\,\%$ and $39\,\%$, and every tap of every branch learns. (Dilating the last stage costs about
# 4× its compute, the price DeepLab pays for this.)
# <!-- END ANSWER -->

# %% [markdown]
# tinydeeplab uses the same fact to save work: `conv2d_forward` skips a tap whose reads are all padding (the cache
# lists the `live_taps`), so an ASPP branch at rate 18 on a 16×16 map costs one $1\times1$ product, not nine.

# %%
xs = rng.standard_normal((1, 16, 16, 4))
w3 = rng.standard_normal((3, 3, 4, 5))
y3, cache = F.conv2d_forward(xs, w3, dilation=18, padding="same")
y1, _ = F.conv2d_forward(xs, w3[1:2, 1:2])                          # just the centre weight, as a 1x1 conv
print("rate 18 on 16x16: live taps", cache["live_taps"], "  equal to the 1x1 conv:", np.array_equal(y3, y1))
y6, cache6 = F.conv2d_forward(xs, w3, dilation=6, padding="same")
print("rate 6 on 16x16:  live taps", len(cache6["live_taps"]), "of 9")

fig, axes = plt.subplots(1, 3, figsize=(8, 2.8), layout="constrained")
for ax, (title, picture) in zip(axes, (("3x3 at rate 18", y3[0, :, :, 0]), ("its centre weight as 1x1", y1[0, :, :, 0]),
                                       ("3x3 at rate 6", y6[0, :, :, 0]))):
    ax.imshow(picture, cmap="viridis")
    ax.set_title(title); ax.axis("off")
plt.show()

# %% [markdown]
# ## Image pooling
#
# The fifth branch summarises the whole map in one vector, $\bar x_c = \frac{1}{hw}\sum_{i,j} x_{ijc}$, passes it
# through a $1\times1$ conv, BN and ReLU, and resizes the $1\times1$ result back to $h\times w$. A bilinear resize of a
# single pixel is a broadcast (its interpolation matrix is a column of ones), so every position receives the same
# global context vector.
#
# ### Exercise 2: the image-pooling branch
#
# Write `image_pooling_branch(x, kernel, gamma, beta, moving_mean, moving_var, eps)` in inference mode, with
# NumPy alone: global average pooling, the $1\times1$ convolution `kernel` `(1, 1, C, F)` (no bias), BN with the
# moving statistics, ReLU, and the resize back to $h \times w$. The checker compares with tinydeeplab's ops and
# recognises a missing step (resize, BN, ReLU, $\epsilon$), the wrong pooling (max or sum), batch statistics,
# and ReLU before BN.

# %%
def image_pooling_branch(x, kernel, gamma, beta, moving_mean, moving_var, eps):
    """ASPP image pooling in inference mode: x (N, h, w, C), kernel (1, 1, C, F) -> (N, h, w, F)."""
    n, h, w, _ = x.shape
    # BEGIN SOLUTION
    z = x.mean(axis=(1, 2), keepdims=True)                            # (N, 1, 1, C) global average
    z = z @ kernel[0, 0]                                              # (N, 1, 1, F) the 1x1 convolution
    z = gamma * (z - moving_mean) / np.sqrt(moving_var + eps) + beta   # BN with the moving statistics
    z = np.maximum(z, 0)                                              # ReLU
    return np.broadcast_to(z, (n, h, w, z.shape[3])).copy()           # bilinear from 1 x 1 = broadcast
    # END SOLUTION


# %%
print(check("image_pooling_branch", image_pooling_branch))

# %% [markdown]
# Inside the `ASPP` module above, the same steps, recorded during its forward pass:

# %%
gap, z = seen["pooling.gap"], seen["pooling.relu"]                 # (1, 1, 1, 3), (1, 1, 1, 8)
print("GAP == mean of the input per channel:", np.allclose(gap.ravel(), x.mean(axis=(0, 1, 2)), atol=1e-6))
print("constant over the map:", bool(np.all(pooled == pooled[:, :1, :1, :])),
      " resize of the 1x1 map == broadcast:", np.allclose(pooled, np.broadcast_to(z, pooled.shape)))

fig, axes = plt.subplots(1, 3, figsize=(11, 2.8), layout="constrained")
axes[0].bar(range(3), gap.ravel(), color=["C3", "C2", "C0"])
axes[0].set(title="GAP(x), per input channel", xticks=range(3), xticklabels=["R", "G", "B"])
axes[1].bar(range(8), z.ravel(), color="C4")
axes[1].set(title="after 1x1 conv, BN, ReLU", xlabel="channel")
im = axes[2].imshow(pooled[0, :, :, alive], cmap="viridis", vmin=0.0, vmax=float(pooled.max()) * 1.2)
fig.colorbar(im, ax=axes[2], shrink=0.8)
axes[2].set_title(f"channel {alive} resized back: constant"); axes[2].axis("off")
plt.show()

# %% [markdown]
# **Inline question 2.** Why is the bilinear resize of a $1\times1$ map a broadcast, whatever the pixel-centre
# convention? What does this branch give the head that the rate-18 branch on a 16×16 map cannot?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Each output of a bilinear resize is a weighted average of input pixels whose weights sum to 1
# (edges are clamped); with a single input pixel every weight falls on it, so every output equals it. The
# branch gives each position a function of the *whole* map (its channel means), i.e. image-level context.
# The rate-18 branch on a 16×16 map has degenerated into a $1\times1$ convolution, which sees only the pixel
# itself: the widest-looking branch is the most local one, exactly the DeepLabV3 paper's argument for adding
# image pooling.
# <!-- END ANSWER -->

# %% [markdown]
# ## The backward pass: gradients add where branches fork
#
# All five branches read the same $x$, so by the multivariable chain rule their gradients **add**:
#
# $$\frac{\partial L}{\partial x} = \frac{\partial L}{\partial x}\Big|_{1\times1}
#   + \sum_{r \in \text{rates}} \frac{\partial L}{\partial x}\Big|_{\text{rate } r}
#   + \frac{\partial L}{\partial x}\Big|_{\mathrm{pool}}.$$
#
# The demo below uses a small ASPP with rates 1, 2, 3 (on a 5×6 map, so that the central-difference check is
# quick): `branch0` is the $1\times1$ branch, `branch1`..`branch3` the rates 1, 2, 3.
#
# `ASPP.backward` does exactly this after splitting the gradient of the concatenation into one slice per branch. We
# repeat its steps by hand to see each branch's share (a branch whose ReLUs are all off for this input would get
# none), then check the total against central differences (float64, inference mode).

# %%
rg = np.random.default_rng(0)
small = ASPP(in_channels=2, dilation_rates=[1, 2, 3], num_channels=3, seed=0).astype(np.float64)
xg = rg.standard_normal((1, 5, 6, 2))
y = small.forward(xg, training=False)
c = rg.standard_normal(y.shape)                                   # random cotangent
dx = small.backward(c)

# the same steps, one branch at a time
d_parts = small.concat.backward(small.projection.backward(c))     # one gradient slice per branch
shares = {f"branch{i}": b.backward(d) for i, (b, d) in enumerate(zip(small.branches(), d_parts[:-1]))}
shares["pooling"] = small.pooling.backward(small.pooling_resize.backward(d_parts[-1]))
print("sum of the branch shares == ASPP.backward:", np.allclose(sum(shares.values()), dx))


def L():
    return float(np.sum(small.forward(xg, training=False) * c))


numeric = numerical_gradient(L, xg)
print("max |analytic - numeric| =", np.abs(dx - numeric).max())

fig, axes = plt.subplots(1, 2, figsize=(10, 3), layout="constrained")
names = list(shares)
axes[0].bar(names, [np.linalg.norm(v) for v in shares.values()], color="C0")
axes[0].set(title="norm of each branch's share of dL/dx", ylabel="L2 norm")
axes[0].tick_params(axis="x", labelsize=8)
axes[1].plot(numeric.ravel(), dx.ravel(), "o", ms=3)
lim = np.abs(numeric).max()
axes[1].plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
axes[1].set(xlabel="central difference", ylabel="ASPP.backward", title="dL/dx: analytic vs numeric")
plt.show()
