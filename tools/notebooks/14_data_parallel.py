# %% [markdown]
# # 14. Data parallelism and synchronized batch norm
#
# **The question.** When N processes (*ranks*) each take a slice of the global batch, run forward and backward on
# it and average their gradients, do they compute the gradient of the big batch, and what must batch norm do so
# that they do?
#
# **Why it matters.** One machine is too slow for DeepLab's schedules, so training is spread over ranks
# (`mpiexec -n N tinydeeplab train ...`, see [the guide](../docs/guides/distributed.md)). Two things silently break
# the equivalence with one big batch: the loss is a mean over *valid* pixels, which differ from rank to rank, and
# batch norm ([Ioffe and Szegedy 2015](../docs/bibliography.md#ioffe2015)) normalises with the statistics of the
# batch it sees, which on a rank is only a few images. DeepLab fine-tunes batch norm
# ([Chen et al. 2017](../docs/bibliography.md#chen2017), [Chen et al. 2018](../docs/bibliography.md#chen2018)) and
# asks for large batches for exactly this reason.
#
# **How this notebook simulates ranks.** No MPI here: every "rank" is a thread of this one process holding a slice
# of the batch, and the allreduce is a plain sum over the ranks' arrays, in rank order
# (`SimulatedAllreduce` below). That is what `mpiexec` computes too: `World.allreduce` in
# `tinydeeplab/train/distributed.py` is `MPI_Iallreduce(..., op=SUM)`, the same sum carried over the network. The
# synchronized batch norm is the library's op, `batchnorm_forward(..., reduce=...)`, with that sum injected.

# %%
import threading
import time

import numpy as np
import matplotlib.pyplot as plt

from tinydeeplab import functional as F
from tinydeeplab.data import SyntheticShapes
from tinydeeplab.exercises import check
from tinydeeplab.train.metrics import ConfusionMatrix

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## N ranks in one process
#
# `SimulatedAllreduce(n).for_rank(r)` is rank r's `allreduce`: it puts its array in slot r, waits until every rank
# has (a barrier: a collective blocks until all ranks call it), and returns the sum of the slots, the same array on
# every rank. `run_ranks(fn, n)` runs `fn(r)` for the n ranks at once and returns their results.

# %%
class SimulatedAllreduce:
    """The allreduce (SUM) of n ranks that are threads of one process."""

    def __init__(self, n):
        self.n, self.slots = n, [None] * n
        self.barrier = threading.Barrier(n, timeout=60)     # a collective waits for everyone (MPI does too)

    def for_rank(self, r):
        def allreduce(local):
            self.slots[r] = np.array(local, np.float64)
            self.barrier.wait()                             # every rank has put its part
            total = sum(self.slots[1:], self.slots[0].copy())   # same order everywhere: same bits everywhere
            self.barrier.wait()                             # every rank has read before a slot is reused
            return total
        return allreduce


def run_ranks(fn, comm):
    """``[fn(0), ..., fn(n - 1)]`` for the n ranks of ``comm``, the n calls running at the same time."""
    out, errors = [None] * comm.n, []

    def main(r):
        try:
            out[r] = fn(r)
        except BaseException as err:                        # noqa: BLE001 - re-raised below
            errors.append(err)
            comm.barrier.abort()                            # like MPI_Abort: release the other ranks

    threads = [threading.Thread(target=main, args=(r,)) for r in range(comm.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


demo = SimulatedAllreduce(3)
local = [np.array([1.0 + r, 4.0 - r]) for r in range(3)]                 # each rank's own numbers
summed = run_ranks(lambda r: demo.for_rank(r)(local[r]), demo)
print([v.tolist() for v in summed])                                       # every rank: the same sum
assert all(np.array_equal(v, sum(local)) for v in summed)

fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), layout="constrained")
for r, v in enumerate(local):
    axes[0].bar(np.arange(2) + 0.25 * r, v, width=0.25, label=f"rank {r}")
axes[0].set(title="before: each rank's array", xticks=[0.25, 1.25], xticklabels=["entry 0", "entry 1"])
axes[0].legend(fontsize=8)
for r, v in enumerate(summed):
    axes[1].bar(np.arange(2) + 0.25 * r, v, width=0.25)
