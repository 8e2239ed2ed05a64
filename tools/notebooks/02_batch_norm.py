# %% [markdown]
# # 2. Batch normalisation: two modes, moving statistics, and the backward pass
#
# **The question.** What does batch normalisation compute in training and in inference, how are its moving
# statistics learned, and what is its gradient?
#
# **Why it matters.** Every convolution in DeepLab is followed by batch normalisation (BN). It is the one layer
# whose output depends on the *other* images of the batch, which is why a model can train well and evaluate
# badly (moving statistics not converged), why small batches hurt segmentation, and why its backward pass
# has two terms a naive derivation forgets. You write the backward pass and the moving-average update
# (exercises graded by `tinydeeplab.exercises.check`) and answer two inline questions.
#
# Per channel $c$, over the
# $M = N H W$ values of that channel in the batch:
#
# $$\mu_c = \frac1M \sum_{n,h,w} x_{nhwc}, \qquad
#   \sigma_c^2 = \frac1M \sum_{n,h,w} (x_{nhwc} - \mu_c)^2, \qquad
#   \hat x = \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}, \qquad
#   y = \gamma_c\, \hat x + \beta_c .$$
#
# The variance is the *biased* one (divided by $M$, as Keras does). $\gamma, \beta$ are learned; $\epsilon$ is
# $10^{-5}$ in KerasHub's ResNet and the Keras default $10^{-3}$ in the ASPP and decoder.
#
# We use `tinydeeplab.functional.batchnorm_forward` / `batchnorm_backward` (the NumPy reference) and the
# `tinydeeplab.nn.BatchNorm` layer, on the NumPy backend (nothing to compile).

# %%
import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab import functional as F
from tinydeeplab.exercises import check
from tinydeeplab.gradcheck import check_gradients, numerical_gradient
from tinydeeplab.nn import BatchNorm

tinydeeplab.set_backend("numpy")
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## Training mode vs inference mode
#
# * **training** (`training=True`): $\mu, \sigma^2$ are the statistics of *this batch*. The output of one image
#   therefore depends on the other images in the batch, and every channel comes out with mean $\beta$ and
#   standard deviation $\approx|\gamma|$.
# * **inference** (`training=False`): $\mu, \sigma^2$ are the *moving* statistics, constants learned during
#   training. BN is then a fixed per-channel affine map $y = a_c x + b_c$ with
#   $a_c = \gamma_c / \sqrt{\sigma^2_{\mathrm{moving}} + \epsilon}$ and $b_c = \beta_c - a_c\,\mu_{\mathrm{moving}}$,
#   which an inference engine can fold into the preceding convolution.
#
# Below: three channels with different means and spreads, $\gamma = 1, \beta = 0$, and *fresh* moving
# statistics (mean 0, variance 1), as in a layer that has never been trained.

# %%
C = 3
x = rng.normal(loc=[3.0, -1.0, 0.5], scale=[2.0, 0.5, 1.0], size=(8, 6, 6, C))   # (N, H, W, C)
gamma, beta = np.ones(C), np.zeros(C)
moving_mean, moving_var = np.zeros(C), np.ones(C)                                  # a fresh layer

y_train, cache = F.batchnorm_forward(x, gamma, beta, moving_mean, moving_var, training=True, eps=1e-3)
y_infer, _ = F.batchnorm_forward(x, gamma, beta, moving_mean, moving_var, training=False, eps=1e-3)

print("batch mean  ", cache["mean"].round(3), "  batch var (biased)", cache["var"].round(3))
print("training : output mean", y_train.mean((0, 1, 2)).round(6), " std", y_train.std((0, 1, 2)).round(4))
print("inference: output mean", y_infer.mean((0, 1, 2)).round(3), " std", y_infer.std((0, 1, 2)).round(3),
      " (= x / sqrt(1 + eps): the fresh layer barely changes x)")

