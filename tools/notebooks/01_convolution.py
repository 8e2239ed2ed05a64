# %% [markdown]
# # 1. Convolution: im2col, stride, padding, dilation, gradients
#
# **The question.** What exactly does a convolution layer compute, forward and backward, and how do stride,
# padding and dilation change *which* pixels each output reads?
#
# **Why it matters.** Almost all the arithmetic of DeepLab is 2-D convolution, and its central idea, trading
# stride for dilation to keep a large feature map, is a statement about these index formulas. A port that
# gets one padding rule or one index of the backward pass wrong still produces plausible-looking numbers;
# only checks like the ones below find it. This notebook builds convolution from its definition, checks every
# step against tinydeeplab's NumPy reference op `tinydeeplab.functional.conv2d_forward`, and ends with a live
# gradient check of `conv2d_backward`. You write three pieces yourself (exercises, graded by
# `tinydeeplab.exercises.check`) and answer two inline questions.
#
# Conventions (the Keras ones): activations are NHWC `(N, H, W, C)`, kernels HWIO `(KH, KW, C, F)`, and
# `dilation=1` is an ordinary convolution. With stride $s$, dilation $d$ and the zero-padded input
# $x_{\mathrm{pad}}$:
#
# $$y[n, o_h, o_w, f] \;=\; b_f + \sum_{i=0}^{K_H-1}\sum_{j=0}^{K_W-1}\sum_{c}
#   x_{\mathrm{pad}}[n,\; o_h s + i d,\; o_w s + j d,\; c]\; w[i, j, c, f].$$
#
# (Strictly this is a cross-correlation: the kernel is not flipped. Deep-learning libraries all call it
# convolution.)

# %%
import numpy as np
import matplotlib.pyplot as plt

from tinydeeplab import functional as F
from tinydeeplab.functional.geometry import same_padding_1d
from tinydeeplab.exercises import check
from tinydeeplab.gradcheck import check_gradients

