# %% [markdown]
# # 11. Training dynamics: sanity checks, the learning rate, warm-up, and what batch norm and dilation hide
#
# **The question.** Before spending hours of compute on a segmentation model, how do you know that the training
# loop can learn at all, which learning rate to use, why the first steps need care, and which parts of the network
# silently receive no gradient?
#
# **Why it matters.** A bug in a hand-written backward pass, a learning rate off by a factor of 100 or a branch that
# never learns do not crash anything: the loss just falls more slowly, and a DeepLab trained for a day ends a few
# points of mIoU short without saying why. Five cheap experiments, each of a few seconds, catch these:
#
# 1. **overfit one batch**: a model that cannot drive the loss of a single batch towards zero has a bug;
# 2. **the learning-rate range test** ([Smith 2017](../docs/bibliography.md#smith2017)): one short run with a
#    learning rate growing exponentially per step, the loss plotted against it;
# 3. **warm-up**: what the first steps do when training starts at full learning rate;
# 4. **batch norm with small batches** ([Ioffe & Szegedy 2015](../docs/bibliography.md#ioffe2015)): the
#    image-pooling branch of ASPP ([Chen et al. 2017](../docs/bibliography.md#chen2017)) with batch 1 outputs only
#    $\beta$;
# 5. **per-tap gradient norms**: an atrous $3\times3$ kernel whose rate exceeds the feature map gets exactly zero
#    gradient on its 8 outer taps ([Wang et al. 2018](../docs/bibliography.md#wang2018) on what dilation does to
#    the sampling grid).
#
# You write the range test's schedule, its "steepest descent" pick and the per-tap gradient norms (graded by
# `tinydeeplab.exercises.check`), and answer three inline questions. Everything runs on the NumPy backend with a
# DeepLabV3+ of about 0.1 M parameters on 32×32 and 48×48 synthetic images: the whole notebook takes well under
# a minute and a half on 2 CPU cores.

# %%
import time

import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab import functional as F
from tinydeeplab.data import BatchLoader, SyntheticShapes
from tinydeeplab.exercises import check
from tinydeeplab.models import DeepLabV3Backbone, DeepLabV3ImageSegmenter, ResNetBackbone
from tinydeeplab.models.aspp import ASPP
from tinydeeplab.nn.hooks import record_outputs
from tinydeeplab.train import SGD, cosine
from tinydeeplab.viz import overlay

tinydeeplab.set_backend("numpy")            # tiny shapes: the NumPy reference is the fastest, and needs no compiling
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
T_START = time.perf_counter()

# %% [markdown]
# ## Overfit one batch
#
# The first sanity check of any training loop: take **one** batch, train on it over and over, and watch the loss.
# A model with a few hundred thousand parameters can memorise two images, so the loss must fall towards zero and the
# training-mode predictions must match the labels almost everywhere. If it stalls at the initial value
# $\ln K$ (here $\ln 4 = 1.39$, a uniform guess), a gradient is wrong or does not reach the parameters; if it
# stalls higher up, the learning rate is off or the labels do not match the images. It is a test of the plumbing,
# not of generalisation.
#
# The model is built explicitly (a DeepLabV3+ with a 4-stack bottleneck ResNet, 16 filters, ASPP with 32 channels on
# the 1/32 map $P_5$ and the V3+ decoder on the 1/4 map $P_2$); one training step is forward in training mode,
# cross-entropy, backward, SGD with momentum.

# %%
SCALE, OFFSET = 1 / 127.5, -1.0


def make_model(seed=0, rates=(1, 2, 3)):
    """A ~0.1 M-parameter DeepLabV3+: ResNet (stem 16, 4 bottleneck stacks of 16), ASPP 32 channels, 4 classes."""
    encoder = ResNetBackbone([16], [3], [16, 16, 16, 16], [1, 1, 1, 1], [1, 2, 2, 2], seed=seed)
    backbone = DeepLabV3Backbone(encoder, "P5", 8, list(rates), low_level_feature_key="P2", projection_filters=16,
                                 num_channels=32, seed=seed + 1)
    return DeepLabV3ImageSegmenter(backbone, 4, seed=seed + 2)


