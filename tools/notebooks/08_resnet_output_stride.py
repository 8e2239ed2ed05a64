# %% [markdown]
# # 8. ResNet and output stride: trading stride for dilation
#
# **The question.** A ResNet classifier shrinks a 512×512 image to a 16×16 map (output stride 32). How does
# DeepLab keep a 32×32 or 64×64 map (output stride 16 or 8) *without* new weights and without losing the
# receptive field, and what does it cost?
#
# **Why it matters.** This is the central idea of DeepLab ([Chen et al. 2015](../docs/bibliography.md#chen2015),
# [2017a](../docs/bibliography.md#chen2017deeplab), [2017b](../docs/bibliography.md#chen2017)): a segmentation
# network needs both a large receptive field (to know *what* a region is) and a dense feature map (to know
# *where* its boundary is). Striding buys the first and loses the second; atrous (dilated) convolution
# ([Yu & Koltun 2016](../docs/bibliography.md#yu2016)) keeps both, at a price in compute that you measure here.
# The output stride also decides how many of ASPP's atrous taps read real pixels (notebook 03), so the choice
# of rates is tied to it.
#
# The plan: measure the receptive field of a ResNet encoder ([He et al. 2016](../docs/bibliography.md#he2016))
# with one backward pass and compare it with the formula you write (exercise 1); write DeepLab's atrous schedule
# (exercise 2) and build the encoder at output stride 32, 16 and 8 from *one* set of weights; count the
# multiply-adds and time the stages; watch ASPP's live taps change; and try multi-grid.
#
# The encoder below is a small bottleneck ResNet built explicitly with `ResNetBackbone` (8 to 64 filters instead
# of 64 to 512, 1-1-2-3 blocks instead of ResNet-50's 3-4-6-3), so that everything runs in seconds; the
# geometry (strides, dilations, receptive fields, map sizes) is that of any four-stage ResNet.

# %%
import os
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before NumPy loads: timings of one core, not of thread contention
import inspect
import time

import numpy as np
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

import tinydeeplab
from tinydeeplab.exercises import check
from tinydeeplab.exercises.aspp import live_tap_fraction as tap_fraction        # the reference of notebook 03
from tinydeeplab.exercises.atrous import receptive_field as rf_reference
from tinydeeplab.models import ResNetBackbone
from tinydeeplab.models.resnet import atrous_schedule as package_schedule
from tinydeeplab.nn.hooks import record_outputs
from tinydeeplab.nn.layers import Conv2D, MaxPool2D

tinydeeplab.set_backend("numpy")      # the NumPy reference ops: nothing to compile
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
CONFIG = dict(input_conv_filters=[8], input_conv_kernel_sizes=[7], stackwise_num_filters=[8, 16, 32, 64],
              stackwise_num_blocks=[1, 1, 2, 3], stackwise_num_strides=[1, 2, 2, 2],
              block_type="bottleneck_block")
SIDE = 512
image = np.random.default_rng(0).standard_normal((1, SIDE, SIDE, 3)).astype(np.float32)   # (1, 512, 512, 3)

# %% [markdown]
# ## The receptive field, measured by one backward pass
#
# The *receptive field* of an output position is the set of input pixels it depends on. For a chain of layers
# (kernel $k_i$, stride $s_i$, dilation $d_i$, input first) it is a square of side
#
# $$ R = 1 + \sum_{i=1}^{L} (k_i - 1)\, d_i\, J_{i-1}, \qquad J_0 = 1,\quad J_i = s_1 s_2 \cdots s_i, $$
#
# where the *jump* $J_{i-1}$ is the distance, in input pixels, between two neighbouring positions of layer
# $i$'s input: a $k\times k$ filter at rate $d$ spans $(k - 1)d + 1$ of its input positions, that is
# $(k-1)\,d\,J_{i-1}$ more input pixels than one position does. A residual block has two paths; the longest
# (through the $3\times3$) sets the field, the $1\times1$ convolutions add nothing.
#
# ### Exercise 1: the receptive field of a stack of layers
#
# Write `receptive_field(layers)`: `layers` is a list of `(kernel, stride, dilation)` from the input to the
# output; return `(size, jump)`, the side $R$ of the field and the final jump $J_L$ (the output stride of the
# stack). The checker compares with the formula on 43 random stacks and recognises a missing dilation, a
# missing jump, and the jump taken *after* the layer instead of before.