axes[1].set(title="after allreduce (sum): identical on every rank", xticks=[0.25, 1.25],
            xticklabels=["entry 0", "entry 1"])
plt.show()

# %% [markdown]
# ## 1. The averaged gradient is the big-batch gradient, if each rank is weighted
#
# The loss of the global batch is the mean over its valid pixels (label $\ne 255$; notebook 05). With $S_r$ the
# summed pixel losses of rank r, $W_r$ its number of valid pixels, $W = \sum_r W_r$ and $L_r = S_r / W_r$ the loss a
# rank computes on its own slice:
#
# $$L = \frac{\sum_r S_r}{W} = \sum_r \frac{W_r}{W} L_r, \qquad
#   \frac{\partial L}{\partial\theta} = \sum_r \frac{W_r}{W}\,\frac{\partial L_r}{\partial\theta}
#   = \frac1N \sum_r c_r \frac{\partial L_r}{\partial\theta}, \quad c_r = \frac{N W_r}{W}.$$
#
# So the plain average $\frac1N\sum_r \partial L_r/\partial\theta$ is right only when every rank has as many valid
# pixels ($c_r = 1$). tinydeeplab's ranks back-propagate $c_r$ instead of 1 from their own loss (one small
# allreduce of $[S_r, W_r]$ gives everyone $W$) and then average: the docstring of
# `tinydeeplab/train/distributed.py` derives it. Below, a small network without batch norm (conv 3x3, ReLU,
# conv 1x1, cross-entropy; float64), a batch of 4 images split over 2 ranks, and ranks with very different numbers
# of ignored pixels.

# %%
K = 4                                                       # classes of SyntheticShapes
WIDTH = 8


def init_params(seed):
    r = np.random.default_rng(seed)
    p = {"w1": r.normal(0, np.sqrt(2 / 27), (3, 3, 3, WIDTH)), "w2": r.normal(0, np.sqrt(2 / (9 * WIDTH)), (3, 3, WIDTH, WIDTH)),
         "w3": r.normal(0, np.sqrt(1 / WIDTH), (1, 1, WIDTH, K)), "b3": np.zeros(K)}
    for i in (1, 2):
        p[f"g{i}"], p[f"be{i}"] = np.ones(WIDTH), np.zeros(WIDTH)
    return p


def forward(p, x, labels, *, bn=True, reduce=None, moving=None, training=True):
    """conv3x3 -> [BN] -> ReLU -> conv3x3 (dilation 2) -> [BN] -> ReLU -> conv1x1 -> logits, loss.
    ``reduce``: the batch norms' allreduce (SyncBN) or None (this rank's own batch)."""
    caches, h = [], x
    for i, dil in ((1, 1), (2, 2)):
        h, c_conv = F.conv2d_forward(h, p[f"w{i}"], dilation=dil)
        c_bn = None
        if bn:
            mm, mv = moving[i] if moving else (np.zeros(WIDTH), np.ones(WIDTH))
            h, c_bn = F.batchnorm_forward(h, p[f"g{i}"], p[f"be{i}"], mm, mv, training=training, reduce=reduce)
        h, c_relu = F.relu_forward(h)
        caches.append((c_conv, c_bn, c_relu))
    logits, c_out = F.conv2d_forward(h, p["w3"], p["b3"])
    loss, c_loss = F.softmax_cross_entropy_forward(logits, labels)
    return loss, logits, (caches, c_out, c_loss)


def backward(cache, dloss=1.0):
    """Gradients of ``dloss * loss`` with respect to every parameter."""
    caches, c_out, c_loss = cache
    g = {}
    dh, g["w3"], g["b3"] = F.conv2d_backward(F.softmax_cross_entropy_backward(dloss, c_loss), c_out)
    for i in (2, 1):
        c_conv, c_bn, c_relu = caches[i - 1]
        dh = F.relu_backward(dh, c_relu)
        if c_bn is not None:
            dh, g[f"g{i}"], g[f"be{i}"] = F.batchnorm_backward(dh, c_bn)
        dh, g[f"w{i}"], _ = F.conv2d_backward(dh, c_conv)
    return g