def train_step(model, optimizer, x, y, lr):
    """One SGD step on (x, y); returns (loss, global gradient norm, logits)."""
    logits = model.forward(x, training=True)                                    # (N, H, W, 4)
    loss, cache = F.softmax_cross_entropy_forward(logits, y, ignore_label=255)
    model.zero_grad()
    model.backward(F.softmax_cross_entropy_backward(1.0, cache))
    grad_norm = float(np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for _, g in model.named_gradients())))
    optimizer.step(lr=lr)
    return loss, grad_norm, logits


def per_pixel_loss(logits, y):
    """Cross-entropy of every pixel: logsumexp(z) - z[y], (N, H, W)."""
    z = logits.astype(np.float64)
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
    return lse - np.take_along_axis(z, y[..., None].astype(np.int64), -1)[..., 0]


one = SyntheticShapes(length=2, size=(48, 48), seed=3, max_shapes=3, colour_hints=True)
images = np.stack([one[i][0] for i in range(2)])                                 # (2, 48, 48, 3) uint8
x1 = images.astype(np.float32) * SCALE + OFFSET
y1 = np.stack([one[i][1] for i in range(2)]).astype(np.int32)                    # (2, 48, 48)

model = make_model()
optimizer = SGD(model, lr=0.2, momentum=0.9)
overfit_loss, t0 = [], time.perf_counter()
for step in range(120):
    loss, _, logits = train_step(model, optimizer, x1, y1, lr=0.2)
    overfit_loss.append(loss)
pixel_loss = per_pixel_loss(logits, y1)                                          # of the last step's forward
accuracy = float((logits.argmax(-1) == y1).mean())
print(f"{model.num_parameters():,} parameters; 120 steps in {time.perf_counter() - t0:.1f} s")
print(f"loss {overfit_loss[0]:.3f} (ln 4 = {np.log(4):.3f}) -> {overfit_loss[-1]:.4f}; "
      f"training-mode pixel accuracy {accuracy:.4f}")

# where does the remaining loss sit? on the label boundaries (a pixel whose 4-neighbourhood has another class)
edge = np.zeros(y1.shape, bool)
edge[:, 1:] |= y1[:, 1:] != y1[:, :-1]; edge[:, :-1] |= y1[:, 1:] != y1[:, :-1]
edge[:, :, 1:] |= y1[:, :, 1:] != y1[:, :, :-1]; edge[:, :, :-1] |= y1[:, :, 1:] != y1[:, :, :-1]
share = float(pixel_loss[edge].sum() / pixel_loss.sum())
print(f"boundary pixels: {edge.mean():.1%} of the pixels, {share:.1%} of the remaining loss")
assert overfit_loss[-1] < 0.05 * overfit_loss[0] and accuracy > 0.98
assert share > 2 * edge.mean()          # the leftover loss concentrates on the boundaries

# %%
fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), layout="constrained")
axes[0].plot(overfit_loss)
axes[0].axhline(np.log(4), color="0.5", ls="--", lw=0.8, label="ln 4 (uniform guess)")
axes[0].set(yscale="log", xlabel="step (always the same batch)", ylabel="cross-entropy", title="overfitting one batch")
axes[0].legend()
axes[1].imshow(overlay(images[0], y1[0], one.palette, 0.6)); axes[1].set_title("label")
axes[2].imshow(overlay(images[0], logits[0].argmax(-1), one.palette, 0.6)); axes[2].set_title("prediction (training mode)")
im = axes[3].imshow(pixel_loss[0], cmap="magma"); axes[3].set_title("per-pixel loss after 120 steps")
fig.colorbar(im, ax=axes[3], shrink=0.8)
for ax in axes[1:]:
    ax.set_axis_off()
plt.show()

