# %% [markdown]
# # 5. Softmax cross-entropy with an ignore label and class weights
#
# **The question.** What loss does a segmentation network minimise, how do the ignore label and class weights
# enter it, and what gradient flows back into the logits?
#
# **Why it matters.** The loss is the only thing training sees. Get the ignore label wrong and the network learns
# to predict "border" or "void"; normalise the class weights wrongly and the learning rate silently changes with
# the content of the batch; compute the log-sum-exp naively and a confident network produces NaN. You write the
# loss and its gradient (graded by `tinydeeplab.exercises.check`) and answer two inline questions.
# The weighted loss follows [Paszke et al. 2016](../docs/bibliography.md#paszke2016) and
# [Badrinarayanan et al. 2017](../docs/bibliography.md#badrinarayanan2017); the ignore label is VOC's
# ([Everingham et al. 2010](../docs/bibliography.md#everingham2010)).
#
# Segmentation is classification at every pixel. For the logits $z \in \mathbb R^K$ of one pixel and its label $y$:
#
# $$p_k = \frac{e^{z_k}}{\sum_j e^{z_j}}, \qquad
#   \ell = -\log p_y = \log\sum_j e^{z_j} - z_y .$$
#
# Datasets mark pixels that should not count (object borders in VOC, "void" in CamVid) with an **ignore label**
# (255), and unbalanced datasets weight rare classes up with **class weights** $w_k$. tinydeeplab's loss is the
# weighted mean over the valid pixels $V = \{p : y_p \ne 255\}$:
#
# $$\mathcal L = \frac{\sum_{p \in V} w_{y_p}\, \ell_p}{\sum_{p \in V} w_{y_p}}
#   \qquad (w \equiv 1 \text{ without class weights}; \ \mathcal L = 0 \text{ if } V = \emptyset).$$
#
# The op pair is `tinydeeplab.functional.softmax_cross_entropy_forward(logits, labels, *, ignore_label=255,
# class_weights=None) -> (loss, cache)` and `softmax_cross_entropy_backward(dloss, cache) -> dlogits`.

# %%
import numpy as np
import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap

from tinydeeplab import functional as F
from tinydeeplab.exercises import check
from tinydeeplab.gradcheck import check_gradients, numerical_gradient

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## A stable log-sum-exp
#
# $e^{z}$ overflows float32 for $z > 88$, and logits of a confident network can be large. Subtracting the maximum
# $m = \max_k z_k$ changes nothing mathematically,
#
# $$\log\sum_j e^{z_j} = m + \log\sum_j e^{z_j - m},$$
#
# but now every exponent is $\le 0$ and the sum is between 1 and $K$: no overflow, and no $\log 0$. As a function of
# the margin $\Delta = z_y - \max_{k\ne y} z_k$ the loss behaves like $\log(1 + (K-1)e^{-\Delta})$ when the other
# logits are tied: linear in $-\Delta$ for a confident mistake, exponentially small for a confident success.

# %%
def naive_nll(z, y):
    e = np.exp(z)                           # overflows for large z
    return -np.log(e[y] / e.sum())


z = np.array([0.0, 2.0, 1.0], np.float32)
with np.errstate(over="ignore", invalid="ignore"):
    for shift in (0.0, 50.0, 100.0):
        lib, _ = F.softmax_cross_entropy_forward((z + shift).reshape(1, 1, 1, 3), np.array([[[1]]]))
        print(f"logits + {shift:5}: naive {float(naive_nll(z + np.float32(shift), 1)):.6f}   library {lib:.6f}")

margins = np.linspace(-8, 8, 161)
K = 4
curve = []
for d in margins:
    logits = np.zeros((1, 1, 1, K)); logits[..., 0] = d               # class 0 is right; the others tied at 0
    curve.append(F.softmax_cross_entropy_forward(logits, np.array([[[0]]]))[0])

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
axes[0].plot(margins, curve, label="library")
axes[0].plot(margins, np.log1p((K - 1) * np.exp(-margins)), "--", label="log(1 + (K-1) exp(-margin))")
axes[0].set(xlabel="margin z_y - max other z", ylabel="loss of one pixel", title=f"cross-entropy, K = {K}")
axes[0].legend()
big = np.linspace(0, 120, 121)
with np.errstate(over="ignore", invalid="ignore"):
    naive = [float(naive_nll(z + np.float32(s), 1)) for s in big]