def batch(data, idx):
    images = np.stack([data[i][0] for i in idx]).astype(np.float64) / 127.5 - 1.0     # (B, H, W, 3)
    return images, np.stack([data[i][1] for i in idx]).astype(np.int64)               # (B, H, W)


data = SyntheticShapes(64, size=(24, 24), seed=1)
x, y = batch(data, range(4))
y[:2][rng.random(y[:2].shape) < 0.85] = 255                  # rank 0's images: 85 % of the pixels ignored
params = init_params(0)

full_loss, _, full_cache = forward(params, x, y, bn=False)
g_full = backward(full_cache)                                # the big batch's gradient
N = 2
shards = [(x[2 * r:2 * r + 2], y[2 * r:2 * r + 2]) for r in range(N)]
per_rank = [forward(params, xs, ys, bn=False) for xs, ys in shards]
W_r = np.array([(ys != 255).sum() for _, ys in shards])
g_r = [backward(c) for _, _, c in per_rank]
naive = {k: sum(g[k] for g in g_r) / N for k in g_full}
c_r = N * W_r / W_r.sum()
weighted = {k: sum(c * g[k] for c, g in zip(c_r, g_r)) / N for k in g_full}


def rel_err(a, b):
    return max(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max() for k in b)


print(f"valid pixels per rank W_r = {W_r.tolist()}, c_r = {c_r.round(3).tolist()}")
print(f"loss: big batch {full_loss:.10f}  sum_r (W_r/W) L_r {sum(w * l for w, (l, _, _) in zip(W_r / W_r.sum(), per_rank)):.10f}"
      f"  plain mean of L_r {np.mean([l for l, _, _ in per_rank]):.10f}")
print(f"max relative gradient error: plain average {rel_err(naive, g_full):.3g}   weighted {rel_err(weighted, g_full):.2g}")
assert rel_err(weighted, g_full) < 1e-12                     # the big-batch gradient, to float64 round-off
assert rel_err(naive, g_full) > 1e-2                         # the plain average is a different gradient

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
axes[0].bar([f"rank {r}" for r in range(N)], W_r, color=["C1", "C0"])
axes[0].set(ylabel="valid pixels W_r", title="the ranks' shares of the loss")
ref = g_full["w1"].ravel()
axes[1].plot(ref, naive["w1"].ravel(), "o", ms=3, label="plain average of rank gradients")
axes[1].plot(ref, weighted["w1"].ravel(), "x", ms=4, label="weighted by W_r / W")
axes[1].plot([ref.min(), ref.max()], [ref.min(), ref.max()], "k-", lw=0.5)
axes[1].set(xlabel="big-batch dL/dw1", ylabel="from the ranks", title="first conv's gradient")
axes[1].legend()
plt.show()

# %% [markdown]
# ### Exercise 1: the weighted gradient average
#
# Write `weighted_gradient_average(grads, counts)`: `grads` `(N, ...)` holds each rank's gradient of its *own* mean
# loss, `counts` `(N,)` its number of valid pixels; return the gradient of the global batch's mean loss (shape
# `grads.shape[1:]`). A rank with no valid pixel has loss and gradient 0; with no valid pixel anywhere the answer is
# 0. The checker names the plain mean, the counts used without dividing by their sum, an extra $1/N$ and $0/0$.

# %%
def weighted_gradient_average(grads, counts):
    """sum_r (W_r / W) grads[r], W = sum_r W_r (zeros when W = 0)."""
    # BEGIN SOLUTION
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0:
        return np.zeros(np.shape(grads)[1:])
    return np.tensordot(counts / total, np.asarray(grads, np.float64), axes=1)
    # END SOLUTION


# %%
print(check("weighted_gradient_average", weighted_gradient_average))

# %% [markdown]
# **Inline question 1.** If every image of a dataset had the same number of valid pixels, would the plain average
# be exact? Why does the weighting matter more for VOC than for CamVid, and what does the weighting cost in
# communication?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Yes: with equal $W_r$ every $c_r = 1$ and the two coincide. VOC marks object borders (and some whole
# objects) with 255, so the number of valid pixels varies from image to image and from crop to crop (a crop padded
# with 255 beyond the image border has even fewer); CamVid's void class is rarer and more evenly spread, so the
# error is smaller there but not zero. The cost is one allreduce of two numbers $[S_r, W_r]$ per step, negligible
# next to the gradients (millions of numbers); it also gives every rank the global loss, so all ranks take the same
# divergence decision.
# <!-- END ANSWER -->