# %% [markdown]
# The loss falls by more than an order of magnitude and what is left sits on the shape boundaries: the logits are
# computed at 1/4 of the input resolution and bilinearly upsampled (notebook 04), so a 12×12 logit map cannot put
# a label edge exactly where a 48×48 label puts it. Driving it to exactly zero would take ever larger logits; that is
# not the point of the check.
#
# **Inline question 1.** Your model overfits one batch perfectly (loss $10^{-4}$), but trained on the whole dataset
# its validation mIoU stays at chance level. Conversely, another model cannot get the loss of one batch below 1.2.
# What does each observation tell you, and what would you look at next in each case?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Overfitting one batch only shows that gradients flow and the optimiser can use them; it says nothing
# about generalisation. A perfect fit with chance-level validation points at the data or the evaluation: inference
# mode (moving batch-norm statistics that have not converged, notebook 02), a preprocessing mismatch between
# training and evaluation (scale/offset, resizing labels bilinearly), labels and images shuffled differently, or
# plain memorisation of too small a training set. A model that cannot fit one batch has a bug in the training
# step itself: a backward pass that is wrong or does not reach some parameters (check gradients numerically), the
# optimiser not applying the gradients (zeroing at the wrong time), a learning rate far too small or too large, or
# labels that do not match the images (an ignore label everywhere, a one-pixel shift, a class-id mapping bug).
# <!-- END ANSWER -->

# %% [markdown]
# ## The learning-rate range test
#
# Which learning rate? [Smith (2017)](../docs/bibliography.md#smith2017) proposes one cheap run: start at a tiny
# $\eta_{\min}$, multiply the learning rate by the same factor after every step until $\eta_{\max}$,
#
# $$\eta_k = \eta_{\min}\left(\frac{\eta_{\max}}{\eta_{\min}}\right)^{k/(K-1)},\qquad k = 0, \dots, K-1,$$
#
# and record the training loss of each step. Plotted against $\log\eta$ the curve has three parts: a plateau (the
# steps are too small to change anything), a descent, and a blow-up (the steps overshoot). A good learning rate lies
# in the descent, where the loss falls fastest. The per-step losses are noisy (every step sees a new batch), so
# the curve is smoothed first with a bias-corrected exponential moving average,
#
# $$a_k = \beta\, a_{k-1} + (1-\beta)\, L_k\ \ (a_{-1} = 0),\qquad s_k = \frac{a_k}{1-\beta^{k+1}},$$
#
# and the pick is the learning rate of the steepest descent, $\eta_{k^\ast}$ with
# $k^\ast = \arg\min_k \mathrm d s_k / \mathrm d \log\eta_k$.
#
# ### Exercise 1: the range test's schedule
#
# Write `lr_range_schedule(lr_min, lr_max, steps)`: the `(steps,)` array of learning rates above (float64; the first
# is `lr_min`, the last `lr_max`). The checker names linear spacing, `np.logspace`'s exponent convention, an
# exponent `k / steps` and a decreasing schedule.

# %%
def lr_range_schedule(lr_min, lr_max, steps):
    """Learning rates from lr_min to lr_max (inclusive), growing by the same factor each step: (steps,)."""
    # BEGIN SOLUTION
    k = np.arange(steps, dtype=np.float64)
    return lr_min * (lr_max / lr_min) ** (k / (steps - 1))
    # END SOLUTION


# %%
print(check("lr_range_schedule", lr_range_schedule))

# %% [markdown]
# ### Exercise 2: the steepest-descent pick
#
# Write `steepest_lr(lrs, losses, beta)`: smooth `losses` with the bias-corrected moving average above, take its
# slope against $\log\eta$ with `np.gradient(s, np.log(lrs))` (central differences, one-sided at the ends) and return
# the learning rate (a float) where the slope is most negative. The checker runs it on synthetic range-test curves
# and recognises the raw (unsmoothed) losses, a missing bias correction, the slope against $\eta$ instead of
# $\log\eta$, and the learning rate of the *lowest* loss.

# %%
def steepest_lr(lrs, losses, beta):
    """The learning rate at which the bias-corrected EMA of the losses falls fastest per unit of log lr."""
    # BEGIN SOLUTION
    a, smooth = 0.0, []
    for k, loss in enumerate(losses):
        a = beta * a + (1 - beta) * loss
        smooth.append(a / (1 - beta ** (k + 1)))
    slope = np.gradient(np.array(smooth), np.log(lrs))
    return float(lrs[int(np.argmin(slope))])
    # END SOLUTION


# %%
print(check("steepest_lr", steepest_lr))