# %%
def receptive_field(layers):
    """(size, jump) of the receptive field of a stack of (kernel, stride, dilation) layers, input first."""
    # BEGIN SOLUTION
    size, jump = 1, 1
    for kernel, stride, dilation in layers:
        size += (kernel - 1) * dilation * jump       # the layer's span, in input pixels
        jump *= stride                               # spacing of this layer's outputs on the input
    return size, jump
    # END SOLUTION


# %%
print(check("receptive_field", receptive_field))

# %% [markdown]
# Now the encoder. The layers that widen the field are the stem's $7\times7/2$ convolution and $3\times3/2$ max
# pool and every block's $3\times3$ convolution; we read their kernel, stride and dilation from the modules
# themselves, so the list below is what the encoder really runs. We build it at output stride 32 (KerasHub's
# ResNet), 16 and 8; the weights are the same for the three (next section).

# %%
def widening_layers(encoder):
    """(kernel, stride, dilation) of the layers on the encoder's longest path, in order (1x1 convs skipped)."""
    layers = []
    for name, m in encoder.modules():
        if isinstance(m, MaxPool2D):
            layers.append((m.pool_size, m.strides, 1))
        elif isinstance(m, Conv2D) and m.params["kernel"].shape[0] > 1:
            layers.append((m.params["kernel"].shape[0], m.strides[0], m.dilation_rate[0]))
    return layers


encoders = {os_: ResNetBackbone(**CONFIG, output_stride=os_, seed=0) for os_ in (None, 16, 8)}
for os_, enc in encoders.items():
    enc.load_state_dict(encoders[None].state_dict())              # one set of weights for the three
    layers = widening_layers(enc)
    size, jump = rf_reference(layers)
    assert jump == enc.pyramid_strides["P5"]                       # the layer list reaches P5's stride
    print(f"output stride {os_ or 32}: (k, s, d) = {layers}\n    -> receptive field {size}, jump {jump}")

# %% [markdown]
# To *measure* the field, backpropagate a one-hot gradient: put $\partial L/\partial P_5 = 1$ at one position
# (all channels) and $0$ elsewhere, run the encoder's backward pass, and look at which input pixels get a
# nonzero gradient. The bounding box of that set is the receptive field (a pixel outside it cannot influence
# the output; inside it, a ReLU that is off or a max pool that picks another pixel can hide a few of them,
# which a random input makes unlikely at the edges of the box).