# in training mode, image 0's output depends on image 1; in inference mode it does not
x2 = x.copy(); x2[1] += 5.0
for mode in (True, False):
    a, _ = F.batchnorm_forward(x, gamma, beta, moving_mean, moving_var, training=mode, eps=1e-3)
    b, _ = F.batchnorm_forward(x2, gamma, beta, moving_mean, moving_var, training=mode, eps=1e-3)
    print(f"training={mode!s:5}: change image 1 -> image 0's output moves by {np.abs(a[0] - b[0]).max():.3f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
bins = np.linspace(-5, 9, 60)
for ax, data, title in zip(axes, (x, y_train, y_infer),
                           ("input x", "training mode (batch statistics)", "inference mode, fresh moving stats")):
    for ch in range(C):
        ax.hist(data[..., ch].ravel(), bins=bins, alpha=0.6, label=f"channel {ch}")
    ax.set_title(title)
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Moving statistics and momentum
#
# After each training step the layer updates (Keras convention, momentum $m$):
#
# $$\mu_{\mathrm{moving}} \leftarrow m\,\mu_{\mathrm{moving}} + (1-m)\,\mu_{\mathrm{batch}},\qquad
#   \sigma^2_{\mathrm{moving}} \leftarrow m\,\sigma^2_{\mathrm{moving}} + (1-m)\,\sigma^2_{\mathrm{batch}} .$$
#
# This is an exponential moving average with a memory of about $1/(1-m)$ steps: 10 steps for KerasHub's ResNet
# ($m = 0.9$), 100 for the ASPP and decoder ($m = 0.99$). Starting from $\mu_0 = 0$ with batches whose mean is
# $\mu$ on average, $\mathbb E[\mu_t] = (1 - m^t)\,\mu$; the variance starts at 1 and tends to the expected
# biased batch variance $\frac{M-1}{M}\sigma^2$. Until the averages have converged, inference-mode outputs are
# wrong, which is why a model evaluated after very few steps can look much worse than its training loss says.
#
# ### Exercise 1: the moving-statistics update
#
# Write `update_moving_statistics(moving_mean, moving_var, x, momentum)` for a training step on the batch `x`
# `(N, H, W, C)`: return the new `(moving_mean, moving_var)`, each `(C,)` and of `x`'s dtype. The checker
# compares with `moving_average` of the batch statistics and recognises PyTorch's momentum convention, the
# unbiased variance, the standard deviation in place of the variance, and statistics over the wrong axes.

# %%
def update_moving_statistics(moving_mean, moving_var, x, momentum):
    """Keras BN update after a training step on x (N, H, W, C): returns (new_moving_mean, new_moving_var)."""
    # BEGIN SOLUTION
    mean = x.mean(axis=(0, 1, 2))                              # (C,)
    var = ((x - mean) ** 2).mean(axis=(0, 1, 2))               # (C,) biased, as in the forward pass
    return (moving_mean * momentum + mean * (1 - momentum),
            moving_var * momentum + var * (1 - momentum))
    # END SOLUTION


# %%
print(check("moving_statistics", update_moving_statistics))

# %% [markdown]
# The `BatchNorm` layer below calls `batchnorm_forward(..., training=True)` and then `moving_average` on its
# buffers `moving_mean`, `moving_variance`.

# %%
true_mean, true_std, steps = 3.0, 2.0, 300
layers = {m: BatchNorm(1, momentum=m) for m in (0.9, 0.99)}
trace = {m: [] for m in layers}
for t in range(steps):
    batch = rng.normal(true_mean, true_std, size=(8, 4, 4, 1)).astype(np.float32)   # M = 128
    for m, layer in layers.items():
        layer.forward(batch, training=True)
        trace[m].append((layer.buffers["moving_mean"][0], layer.buffers["moving_variance"][0]))

M = 8 * 4 * 4
t = np.arange(1, steps + 1)
fresh = rng.normal(true_mean, true_std, size=(8, 4, 4, 1)).astype(np.float32)
late = layers[0.99]
y_tr = late.forward(fresh, training=True)
y_inf = late.forward(fresh, training=False)
print("after", steps, "steps, momentum 0.99: moving mean", late.buffers["moving_mean"],
      "moving var", late.buffers["moving_variance"])
print("inference vs training output on a new batch: max |diff| =", float(np.abs(y_tr - y_inf).max()),
      f"(the m = 0.99 average has covered 1 - 0.99^{steps} = {1 - 0.99 ** steps:.3f} of the way)")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for m, colour in ((0.9, "C0"), (0.99, "C1")):
    means, variances = np.array(trace[m]).T
    axes[0].plot(t, means, color=colour, label=f"m = {m}")
    axes[0].plot(t, (1 - m ** t) * true_mean, "--", color=colour, lw=1)
    axes[1].plot(t, variances, color=colour, label=f"m = {m}")
    axes[1].plot(t, m ** t + (1 - m ** t) * (M - 1) / M * true_std ** 2, "--", color=colour, lw=1)
axes[0].set(xlabel="training step", title=f"moving mean (dashed: (1 - m^t) * {true_mean})")
axes[1].set(xlabel="training step", title="moving variance (dashed: expectation)")
axes[0].legend(); axes[1].legend()
axes[2].plot(y_tr.ravel(), y_inf.ravel(), ".", ms=3)
axes[2].plot([-3, 3], [-3, 3], "k-", lw=0.5)
axes[2].set(xlabel="training-mode output", ylabel="inference-mode output",
            title="m = 0.99 after 300 steps, new batch")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The backward pass, derived
#
# Fix one channel and drop its index. Write $s = \sqrt{\sigma^2 + \epsilon}$ and let $g_i = \partial L/\partial \hat x_i
# = \gamma\, \delta y_i$ be the gradient reaching $\hat x$ ($\delta y$ = the upstream gradient). Then
# $\partial L/\partial \beta = \sum_i \delta y_i$ and $\partial L/\partial\gamma = \sum_i \delta y_i\, \hat x_i$. For
# $x$, in training mode both $\mu$ and $\sigma^2$ depend on every $x_i$:
#
# $$\frac{\partial \mu}{\partial x_i} = \frac1M,\qquad
#   \frac{\partial \sigma^2}{\partial x_i} = \frac{2 (x_i - \mu)}{M}\;\;\Big(\text{the term through }\mu\text{ is }
#   -\tfrac2M\textstyle\sum_j (x_j - \mu)/M = 0\Big),\qquad
#   \frac{\partial s}{\partial x_i} = \frac{x_i - \mu}{M s} = \frac{\hat x_i}{M}.$$
#
# Differentiating $\hat x_j = (x_j - \mu)/s$ by the quotient rule:
#
# $$\frac{\partial \hat x_j}{\partial x_i} = \frac{\delta_{ij} - \frac1M}{s} - \frac{x_j - \mu}{s^2}\,\frac{\hat x_i}{M}
#   = \frac1s\Big(\delta_{ij} - \frac1M - \frac{\hat x_i \hat x_j}{M}\Big).$$
#
# The Jacobian is $\frac1s\,(I - \frac1M \mathbf 1\mathbf 1^\top - \frac1M \hat x \hat x^\top)$: the identity minus
# two rank-one terms. $\frac1M \mathbf 1\mathbf 1^\top$ is the orthogonal projection onto constant vectors.
# $\frac1M \hat x \hat x^\top$ is a projection only when $\|\hat x\|^2 = M$, i.e. at $\epsilon = 0$: in general
# $\|\hat x\|^2 = M\sigma^2/(\sigma^2 + \epsilon)$, so it is the projection onto $\hat x$ scaled by
# $\sigma^2/(\sigma^2+\epsilon) < 1$, and that shortfall is the $\epsilon$ term derived below. Contracting with $g$
# gives the compact formula that `batchnorm_backward` implements:
#
# $$\boxed{\;\frac{\partial L}{\partial x_i} = \frac1s\Big(g_i - \overline{g} - \hat x_i\, \overline{g\,\hat x}\Big)\;}
#   \qquad(\overline{\,\cdot\,} = \text{mean over the } M \text{ values}).$$
#
# Since $\hat x$ does not change when $x$ is shifted, the gradient has no component along that direction:
# $\sum_i \partial L/\partial x_i = 0$ exactly. With $\epsilon = 0$, $\hat x$ would not change when $x$ is scaled
# either, and $\sum_i \hat x_i\, \partial L/\partial x_i$ would vanish too; with $\epsilon > 0$ it is only small:
# using $\sum_i \hat x_i^2 = M\sigma^2/(\sigma^2 + \epsilon)$,
#
# $$\sum_i \hat x_i \frac{\partial L}{\partial x_i} = \frac{\epsilon}{\sigma^2 + \epsilon}\;\frac{\sum_i g_i \hat x_i}{s}.$$
#
# In inference mode $\mu, s$ are constants and the gradient is simply $\gamma\,\delta y / s$.
#
# ### Exercise 2: the backward pass in training mode
#
# Write `batchnorm_backward_train(dy, x, gamma, eps)`: recompute $\mu, \sigma^2, \hat x$ from `x`, then return
# `(dx, dgamma, dbeta)` by the boxed formula. The checker compares with `batchnorm_backward` on random batches,
# runs a float64 central-difference check, and names the classic mistakes: a missing mean-of-dy term, a
# missing $\hat x$ term, the inference formula, gamma forgotten, the unbiased variance, $\epsilon$ left out.

# %%
def batchnorm_backward_train(dy, x, gamma, eps):
    """Training-mode BN gradients for the upstream gradient dy (N, H, W, C): returns (dx, dgamma, dbeta)."""
    axes = (0, 1, 2)
    # BEGIN SOLUTION
    mean = x.mean(axis=axes)                                       # (C,)
    inv_std = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes) + eps)  # (C,) 1 / s
    xhat = (x - mean) * inv_std                                    # (N, H, W, C)
    g = dy * gamma                                                 # the gradient reaching xhat
    dx = inv_std * (g - g.mean(axis=axes) - xhat * (g * xhat).mean(axis=axes))
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    # END SOLUTION