# %% [markdown]
# Now the test itself, with the references the checkers use (`tinydeeplab.exercises.training`): a fresh model, a new
# batch of eight 32×32 images every step, $\eta$ from $10^{-3}$ to $10^2$ in 80 steps, stopped once the smoothed loss
# exceeds four times its minimum (the blow-up). Then the pick is put to a test that could fail: three short runs
# of 25 steps from the same initialisation, at the pick, a tenth of it and ten times it.

# %%
from tinydeeplab.exercises import training as reference

BATCH = 8
stream = SyntheticShapes(length=80 * BATCH, size=(32, 32), seed=0, max_shapes=3, colour_hints=True)
loader = BatchLoader(stream, BATCH, seed=0, scale=SCALE, offset=OFFSET)
batches = [batch for batch in loader]                       # 80 batches (8, 32, 32, 3), reused below
lrs = reference.lr_range_schedule(1e-3, 1e2, 80)
model = make_model()
optimizer = SGD(model, lr=lrs[0], momentum=0.9)
range_loss, t0 = [], time.perf_counter()
for lr, (x, y) in zip(lrs, batches):
    range_loss.append(train_step(model, optimizer, x, y, lr)[0])
    smooth = reference.smoothed_loss(range_loss, 0.9)
    if not np.isfinite(range_loss[-1]) or smooth[-1] > 4 * smooth.min():
        break
tested = lrs[:len(range_loss)]
pick = reference.steepest_lr(tested, range_loss, 0.9)
lowest = float(tested[np.argmin(smooth)])
print(f"{len(range_loss)} steps in {time.perf_counter() - t0:.1f} s, stopped at lr {tested[-1]:.3g}; "
      f"steepest descent at lr {pick:.3g}, lowest smoothed loss at lr {lowest:.3g}")

short = {}
for lr in (pick / 10, pick, pick * 10):
    model = make_model()
    optimizer = SGD(model, lr=lr, momentum=0.9)
    short[lr] = [train_step(model, optimizer, x, y, lr)[0] for x, y in batches[:25]]
    print(f"25 steps at lr {lr:8.3g}: mean loss of the last 5 steps {np.mean(short[lr][-5:]):.3f}")
best = min(short, key=lambda lr: np.mean(short[lr][-5:]))
print(f"fastest of the three: lr {best:.3g} ({best / pick:g} x the pick)")
assert tested[0] < pick < tested[-1]
assert np.mean(short[pick][-5:]) < np.mean(short[pick / 10][-5:])   # the pick trains faster than a tenth of it

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), layout="constrained")
axes[0].plot(tested, range_loss, ".", ms=3, color="0.6", label="loss of each step")
axes[0].plot(tested, smooth, color="C0", label="smoothed (beta = 0.9)")
axes[0].axvline(pick, color="C3", ls="--", label=f"steepest descent: {pick:.3g}")
axes[0].axvline(lowest, color="C2", ls=":", label=f"lowest loss: {lowest:.3g}")
axes[0].set(xscale="log", xlabel="learning rate (grows every step)", ylabel="cross-entropy",
            ylim=(0, 2 * max(smooth[:10])), title="learning-rate range test (the blow-up runs off the top)")
axes[0].legend(fontsize=8)
for (lr, curve), colour in zip(short.items(), ("C1", "C3", "C4")):
    axes[1].plot(reference.smoothed_loss(curve, 0.8), color=colour, label=f"lr {lr:.3g}")
axes[1].set(xlabel="step", ylabel="smoothed cross-entropy", title="25 steps from the same initialisation")
axes[1].legend()
plt.show()

# %% [markdown]
# The range test reached learning rates far above the pick without diverging. Two things make that possible here:
# the rate grew *gradually* (a warm-up of its own, next section), and nearly every convolution is followed by batch
# norm, whose output does not change when the convolution's weights are scaled, so a large step mostly makes the
# weights longer and the next effective step smaller. The lowest point of the curve is typically too large a learning
# rate to train with: by then the loss has stopped falling (it reflects the progress made by all the earlier steps).
# The three short runs say how good the pick is; the steepest descent is a *safe* choice, the start of the range in
# which training works, and it is no optimum: when a larger rate trains faster (the printout says whether it does
# here), Smith's recommendation is to use the descent region as the bounds of a cyclical schedule, or the upper end
# with a warm-up.