# %% [markdown]
# ## 2. SyncBN: batch norm over the global batch
#
# In training, batch norm normalises each channel with the mean and biased variance of the $M$ pixels of its batch.
# Both follow from three per-channel sums, and sums over the global batch are sums of the ranks' sums, so one
# fused allreduce of a $(3, C)$ array suffices in forward:
#
# $$s = \textstyle\sum_r \big[\sum x_r,\ \sum x_r^2,\ M_r\big], \qquad M = s_2,\quad \mu = s_0 / M,\quad
#   \sigma^2 = s_1 / M - \mu^2 .$$
#
# Backward: every rank's pixels share $\mu$ and $\sigma^2$, so the gradient reaching $x_r$ needs two sums over
# *all* pixels, again one allreduce of a $(2, C)$ array, $[S_1, S_2] = \sum_r [\sum dy_r,\ \sum dy_r\,\hat x_r]$:
#
# $$dx_r = \frac{1}{\sqrt{\sigma^2 + \epsilon}}\Big(\gamma\,dy_r - \gamma\frac{S_1}{M} - \hat x_r\,\gamma\frac{S_2}{M}\Big),$$
#
# the compact formula of notebook 02 with the means over the global batch. $d\gamma$ and $d\beta$ stay the local
# sums: they are parameter gradients, added over the ranks with all the others. The op is
# `batchnorm_forward(x, ..., training=True, reduce=allreduce)`; the cell below runs it on 2 simulated ranks with
# *different* batch sizes (3 and 1 images) and compares with the op on the whole batch, and with the ranks' own
# statistics (`reduce=None`).

# %%
C = 5
xb = rng.normal(0, 1, (4, 6, 6, C)) * rng.uniform(0.5, 3, C) + rng.normal(0, 2, (4, 1, 1, C))   # images differ
dyb = rng.normal(0, 1, xb.shape)
gamma, beta = rng.uniform(0.5, 2, C), rng.normal(0, 1, C)
mm, mv = np.zeros(C), np.ones(C)
cut = [slice(0, 3), slice(3, 4)]                             # rank 0: 3 images, rank 1: 1 image

y_full, cache_full = F.batchnorm_forward(xb, gamma, beta, mm, mv, training=True)
dx_full, dg_full, db_full = F.batchnorm_backward(dyb, cache_full)


def bn_rank(r, reduce):
    y, cache = F.batchnorm_forward(xb[cut[r]], gamma, beta, mm, mv, training=True, reduce=reduce)
    return (y, cache["mean"], cache["var"]) + F.batchnorm_backward(dyb[cut[r]], cache)


pair = SimulatedAllreduce(2)
synced = run_ranks(lambda r: bn_rank(r, pair.for_rank(r)), pair)
alone = [bn_rank(r, None) for r in range(2)]
for name, res in (("SyncBN", synced), ("per-rank", alone)):
    y_cat, dx_cat = np.concatenate([o[0] for o in res]), np.concatenate([o[3] for o in res])
    dg, db = sum(o[4] for o in res), sum(o[5] for o in res)
    print(f"{name:9s} max |y - y_full| {np.abs(y_cat - y_full).max():.2e}   |dx - dx_full| "
          f"{np.abs(dx_cat - dx_full).max():.2e}   |dgamma| {np.abs(dg - dg_full).max():.2e}   "
          f"|dbeta| {np.abs(db - db_full).max():.2e}")
    if name == "SyncBN":
        assert np.allclose(y_cat, y_full, atol=1e-12) and np.allclose(dx_cat, dx_full, atol=1e-12)
        assert np.allclose(dg, dg_full, atol=1e-10) and np.allclose(db, db_full, atol=1e-10)
        assert np.array_equal(res[0][1], res[1][1]) and np.array_equal(res[0][2], res[1][2])   # both ranks agree
    else:
        assert np.abs(y_cat - y_full).max() > 0.1 and np.abs(dx_cat - dx_full).max() > 0.01

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
for ax, k, key, what in ((axes[0], 1, "mean", "mean"), (axes[1], 2, "var", "variance")):
    ax.plot(cache_full[key], "ks", ms=9, mfc="none", label="whole batch")
    ax.plot(synced[0][k], "k+", ms=10, label="SyncBN (both ranks)")
    for r in range(2):
        ax.plot(alone[r][k], "o", ms=5, label=f"rank {r} alone ({cut[r].stop - cut[r].start} images)")
    ax.set(xlabel="channel", title=f"batch {what} per channel")
    ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ### Exercise 2: the statistics from the ranks' sums