# %%
print(check("batchnorm_backward", batchnorm_backward_train))

# %% [markdown]
# **Inline question 1.** A constant upstream gradient $\delta y = 1$ reaches a BN layer in training mode. What is
# $\partial L/\partial x$, and why? What does this imply for a bias added by the convolution just before BN?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Zero. With $g = \gamma$ constant per channel, $g - \bar g = 0$, and $\overline{g \hat x} =
# \gamma\,\overline{\hat x} = 0$ because $\hat x$ has mean zero: the formula gives $0$. The reason is the shift
# invariance shown above: adding a constant to every $x_i$ of a channel leaves $\hat x$, hence $y$, unchanged, so
# no loss can have a gradient along that direction. A convolution bias before BN is exactly such a shift: it
# never receives a gradient and does nothing, which is why KerasHub's convolutions before BN have no bias.
# <!-- END ANSWER -->
#
# **Inline question 2.** The image-pooling branch of ASPP (notebook 03) applies BN to a tensor of shape
# `(N, 1, 1, C)`. What does training-mode BN output when $N = 1$, and what gradient reaches the convolution
# before it?
#
# <!-- BEGIN ANSWER -->
# **Answer.** With $M = N H W = 1$ each channel has one value, so $\mu = x$, $\sigma^2 = 0$ and $\hat x = 0$: the
# output is $\beta$ whatever the input, and $\partial L/\partial x = \frac1s(g - g - 0) = 0$. The branch's
# convolution learns nothing (only $\beta$ does), and the moving variance is pulled towards 0, which inference
# then uses. Batch size 1 (and, more mildly, small batches) breaks BN on that branch.
# <!-- END ANSWER -->
#
# Below we build the $M \times M$ Jacobian three ways for one channel with $M = 12$: from the formula, by central
# differences of $\hat x$, and implicitly through `batchnorm_backward`.