stable = [F.softmax_cross_entropy_forward((z + s).reshape(1, 1, 1, 3), np.array([[[1]]]))[0] for s in big]
axes[1].plot(big, stable, lw=3, label="stable (library)")
axes[1].plot(big, naive, "--", label="naive exp (float32)")
first_nan = big[np.isnan(naive)][0]
axes[1].axvline(first_nan, color="C3", lw=0.8)
axes[1].text(first_nan - 2, 0.15, f"naive: exp overflows,\nNaN from +{first_nan:.0f} on", color="C3", ha="right")
axes[1].set(xlabel="constant added to all logits", ylabel="loss", title="shift invariance, and where naive fails",
            ylim=(0, 1))
axes[1].legend()
plt.show()

# %% [markdown]
# ## Ignore label and class weights
#
# A 6×8 label map with three classes, a band of ignored pixels (255) and class weights $w = (0.2, 1, 3)$ (say
# class 0 is a frequent background). We compute the loss by hand with NumPy, compare with the op, and check three
# properties of the definition:
#
# * multiplying all weights by a constant changes nothing (it is a weighted **mean**);
# * the logits of ignored pixels do not matter at all;
# * if every pixel is ignored the loss is 0 (not $0/0$).

# %% [markdown]
# ### Exercise 1: the loss
#
# Write `cross_entropy(logits, labels, class_weights)`: `logits` `(N, H, W, K)`, `labels` `(N, H, W)` integers in
# `[0, K)` or 255, `class_weights` `(K,)`; return $\mathcal L$ as a Python float, stable for huge logits and 0 when
# every pixel is ignored. (Careful: `class_weights[labels]` fails on 255; look the weights up with a safe label.)
# The checker recognises an overflowing `exp`, the wrong denominator (pixel counts instead of $\sum w$),
# forgotten weights, ignored pixels counted as class 0, a sum instead of a mean, and $0/0$.

# %%
def cross_entropy(logits, labels, class_weights):
    """Weighted mean softmax cross-entropy over the pixels whose label is not 255 (0.0 if there are none)."""
    # BEGIN SOLUTION
    valid = labels != 255                                          # (N, H, W)
    safe = np.where(valid, labels, 0)
    z = logits.astype(np.float64)
    m = z.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(-1))                # (N, H, W) stable log-sum-exp
    nll = lse - np.take_along_axis(z, safe[..., None], -1)[..., 0]
    w = np.where(valid, class_weights[safe], 0.0)                  # (N, H, W), 0 on ignored pixels
    return float((w * nll).sum() / w.sum()) if w.sum() > 0 else 0.0
    # END SOLUTION


# %%
print(check("softmax_cross_entropy", cross_entropy))

# %% [markdown]
# Below, the library's op on the 6×8 example, the per-pixel terms computed once more with NumPy for the figure,
# and the three properties:

# %%
K = 3
logits = rng.normal(0, 2, size=(1, 6, 8, K))
labels = rng.integers(0, K, size=(1, 6, 8))
labels[0, 2:4, 1:6] = 255                                    # ignored band
weights = np.array([0.2, 1.0, 3.0])

loss, cache = F.softmax_cross_entropy_forward(logits, labels, class_weights=weights)

valid = labels != 255
safe = np.where(valid, labels, 0)
log_p = logits - logits.max(-1, keepdims=True)
log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
nll = -np.take_along_axis(log_p, safe[..., None], -1)[..., 0]          # (1, 6, 8)
w_pix = np.where(valid, weights[safe], 0.0)
by_hand = (w_pix * nll).sum() / w_pix.sum()
print(f"library {loss:.12f}   by hand {by_hand:.12f}")

scaled, _ = F.softmax_cross_entropy_forward(logits, labels, class_weights=10 * weights)
noisy = logits.copy(); noisy[~valid] = rng.normal(0, 100, size=noisy[~valid].shape)
ignored_changed, _ = F.softmax_cross_entropy_forward(noisy, labels, class_weights=weights)
nothing, _ = F.softmax_cross_entropy_forward(logits, np.full_like(labels, 255), class_weights=weights)
unweighted, _ = F.softmax_cross_entropy_forward(logits, labels)
print("weights x 10 ->", round(scaled, 12), "| garbage logits on ignored pixels ->", round(ignored_changed, 12),
      "| all ignored ->", nothing, "| no class weights ->", round(unweighted, 6))