# %% [markdown]
# ## Warm-up
#
# What happens in the first steps at full learning rate? At initialisation the gradients are at their largest
# (random weights, loss $\approx \ln K$, every pixel wrong), and momentum accumulates them. Starting at a large
# $\eta$, the first updates move the weights by a large fraction of their size in a direction computed from a random
# network. A *linear warm-up* ramps $\eta$ from 0 to its base value over the first $W$ steps
# (`tinydeeplab.train.cosine(step, total, base_lr, warmup=W)`; notebook 06's schedule). Below: the same model, the
# same batches, base $\eta = 4$ with a cosine decay over 30 steps, with and without a 10-step warm-up; after every
# update the loss is measured on one fixed probe batch, so the curves compare like with like.

# %%
BASE, STEPS, WARMUP = 4.0, 30, 10
probe = SyntheticShapes(length=BATCH, size=(32, 32), seed=99, max_shapes=3, colour_hints=True)
px = np.stack([probe[i][0] for i in range(BATCH)]).astype(np.float32) * SCALE + OFFSET     # a fixed batch
py = np.stack([probe[i][1] for i in range(BATCH)]).astype(np.int32)                         # to measure on

def probe_loss(model):
    return F.softmax_cross_entropy_forward(model.forward(px, training=True), py)[0]

runs = {}
for warmup in (0, WARMUP):
    model = make_model()
    optimizer = SGD(model, lr=BASE, momentum=0.9)
    record = {"lr": [], "probe": [probe_loss(model)], "grad_norm": [], "update": []}
    for step, (x, y) in enumerate(batches[:STEPS]):
        lr = cosine(step, STEPS, BASE, warmup=warmup)
        before = np.concatenate([p.ravel() for _, p in model.named_parameters()])
        _, grad_norm, _ = train_step(model, optimizer, x, y, lr)
        after = np.concatenate([p.ravel() for _, p in model.named_parameters()])
        for key, value in (("lr", lr), ("probe", probe_loss(model)), ("grad_norm", grad_norm),
                           ("update", np.linalg.norm(after - before) / np.linalg.norm(before))):
            record[key].append(value)
    runs[warmup] = r = {k: np.array(v) for k, v in record.items()}
    print(f"warm-up {warmup:2d}: probe loss at init and after the first updates {np.round(r['probe'][:5], 2)}, "
          f"highest over the first 10 steps {r['probe'][:11].max():.2f}, after {STEPS} steps {r['probe'][-1]:.3f}")
cold, warm = runs[0], runs[WARMUP]
print(f"gradient norm: {cold['grad_norm'][0]:.2f} at step 0, median {np.median(cold['grad_norm'][-10:]):.2f} over "
      f"the last 10 steps; relative update of the first step: {cold['update'][0]:.3f} without warm-up, "
      f"{warm['update'][0]:.3f} with")
assert cold["probe"][1] > 1.2 * cold["probe"][0]                   # full lr at once: the first update makes it worse
assert cold["probe"][:11].max() > warm["probe"][:11].max()          # warm-up tames the start
assert cold["grad_norm"][0] > 5 * np.median(cold["grad_norm"][-10:])  # the gradients are largest at the start

# %%
fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), layout="constrained")
for warmup, r in runs.items():
    label = f"warm-up {warmup}" if warmup else "no warm-up"
    axes[0].plot(r["lr"], "o-", ms=3, label=label)
    axes[1].plot(r["probe"], "o-", ms=3, label=label)
    axes[2].plot(r["grad_norm"], "o-", ms=3, label=label)
    axes[3].plot(r["update"], "o-", ms=3, label=label)
axes[0].set(title="learning rate", xlabel="step")
axes[1].set(title="loss on a fixed probe batch", xlabel="updates done", yscale="log")
axes[2].set(title="global gradient norm", xlabel="step", yscale="log")
axes[3].set(title="relative update |dtheta| / |theta|", xlabel="step", yscale="log")
axes[0].legend()
plt.show()