# %%
def one_hot_input_gradient(encoder, x, level="P5"):
    """d P[level][0, centre, centre, :].sum() / d x: the input gradient of one output position (N = 1)."""
    p = encoder.forward(x)[level]
    g = np.zeros_like(p)
    g[0, p.shape[1] // 2, p.shape[2] // 2, :] = 1.0
    return np.abs(encoder.backward({level: g})[0]).sum(axis=-1)       # (H, W)


def extent(mask):
    """(first row, last row, first col, last col) of the True entries."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


measured = {}
for os_, enc in encoders.items():
    grad = one_hot_input_gradient(enc, image)
    r0, r1, c0, c1 = extent(grad > 0)
    analytic = rf_reference(widening_layers(enc))[0]
    measured[os_] = (grad, (r0, r1, c0, c1), analytic)
    assert r1 - r0 + 1 == c1 - c0 + 1 == analytic, (os_, r1 - r0 + 1, analytic)
    # the effective field: the central square holding 90 % of the gradient mass
    centre, total = (r0 + r1) // 2, grad.sum()
    half = next(h for h in range(analytic) if grad[centre - h:centre + h + 1, centre - h:centre + h + 1].sum()
                >= 0.9 * total)
    assert 2 * half + 1 < analytic
    print(f"OS {os_ or 32}: nonzero gradient on rows {r0}..{r1}, cols {c0}..{c1}: {r1 - r0 + 1} px "
          f"= analytic {analytic}; 90 % of |grad| within the central {2 * half + 1} px")

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
for ax, (os_, (grad, (r0, r1, c0, c1), analytic)) in zip(axes, measured.items()):
    im = ax.imshow(np.log10(grad + 1e-12), cmap="magma", vmin=np.log10(grad.max()) - 6)
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, ec="cyan", lw=1))
    ax.set_title(f"output stride {os_ or 32}: field {analytic} px (box)")
    ax.axis("off")
fig.colorbar(im, ax=axes, shrink=0.8, label="log10 |dP5(centre) / dx|")
plt.show()

# %% [markdown]
# The box is exactly the analytic field, but the gradient inside it is far from uniform: it is concentrated in
# the middle (more paths lead there): 90 % of it lies in a central square clearly smaller than the box (printed
# above), the *effective* receptive field is smaller than the theoretical one.
# Note also that the field *grows* at output stride 16 and 8: tinydeeplab's dilated stages use rate 2 (4) in
# every block, including the first one, whose $3\times3$ used to be the strided one.
#
# ## Stride for dilation: the same weights on a denser grid
#
# A stride-2 stage halves the map; the layers after it see a grid twice as coarse. DeepLab removes the stride
# and instead spreads every later $3\times3$ filter by 2 (rate 2), so that each filter still covers the same
# extent of the image, sampled on a grid twice as fine. Removing the next stride doubles the rate again. The
# *schedule*: walk through the stages keeping the running stride (the stem already divides by 4); while
# multiplying by the stage's stride stays within the target output stride, keep it; otherwise set the stride
# to 1 and multiply the dilation by it, for this stage and every later one.
#
# ### Exercise 2: the atrous schedule
#
# Write `atrous_schedule(strides, output_stride)`: `strides` lists each stage's stride (e.g. `[1, 2, 2, 2]` for
# ResNet), `output_stride` is 8, 16, 32 or `None` (keep the strides); return one `(stride, dilation)` pair per
# stage, as tinydeeplab's `ResNetBackbone(output_stride=...)` uses them: in a stage that gives up its stride,
# every block already uses the multiplied dilation. Do not modify the list you are given. The checker
# recognises rates that do not compound, a stage dilated when its stride lands exactly on the target, a
# forgotten stem, a rate raised one stage late, and swapped pairs.

# %%
def atrous_schedule(strides, output_stride):
    """[(stride, dilation), ...] per stage reaching output_stride (None: keep the strides); the stem gives 4."""
    # BEGIN SOLUTION
    pairs, total, dilation = [], 4, 1
    for stride in strides:
        if output_stride is not None and total * stride > output_stride:
            dilation *= stride                        # give up the stride, spread the filters instead
            pairs.append((1, dilation))
        else:
            total *= stride
            pairs.append((stride, dilation))
    return pairs
    # END SOLUTION


# %%
print(check("atrous_schedule", atrous_schedule))

# %% [markdown]
# The three encoders above were built from the package's schedule and loaded with the same weights. Their state
# dicts are identical (the dilation is not a weight: a $3\times3$ kernel is 9 numbers whatever its rate), yet P5
# grows from 16×16 to 32×32 and 64×64.

# %%
print("package schedule:", {os_: package_schedule([1, 2, 2, 2], os_) for os_ in (None, 16, 8)})
states = {os_: enc.state_dict() for os_, enc in encoders.items()}
same = all(np.array_equal(states[None][k], states[o][k]) for o in (16, 8) for k in states[None])
assert same and all(set(states[o]) == set(states[None]) for o in (16, 8))
pyramids = {os_: {k: v.shape for k, v in enc.forward(image).items()} for os_, enc in encoders.items()}
for os_, shapes in pyramids.items():
    print(f"OS {os_ or 32}: same weights: {same};", {k: v[1:3] for k, v in shapes.items()})
assert [pyramids[o]["P5"][1] for o in (None, 16, 8)] == [SIDE // 32, SIDE // 16, SIDE // 8]

# %% [markdown]
# **What it costs.** A convolution with a $k\times k$ kernel from $C_{in}$ to $C_{out}$ channels on an
# $h\times w$ output does $h\,w\,k^2\,C_{in}\,C_{out}$ multiply-adds, independent of the dilation. We record the
# output shape of every convolution during a forward pass and add up the multiply-adds per stage.

# %%
conv_names = {os_: [n for n, m in enc.modules() if isinstance(m, Conv2D)] for os_, enc in encoders.items()}


def macs_per_layer(encoder, names, x):
    """{conv name: (multiply-adds, output side)} for every Conv2D, from the output shapes of a forward pass."""
    modules = dict(encoder.modules())
    with record_outputs(encoder, names) as seen:
        encoder.forward(x)
    out = {}
    for n in names:
        kh, kw, c_in, c_out = modules[n].params["kernel"].shape
        _, h, w, _ = seen[n].shape                                          # (N, h, w, C_out)
        out[n] = (h * w * kh * kw * c_in * c_out, h)
    return out


per_layer = {os_: macs_per_layer(enc, conv_names[os_], image) for os_, enc in encoders.items()}
stages = sorted({n.split(".")[0] for n in per_layer[None]}, key=lambda s: (s != "stem", s))
macs = {os_: {s: sum(m for n, (m, _) in layers.items() if n.startswith(s + ".")) for s in stages}
        for os_, layers in per_layer.items()}
for os_ in (16, 8):
    ratios = {s: macs[os_][s] / macs[None][s] for s in stages}
    print(f"OS {os_} / OS 32 multiply-adds per stage:", {s: round(r, 2) for s, r in ratios.items()},
          f" whole encoder x{sum(macs[os_].values()) / sum(macs[None].values()):.2f}")
# layer by layer: a conv whose output was at 1/32 (1/16) costs 4 (16) times more at OS 16 (OS 8), any other the same
for os_, factor in ((16, {SIDE // 32: 4}), (8, {SIDE // 32: 16, SIDE // 16: 4})):
    for n, (m, side) in per_layer[None].items():
        assert per_layer[os_][n][0] == factor.get(side, 1) * m, (os_, n)
before = [n for n, (m, side) in per_layer[None].items() if n.startswith("stack3") and side != SIDE // 32]
print("stack 3 convolutions that ran before the stride (unchanged cost):", before)

# %% [markdown]
# And the time: each stage's forward pass alone, best of three, on one core (the setup cell pins OpenBLAS to one
# thread so that the numbers compare stages rather than the scheduling of threads on a busy machine). At these
# small widths a stage's time also holds per-call overheads (Python, memory traffic of im2col and BN) that do not
# scale with the multiply-adds, so the times grow by less than the counts: the counts are the hardware-free
# measure, the times what this machine does with them.

# %%
def stage_times(encoder, x, repeats=3):
    """Best-of-`repeats` forward time of the stem and of each stack, fed with the real intermediate maps."""
    names = ["stem"] + [f"stack{s}" for s in range(encoder.num_stacks)]
    times = {}
    for n in names:
        module, best = getattr(encoder, n), np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            y = module.forward(x)
            best = min(best, time.perf_counter() - t0)
        times[n], x = best, y
    return times


times = {os_: stage_times(enc, image) for os_, enc in encoders.items()}
for os_ in (None, 16, 8):
    print(f"OS {os_ or 32}: " + ", ".join(f"{s} {1e3 * t:.0f} ms" for s, t in times[os_].items())
          + f"; whole forward {1e3 * sum(times[os_].values()):.0f} ms, last stage x"
          f"{times[os_]['stack3'] / times[None]['stack3']:.1f} vs OS 32")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
width = 0.27
for i, os_ in enumerate((None, 16, 8)):
    pos = np.arange(len(stages)) + (i - 1) * width
    axes[0].bar(pos, [macs[os_][s] / 1e6 for s in stages], width, label=f"OS {os_ or 32}")
    axes[1].bar(pos, [1e3 * times[os_][s] for s in stages], width, label=f"OS {os_ or 32}")
axes[0].set(xticks=range(len(stages)), xticklabels=stages, ylabel="million multiply-adds",
            title=f"multiply-adds per stage, {SIDE}x{SIDE} input")
axes[1].set(xticks=range(len(stages)), xticklabels=stages, ylabel="ms (best of 3)", title="forward time per stage")
for ax in axes:
    ax.legend()
plt.show()

# %% [markdown]
# **Exactly the same features, on a denser grid?** Yes, with the right schedule. Take the stride-2 $3\times3$ of
# the first block of stack 3: at stride 1 and rate 1 it computes, at the even positions, exactly what it computed
# with stride 2; the later filters at rate 2 on the dense map then read exactly the inputs they read at rate 1 on
# the coarse map. So the block that loses its stride keeps the *previous* rate, and only the blocks after it get
# the new one (DeepLab's and torchvision's `replace_stride_with_dilation` convention, and tinydeeplab's): then the
# dense P5 sampled at even positions *is* the strided network's P5 — the "algorithme à trous" — and pretrained
# weights keep their meaning. Putting the new rate in that first block too computes a different function from the
# same weights (with a wider field), shown here for contrast.

# %%
p5_strided = encoders[None].forward(image)["P5"]                      # (1, 16, 16, 256)
p5_dense = encoders[16].forward(image)["P5"]                          # (1, 32, 32, 256)
naive = ResNetBackbone(**CONFIG, output_stride=16, seed=1)
naive.load_state_dict(encoders[None].state_dict())
naive.blocks(3)[0].conv2.conv.dilation_rate = (2, 2)                  # the new rate in the de-strided block too
p5_naive = naive.forward(image)["P5"]
scale = np.abs(p5_strided).max()
err_package = np.abs(p5_dense[:, ::2, ::2] - p5_strided).max() / scale
err_naive = np.abs(p5_naive[:, ::2, ::2] - p5_strided).max() / scale
print(f"max |dense[::2, ::2] - strided| / max |strided|: tinydeeplab (previous rate in block 0) {err_package:.1e}, "
      f"new rate in block 0 {err_naive:.2f}")
assert err_package < 1e-5 < err_naive
fields = [rf_reference(widening_layers(e))[0] for e in (encoders[None], encoders[16], naive)]
print("receptive fields: OS 32 {}, tinydeeplab OS 16 {}, new rate in block 0 {}".format(*fields))
assert fields[0] == fields[1] < fields[2]

ch = int(np.argmax(p5_strided[0].std(axis=(0, 1))))                # the channel that varies most
fig, axes = plt.subplots(1, 4, figsize=(13, 3), layout="constrained")
for ax, (title, m) in zip(axes, ((f"OS 32: P5 (16x16), channel {ch}", p5_strided[0, :, :, ch]),
                                 ("tinydeeplab OS 16: P5 (32x32)", p5_dense[0, :, :, ch]),
                                 ("tinydeeplab OS 16, even positions", p5_dense[0, ::2, ::2, ch]),
                                 ("new rate in block 0, even positions", p5_naive[0, ::2, ::2, ch]))):
    ax.imshow(m, cmap="viridis", vmin=p5_strided[0, :, :, ch].min(), vmax=p5_strided[0, :, :, ch].max())
    ax.set_title(title)
    ax.axis("off")
plt.show()

# %% [markdown]
# **Inline question 1.** Going from output stride 32 to 16 multiplies the multiply-adds of every convolution
# that produced a 1/32 map by exactly 4, and going to 8 multiplies those at 1/16 by 4 and those at 1/32 by 16.
# Why, although no weight was added? Why is the last stage's factor a little under 4, the whole encoder's much
# smaller, and why does DeepLabV3 train at output stride 16 and only evaluate at 8?
#
# <!-- BEGIN ANSWER -->
# **Answer.** A convolution's cost is (output positions) × $k^2 C_{in} C_{out}$, and dilation changes neither
# $k$ nor the channels: it only changes which inputs are read. Removing a stride 2 doubles the map's side, so
# every layer after it has 4 times as many output positions; removing two strides gives 16 times for the last
# stage. The first $1\times1$ of the first block of a stage runs *before* its stride (on the 1/16 map already),
# so it does not change, hence a factor a little under 4 per stage. The stem and the early stages run at the
# same resolution as before and do not change either, so the whole encoder's factor is a weighted average of 1 and 4 (or 16), dominated by how much of the compute sits in the
# late stages (in ResNet-50 stack 2 with its 6 blocks holds a large share, so OS 8 is very expensive). Memory
# for the activations grows the same way. DeepLabV3 therefore trains at OS 16 (cheaper, batch-norm statistics
# from larger batches) and evaluates at OS 8 with doubled rates, where a denser map gives finer boundaries for
# a one-off cost ([Chen et al. 2017](../docs/bibliography.md#chen2017)).
# <!-- END ANSWER -->
#
# ## ASPP's live taps follow the output stride
#
# ASPP sits on P5. Notebook 03 showed that a $3\times3$ filter at rate $r$ on an $S\times S$ map reads real pixels
# with only a fraction of its taps, and none but the centre once $r \ge S$. The map side $S$ is crop / output
# stride, measured here from the encoders' P5 for a 512 crop; the rates are DeepLabV3's 6/12/18 (its training
# rates at OS 16) and their doubles 12/24/36 (its OS 8 rates).

# %%
p5_side = {os_: pyramids[os_]["P5"][1] for os_ in (None, 16, 8)}
rate_sets = {"6/12/18": (6, 12, 18), "12/24/36": (12, 24, 36)}
live = {(os_, name): [tap_fraction(p5_side[os_], p5_side[os_], r) for r in rates]
        for os_ in (None, 16, 8) for name, rates in rate_sets.items()}
for (os_, name), fr in live.items():
    print(f"OS {os_ or 32} (P5 {p5_side[os_]}x{p5_side[os_]}), rates {name}: live-tap fractions "
          + ", ".join(f"{f:.2f}" for f in fr))
assert np.isclose(live[(None, "6/12/18")][2], 1 / 9)                    # rate 18 on 16x16: the centre only
assert min(live[(16, "6/12/18")]) > 1 / 9 and min(live[(8, "12/24/36")]) > 1 / 9

crops = np.arange(128, 1025, 32)
# halving the output stride doubles the map side, so doubled rates give exactly the same fractions
assert all(np.isclose(tap_fraction(c // 16, c // 16, r), tap_fraction(c // 8, c // 8, 2 * r))
           for c in crops for r in (6, 12, 18))
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
labels = [f"OS {o or 32}" for o in (None, 16, 8)]
for k, (name, rates) in enumerate(rate_sets.items()):
    pos = np.arange(3) + (k - 0.5) * 0.35
    for j, r in enumerate(rates):
        axes[0].bar(pos + j * 0.1 - 0.1, [live[(o, name)][j] for o in (None, 16, 8)], 0.1,
                    color=f"C{j + 3 * k}", label=f"rate {r}")
axes[0].axhline(1 / 9, color="k", lw=0.5, ls=":")
axes[0].set(xticks=range(3), xticklabels=labels, ylabel="fraction of the 9 taps live",
            title=f"{SIDE} crop: left 6/12/18, right 12/24/36")
axes[0].legend(fontsize=7, ncol=2)
for os_, rates, ls in ((16, (6, 12, 18), "-"), (8, (12, 24, 36), "--")):
    for j, r in enumerate(rates):
        axes[1].plot(crops, [tap_fraction(c // os_, c // os_, r) for c in crops], ls, color=f"C{j}",
                     label=f"OS {os_}, rate {r}")
axes[1].axhline(1 / 9, color="k", lw=0.5, ls=":")
axes[1].set(xlabel="square crop side (pixels)", ylabel="fraction of the 9 taps live", title="vs crop size")
axes[1].legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# In the right panel the dashed OS 8 curves (rates 12/24/36) lie exactly on the solid OS 16 ones (rates 6/12/18):
# per axis a $\pm r$ tap is live at $\max(S - r, 0)/S$ of the positions, which does not change when $S$ and $r$
# double together (the cell asserts it). That is why DeepLab doubles the rates when it halves the output stride.
#
# **Inline question 2.** A recipe trains at output stride 16 with rates 6/12/18 on 512 crops, and you move to
# 256 crops to fit a bigger batch. Which branch degenerates, and how should the rates change? What if you instead
# keep 512 crops but move to output stride 32?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The rates are measured in P5 pixels, so what matters is the P5 side $S$ = crop / OS. At 512/16 the
# map is 32×32 and every tap of every branch is live somewhere. At 256/16 it is 16×16: rate 18 $\ge 16$ reads
# only its centre (a $1\times1$ conv whose 8 outer weights never get a gradient) and rate 12 uses 25 % of its
# taps on average. To look at the same *fraction of the image* the rates must scale with $S$: halve them (3/6/9)
# when the crop halves, exactly as DeepLab doubles them from OS 16 to OS 8. OS 32 at 512 gives the same 16×16
# map as OS 16 at 256, with the same degeneration (notebook 03's observation for the from-scratch recipes). The
# evaluation sizes must not switch on taps that training never reached either (docs/DESIGN: rates are chosen for
# the smallest map a recipe sees in training).
# <!-- END ANSWER -->
#
# ## Multi-grid: different rates inside the last stage
#
# DeepLabV3 (section 3.2) gives the three blocks of the last stage their own *unit rates*
# $(r_1, r_2, r_3) = (1, 2, 4)$, multiplied by the stage's rate: at OS 16 the three $3\times3$ convolutions use
# rates 2, 4, 8 instead of 2, 2, 2. Does tinydeeplab's encoder support it?

# %%
params = inspect.signature(ResNetBackbone).parameters
print("ResNetBackbone arguments:", list(params))
has_multi_grid = any("grid" in p for p in params)
print("multi-grid supported:", has_multi_grid)

# %% [markdown]
# It does not: `output_stride` sets one dilation per stack. The rates are attributes of the `Conv2D` modules, so we
# set them by hand on a copy of the OS 16 encoder (the weights again unchanged) and compute what multi-grid does:
# the receptive field (analytic, with the reference of exercise 1, and measured), and which P4 positions feed
# one P5 position through the last stage. That last map shows the *gridding* problem
# ([Wang et al. 2018](../docs/bibliography.md#wang2018)): with only even rates, the $3\times3$ filters of stack 3
# never mix positions of different parity, so each P5 position sees one P4 position in four.

# %%
def with_last_stage_rates(rates):
    """A copy of the OS-16 encoder (same weights) whose last-stage 3x3 convolutions use `rates`, block by block."""
    enc = ResNetBackbone(**CONFIG, output_stride=16, seed=2)
    enc.load_state_dict(encoders[None].state_dict())
    for block, r in zip(enc.blocks(3), rates):
        block.conv2.conv.dilation_rate = (r, r)
    return enc


def last_stage_footprint(encoder):
    """|dP5(centre)/dP4| summed over channels: which P4 positions one P5 position reads through stack 3."""
    p4 = encoder.forward(image)["P4"]                                  # (1, 32, 32, C4)
    p5 = encoder.stack3.forward(p4)
    g = np.zeros_like(p5)
    g[0, p5.shape[1] // 2, p5.shape[2] // 2, :] = 1.0
    return np.abs(encoder.stack3.backward(g)[0]).sum(axis=-1)         # (32, 32)


variants = {"tinydeeplab OS16: 2, 2, 2": (2, 2, 2), "multi-grid (1, 2, 4) x 2: 2, 4, 8": (2, 4, 8),
            "hybrid dilated (Wang et al.): 1, 2, 5": (1, 2, 5)}
results = {}
for title, rates in variants.items():
    enc = with_last_stage_rates(rates)
    analytic = rf_reference(widening_layers(enc))[0]                   # on the image
    stage_field = rf_reference([(3, 1, r) for r in rates])[0]           # of stack 3 alone, on P4
    foot = last_stage_footprint(enc)
    r0, r1, c0, c1 = extent(foot > 0)
    assert r1 - r0 + 1 == c1 - c0 + 1 == stage_field
    centre = foot.shape[0] // 2
    rows, cols = np.nonzero(foot)
    odd = np.mean(((rows - centre) % 2 == 1) | ((cols - centre) % 2 == 1))
    results[title] = (foot, stage_field, odd)
    print(f"{title:34s} field on the image {analytic} px, of stack 3 on P4 {stage_field} (measured "
          f"{r1 - r0 + 1}); P4 positions read {len(rows)}, at an odd offset {odd:.0%}; live taps on the "
          f"{foot.shape[0]}x{foot.shape[0]} map: " + ", ".join(f"{tap_fraction(*foot.shape, r):.2f}" for r in rates))
assert results["tinydeeplab OS16: 2, 2, 2"][2] == 0 and results["multi-grid (1, 2, 4) x 2: 2, 4, 8"][2] == 0
hdc_foot = results["hybrid dilated (Wang et al.): 1, 2, 5"][0]
r0, r1, c0, c1 = extent(hdc_foot > 0)
assert results["hybrid dilated (Wang et al.): 1, 2, 5"][2] > 0 and (hdc_foot[r0:r1 + 1, c0:c1 + 1] > 0).all()

fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
for ax, (title, (foot, analytic, odd)) in zip(axes, results.items()):
    ax.imshow(foot > 0, cmap="gray_r", interpolation="nearest")
    ax.set_title(f"{title}\nstack-3 field {analytic} P4 px, odd offsets {odd:.0%}")
    ax.axis("off")
fig.suptitle("P4 positions (32x32) that reach the centre of P5 through stack 3 (black)")
plt.show()

# %% [markdown]
# Multi-grid widens the field of the last stage (rates 2, 4, 8 span $1 + 2(2+4+8) = 29$ P4 positions instead of
# 13) at no cost: the multiply-adds depend on the map and the channels only. It does not cure gridding: all
# three rates are even, so the centre of P5 still reads only the P4 positions at even offsets (in the figure,
# a lattice with holes: 3 of every 4 P4 positions never reach it). Rates without a common factor, as in Wang et
# al.'s hybrid dilated convolution (1, 2, 5), fill the whole square: every offset from $-8$ to $8$ is a sum
# $a + 2b + 5c$ with $a, b, c \in \{-1, 0, 1\}$ (the cell asserts the square is full).
# ASPP's rates 6/12/18 are even too; of its branches only image pooling reads every position.
#
# **What you measured.** The receptive field of a ResNet encoder is the formula of exercise 1, checked pixel by
# pixel by a one-hot backward pass; trading a stride for dilation keeps every weight, quadruples the map (and the
# late stages' multiply-adds), and keeps the field (exactly, in the à trous convention); the output stride decides
# how many ASPP taps are live for a crop, so rates scale with crop / OS; and multi-grid is a free widening of the
# last stage that tinydeeplab can run but does not expose as an argument.
