"""Module exercises (notebook 07): the backward of a fork, and of a ResNet bottleneck block.

===================  =============================================================  ===========================
name                 the student writes                                             reference
===================  =============================================================  ===========================
fork_backward        ``fn(branches, concat, dy) -> dx``: several modules read the    the sum of the branches'
                     same ``x``, their outputs are concatenated; after the forward  input gradients (ASPP's
                     pass, run the backward and return the gradient w.r.t. ``x``    backward)
bottleneck_backward  ``fn(block, dy) -> dx`` for a ``tinydeeplab.models.resnet``     ``Block.backward`` and
                     ``Block`` (v1 bottleneck) after its forward: the block's        float64 central
                     backward composed from its layers' ``backward``                 differences
===================  =============================================================  ===========================

Both checkers run on the NumPy backend in float64, on two twin copies of the modules (same seed,
same input): one goes through the student's function, the other through the reference; then the
input gradients *and* every parameter gradient left in the modules are compared, so a branch whose
``backward`` was never called is named. A float64 central-difference check of the student's
function ends each checker.

>>> from tinydeeplab.exercises import check
>>> def last_branch_only(branches, concat, dy):       # forgets that every branch read x
...     parts = concat.backward(dy)
...     for branch, d in zip(branches, parts):
...         dx = branch.backward(d)
...     return dx
>>> check("fork_backward", last_branch_only)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tinydeeplab.exercises.ExerciseFailure: fork_backward: dx is wrong: you returned the gradient of the last branch only...
"""
from __future__ import annotations

import numpy as np

from ..backend import use_backend
from ..nn import Concatenate, Conv2D, ReLU, Sequential
from . import exercise
from ._grading import Variant, attempt, check_backward, compare, fail


# --- the fork ------------------------------------------------------------------------------------------------------

def _fork(seed: int, c_in: int, widths):
    """Branches reading one input (a 1x1 conv, a dilated 3x3 conv, conv -> ReLU, ...) and their concat."""
    rng = np.random.default_rng(seed)
    branches = []
    for k, f in enumerate(widths):
        if k % 3 == 0:
            b = Conv2D(c_in, f, 1, seed=int(rng.integers(2**31)))
        elif k % 3 == 1:
            b = Conv2D(c_in, f, 3, dilation_rate=2, seed=int(rng.integers(2**31)))
        else:
            b = Sequential(("conv", Conv2D(c_in, f, 3, seed=int(rng.integers(2**31)))), ("relu", ReLU()))
        branches.append(b.astype(np.float64))
    return branches, Concatenate()


def _fork_forward(branches, concat, x):
    return concat.forward([b.forward(x) for b in branches])


def fork_backward(branches, concat, dy):
    """The reference: split ``dy`` at the concat, run every branch backward, add the input gradients."""
    parts = concat.backward(dy)
    dx = branches[0].backward(parts[0])
    for branch, d in zip(branches[1:], parts[1:]):
        dx = dx + branch.backward(d)
    return dx


def _branch_grads(branches):
    return [dict(b.named_gradients()) for b in branches]


def _compare_param_grads(got, want, what, case):
    """Every parameter gradient the student's backward left in the modules vs the reference's."""
    for k, (g, w) in enumerate(zip(got, want)):
        for name, value in w.items():
            label = f"{what} {k}'s {name} gradient"
            if not np.any(g[name]) and np.any(value):
                fail(f"{label} is zero: that module's backward was never called (every branch must "
                     f"run its backward with its slice of dy)", case)
            compare(g[name], value, label, case, rtol=1e-7, atol=1e-10)


@exercise("fork_backward", "backward through a fork: branches reading one x, concatenated (gradients add)")
def _check_fork_backward(fn):
    n = 0
    with use_backend("numpy"):
        for seed, shape, widths in ((0, (2, 5, 6, 3), (4, 2, 3)), (1, (1, 7, 4, 2), (3, 5)),
                                    (2, (2, 4, 4, 4), (2, 2, 2, 2))):
            x = np.random.default_rng(seed).standard_normal(shape)
            mine, ref = _fork(seed, shape[3], widths), _fork(seed, shape[3], widths)
            y = _fork_forward(*mine, x)
            _fork_forward(*ref, x)
            dy = np.random.default_rng(seed + 10).standard_normal(y.shape)
            case = {"x": x, "branch widths": widths, "dy": dy}
            got = attempt(fn, case, mine[0], mine[1], dy.copy())
            want = fork_backward(*ref, dy.copy())
            parts = np.split(dy, np.cumsum(widths)[:-1], axis=-1)
            alone = [_fork(seed, shape[3], widths) for _ in widths]         # each branch's dx on its own
            singles = []
            for k, (branches, _) in enumerate(alone):
                branches[k].forward(x)
                singles.append(branches[k].backward(parts[k]))
            compare(got, want, "dx", case, rtol=1e-7, atol=1e-10, variants=[
                Variant(singles[-1], "you returned the gradient of the last branch only: every branch read x, "
                                     "so dx is the sum of all the branches' input gradients"),
                Variant(singles[0], "you returned the gradient of the first branch only: every branch read x, "
                                    "so dx is the sum of all the branches' input gradients"),
                Variant(want / len(widths), "you averaged the branches' gradients: at a fork they add up "
                                            "(the adjoint of copying x is a sum)"),
                Variant(sum(singles[:-1]), "the last branch's gradient is missing from the sum")])
            _compare_param_grads(_branch_grads(mine[0]), _branch_grads(ref[0]), "branch", case)
            n += 1
        x = np.random.default_rng(7).standard_normal((1, 4, 5, 2))
        branches, concat = _fork(7, 2, (2, 3, 2))

        def forward(x):
            return _fork_forward(branches, concat, x), None

        summary = check_backward(forward, lambda c, _: fn(branches, concat, c), {"x": x}, {},
                                 {"x": x, "branch widths": (2, 3, 2)}, grad_names=("x",))
    return f"{n} cases, {summary}"