#
# Write `syncbn_statistics(local)`: `local` `(N, 3, C)` holds each rank's per-channel `[sum x, sum x^2, count]`
# (ranks may hold different numbers of pixels); return `(mean, var)`, each `(C,)`, the mean and the **biased**
# variance of the global batch. The checker names the unbiased variance, the mean of per-rank means, the mean of
# per-rank variances and dividing by the number of ranks.

# %%
def syncbn_statistics(local):
    """Global (mean, biased var) per channel from per-rank [sum x, sum x^2, count] (N, 3, C)."""
    # BEGIN SOLUTION
    s = np.asarray(local, np.float64).sum(axis=0)           # (3, C): what the allreduce returns
    mean = s[0] / s[2]
    return mean, s[1] / s[2] - mean ** 2
    # END SOLUTION


# %%
print(check("syncbn_statistics", syncbn_statistics))

# %% [markdown]
# **Inline question 2.** The mean of the ranks' biased variances is never larger than the global batch's variance
# (the cell after this question checks it on the example above). Why? And why does SyncBN's forward send
# $\sum x^2$ rather than each rank's variance?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The law of total variance: the global variance is the (count-weighted) mean of the within-rank
# variances *plus* the variance of the rank means around the global mean; the second term is $\ge 0$, zero only
# when every rank has the same mean. With equal counts, the plain mean of the rank variances is that weighted mean.
# So per-rank statistics underestimate the spread, and more so the more the ranks' batches differ (one image per
# rank: all of the between-image variance is missing). Sending $[\sum x, \sum x^2, M]$ makes the reduction a plain
# sum (what allreduce does, in one message), valid for any counts; variances cannot be summed, and combining them
# correctly would need the means and counts too, i.e. the same information in a more roundabout form. (The
# one-pass $\sum x^2/M - \mu^2$ loses precision when $|\mu| \gg \sigma$; tinydeeplab forms it in float64.)
# <!-- END ANSWER -->

# %%
x_ranks = [xb[:2], xb[2:]]                                   # equal counts: 2 images each
within = np.mean([xr.var(axis=(0, 1, 2)) for xr in x_ranks], axis=0)
between = np.var([xr.mean(axis=(0, 1, 2)) for xr in x_ranks], axis=0)
total = xb.var(axis=(0, 1, 2))
print("global var          ", total.round(3))
print("mean of rank vars   ", within.round(3))
print("+ var of rank means ", (within + between).round(3))
assert np.all(within <= total + 1e-12) and np.allclose(within + between, total)
fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
ax.bar(np.arange(C), within, label="mean of the ranks' variances")
ax.bar(np.arange(C), between, bottom=within, label="variance of the ranks' means")
ax.plot(np.arange(C), total, "k_", ms=20, mew=2, label="global variance")
ax.set(xlabel="channel", title="law of total variance")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## 3. Small per-rank batches without SyncBN
#
# Now the whole training step on 8 simulated ranks with **1 image each** (global batch 8): the network above with
# its two batch norms, plain SGD with momentum, the moving statistics updated from the batch statistics (momentum
# 0.9, as tinydeeplab's layers do), each rank back-propagating $c_r$ and the gradients averaged over the ranks.
# Twice from the same initial weights: with SyncBN (`reduce` = the simulated allreduce) and without
# (`reduce=None`: each rank's statistics are those of its one image). Without SyncBN, rank r's moving statistics
# are its own (MPI ranks would average their buffers when saving; here rank 0's are kept). First, the step with
# SyncBN is the big-batch step: its gradient equals the one of the 8 images in one process.