# %% [markdown]
# Without warm-up the very first update makes the loss (measured on the same fixed batch before and after) *worse*
# than at initialisation: it is the largest gradient of the run, computed from a random network and applied at the
# full learning rate. With warm-up the same gradients meet small learning rates, and by the time $\eta$ is large the
# gradients have shrunk; the loss still bumps as $\eta$ climbs, but less. Where the two runs end after 30 steps
# is printed above: on this small batch-normalised network it varies with the seed (try `make_model(1)`), while the
# spike at the start does not. The effect grows with the learning rate and the batch size (large-batch training is
# where warm-up became standard).
#
# **Inline question 2.** The range test above ran up to learning rates well above 4 without blowing up, yet
# starting directly at $\eta = 4$ makes the first step worse. Why is this not a contradiction? What does it suggest
# about reading a range test?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The range test is itself a warm-up: by the time it reaches a large rate, the first few dozen small
# steps have moved the weights away from the random initialisation, the gradients have shrunk, and the
# batch-normalised weights have grown (a large weight norm makes the same step a smaller *relative* change). The
# learning rate a range test tolerates is measured on the trajectory it took, not from a fresh initialisation; so
# do not train at the largest rate the test survived (nor at its lowest loss, already past the descent), and use a
# warm-up when the chosen rate is large.
# <!-- END ANSWER -->

# %% [markdown]
# ## Batch norm with small batches: the image-pooling branch at batch 1
#
# ASPP's image-pooling branch (notebook 03) averages the whole feature map to one pixel per image, $(N, 1, 1, C)$,
# then applies a $1\times1$ convolution and batch norm. In training mode BN normalises each channel over the
# $M = N \cdot 1 \cdot 1 = N$ values of the batch. With $N = 1$ each channel has one value: $\mu = x$, so
# $x - \mu = 0$ *exactly*, $\hat x = 0$, and the output is $\beta$ whatever the image. Its gradient,
# $\frac1s(g - \bar g - \hat x\,\overline{g \hat x}) = 0$, reaches nothing before it. Below, tinydeeplab's `ASPP`
# in training mode, with $\beta$ set to visible values; the BN output of the branch is recorded with
# `tinydeeplab.nn.record_outputs`.

# %%
rng = np.random.default_rng(0)
aspp = ASPP(8, [2], num_channels=6, seed=0)
bn = dict(aspp.modules())["pooling.bn"]
bn.params["beta"][...] = rng.normal(0.0, 1.0, 6).astype(np.float32)
features = rng.normal(0.0, 1.0, (8, 6, 6, 8)).astype(np.float32) * rng.uniform(0.5, 2, (8, 1, 1, 1)).astype(np.float32)

def pooled_bn(x, training=True):
    """The BN output of the image-pooling branch, (N, F), and the gradient reaching the branch's conv kernel."""
    with record_outputs(aspp, ["pooling.bn"]) as seen:
        out = aspp.forward(x, training=training)
    aspp.zero_grad()
    aspp.backward(np.random.default_rng(1).standard_normal(out.shape).astype(np.float32))
    return seen["pooling.bn"][:, 0, 0], dict(aspp.modules())["pooling.conv"].grads["kernel"]

singles = [pooled_bn(features[i:i + 1]) for i in range(3)]        # batch 1, three different images
batch8, dk8 = pooled_bn(features)
for i, (out, dk) in enumerate(singles):
    print(f"batch 1, image {i}: BN output {out[0].round(4)}  |d kernel| {np.abs(dk).max():.1e}")
print(f"beta                     {bn.params['beta'].round(4)}")
print(f"batch 8: BN output of image 0 {batch8[0].round(4)}  |d kernel| {np.abs(dk8).max():.1e}")
assert all(np.array_equal(out[0], bn.params["beta"]) for out, _ in singles)     # exactly beta, for any image
assert all(not dk.any() for _, dk in singles) and np.abs(dk8).max() > 1e-3        # no gradient at batch 1

# the moving variance: each batch-1 step feeds it a batch variance of exactly 0
moving = {}
for n in (1, 8):
    layer = ASPP(8, [2], num_channels=6, seed=0)
    trace = []
    for step in range(300):
        xs = rng.normal(rng.normal(0.0, 1.0, (n, 1, 1, 8)), 1.0, (n, 6, 6, 8)).astype(np.float32)  # images differ
        layer.forward(xs, training=True)
        trace.append(float(dict(layer.modules())["pooling.bn"].buffers["moving_variance"].mean()))
    moving[n] = trace
