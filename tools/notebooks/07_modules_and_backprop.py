# %% [markdown]
# # 7. Modules and backprop plumbing: caches, `Sequential`, forks, residual blocks, hooks
#
# **The question.** Notebooks 01–05 wrote each op as a pair `forward(...) -> (y, cache)`,
# `backward(dy, cache) -> grads`. How do those pairs become a network of a hundred layers whose backward pass
# is still written by hand, and where can that plumbing go wrong?
#
# **Why it matters.** tinydeeplab has no autograd tape: every composite module writes its backward in reverse
# order of its forward, and the places where a tensor is read twice (a residual shortcut, the five ASPP
# branches, the V3+ decoder's skip connection) are where the chain rule needs a *sum*. A missing term there
# does not crash: the model trains, worse. This notebook takes the plumbing apart on the NumPy backend, in
# float64 where we check against central differences. You write the backward of a fork and of a ResNet
# bottleneck block ([He et al. 2016](../docs/bibliography.md#he2016)) (two exercises graded by
# `tinydeeplab.exercises.check`) and answer two inline questions.
#
# The rules, for a module $y = f(x; \theta)$ with upstream gradient $\delta y = \partial L/\partial y$:
#
# $$\delta x = J_f(x)^\top \delta y, \qquad \frac{\partial L}{\partial \theta} = J_\theta(x)^\top \delta y,
#   \qquad (g \circ f)^\top: \ \delta x = J_f^\top\,(J_g^\top \delta y)\ \ \text{(reverse order)},$$
#
# $$\text{fork } x \mapsto (x, x):\quad \delta x = \delta x^{(1)} + \delta x^{(2)}, \qquad
#   \text{add } (a, b) \mapsto a + b:\quad \delta a = \delta b = \delta y .$$

# %%
import numpy as np
import matplotlib.pyplot as plt

import tinydeeplab
from tinydeeplab.exercises import check
from tinydeeplab.gradcheck import check_gradients
from tinydeeplab.models import ResNetBackbone
from tinydeeplab.models.aspp import ASPP
from tinydeeplab.models.resnet import Block
from tinydeeplab.nn import Add, BatchNorm, Conv2D, ReLU, Sequential, inference_mode, sum_gradients
from tinydeeplab.nn.hooks import record_outputs

tinydeeplab.set_backend("numpy")               # the reference ops: nothing to compile, float64 works
plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## Caches: what a layer keeps for its backward
#
# A layer's `forward` calls its op and keeps the op's cache on the layer (`layer._cache`); `backward(dy)` hands
# that cache to the op's backward and stores parameter gradients in `layer.grads` (same keys as
# `layer.params`). A cache holds what the gradient formula needs: a convolution its (padded) input and kernel,
# batch norm $\hat x$ and $1/\sqrt{\sigma^2+\epsilon}$, a ReLU the sign mask. During a forward pass *every* layer's
# cache is alive, which is why training needs memory proportional to depth. Inside `inference_mode()` a layer
# drops its cache at once (outputs unchanged; a later `backward` raises). Below: the bytes each layer of a
# small conv–BN–ReLU stack keeps, against the size of its output.

# %%
def cache_bytes(cache):
    """Bytes of the arrays inside a cache (a dict, possibly nested)."""
    if isinstance(cache, np.ndarray):
        return cache.nbytes
    if isinstance(cache, dict):
        return sum(cache_bytes(v) for v in cache.values())
    if isinstance(cache, (list, tuple)):
        return sum(cache_bytes(v) for v in cache)
    return 0


net = Sequential(("conv1", Conv2D(3, 8, 3, seed=1)), ("bn1", BatchNorm(8)), ("relu1", ReLU()),
                 ("conv2", Conv2D(8, 16, 3, strides=2, seed=2)), ("bn2", BatchNorm(16)), ("relu2", ReLU()))
x = rng.standard_normal((4, 16, 16, 3)).astype(np.float32)
kept, out_bytes, h = {}, {}, x
for name, layer in net.children():
    h = layer.forward(h, training=True)
    kept[name], out_bytes[name] = cache_bytes(layer._cache), h.nbytes
for name in kept:
    print(f"{name:6s} keeps {kept[name]:>7,d} bytes (its output: {out_bytes[name]:>7,d} bytes)")

y_train_mode = net.forward(x, training=False)
with inference_mode():
    y_inference = net.forward(x, training=False)
assert np.array_equal(y_train_mode, y_inference)
assert all(layer._cache is None for _, layer in net.children()), "inference_mode keeps no cache"
try:
    net.backward(np.ones_like(y_inference))
except RuntimeError as err:
    print("backward after an inference_mode forward:", err)

fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
pos = np.arange(len(kept))
ax.bar(pos - 0.2, list(kept.values()), 0.4, label="cache kept for backward")
ax.bar(pos + 0.2, list(out_bytes.values()), 0.4, label="output")
ax.set(xticks=pos, xticklabels=list(kept), ylabel="bytes", title="what each layer holds after a training forward")
ax.legend()
plt.show()

# %% [markdown]
# ## `Sequential`: the backward runs the layers in reverse
#
# `Sequential(layer_1, ..., layer_n)` applies them in order; its backward is the chain rule read right to left:
# $\delta x = J_1^\top(\cdots J_n^\top \delta y)$, i.e. `for layer in reversed(layers): d = layer.backward(d)`.
# Each layer's backward uses the cache of its *last* forward. Below, the whole stack is checked against float64
# central differences with `check_gradients` (a random cotangent $c$, $L = \langle f(x), c\rangle$), and the norm of
# the gradient is followed back through the layers.

# %%
net64 = Sequential(*[(n, m) for n, m in net.children()]).astype(np.float64)
x64 = x[:2, :9, :9].astype(np.float64)


def stack_forward(x):
    return net64.forward(x, training=True), None


result = check_gradients(stack_forward, lambda c, _: net64.backward(c), {"x": x64}, rng=1)
print("Sequential backward vs central differences:", result)

c = np.random.default_rng(2).standard_normal(net64.forward(x64, training=True).shape)
norms, d = [("output", float(np.linalg.norm(c)))], c
for name, layer in reversed(list(net64.children())):
    d = layer.backward(d)
    norms.append((f"into {name}", float(np.linalg.norm(d))))
assert np.allclose(d, net64.backward(c))          # the loop above is what Sequential.backward does

fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
ax.plot([n for n, _ in norms], [v for _, v in norms], "o-")
ax.set(ylabel="||gradient||", title="the gradient's norm, followed backward through the stack")
ax.tick_params(axis="x", rotation=30)
plt.show()

# %% [markdown]
# **Inline question 1.** You run `net.forward(batch_a, training=True)`, then `net.forward(batch_b,
# training=True)`, then `net.backward(d_a)` with the gradient of the loss on `batch_a`. What do you get, and why
# does the training loop always alternate forward and backward on the same batch?
#
# <!-- BEGIN ANSWER -->
# **Answer.** Each layer keeps only the cache of its *last* forward, here `batch_b`'s. The backward therefore
# evaluates the Jacobians at `batch_b` (its inputs, its ReLU masks, its batch statistics) and applies them to
# `batch_a`'s upstream gradient: no error is raised, the shapes agree, and the gradient is wrong. (BN's moving
# statistics have moreover been updated twice.) One forward, one backward, on the same batch: the cell below
# shows the mismatch.
# <!-- END ANSWER -->

# %%
batch_a, batch_b = x64, np.random.default_rng(3).standard_normal(x64.shape)
d_a = np.random.default_rng(4).standard_normal(c.shape)
net64.forward(batch_a, training=True)
right = net64.backward(d_a)
net64.forward(batch_a, training=True)
net64.forward(batch_b, training=True)
stale = net64.backward(d_a)
print(f"max |right - stale| = {np.abs(right - stale).max():.3f} (max |right| = {np.abs(right).max():.3f})")
assert not np.allclose(right, stale)

# %% [markdown]
# ## The fork: where gradients add
#
# When several modules read the same tensor $x$, as the five ASPP branches
# ([Chen et al. 2017](../docs/bibliography.md#chen2017)) do with the encoder's map, the forward *copies* $x$ to
# each of them. The adjoint of a copy is a sum: with branch outputs $y_k = f_k(x)$ concatenated along channels,
#
# $$\delta x = \sum_k J_{f_k}(x)^\top\, \delta y_k, \qquad \delta y_k = \text{the channel slice of } \delta y
#   \text{ that belongs to branch } k .$$
#
# `Concatenate.backward(dy)` returns those slices; `tinydeeplab.nn.sum_gradients(fresh, other)` adds two
# gradients, writing over `fresh` (a backward's own output, which nothing else reads) to save a buffer.
#
# ### Exercise 1: the backward of a fork
#
# Write `my_fork_backward(branches, concat, dy)`: the forward has run `concat.forward([b.forward(x) for b in
# branches])`; run the backward of the concat and of every branch, and return $\delta x$. The checker compares
# with twin modules and the parameter gradients left in every branch, and runs a float64 central-difference
# check.

# %%
def my_fork_backward(branches, concat, dy):
    """dx for x read by every branch of `branches`, whose outputs `concat` joined along channels."""
    # BEGIN SOLUTION
    parts = concat.backward(dy)                                  # one channel slice per branch
    dx = branches[0].backward(parts[0])
    for branch, d in zip(branches[1:], parts[1:]):
        dx = dx + branch.backward(d)                             # the fork: gradients add
    return dx
    # END SOLUTION


