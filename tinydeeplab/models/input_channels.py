"""Inputs that are not RGB: adapt the kernel of the encoder's first convolution to ``C`` channels.

A preset trained on RGB has a first kernel ``W`` of shape (kh, kw, S, F) with ``S = 3``. A model for
``C``-channel images (grey, RGB-NIR, multispectral) needs (kh, kw, C, F). The first convolution is
linear in its input, ``y[f] = sum_s W[..., s, f] * x[s]`` (summed over taps too), so each scheme below
is chosen by the input it keeps the RGB model's response to, exactly (up to float32 round-off):

==========  =====================================================  ===============================================
scheme      ``W'[..., c, :]`` for ``c = 0 .. C-1``                  what it preserves
==========  =====================================================  ===============================================
repeat      ``W[..., c mod S, :] / n[c mod S]``, with               an image repeated cyclically into C channels,
            ``n[s] = #{c < C : c mod S = s}``; when S divides C     ``x'[c] = x[c mod S]``, gives the RGB logits of
            this is ``W[..., c mod S, :] * S / C`` ("repeat / C")   ``x``. Needs C >= S (every source channel used)
mean        ``(1 / C) * sum_s W[..., s, :]``  (the mean RGB         ``y(x') = y_RGB(m, m, m)`` with ``m`` the mean
            kernel, scaled by S / C)                                of the C channels: a grey image (all channels
                                                                    equal, any C >= 1, C = 1 included) gives the
                                                                    RGB logits of the same grey picture
zero        ``W[..., c, :]`` for ``c < S``, ``0`` for ``c >= S``    the RGB logits of ``x'[..., :S]`` whatever the
                                                                    extra channels hold (until training moves their
                                                                    zero weights). Needs C >= S, RGB channels first
==========  =====================================================  ===============================================

Without the ``1 / n`` (or ``S / C``) factors a C-channel copy of the picture would reach the first
batch norm with about ``C / S`` times the RGB activation, which its moving statistics never saw.

>>> w = np.arange(6, dtype=np.float32).reshape(1, 1, 3, 2)          # (1, 1, 3, 2): RGB, 2 filters
>>> adapt_input_kernel(w, 6, "repeat")[0, 0].tolist()                # each RGB row halved, twice
[[0.0, 0.5], [1.0, 1.5], [2.0, 2.5], [0.0, 0.5], [1.0, 1.5], [2.0, 2.5]]
>>> adapt_input_kernel(w, 1, "mean")[0, 0].tolist()                  # C = 1: the sum over RGB
[[6.0, 9.0]]
>>> adapt_input_kernel(w, 4, "zero")[0, 0, 3].tolist()
[0.0, 0.0]
"""
from __future__ import annotations

import numpy as np

from ..errors import OptionError

ADAPT_SCHEMES = ("repeat", "mean", "zero")


def check_in_channels(in_channels, where: str = "in_channels") -> int:
    """``in_channels`` as an int >= 1, or a one-line OptionError naming ``where``."""
    if isinstance(in_channels, (bool, np.bool_)) or not isinstance(in_channels, (int, np.integer)) or in_channels < 1:
        raise OptionError(f"{where} must be a whole number of image channels >= 1, got {in_channels!r}")
    return int(in_channels)


def check_scheme(scheme, source: int, in_channels: int) -> str:
    """``scheme`` if it is known and can map ``source`` channels to ``in_channels``, else a one-line OptionError."""
    if scheme is None:
        raise OptionError(f"the first kernel reads {source} channels, the model {in_channels}: choose how to adapt it "
                          f"(adapt= or --adapt-channels: {', '.join(ADAPT_SCHEMES)})")
    if scheme not in ADAPT_SCHEMES:
        raise OptionError(f"channel adaptation {scheme!r} is unknown; choose one of {', '.join(ADAPT_SCHEMES)}")
    if scheme in ("repeat", "zero") and in_channels < source:
        raise OptionError(f"channel adaptation {scheme!r} needs at least the kernel's {source} channels, got "
                          f"in_channels={in_channels}; use 'mean' for fewer channels (e.g. grey images)")
    return scheme


def adapt_input_kernel(kernel, in_channels: int, scheme: str) -> np.ndarray:
    """The first convolution's kernel (kh, kw, S, F) re-made for ``in_channels`` = C inputs by ``scheme``
    (see the module docstring for the equations and what each one preserves). Returns (kh, kw, C, F),
    computed in float64 and returned in the kernel's dtype; C == S returns the kernel unchanged (any
    ``scheme``, None included).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise OptionError(f"the input convolution's kernel must be (kh, kw, channels, filters), got {kernel.shape}")
    c_out = check_in_channels(in_channels)
    source = kernel.shape[2]
    if c_out == source:
        return kernel
    check_scheme(scheme, source, c_out)
    w = kernel.astype(np.float64)                                             # (kh, kw, S, F)
    if scheme == "repeat":
        src = np.arange(c_out) % source                                       # (C,) source channel of each
        uses = np.bincount(src, minlength=source)                              # (S,) n[s]
        out = w[:, :, src, :] / uses[src][None, None, :, None]                 # (kh, kw, C, F)
    elif scheme == "mean":
        out = np.repeat(w.sum(axis=2, keepdims=True) / c_out, c_out, axis=2)   # (kh, kw, C, F)
    else:
        out = np.zeros(w.shape[:2] + (c_out, w.shape[3]))                      # (kh, kw, C, F)
        out[:, :, :source] = w
    return out.astype(kernel.dtype)


def tile_channels(values, in_channels: int):
    """Per-channel converter values (``scale`` / ``offset``) for C channels: None and scalars stay as they
    are (they act on every channel); S values are repeated cyclically, channel ``c`` taking value ``c mod S``,
    the same channel mapping as the "repeat" kernel.

    >>> tile_channels(np.array([1.0, 2.0, 3.0]), 4).tolist(), tile_channels(0.5, 4)
    ([1.0, 2.0, 3.0, 1.0], 0.5)
    """
    if values is None or np.ndim(values) == 0 or np.size(values) == 1:
        return values
    values = np.asarray(values)
    return values[np.arange(int(in_channels)) % values.size]