print(f"moving variance of the pooling BN after 300 steps: batch 1 {moving[1][-1]:.4f} (0.99^300 = {0.99 ** 300:.4f}), "
      f"batch 8 {moving[8][-1]:.4f}")
assert abs(moving[1][-1] - 0.99 ** 300) < 1e-4

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.3), layout="constrained")
channels = np.arange(6)
for i, (out, _) in enumerate(singles):
    axes[0].plot(channels + 0.1 * (i - 1), out[0], "o", ms=6, label=f"image {i}, batch 1")
axes[0].plot(channels, bn.params["beta"], "k_", ms=20, mew=2, label="beta")
axes[0].set(xlabel="channel", ylabel="BN output", title="batch 1: the branch outputs beta")
axes[0].legend(fontsize=8)
for i in range(8):
    axes[1].plot(channels, batch8[i], "o-", ms=3, lw=0.8)
axes[1].plot(channels, bn.params["beta"], "k_", ms=20, mew=2)
axes[1].set(xlabel="channel", title="batch 8: one curve per image")
axes[2].plot(moving[1], label="batch 1 (batch variance 0)")
axes[2].plot(moving[8], label="batch 8")
axes[2].set(xlabel="training step", ylabel="mean moving variance", title="the pooling BN's moving variance")
axes[2].legend()
plt.show()

# %% [markdown]
# **Inline question 3.** A DeepLab is fine-tuned with batch size 1 (large crops do not fit otherwise), with every BN
# in training mode. What does the image-pooling branch learn, what happens to it at inference, and what are the
# usual remedies?
#
# <!-- BEGIN ANSWER -->
# **Answer.** In training it outputs $\beta$ for every image, so only $\beta$ (and whatever follows) learns: the
# branch is a learned constant and its $1\times1$ convolution gets exactly zero gradient. Meanwhile its moving
# variance decays towards 0 ($0.99^t$) and its moving mean tracks the pooled values, so at inference the same BN
# computes $\gamma (x - \mu_{\mathrm{mov}})/\sqrt{\sigma^2_{\mathrm{mov}} + \epsilon}$ with a tiny variance: it
# amplifies the branch's input up to $1/\sqrt\epsilon \approx 32\times$, a signal the rest of the network never saw
# in training. Remedies: freeze BN (inference mode, pretrained statistics) when the batch is small, as DeepLabV3 does
# when fine-tuning at output stride 8; larger batches (several crops, or synchronised BN across devices); or a
# normalisation that does not depend on the batch (group or layer norm).
# <!-- END ANSWER -->

# %% [markdown]
# ## Per-tap gradient norms: dead atrous taps
#
# A $3\times3$ kernel at dilation rate $r$ reads $x[i + ra, j + rb]$, $a, b \in \{-1, 0, 1\}$, with "same" zero
# padding. When $r$ is at least the size of the map, every off-centre tap reads padding at every output position
# (notebook 03 counts them), so its weights multiply zeros: their gradient
# $\partial L/\partial w_{ab} = \sum_{n,i,j} x[n, i + ra, j + rb]\, \delta y[n, i, j]$ is *exactly* zero and they never
# learn. The branch is a $1\times1$ convolution with 8/9 of its weights wasted. The per-tap gradient norm
# $\lVert \partial L/\partial w_{ab} \rVert_2$ (over the $C_{\mathrm{in}} \times C_{\mathrm{out}}$ entries of each tap)
# exposes it from one real backward pass.
#
# ### Exercise 3: per-tap gradient norms and dead taps
#
# Write `tap_gradient_norms(dw)` for a kernel gradient `dw` of shape `(kh, kw, Cin, Cout)`: return
# `(norms, dead)`, `norms[i, j]` the L2 norm of `dw[i, j]` (float64, `(kh, kw)`) and `dead` the boolean `(kh, kw)`
# array of the taps whose gradient is exactly zero. The checker names squared, L1 or max norms, the wrong axes, a
# transposed result, a sum that cancels, and a tolerance in place of `== 0`.

# %%
def tap_gradient_norms(dw):
    """Per-tap L2 norms (kh, kw) of a (kh, kw, Cin, Cout) kernel gradient, and the taps whose gradient is exactly 0."""
    # BEGIN SOLUTION
    norms = np.sqrt((dw.astype(np.float64) ** 2).sum(axis=(2, 3)))
    return norms, norms == 0
    # END SOLUTION