# %%
print(check("fork_backward", my_fork_backward))

# %% [markdown]
# The library's `ASPP.backward` is such a fork (plus the image-pooling branch, whose $1\times1$ output was resized
# back to the map). Below, each branch's contribution to $\delta x$ is computed separately with the layers'
# backward passes, and their sum is checked against `aspp.backward`: dropping any one term changes $\delta x$ by
# as much as that branch's share.

# %%
aspp = ASPP(4, [1, 2], num_channels=3, seed=0).astype(np.float64)
xa = np.random.default_rng(5).standard_normal((2, 5, 5, 4))
dya = np.random.default_rng(6).standard_normal(aspp.forward(xa, training=True).shape)
dx_library = aspp.backward(dya)

parts = aspp.concat.backward(aspp.projection.backward(dya))
contrib = {f"branch{k}": b.backward(p) for k, (b, p) in enumerate(zip(aspp.branches(), parts[:-1]))}
contrib["pooling"] = aspp.pooling.backward(aspp.pooling_resize.backward(parts[-1]))
total = sum(contrib.values())
print("max |sum of branch gradients - ASPP.backward| =", np.abs(total - dx_library).max())
assert np.allclose(total, dx_library, rtol=1e-12, atol=1e-12)

fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
ax.bar(list(contrib) + ["sum", "ASPP.backward"],
       [np.linalg.norm(v) for v in contrib.values()] + [np.linalg.norm(total), np.linalg.norm(dx_library)],
       color=["C0"] * len(contrib) + ["C1", "C2"])
ax.set(ylabel="||dx||", title="each ASPP branch's share of the gradient w.r.t. the encoder map")
plt.show()

# %% [markdown]
# ## The residual block: a fork, two branches and an add
#
# A KerasHub v1 bottleneck block (`tinydeeplab.models.resnet.Block`) computes
#
# $$r = \underbrace{\mathrm{BN}(\mathrm{conv}_{1\times1})}_{\texttt{conv3}} \circ
#       \underbrace{\mathrm{ReLU}\,\mathrm{BN}(\mathrm{conv}_{3\times3})}_{\texttt{conv2}} \circ
#       \underbrace{\mathrm{ReLU}\,\mathrm{BN}(\mathrm{conv}_{1\times1})}_{\texttt{conv1}}(x), \qquad
#   s = \texttt{shortcut}(x) \ \ (\mathrm{BN}(\mathrm{conv}_{1\times1}) \text{ or the identity}), \qquad
#   y = \mathrm{ReLU}(r + s).$$
#
# Its modules: `block.conv1`, `block.conv2`, `block.conv3` (each a `Sequential`; `block.residual_layers()` lists
# them), `block.shortcut` (`None` for the identity), `block.add` (an `Add`, whose backward hands the same
# gradient to both inputs) and `block.out_relu`. Reverse order: the final ReLU, then the add copies $\delta$ to both
# branches, the residual branch runs backward layer by layer, the shortcut runs backward, and since both
# branches read $x$, their input gradients are summed.
#
# ### Exercise 2: a bottleneck block's backward
#
# Write `my_bottleneck_backward(block, dy)` using only the block's modules' `backward` methods (the block's own
# `backward` is the reference, do not call it). It must work for a projection shortcut and for the identity.
# The checker compares $\delta x$ and every parameter gradient with the library's block on twin copies, and runs
# float64 central differences.

# %%
def my_bottleneck_backward(block, dy):
    """dx of a v1 bottleneck Block after its forward, composed from its layers' backward passes."""
    # BEGIN SOLUTION
    d = block.out_relu.backward(dy)                              # y = ReLU(r + s)
    d_residual, d_shortcut = block.add.backward(d)               # the add copies d to both inputs
    for layer in reversed(block.residual_layers()):              # conv3, conv2, conv1
        d_residual = layer.backward(d_residual)
    if block.shortcut is not None:
        d_shortcut = block.shortcut.backward(d_shortcut)
    return d_residual + d_shortcut                               # both branches read x
    # END SOLUTION


# %%
print(check("bottleneck_backward", my_bottleneck_backward))

# %% [markdown]
# The library block, `Block.backward`, does the same with `sum_gradients`. Below it is checked against central
# differences once more. Then we split $\delta x$ of each block of a small ResNet (two stacks of three blocks) into
# the part that came through the residual branch and the part that came through the shortcut, and check that
# the parts add up to what the stacks' own backward passes return. An identity shortcut hands $\delta$ through
# unchanged: the gradient reaching the first block never has to pass through all the convolutions, which is
# why deep residual networks train.

# %%
enc = ResNetBackbone([8], [7], [4, 4], [3, 3], [1, 2], seed=0).astype(np.float64)
xb = np.random.default_rng(7).standard_normal((2, 32, 32, 3))
blocks = [(f"stack{s}.block{b}", blk) for s in range(2) for b, blk in enumerate(enc.blocks(s))]