plt.rcParams.update({"figure.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## im2col: a convolution is one matrix product
#
# For each output pixel, copy the $K_H K_W C$ input values under the kernel into one row of a matrix
# $X_{\mathrm{col}}$ (shape $H_{out}W_{out} \times K_H K_W C$). Flatten the kernel to
# $W_{\mathrm{mat}}$ (shape $K_H K_W C \times F$) in the same $(i, j, c)$ order, which for an HWIO array
# is just `w.reshape(-1, F)`. Then
#
# $$Y = X_{\mathrm{col}}\, W_{\mathrm{mat}} \qquad (H_{out}W_{out} \times F),$$
#
# one GEMM, which is why convolution runs at matrix-multiply speed. Below: a 5×5 one-channel image
# (values 1..25 so you can follow them), a 3×3 kernel with 2 output channels, no padding ("valid").

# %%
def im2col(xpad, kh, kw, stride=1, dilation=1):
    """Rows: output pixels (row-major). Columns: the kh*kw*C input values a window reads, (i, j, c) order.
    xpad: one already-padded image (1, H, W, C)."""
    _, hp, wp, c = xpad.shape
    ho = (hp - (kh - 1) * dilation - 1) // stride + 1
    wo = (wp - (kw - 1) * dilation - 1) // stride + 1
    rows = []
    for oh in range(ho):
        for ow in range(wo):
            r0, c0 = oh * stride, ow * stride
            patch = xpad[0, r0:r0 + (kh - 1) * dilation + 1:dilation,
                            c0:c0 + (kw - 1) * dilation + 1:dilation, :]      # (kh, kw, C)
            rows.append(patch.reshape(-1))                                    # (kh*kw*C,)
    return np.stack(rows), (ho, wo)


x = np.arange(1, 26, dtype=np.float64).reshape(1, 5, 5, 1)      # (N, H, W, C) = (1, 5, 5, 1)
w = rng.integers(-2, 3, size=(3, 3, 1, 2)).astype(np.float64)  # (KH, KW, C, F) = (3, 3, 1, 2)

cols, (ho, wo) = im2col(x, 3, 3)                                # (9, 9): 3x3 outputs, 3x3x1 values each
y_im2col = (cols @ w.reshape(-1, 2)).reshape(1, ho, wo, 2)      # (1, 3, 3, 2)
y_ref, _ = F.conv2d_forward(x, w, padding="valid")
print("im2col matrix shape:", cols.shape)
print("max |im2col - conv2d_forward| =", np.abs(y_im2col - y_ref).max())

# a 1x1 convolution needs no im2col at all: it is one GEMM on the (pixels, channels) view of x
x3 = rng.standard_normal((2, 4, 4, 3)); w1 = rng.standard_normal((1, 1, 3, 5))
print("1x1 conv == reshape @ w[0, 0]:",
      np.allclose(F.conv2d_forward(x3, w1)[0], (x3.reshape(-1, 3) @ w1[0, 0]).reshape(2, 4, 4, 5)))

# %%
def show_matrix(ax, m, title, fmt="{:.0f}", cmap="Blues"):
    ax.imshow(m, cmap=cmap)
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=7)
    ax.set_title(title)
    ax.set_xticks([]); ax.set_yticks([])


fig, axes = plt.subplots(1, 4, figsize=(12, 3.4), gridspec_kw={"width_ratios": [5, 9, 2, 3]})
show_matrix(axes[0], x[0, :, :, 0], "input x (5x5)")
axes[0].add_patch(plt.Rectangle((-0.5, -0.5), 3, 3, fill=False, ec="red", lw=2))
show_matrix(axes[1], cols, "im2col: 9 output pixels x 9 taps")
axes[1].add_patch(plt.Rectangle((-0.5, -0.5), 9, 1, fill=False, ec="red", lw=2))
axes[1].set_ylabel("output pixel"); axes[1].set_xlabel("tap (i, j)")
show_matrix(axes[2], w.reshape(-1, 2), "kernel\n(9 x 2)", cmap="coolwarm")
show_matrix(axes[3], y_ref[0, :, :, 0], "output, filter 0", cmap="Greens")
axes[3].add_patch(plt.Rectangle((-0.5, -0.5), 1, 1, fill=False, ec="red", lw=2))
fig.suptitle("the red window of x = the red row of the im2col matrix -> the red output pixel")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 1: a batched convolution as one matrix product
#
# Write `conv2d_im2col(x, w, b=None, *, stride=1, dilation=1)`: the "valid" convolution of a whole batch
# `x` `(N, H, W, C)` with an HWIO kernel `w`, as one im2col matrix times `w.reshape(-1, F)`, plus the bias.
# Build the matrix without a Python loop over output pixels: for a fixed tap $(i, j)$ the values read by
# all outputs form one strided slice of `x` (shape `(N, H_out, W_out, C)`), so stack the $K_H K_W$ slices.
# Keep the columns in the kernel's $(i, j, c)$ order. The checker compares with `conv2d_forward` on random
# batches, strides and dilations, and recognises a flipped kernel, a wrong column order, a missing bias,
# an ignored stride or dilation.

# %%
def conv2d_im2col(x, w, b=None, *, stride=1, dilation=1):
    """'valid' convolution: x (N, H, W, C), w (KH, KW, C, F), b (F,) or None -> (N, H_out, W_out, F)."""
    n, h, wd, c = x.shape
    kh, kw, _, f = w.shape
    ho = (h - (kh - 1) * dilation - 1) // stride + 1
    wo = (wd - (kw - 1) * dilation - 1) // stride + 1
    # BEGIN SOLUTION
    taps = [x[:, i * dilation:i * dilation + (ho - 1) * stride + 1:stride,
              j * dilation:j * dilation + (wo - 1) * stride + 1:stride, :]         # each (N, H_out, W_out, C)
            for i in range(kh) for j in range(kw)]
    cols = np.stack(taps, axis=3).reshape(n * ho * wo, kh * kw * c)                # columns in (i, j, c) order
    y = (cols @ w.reshape(-1, f)).reshape(n, ho, wo, f)                            # one GEMM
    return y if b is None else y + b
    # END SOLUTION


# %%
print(check("conv2d_im2col", conv2d_im2col))

# %% [markdown]
# **Inline question 1.** A 3×3 convolution (stride 1, "same") runs on a batch of 8 feature maps of
# 64×64×256 in float32. How large is its im2col matrix, compared with the input? Why does a 1×1 convolution
# need no im2col at all?
#
# <!-- BEGIN ANSWER -->
# **Answer.** The matrix has one row per output pixel, $8 \cdot 64 \cdot 64 = 32768$, and one column per tap and
# channel, $9 \cdot 256 = 2304$: $75.5$ M entries, 302 MB, nine times the 33.5 MB input (every input value is
# copied once per tap that reads it). For a 1×1 kernel each window is a single pixel, so the im2col matrix *is*
# the input viewed as a $(N H W) \times C$ matrix: a reshape, no copy, and the convolution is one GEMM with
# `w[0, 0]`, as the cell above showed.
# <!-- END ANSWER -->

# %% [markdown]
# The im2col matrix holds every input value up to $K_H K_W = 9$ times, so for a big feature map it is big
# (tinydeeplab's Numba kernels bound it by working in chunks). The NumPy reference avoids it differently:
# it loops over the $K_H K_W$ taps, and for a fixed tap $(i, j)$ the pixels read by all output positions
# form one strided slice $X_{ij}$ of the padded input, so
#
# $$Y = \sum_{i, j} X_{ij}\, w[i, j] \qquad\text{(each term a } (N H_{out} W_{out} \times C)\,(C \times F)
#   \text{ product)}.$$
#
# Same sum, different order of summation.
#
# ## Stride and Keras "same" padding
#
# With stride $s$, "same" padding makes the output size $\lceil H / s \rceil$. Keras pads
#
# $$P = \max\!\big((\lceil H/s \rceil - 1)\,s + (k-1)\,d + 1 - H,\; 0\big),\qquad
#   P_{\mathrm{before}} = \lfloor P/2 \rfloor,\quad P_{\mathrm{after}} = P - P_{\mathrm{before}},$$
#
# so when $P$ is odd the extra row goes at the **bottom** (and the extra column at the right). Padding
# symmetrically instead (PyTorch's `padding=1`) gives the same output *size* but windows shifted by one
# pixel: different numbers. With stride 1 and an odd kernel $P = (k-1)d$ is even, so "same" is always
# symmetric; the asymmetric case needs a stride. KerasHub's ResNet never meets it: its strided convolutions
# (the stem, the 3×3 of each downsampling bottleneck, the max pool) pad explicitly with a symmetric
# `ZeroPadding2D` and then run a "valid" convolution, and its "same" convolutions all have stride 1. A port
# must copy what the model does (explicit padding + "valid"), not re-derive it from "same".
#
# ### Exercise 2: Keras "same" padding
#
# Write `keras_same(size, k, s, d=1)` returning `(before, after)` along one axis, from the formula above.
# The checker tries every size up to 20 with several kernels, strides and dilations against the library's
# `same_padding_1d`, and names the usual slips (extra row on the wrong side, dilation forgotten, no clamp
# at 0, PyTorch's symmetric rule, floor instead of ceil).

# %%
def keras_same(size, k, s, d=1):
    """Keras "same" padding (before, after) for an axis of length size, kernel k, stride s, dilation d."""
    # BEGIN SOLUTION
    out = -(-size // s)                                   # ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2
    # END SOLUTION


# %%
print(check("keras_same_padding", keras_same))

# %%
print(" H  s  (before, after) from the library's same_padding_1d")
for size in range(4, 9):
    for s in (1, 2):
        pads = same_padding_1d(size, 3, s, 1)
        print(f"{size:2d} {s:2d}  {pads}{'   <- asymmetric' if pads[0] != pads[1] else ''}")

x6 = rng.standard_normal((1, 6, 6, 1))
k3 = rng.standard_normal((3, 3, 1, 1))
y_same, cache = F.conv2d_forward(x6, k3, stride=2, padding="same")
y_explicit, _ = F.conv2d_forward(x6, k3, stride=2, padding=((0, 1), (0, 1)))
y_symmetric, _ = F.conv2d_forward(x6, k3, stride=2, padding=1)
print("pads chosen by conv2d_forward:", cache["pads"])
print("same == explicit ((0,1),(0,1)):", np.array_equal(y_same, y_explicit))
print("output shapes, same vs symmetric:", y_same.shape, y_symmetric.shape,
      "  max difference:", round(float(np.abs(y_same - y_symmetric).max()), 3))

# %%
def draw_padding(ax, size, pads, stride, title):
    (top, bottom), (left, right) = pads
    hp, wp = size + top + bottom, size + left + right
    for r in range(hp):
        for c in range(wp):
            inside = top <= r < top + size and left <= c < left + size
            ax.add_patch(plt.Rectangle((c, r), 1, 1, fc="0.8" if inside else "white", ec="0.5",
                                       hatch=None if inside else "//"))
    n_out = (hp - 3) // stride + 1
    for oh in range(n_out):
        for ow in range(n_out):
            ax.plot(ow * stride + 1.5, oh * stride + 1.5, "o", color="C3")       # window centres
    ax.add_patch(plt.Rectangle((0, 0), 3, 3, fill=False, ec="C3", lw=2))         # the first window
    ax.set_xlim(0, wp); ax.set_ylim(hp, 0); ax.set_aspect("equal"); ax.axis("off")
    ax.set_title(title)


fig, axes = plt.subplots(1, 2, figsize=(7, 3.8), layout="constrained")
draw_padding(axes[0], 6, ((0, 1), (0, 1)), 2, 'Keras "same": pad (0, 1)')
draw_padding(axes[1], 6, ((1, 1), (1, 1)), 2, "symmetric: pad (1, 1)")
fig.suptitle("6x6 input (grey), 3x3 kernel, stride 2: centres of the 3x3 output windows (red)")
plt.show()

# %% [markdown]
# **Inline question 2.** The 3×3 stride-2 convolution of a KerasHub bottleneck is `ZeroPadding2D(1)` followed
# by a "valid" convolution. On an input of side 64, compare it with Keras "same" padding: output sizes, and
# which input rows the first two output rows read.
#
# <!-- BEGIN ANSWER -->
# **Answer.** Both give 32 outputs. "Same" needs $P = (32 - 1)\cdot 2 + 3 - 64 = 1$, all of it after: pads
# $(0, 1)$, so output row 0 reads rows 0, 1, 2 and row 1 reads rows 2, 3, 4. `ZeroPadding2D(1)` + "valid" pads
# $(1, 1)$ (66 rows, $\lfloor (66 - 3)/2 \rfloor + 1 = 32$ outputs), so row 0 reads rows $-1$ (padding), 0, 1 and
# row 1 reads rows 1, 2, 3: every window is shifted up by one pixel. Same shapes, different numbers, which is
# why the padding must be copied from the model rather than re-derived from "same".
# <!-- END ANSWER -->

# %% [markdown]
# ## Dilation (atrous convolution)
#
# Dilation $d$ spaces the taps $d$ pixels apart: tap $(i, j)$ reads $x_{\mathrm{pad}}[o_h s + i d, \dots]$.
# A $k \times k$ kernel then covers $k_{\mathrm{eff}} = (k-1)d + 1$ pixels per side with only $k^2$ weights.
# It is the same as an ordinary convolution with a $k_{\mathrm{eff}} \times k_{\mathrm{eff}}$ kernel that
# has zeros between the taps ("holes", *à trous*) — but without paying for the zeros. DeepLab uses it to
# enlarge the field of view without downsampling.

# %%
def insert_holes(w, d):
    """The equivalent undilated kernel: zeros between the taps, (k-1)*d+1 per side."""
    kh, kw, c, f = w.shape
    big = np.zeros(((kh - 1) * d + 1, (kw - 1) * d + 1, c, f), w.dtype)
    big[::d, ::d] = w
    return big


x9 = rng.standard_normal((1, 9, 9, 2))
w9 = rng.standard_normal((3, 3, 2, 4))
for d in (1, 2, 3):
    y_dil, _ = F.conv2d_forward(x9, w9, dilation=d)
    y_big, _ = F.conv2d_forward(x9, insert_holes(w9, d))
    print(f"dilation {d}: effective kernel {(3 - 1) * d + 1}x{(3 - 1) * d + 1},",
          "same as the kernel with holes:", np.allclose(y_dil, y_big))

# %%
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
for ax, d in zip(axes, (1, 2, 4)):
    grid = np.zeros((11, 11))
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            grid[5 + i * d, 5 + j * d] = 1
    ax.imshow(grid, cmap="Oranges", vmin=0, vmax=1.3)
    ax.set_xticks(np.arange(-0.5, 11, 1), minor=True); ax.set_yticks(np.arange(-0.5, 11, 1), minor=True)
    ax.grid(which="minor", color="0.7"); ax.tick_params(which="both", length=0)
    ax.set_xticklabels([]); ax.set_yticklabels([])
    ax.set_title(f"3x3, dilation {d}: covers {(3 - 1) * d + 1}x{(3 - 1) * d + 1}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The receptive field grows with the atrous rates
#
# The receptive field of an output pixel $p$ is the set of input pixels that can change it: the support of
# $\partial y_p / \partial x$. The backward pass computes exactly that: put a one-hot cotangent at $p$
# ($\delta y = e_p$) and run `conv2d_backward` down through a stack of convolutions. With all-ones kernels
# there is no cancellation, and the value at each input pixel counts the paths from it to $p$.
#
# Each $3 \times 3$ layer of rate $d_\ell$ widens the field by $2 d_\ell$, so a stack has width
# $1 + 2\sum_\ell d_\ell$. Equal rates above 1 leave holes: with rates $2,2,2,2$ only even offsets are
# reached (the "gridding" artefact); mixing rates (1, 2, 4, 8) covers the field densely.

# %%
def receptive_field(rates, size=41):
    """|d y_centre / d x| through a stack of 3x3 all-ones convolutions with these dilation rates."""
    x = np.zeros((1, size, size, 1))               # the convs are linear: the gradient ignores x's values
    w = np.ones((3, 3, 1, 1))
    caches = []
    for r in rates:
        x, cache = F.conv2d_forward(x, w, dilation=r, padding="same")
        caches.append(cache)
    dy = np.zeros_like(x)
    dy[0, size // 2, size // 2, 0] = 1.0           # one-hot cotangent at the centre output pixel
    for cache in reversed(caches):
        dy, _, _ = F.conv2d_backward(dy, cache)
    return dy[0, :, :, 0]


stacks = {"rates 1,1,1,1": [1, 1, 1, 1], "rates 2,2,2,2": [2, 2, 2, 2], "rates 1,2,4,8": [1, 2, 4, 8]}
fig, axes = plt.subplots(1, 3, figsize=(10, 3.8), layout="constrained")
for ax, (name, rates) in zip(axes, stacks.items()):
    field = receptive_field(rates)
    rows, cols_ = np.nonzero(field)
    width = cols_.max() - cols_.min() + 1
    print(f"{name}: measured width {width}, formula 1 + 2*sum(rates) = {1 + 2 * sum(rates)}, "
          f"{np.count_nonzero(field)} of {width * width} pixels in the box reached")
    ax.imshow(np.log1p(field), cmap="magma")
    ax.set_title(f"{name}\nwidth {width}")
    ax.axis("off")
fig.suptitle("receptive field of the centre pixel (log(1 + number of paths))")
plt.show()

# %% [markdown]
# ## A gradient check, live
#
# `conv2d_backward(dy, cache)` returns a vector–Jacobian product: for the scalar
# $L = \langle y, c\rangle = \sum y \odot c$ with upstream gradient (cotangent) $c$, it returns
# $\partial L/\partial x$, $\partial L/\partial w$, $\partial L/\partial b$:
#
# $$\frac{\partial L}{\partial w[i,j]} = X_{ij}^{\top} C, \qquad
#   \frac{\partial L}{\partial x} = \mathrm{crop}\Big(\sum_{i,j} \mathrm{scatter}_{ij}\big(C\, w[i,j]^{\top}\big)\Big),
#   \qquad \frac{\partial L}{\partial b} = \sum_{n,o_h,o_w} c[n, o_h, o_w, :],$$
#
# where $X_{ij}$ is the $(N H_{out} W_{out} \times C)$ matrix of the pixels tap $(i, j)$ reads and $C$ the
# $(N H_{out} W_{out} \times F)$ matrix of the cotangent: the matrix product $X_{ij}^{\top} C$ already sums over
# $n, o_h, o_w$, and $\mathrm{scatter}_{ij}$ adds each row of $C\,w[i,j]^{\top}$ back at the pixel it was read from.
#
# ### Exercise 3: the backward pass
#
# Write `conv2d_backward(dy, x, w, *, stride=1, dilation=1)` for the "valid" convolution (padding, as in
# KerasHub, is a separate layer): return `(dx, dw, db)` shaped like `x`, `w` and `(F,)`. Loop over the taps
# as the forward does; for each tap, `dw[i, j]` is one `tensordot` and `dx` receives `dy @ w[i, j].T` at the
# pixels the tap read. The checker compares with `conv2d_backward` on random cases and runs a float64
# central-difference check of your function.

# %%
def conv2d_backward(dy, x, w, *, stride=1, dilation=1):
    """Gradients of the 'valid' y = conv(x, w) + b for the upstream gradient dy (N, H_out, W_out, F)."""
    kh, kw = w.shape[:2]
    _, ho, wo, _ = dy.shape
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    # BEGIN SOLUTION
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilation, i * dilation + (ho - 1) * stride + 1, stride)
            cols = slice(j * dilation, j * dilation + (wo - 1) * stride + 1, stride)
            dw[i, j] = np.tensordot(x[:, rows, cols, :], dy, axes=([0, 1, 2], [0, 1, 2]))  # (C, F)
            dx[:, rows, cols, :] += dy @ w[i, j].T                                         # (N, H_out, W_out, C)
    db = dy.sum(axis=(0, 1, 2))                                                            # (F,)
    # END SOLUTION
    return dx, dw, db


# %%
print(check("conv2d_backward", conv2d_backward))

# %% [markdown]
# Now the same check by hand, on the library's `conv2d_backward` with "same" padding.
#
# We compare each entry with a central difference
# $\dfrac{L(\theta + \varepsilon e_k) - L(\theta - \varepsilon e_k)}{2\varepsilon}$, whose error is
# $O(\varepsilon^2)$ from truncation plus about $u\,|L|/\varepsilon$ from rounding ($u$ the unit roundoff). In
# float64 ($u \approx 10^{-16}$) $\varepsilon = 10^{-6}$ leaves about $10^{-9}$ here; in float32
# ($u \approx 6\cdot10^{-8}$) no $\varepsilon$ is good, hence float64 checks. The cotangent is **random**: with
# $c = 1$ a backward that mixed up output positions could still pass. The shape below (6 × 5, stride 2) makes
# the padding asymmetric in H and symmetric in W, and the bias is included.

# %%
x = rng.standard_normal((2, 6, 5, 3))       # float64
w = rng.standard_normal((3, 3, 3, 4))
b = rng.standard_normal(4)
opts = dict(stride=2, dilation=1, padding="same")

y, cache = F.conv2d_forward(x, w, b, **opts)
c = rng.standard_normal(y.shape)             # random cotangent
dx, dw, db = F.conv2d_backward(c, cache)     # analytic gradients of L = <y, c>


def L():
    return float(np.sum(F.conv2d_forward(x, w, b, **opts)[0] * c))


def central_differences(theta, eps=1e-6):
    """dL/dtheta entry by entry; perturbs theta in place and restores it."""
    grad = np.zeros_like(theta)
    for k in np.ndindex(theta.shape):
        old = theta[k]
        theta[k] = old + eps; plus = L()
        theta[k] = old - eps; minus = L()
        theta[k] = old
        grad[k] = (plus - minus) / (2 * eps)
    return grad


numeric = {"x": central_differences(x), "w": central_differences(w), "b": central_differences(b)}
analytic = {"x": dx, "w": dw, "b": db}
for name in analytic:
    err = np.abs(analytic[name] - numeric[name]).max()
    print(f"d{name}: {analytic[name].size:4d} entries, max |analytic - numeric| = {err:.2e}")
    assert err < 1e-6

# the library wraps the same procedure:
print(check_gradients(F.conv2d_forward, F.conv2d_backward, {"x": x, "w": w, "b": b}, kwargs=opts, rng=1))

# %%
eps_grid = np.logspace(-13, -1, 25)
k = (0, 5, 1, 1)                            # one entry of x: the last row, next to the bottom padding
# the convolution is linear in x, so a central difference of L has no truncation error at all;
# to see the general picture add a nonlinearity: L_tanh = <tanh(y), c>, whose backward is the
# chain rule  dL/dy = c * (1 - tanh(y)^2)  followed by conv2d_backward
dx_tanh = F.conv2d_backward(c * (1 - np.tanh(y) ** 2), cache)[0]
errors = {}
for label, dtype, squash, exact in (("linear L, float64", np.float64, None, dx),
                                    ("tanh L, float64", np.float64, np.tanh, dx_tanh),
                                    ("tanh L, float32", np.float32, np.tanh, dx_tanh)):
    xd, wd, bd, cd = (a.astype(dtype) for a in (x, w, b, c))
    f = (lambda v: v) if squash is None else squash
    errs = []
    for eps in eps_grid:
        xp, xm = xd.copy(), xd.copy()
        xp[k] += dtype(eps); xm[k] -= dtype(eps)
        step = float(xp[k]) - float(xm[k])   # the step actually taken after rounding
        lp = np.sum(f(F.conv2d_forward(xp, wd, bd, **opts)[0]) * cd, dtype=np.float64)
        lm = np.sum(f(F.conv2d_forward(xm, wd, bd, **opts)[0]) * cd, dtype=np.float64)
        errs.append(abs((lp - lm) / step - exact[k]) if step else np.nan)
    errors[label] = errs

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for name, marker in (("x", "o"), ("w", "s"), ("b", "^")):
    axes[0].plot(numeric[name].ravel(), analytic[name].ravel(), marker, ms=3, label=f"d{name}")
lim = np.abs(axes[0].get_xlim()).max()
axes[0].plot([-lim, lim], [-lim, lim], "k-", lw=0.5)
axes[0].set(xlabel="central difference", ylabel="conv2d_backward", title="analytic vs numeric")
axes[0].legend()
for name, marker in (("x", "o"), ("w", "s"), ("b", "^")):
    axes[1].semilogy(np.abs(analytic[name] - numeric[name]).ravel() + 1e-18, marker, ms=3, label=f"d{name}")
axes[1].set(xlabel="entry", ylabel="|analytic - numeric|", title="per-entry error (float64, eps 1e-6)")
for name, errs in errors.items():
    axes[2].loglog(eps_grid, errs, "o-", ms=3, label=name)
axes[2].set(xlabel="eps", ylabel="|error|", title=f"entry dx{list(k)}: error vs step size")
axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Right panel: for the linear $L$ a central difference is exact up to rounding, so the error only shrinks as
# $\varepsilon$ grows. With the $\tanh$ the classic V appears: on the left rounding dominates (slope $-1$), on
# the right truncation (slope $+2$). float64 gets to about $10^{-11}$ around $\varepsilon \approx 10^{-5}$;
# float32 stays several orders of magnitude worse at every step size (its best point needs a large step,
# where truncation already dominates), too coarse to tell a small bug from rounding. That is why
# tinydeeplab's gradient checks (`tinydeeplab.gradcheck`, and the slow test suite through whole networks)
# run in float64 while training runs in float32.