# %%
print(check("tap_gradient_norms", tap_gradient_norms))

# %% [markdown]
# Now a real backward through tinydeeplab's `ASPP` with rates 2 and 6, in training mode, with a random upstream
# gradient: once on a 4×4 map (rate 6 exceeds it) and once on a 16×16 map (rate 6 matched to it, as when the output
# stride is lowered from 32 to 8). Then the tiny model trained above: its ASPP sits on $P_5$, whose size we measure
# for a 32×32 input.

# %%
def branch_taps(aspp, x):
    """Per-tap gradient norms of each atrous branch's kernel after one training-mode backward through aspp."""
    out = aspp.forward(x, training=True)
    aspp.zero_grad()
    aspp.backward(np.random.default_rng(2).standard_normal(out.shape).astype(np.float32))
    modules = dict(aspp.modules())
    return {rate: reference.tap_gradient_norms(modules[f"branch{i + 1}.conv"].grads["kernel"])
            for i, rate in enumerate(aspp.dilation_rates)}

aspp = ASPP(8, [2, 6], num_channels=8, seed=0)
taps = {size: branch_taps(aspp, rng.normal(0, 1, (2, size, size, 8)).astype(np.float32)) for size in (4, 16)}
for size, by_rate in taps.items():
    for rate, (norms, dead) in by_rate.items():
        print(f"{size:2d}x{size:<2d} map, rate {rate}: {int(dead.sum())} dead taps {np.argwhere(dead).tolist()}")
centre = np.zeros((3, 3), bool); centre[1, 1] = True
assert np.array_equal(taps[4][6][1], ~centre)                       # rate 6 > 4: exactly the 8 outer taps are dead
assert not taps[4][2][1].any() and not taps[16][6][1].any()         # rate below the map size: every tap learns

p5 = dict(model.backbone.image_encoder.forward(np.zeros((1, 32, 32, 3), np.float32)))["P5"]
model_taps = branch_taps(model.backbone.aspp, rng.normal(0, 1, (2,) + p5.shape[1:]).astype(np.float32))
print(f"the tiny model's P5 for a 32x32 input is {p5.shape[1]}x{p5.shape[2]}; its ASPP rates "
      f"{model.backbone.aspp.dilation_rates}: dead taps per branch "
      f"{ {rate: int(d.sum()) for rate, (_, d) in model_taps.items()} }")
assert all(d.sum() == 8 for _, d in model_taps.values()) == (min(p5.shape[1:3]) <= min(model.backbone.aspp.dilation_rates))

# %%
panels = [(f"rate {r} on {s}x{s}", taps[s][r]) for s, r in ((4, 2), (4, 6), (16, 6))]
panels += [(f"tiny model, rate {r} on {p5.shape[1]}x{p5.shape[2]}", v) for r, v in model_taps.items()]
fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), layout="constrained")
for ax, (title, (norms, dead)) in zip(axes, panels):
    im = ax.imshow(norms, cmap="viridis", vmin=0)
    for (i, j), d in np.ndenumerate(dead):
        ax.text(j, i, "dead" if d else f"{norms[i, j]:.2g}", ha="center", va="center",
                color="w" if d else "k", fontsize=8)
    ax.set_title(title, fontsize=9); ax.set_xticks([]); ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.7)
fig.suptitle("per-tap gradient norm of each atrous 3x3 kernel after one backward")
plt.show()
print(f"notebook executed in {time.perf_counter() - T_START:.0f} s")

# %% [markdown]
# Rate 6 on a 4×4 map is a $1\times1$ convolution in disguise: its 8 outer taps have gradient norm exactly 0. On a
# 16×16 map every tap of both branches learns. This is why the atrous rates must match the output stride (6/12/18
# at output stride 16, doubled at 8, as in [Chen et al. 2017](../docs/bibliography.md#chen2017)), and why a model whose
# deepest map is tiny gains nothing from its atrous branches: only the image-pooling branch and the $1\times1$ branch
# still see context. Looking at per-tap (or per-layer) gradient norms after one backward is a cheap way to find such
# dead parameters in any network: weight decay is then the only thing that ever changes them.