# --- the bottleneck block ------------------------------------------------------------------------------------------

def _block(seed: int, c_in: int, filters: int, strides: int, conv_shortcut: bool):
    from ..models.resnet import Block

    rng = np.random.default_rng(seed)
    block = Block(c_in, filters, strides=strides, dilation=1, block_type="bottleneck_block",
                  conv_shortcut=conv_shortcut, pre_activation=False, rng=rng).astype(np.float64)
    for _, m in block.modules():                      # non-trivial BN statistics and affine parameters
        if "moving_mean" in m.buffers:
            c = m.params["gamma"].size
            m.params["gamma"] = rng.uniform(0.5, 1.5, c)
            m.params["beta"] = rng.normal(0.0, 0.3, c)
            m.buffers["moving_mean"] = rng.normal(0.0, 0.3, c)
            m.buffers["moving_variance"] = rng.uniform(0.5, 1.5, c)
    return block


def bottleneck_backward(block, dy, mistake=None):
    """Reference (``mistake=None``) and the characteristic wrong versions the checker names."""
    d = dy if mistake == "no relu" else block.out_relu.backward(dy)                  # through the final ReLU
    d_residual, d_shortcut = d, (dy if mistake == "relu residual only" else d)       # the add copies d
    for layer in reversed(block.residual_layers()):                                  # conv3, conv2, conv1
        d_residual = layer.backward(d_residual)
    if mistake == "no shortcut":
        if block.shortcut is not None:
            block.shortcut.backward(d_shortcut)
        return d_residual
    d_x = block.shortcut.backward(d_shortcut) if block.shortcut is not None else d_shortcut
    return (d_residual + d_x) / 2 if mistake == "mean" else d_residual + d_x


_BLOCK_MISTAKES = {
    "no shortcut": "dx lacks the shortcut branch's gradient: x feeds both the residual branch and the shortcut, "
                   "so dx = (residual branch's dx) + (shortcut's dx)",
    "no relu": "you skipped the backward of the ReLU after the add (block.out_relu): it comes first in reverse "
               "order, and zeroes the gradient where the block's output was clipped",
    "relu residual only": "the shortcut got dy without the final ReLU's mask: the ReLU sits after the add, so both "
                          "branches receive the masked gradient",
    "mean": "you averaged the two branches' gradients: at a fork they add up",
}


@exercise("bottleneck_backward", "a ResNet bottleneck block's backward composed from its layers (shortcut: sum)")
def _check_bottleneck_backward(fn):
    n = 0
    with use_backend("numpy"):
        for seed, shape, filters, strides, conv_shortcut in ((0, (2, 6, 6, 4), 2, 1, True),
                                                            (1, (2, 7, 5, 3), 2, 2, True),
                                                            (2, (3, 4, 4, 8), 2, 1, False)):
            x = np.random.default_rng(seed).standard_normal(shape)
            blocks = {m: _block(seed, shape[3], filters, strides, conv_shortcut)
                      for m in (None, "student", *_BLOCK_MISTAKES)}
            outs = {m: b.forward(x.copy(), training=True) for m, b in blocks.items()}
            dy = np.random.default_rng(seed + 10).standard_normal(outs[None].shape)
            shortcut = "1x1 conv + BN" if conv_shortcut else "identity"
            case = {"x": x, "shortcut": shortcut, "strides": strides, "dy": dy}
            got = attempt(fn, case, blocks["student"], dy.copy())
            want = bottleneck_backward(blocks[None], dy.copy())
            variants = [Variant(bottleneck_backward(blocks[m], dy.copy(), m), msg)
                        for m, msg in _BLOCK_MISTAKES.items()]
            compare(got, want, "dx", case, rtol=1e-7, atol=1e-10, variants=variants)
            mine, ref = dict(blocks["student"].named_gradients()), dict(blocks[None].named_gradients())
            for name, value in ref.items():
                if not np.any(mine[name]) and np.any(value):
                    unit = name.rsplit(".", 2)[0]
                    fail(f"the gradient of {name} is zero: the backward of block.{unit} was never called", case)
                compare(mine[name], value, f"the gradient of {name}", case, rtol=1e-7, atol=1e-10)
            n += 1
        x = np.random.default_rng(5).standard_normal((2, 4, 4, 3))
        block = _block(5, 3, 2, 2, True)

        def forward(x):
            return block.forward(x, training=True), None

        summary = check_backward(forward, lambda c, _: fn(block, c), {"x": x}, {},
                                 {"x": x, "shortcut": "1x1 conv + BN", "strides": 2}, grad_names=("x",))
    return f"{n} cases, {summary}"