# %%
xs = rng.normal(2.0, 1.5, size=(2, 2, 3, 1))         # one channel, M = 12 values
Mx = xs.size
one, zero = np.ones(1), np.zeros(1)
_, c1 = F.batchnorm_forward(xs, one, zero, zero, one, training=True, eps=1e-3)
xhat, s = c1["xhat"].ravel(), 1 / c1["inv_std"][0]

J_formula = (np.eye(Mx) - 1 / Mx - np.outer(xhat, xhat) / Mx) / s      # J[i, j] = d xhat_j / d x_i (symmetric)

J_numeric = np.zeros((Mx, Mx))
flat = xs.reshape(-1)
for i in range(Mx):
    old = flat[i]
    flat[i] = old + 1e-6; plus = F.batchnorm_forward(xs, one, zero, zero, one, training=True, eps=1e-3)[0]
    flat[i] = old - 1e-6; minus = F.batchnorm_forward(xs, one, zero, zero, one, training=True, eps=1e-3)[0]
    flat[i] = old
    J_numeric[i] = (plus - minus).ravel() / 2e-6

g = rng.standard_normal(xs.shape)                                       # an upstream gradient (gamma = 1)
dx_compact = (g.ravel() - g.mean() - xhat * (g.ravel() * xhat).mean()) / s
dx_library = F.batchnorm_backward(g, c1)[0].ravel()
print("max |J_formula - J_numeric| =", np.abs(J_formula - J_numeric).max())
print("max |J^T g - compact formula| =", np.abs(J_formula.T @ g.ravel() - dx_compact).max())
print("max |compact formula - batchnorm_backward| =", np.abs(dx_compact - dx_library).max())

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), layout="constrained")
lim = np.abs(J_formula).max()
for ax, m, title in ((axes[0], J_formula, "Jacobian from the formula"),
                     (axes[1], J_numeric, "by central differences")):
    im = ax.imshow(m, cmap="coolwarm", vmin=-lim, vmax=lim)
    ax.set_title(title); ax.set_xlabel("j  (output xhat_j)"); ax.set_ylabel("i  (input x_i)")