x0 = np.random.default_rng(8).standard_normal((2, 4, 4, 8))
block = Block(8, 4, strides=1, dilation=1, block_type="bottleneck_block", conv_shortcut=True,
              pre_activation=False, rng=np.random.default_rng(0)).astype(np.float64)
print("Block.backward vs central differences:",
      check_gradients(lambda x: (block.forward(x, training=True), None), lambda c, _: block.backward(c),
                      {"x": x0}, rng=9))

split = []
with record_outputs(enc, [n for n, _ in blocks]) as outs:
    enc.forward(xb, training=True)
d_top = np.random.default_rng(10).standard_normal(outs[blocks[-1][0]].shape)
d = d_top
for name, blk in reversed(blocks):                     # walk back through the blocks, splitting each dx
    dd = blk.out_relu.backward(d)
    d_res = dd
    for layer in reversed(blk.residual_layers()):
        d_res = layer.backward(d_res)
    d_sc = blk.shortcut.backward(dd) if blk.shortcut is not None else dd
    split.append((name, float(np.linalg.norm(d_res)), float(np.linalg.norm(d_sc))))
    d = d_res + d_sc
split.reverse()
d_library = enc.stack0.backward(enc.stack1.backward(d_top))           # the same caches, the library's backward
assert np.allclose(d, d_library, rtol=1e-12, atol=1e-12), "residual + shortcut parts add up to Block.backward"

fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
pos = np.arange(len(split))
ax.bar(pos - 0.2, [r for _, r, _ in split], 0.4, label="through the residual branch")
ax.bar(pos + 0.2, [s for _, _, s in split], 0.4, label="through the shortcut")
ax.set(xticks=pos, xticklabels=[n for n, _, _ in split], ylabel="||dx||",
       title="where each block's input gradient comes from (identity shortcuts after each stack's first block)")
ax.legend()
plt.show()

# %% [markdown]
# ## Hooks: looking inside without changing the model
#
# `tinydeeplab.nn.hooks.record_outputs(model, names)` wraps the `forward` of the named submodules for the
# duration of a `with` block and stores a *copy* of each output; afterwards the modules are as they were. The
# parity report (notebooks 06 and 13) uses it to read every stage of a model. Below: the spread of every block's
# output in the ResNet above, and what goes wrong without the copy.

# %%
names = ["stem"] + [n for n, _ in blocks]
with record_outputs(enc, names) as seen:
    enc.forward(xb, training=False)
assert "forward" not in vars(enc.stem), "the hook is gone after the with block"

leaky = {}                                             # the same wrapper, but keeping the array, not a copy
conv3 = blocks[1][1].conv3
plain = conv3.forward


def keep(x, training=False):
    out = plain(x, training)
    leaky["conv3"] = out
    return out


object.__setattr__(conv3, "forward", keep)
with record_outputs(enc, [f"{blocks[1][0]}.conv3"]) as copied:
    enc.forward(xb, training=False)
conv3.__dict__.pop("forward", None)                    # (record_outputs removed it already)
key = f"{blocks[1][0]}.conv3"
print("kept array vs copy: max |difference| =", float(np.abs(leaky["conv3"] - copied[key]).max()))
assert not np.allclose(leaky["conv3"], copied[key])

fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), layout="constrained")
axes[0].boxplot([seen[n].ravel() for n in names], showfliers=False)
axes[0].set_xticks(range(1, len(names) + 1), names, rotation=30)
axes[0].set(title="block outputs recorded by record_outputs (inference mode)", ylabel="value")
axes[1].hist(copied[key].ravel(), bins=40, alpha=0.6, label="copy (conv3's output: BN, can be negative)")
axes[1].hist(leaky["conv3"].ravel(), bins=40, alpha=0.6, label="kept array, after the block finished")
axes[1].set(title=f"{key}: a hook that keeps the array sees it overwritten")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# **Inline question 2.** Why did the array kept by the hook change after the forward pass, and which layer
# changed it? Why does tinydeeplab let layers write over their inputs at all?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The block's `Add(inplace=True)` writes $r + s$ over its first input $r$, which is `conv3`'s output
# array, and `out_relu` (in place too) then clips it: the kept array ends as the block's output
# $\mathrm{ReLU}(r + s)$, non-negative, instead of $r$. A hook must copy. In-place layers are safe inside the
# model because of the caches: the add's and the ReLU's inputs are fresh arrays that no other layer reads
# afterwards, and no cache keeps them (a convolution caches its *input*, BN its $\hat x$), so overwriting them
# saves one activation-sized buffer per layer, memory that training holds for the whole forward pass.
# <!-- END ANSWER -->