# %%
label_cmap = ListedColormap(["#bbbbbb", "#e6194b", "#3cb44b"])
fig, axes = plt.subplots(1, 4, figsize=(13, 2.9), layout="constrained")
shown = np.ma.masked_equal(labels[0], 255)
axes[0].imshow(shown, cmap=label_cmap, vmin=0, vmax=2); axes[0].set_facecolor("black")
axes[0].set_title("labels (black = 255, ignored)")
for ax, data, title in ((axes[1], np.ma.masked_array(nll[0], ~valid[0]), "per-pixel loss  -log p_y"),
                        (axes[2], np.ma.masked_array(w_pix[0], ~valid[0]), "weight w[y]"),
                        (axes[3], np.ma.masked_array(w_pix[0] * nll[0] / w_pix.sum(), ~valid[0]),
                         f"share of the loss (sum = {loss:.3f})")):
    im = ax.imshow(data, cmap="viridis"); ax.set_facecolor("black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
for ax in axes:
    ax.set_xticks([]); ax.set_yticks([])
plt.show()

# %% [markdown]
# **Inline question 1.** Setting a class weight $w_c = 0$ and relabelling every pixel of class $c$ as 255: do the two
# give the same loss and the same gradient? And the loss is averaged over the valid pixels of the whole batch, not
# per image: how much does an image whose pixels are 90 % ignored count, compared with a fully labelled one?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Yes, exactly: with $w_c = 0$ the pixels of class $c$ add nothing to the numerator $\sum w_{y_p} \ell_p$
# nor to $S = \sum w_{y_p}$, which is precisely what ignoring them does, and their gradient
# $w_{y_p}(p - \mathrm{onehot})/S$ is exactly zero too (checked in the cell below). The batch mean gives every valid
# pixel the same weight, so an image counts in proportion to its (weighted) number of valid pixels: the 90 %
# ignored image counts about a tenth of a fully labelled one. A mean of per-image means would instead give its few
# valid pixels ten times the weight of each pixel of the other image.
# <!-- END ANSWER -->

# %%
dropped = np.where(labels == 2, 255, labels)
w_zero = np.array([0.2, 1.0, 0.0])
loss_zero, cache_zero = F.softmax_cross_entropy_forward(logits, labels, class_weights=w_zero)
loss_drop, cache_drop = F.softmax_cross_entropy_forward(logits, dropped, class_weights=w_zero)
grad_zero = F.softmax_cross_entropy_backward(1.0, cache_zero)
grad_drop = F.softmax_cross_entropy_backward(1.0, cache_drop)
print(f"w_2 = 0: {loss_zero:.12f}   class 2 relabelled 255: {loss_drop:.12f}   "
      f"max |gradient difference| = {np.abs(grad_zero - grad_drop).max():.1e}")
assert np.isclose(loss_zero, loss_drop, rtol=1e-12) and np.allclose(grad_zero, grad_drop, atol=1e-15)
two = np.stack([labels[0], labels[0]])                              # image 0 as labelled, image 1 mostly ignored
two[1][rng.random(two[1].shape) < 0.9] = 255
pixels = (two != 255).sum((1, 2))
z2 = rng.normal(0, 2, size=(2, 6, 8, K))
g2 = F.softmax_cross_entropy_backward(1.0, F.softmax_cross_entropy_forward(z2, two)[1])
share = np.abs(g2).sum((1, 2, 3)) / np.abs(g2).sum()
print("valid pixels per image:", pixels.tolist(), " share of the gradient mass:", share.round(3).tolist())
assert share[1] < 0.5 * share[0]                                     # the mostly ignored image counts far less
fig, ax = plt.subplots(figsize=(4, 2.6), layout="constrained")
ax.bar(["image 0 (labelled)", "image 1 (90 % ignored)"], share, color=["C0", "C1"])
ax.set(ylabel="share of |dL/dz|", title="one batch, one mean over valid pixels")
plt.show()

# %% [markdown]
# ## The gradient: softmax minus one-hot
#
# For one pixel, $\partial \ell/\partial z_k = p_k - [k = y]$ (differentiate $\log\sum_j e^{z_j} - z_y$). The loss is
# $\sum_{p \in V} w_{y_p} \ell_p / S$ with $S = \sum_{p\in V} w_{y_p}$ a constant (it depends on the labels only), so
#
# $$\frac{\partial \mathcal L}{\partial z_{p,k}} = \frac{w_{y_p}}{S}\,\big(p_{p,k} - [k = y_p]\big) \ \text{ for } p \in V,
#   \qquad \frac{\partial \mathcal L}{\partial z_{p,k}} = 0 \ \text{ for ignored } p .$$
#
# Two consequences worth seeing: per pixel the gradient sums to zero over the classes (adding a constant to all
# logits does not change $p$), and on ignored pixels it is **exactly** zero, not merely small: nothing flows back into
# the network from them. `softmax_cross_entropy_backward(dloss, cache)` multiplies this by the upstream `dloss`
# (1.0 for the loss itself).

# %% [markdown]
# ### Exercise 2: the gradient
#
# Write `cross_entropy_grad(logits, labels, class_weights)` returning $\partial\mathcal L/\partial z$, shaped like
# `logits`: the formula above, exactly 0 on ignored pixels and everywhere when every pixel is ignored. The checker
# compares with `softmax_cross_entropy_backward` (naming a nonzero gradient on ignored pixels, a missing $1/S$ or
# $-\,\mathrm{onehot}$, the wrong denominator, forgotten weights) and then runs a float64 central-difference check.

# %%
def cross_entropy_grad(logits, labels, class_weights):
    """dL/dlogits of the weighted, ignore-aware mean cross-entropy: w[y] (softmax - onehot(y)) / S."""
    # BEGIN SOLUTION
    valid = labels != 255
    safe = np.where(valid, labels, 0)
    z = logits - logits.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)                # (N, H, W, K) softmax
    w = np.where(valid, class_weights[safe], 0.0)                   # (N, H, W)
    if w.sum() == 0:
        return np.zeros_like(logits)
    return (w / w.sum())[..., None] * (p - np.eye(logits.shape[-1])[safe])
    # END SOLUTION