fig.colorbar(im, ax=axes[1], shrink=0.8)
im = axes[2].imshow(np.log10(np.abs(J_formula - J_numeric) + 1e-16), cmap="viridis")
axes[2].set_title("log10 |formula - numeric|"); axes[2].set_xlabel("j")
fig.colorbar(im, ax=axes[2], shrink=0.8)
plt.show()

# %% [markdown]
# ## Checked numerically, both modes
#
# Now the full op on a batch with two channels: gradients with respect to $x$, $\gamma$ and $\beta$, in float64, with
# a random cotangent, against central differences (`tinydeeplab.gradcheck.check_gradients`, which does what the
# convolution notebook did by hand). Then the two projections of $\partial L/\partial x$ per channel: in training mode
# the sum vanishes to round-off and $\sum \hat x\, \partial L/\partial x$ equals the small $\epsilon$ term derived above;
# in inference mode neither is special, because there the statistics are constants.

# %%
xb = rng.normal(1.0, 2.0, size=(4, 3, 3, 2))
gamma_b, beta_b = rng.normal(1.0, 0.3, 2), rng.normal(0.0, 0.3, 2)
mm, mv = rng.normal(0.0, 1.0, 2), rng.uniform(0.5, 2.0, 2)
results, sums = {}, {}
for mode in (True, False):
    kwargs = dict(moving_mean=mm, moving_var=mv, training=mode, eps=1e-3)
    res = check_gradients(F.batchnorm_forward, F.batchnorm_backward,
                          {"x": xb, "gamma": gamma_b, "beta": beta_b}, kwargs=kwargs, rng=2)
    print(f"training={mode!s:5}:", res)
    y, cache = F.batchnorm_forward(xb, gamma_b, beta_b, mm, mv, training=mode, eps=1e-3)
    cot = rng.standard_normal(y.shape)
    dx = F.batchnorm_backward(cot, cache)[0]
    sums[mode] = (dx.sum((0, 1, 2)), (dx * cache["xhat"]).sum((0, 1, 2)))
    print(f"   sum dx per channel {sums[mode][0]},  sum dx * xhat per channel {sums[mode][1]}")
    if mode:
        g_b = cot * gamma_b
        predicted = 1e-3 / (cache["var"] + 1e-3) * (g_b * cache["xhat"]).sum((0, 1, 2)) * cache["inv_std"]
        print(f"   predicted eps term eps/(var+eps) * sum(g xhat) / s:          {predicted}")

    def L():
        return float(np.sum(F.batchnorm_forward(xb, gamma_b, beta_b, mm, mv, training=mode, eps=1e-3)[0] * cot))
    results[mode] = (dx.ravel(), numerical_gradient(L, xb).ravel())

fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
for mode, marker in ((True, "o"), (False, "s")):
    a, n = results[mode]
    axes[0].plot(n, a, marker, ms=3, label=f"training={mode}")
axes[0].set(xlabel="central difference", ylabel="batchnorm_backward", title="dx: analytic vs numeric")
axes[0].legend()
labels = ["sum dx\nchannel 0", "sum dx\nchannel 1", "sum dx*xhat\nchannel 0", "sum dx*xhat\nchannel 1"]
for k, (mode, colour) in enumerate(((True, "C0"), (False, "C1"))):
    vals = np.abs(np.concatenate(sums[mode])) + 1e-17
    axes[1].bar(np.arange(4) + 0.4 * k, vals, width=0.4, color=colour, label=f"training={mode}")
axes[1].set_yscale("log"); axes[1].set_xticks(np.arange(4) + 0.2); axes[1].set_xticklabels(labels, fontsize=8)
axes[1].set_title("|projections of dx| per channel")
axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
plt.tight_layout()
plt.show()