# %%
RANKS, PER_RANK, STEPS, LR, MOMENTUM_BN = 8, 1, 80, 0.1, 0.9
train = SyntheticShapes(RANKS * PER_RANK * STEPS, size=(24, 24), seed=2)
val = SyntheticShapes(16, size=(24, 24), seed=3)
x_val, y_val = batch(val, range(len(val)))


def rank_step(r, p, moving, comm, sync, xg, yg, record):
    """Rank r's forward and backward on its slice of the global batch (xg, yg); returns its gradients."""
    xs, ys = xg[r * PER_RANK:(r + 1) * PER_RANK], yg[r * PER_RANK:(r + 1) * PER_RANK]
    loss, _, cache = forward(p, xs, ys, reduce=comm.for_rank(r) if sync else None, moving=moving[r])
    S, W = comm.for_rank(r)([loss * (ys != 255).sum(), (ys != 255).sum()])   # global loss and pixel count
    c = RANKS * (ys != 255).sum() / W if W else 0.0
    grads = backward(cache, dloss=c)
    for i in (1, 2):                                         # this rank's batch statistics -> moving statistics
        bn = cache[0][i - 1][1]
        record[r].append((bn["mean"].copy(), bn["var"].copy()))
        moving[r][i] = (F.moving_average(moving[r][i][0], bn["mean"], MOMENTUM_BN),
                        F.moving_average(moving[r][i][1], bn["var"], MOMENTUM_BN))
    return grads, S / W


def bn_inputs(p, xg):
    """The inputs of the two batch norms for the batch xg, as one process sees them (SyncBN statistics)."""
    out, h = [], xg
    for i, dil in ((1, 1), (2, 2)):
        h, _ = F.conv2d_forward(h, p[f"w{i}"], dilation=dil)
        out.append(h)
        h, _ = F.batchnorm_forward(h, p[f"g{i}"], p[f"be{i}"], np.zeros(WIDTH), np.ones(WIDTH), training=True)
        h, _ = F.relu_forward(h)
    return out


def train_run(sync):
    p = init_params(5)
    velocity = {k: np.zeros_like(v) for k, v in p.items()}
    moving = [{i: (np.zeros(WIDTH), np.ones(WIDTH)) for i in (1, 2)} for _ in range(RANKS)]
    log = {"loss": [], "rank0": [], "global": [], "step0_grads": None}
    for step in range(STEPS):
        xg, yg = batch(train, range(step * RANKS * PER_RANK, (step + 1) * RANKS * PER_RANK))
        global_in = bn_inputs(p, xg) if step % 5 == 0 else None
        comm, record = SimulatedAllreduce(RANKS), [[] for _ in range(RANKS)]
        out = run_ranks(lambda r: rank_step(r, p, moving, comm, sync, xg, yg, record), comm)
        grads = {k: sum(g[k] for g, _ in out) / RANKS for k in p}          # the gradient allreduce, / N
        if step == 0:
            log["step0_grads"] = (grads, backward(forward(p, xg, yg)[2]))
        if global_in is not None:                           # rank 0's layer-1 statistics vs the global batch's
            log["rank0"].append(record[0][0])
            log["global"].append((global_in[0].mean(axis=(0, 1, 2)), global_in[0].var(axis=(0, 1, 2))))
            log.setdefault("ranks_var", []).append(np.mean([rec[0][1] for rec in record], axis=0))
        log["loss"].append(out[0][1])
        for k in p:
            velocity[k] = 0.9 * velocity[k] - LR * grads[k]
            p[k] = p[k] + velocity[k]
    return p, moving[0], log


start = time.perf_counter()
runs = {"SyncBN": train_run(True), "per-rank BN": train_run(False)}
print(f"two runs of {STEPS} steps, {RANKS} ranks x {PER_RANK} images: {time.perf_counter() - start:.1f} s")
g_sync, g_one = runs["SyncBN"][2]["step0_grads"]
print(f"step 0, SyncBN ranks vs one process with batch {RANKS * PER_RANK}: max rel gradient error "
      f"{rel_err(g_sync, g_one):.2g}; per-rank BN: {rel_err(runs['per-rank BN'][2]['step0_grads'][0], g_one):.2g}")