# %%
print(check("softmax_cross_entropy_grad", cross_entropy_grad))

# %% [markdown]
# The library's backward, against the formula, on the 6×8 example:

# %%
dlogits = F.softmax_cross_entropy_backward(1.0, cache)
p = np.exp(log_p)
onehot = np.eye(K)[safe]
formula = (w_pix / w_pix.sum())[..., None] * (p - onehot)
print("max |library - formula| =", np.abs(dlogits - formula).max())
print("exactly zero on ignored pixels:", bool(np.all(dlogits[~valid] == 0)), f"({(~valid).sum()} pixels)")
print("max |sum over classes| =", np.abs(dlogits.sum(-1)).max())

fig, axes = plt.subplots(1, K, figsize=(11, 2.8), layout="constrained")
lim = np.abs(dlogits).max()
for k, ax in enumerate(axes):
    im = ax.imshow(dlogits[0, :, :, k], cmap="coolwarm", vmin=-lim, vmax=lim)
    ax.contour(~valid[0], levels=[0.5], colors="k", linewidths=1)
    ax.set_title(f"dL/dz, class {k} (weight {weights[k]})")
    ax.set_xticks([]); ax.set_yticks([])
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# Blue pixels (negative gradient) are the pixels of that class: gradient descent raises their logit. The outlined
# band is the ignored region: exactly zero. Class 2, with weight 3, has the strongest gradients.
#
# ## Checked numerically
#
# The loss is a scalar, so its cotangent is a number; with `dloss = 0.7` the backward must return 0.7 times the
# gradient. Central differences in float64 over every logit, valid and ignored:

# %%
dloss = 0.7
analytic = F.softmax_cross_entropy_backward(dloss, cache)
x = logits.copy()


def L():
    return dloss * F.softmax_cross_entropy_forward(x, labels, class_weights=weights)[0]


numeric = numerical_gradient(L, x)
print("max |analytic - numeric| =", np.abs(analytic - numeric).max())
print("numeric gradient on ignored pixels, max |.| =", np.abs(numeric[~valid]).max())
print(check_gradients(F.softmax_cross_entropy_forward, F.softmax_cross_entropy_backward, {"logits": logits},
                      kwargs={"labels": labels, "class_weights": weights}, rng=3))

fig, ax = plt.subplots(figsize=(4.5, 3.5))
mask = np.broadcast_to(valid[..., None], numeric.shape)
ax.plot(numeric[mask], analytic[mask], "o", ms=3, label="valid pixels")
ax.plot(numeric[~mask], analytic[~mask], "x", ms=6, color="C3", label="ignored pixels (all at 0)")
lim = np.abs(numeric).max()
ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
ax.set(xlabel="central difference", ylabel="softmax_cross_entropy_backward", title="dloss/dlogits, dloss = 0.7")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Inline question 2.** For a pixel the network already classifies with confidence ($p_y \approx 1$), what is its
# gradient, and what does that imply for which pixels dominate training late on? Why do the gradients of one pixel
# sum to zero over the classes?
#
# <!-- BEGIN ANSWER -->
# **Answer.** $p - \mathrm{onehot} \approx 0$ in every entry, so a confidently right pixel contributes almost nothing:
# late in training the gradient comes from the misclassified and uncertain pixels, mostly object boundaries and
# rare classes (which is also where class weights act). Its magnitude is bounded: $|p_k - [k = y]| \le 1$, so even a
# confident mistake gives at most $w_{y}/S$ per logit, unlike the loss itself, which grows linearly with the margin.
# The entries sum to $\sum_k p_k - 1 = 0$ because adding a constant to all logits of a pixel changes neither $p$ nor
# the loss: the gradient is orthogonal to the direction $(1, \dots, 1)$.
# <!-- END ANSWER -->