assert rel_err(g_sync, g_one) < 1e-10 and rel_err(runs["per-rank BN"][2]["step0_grads"][0], g_one) > 1e-3

# %% [markdown]
# What each run's rank 0 normalised with, against the statistics of the global batch at the same weights, and the
# moving statistics that inference will use, against the statistics of the *whole training set* (all of its
# images in one batch, final weights):

# %%
for name, (p, moving, log) in runs.items():
    r0 = np.array([m for m, _ in log["rank0"]]), np.array([v for _, v in log["rank0"]])
    gl = np.array([m for m, _ in log["global"]]), np.array([v for _, v in log["global"]])
    log["dev_mean"] = np.abs(r0[0] - gl[0]).mean(axis=1)    # per recorded step, averaged over channels
    log["dev_var"] = (r0[1] / gl[1]).mean(axis=1)
    if name == "SyncBN":                                     # the global batch's statistics, exactly
        assert np.allclose(r0[0], gl[0], atol=1e-10) and np.allclose(r0[1], gl[1], rtol=1e-9)
    else:                                                    # the law of total variance, every recorded step
        assert np.all(np.array(log["ranks_var"]) <= gl[1] + 1e-9)
        assert log["dev_mean"].mean() > 1e-3
    full = bn_inputs(p, batch(train, range(len(train)))[0])
    err = [np.abs(moving[i][0] - full[i - 1].mean(axis=(0, 1, 2))).mean() for i in (1, 2)]
    ratio = [np.mean(moving[i][1] / full[i - 1].var(axis=(0, 1, 2))) for i in (1, 2)]
    log["moving_ratio"] = ratio
    cm = ConfusionMatrix(K)
    _, logits, _ = forward(p, x_val, y_val, moving=moving, training=False)
    cm.update(logits.argmax(-1), y_val)
    log["miou"] = cm.miou()
    print(f"{name:12s} |batch mean - global| {log['dev_mean'].mean():.3f}  batch var / global var "
          f"{log['dev_var'].mean():.3f}  | moving mean error {err[0]:.3f}, {err[1]:.3f}  moving var / data var "
          f"{ratio[0]:.3f}, {ratio[1]:.3f}  | final loss {np.mean(log['loss'][-5:]):.3f}  val mIoU {log['miou']:.3f}")
per = runs["per-rank BN"][2]
assert per["dev_var"].mean() < 1.0                           # 1 image sees less spread than 8

fig, axes = plt.subplots(1, 3, figsize=(13, 3.2), layout="constrained")
for name, (_, _, log) in runs.items():
    steps = np.arange(0, STEPS, 5)
    axes[0].plot(np.arange(STEPS), log["loss"], label=name)
    axes[1].plot(steps, log["dev_mean"], "o-", label=name)
    axes[2].plot(steps, log["dev_var"], "o-", label=name)
axes[0].set(xlabel="step", ylabel="global batch loss", title="training loss")
axes[1].set(xlabel="step", ylabel="mean |mu_rank0 - mu_global|", title="layer 1: batch mean used by rank 0")
axes[2].axhline(1, color="k", lw=0.5)
axes[2].set(xlabel="step", ylabel="var_rank0 / var_global", title="layer 1: batch variance used by rank 0")
for ax in axes:
    ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# With SyncBN every rank normalises with exactly the global batch's statistics (asserted), so 8 ranks of 1 image
# train the network of one process with 8. Without it, rank 0 normalises with the statistics of 1 image: a noisy
# mean, and a variance that is systematically too small (the spread between images is missing, asserted above for
# every recorded step), so training sees a differently normalised network from the one inference will run with its
# moving statistics, and those moving statistics are averages of such one-image estimates: they do not match the
# statistics of the data (the moving variance over the data variance is printed above for both layers). On this
# toy problem and with so few steps the effect on the mIoU is modest and its size depends on the seed (the training
# loss is not comparable either: without SyncBN it is measured with per-image normalisation, which the network
# never meets at inference); on DeepLab with 1-2 crops per device it costs
# mIoU points, which is why `--sync-bn` is on by default with more than one rank.
