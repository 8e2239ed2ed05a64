"""Padding and output-size arithmetic for convolution and pooling windows.

Keras "same" padding (the rule that parity depends on)::

    effective kernel   k_eff = (k - 1) * d + 1
    output size        H_out = ceil(H / s)
    total padding      P     = max((H_out - 1) * s + k_eff - H, 0)
    before / after     P_before = P // 2,  P_after = P - P_before

so when ``P`` is odd the extra row/column goes *after* (bottom/right).
"""
from __future__ import annotations

import numbers

from .checks import pair


def same_padding_1d(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """Keras "same" padding ``(before, after)`` along one axis.

    >>> same_padding_1d(5, 3, 2, 1)   # 5 -> 3 outputs, needs 2 pad: (1, 1)
    (1, 1)
    >>> same_padding_1d(4, 3, 2, 1)   # 4 -> 2 outputs, needs 1 pad: after only
    (0, 1)
    """
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, hw: tuple[int, int], kernel: tuple[int, int],
                    stride: tuple[int, int], dilation: tuple[int, int]
                    ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return explicit ``((top, bottom), (left, right))`` padding.

    ``padding`` may be "same" (Keras rule), "valid" (none), an int (all sides),
    a pair ``(ph, pw)`` (symmetric per axis) or ``((top, bottom), (left, right))``.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            return (same_padding_1d(hw[0], kernel[0], stride[0], dilation[0]),
                    same_padding_1d(hw[1], kernel[1], stride[1], dilation[1]))
        raise ValueError(f'padding must be "same", "valid", an int or explicit pairs, got {padding!r}')
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        p = pair(padding, "padding", minimum=0)
        return (p[0], p[0]), (p[1], p[1])
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(isinstance(p, numbers.Integral) for p in padding):
            ph, pw = pair(tuple(padding), "padding", minimum=0)
            return (ph, ph), (pw, pw)
        return (pair(tuple(padding[0]), "padding[0]", minimum=0),
                pair(tuple(padding[1]), "padding[1]", minimum=0))
    raise ValueError(f'padding must be "same", "valid", an int or explicit pairs, got {padding!r}')


def window_output_size(size: int, pad: tuple[int, int], k: int, s: int, d: int, name: str = "input") -> int:
    """Number of window positions: ``floor((size + pb + pa - k_eff) / s) + 1``; raises if < 1."""
    k_eff = (k - 1) * d + 1
    padded = size + pad[0] + pad[1]
    if padded < k_eff:
        raise ValueError(
            f"{name} of size {size} (padded to {padded}) is smaller than the effective window {k_eff} "
            f"(kernel {k}, dilation {d})")
    return (padded - k_eff) // s + 1


def window_geometry(x_shape, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
                    padding, *, name: str = "x") -> tuple[tuple[tuple[int, int], tuple[int, int]], tuple[int, int]]:
    """Resolve ``padding`` and the output size of a window op (conv, pool) on an NHWC input.

    Returns ``(((top, bottom), (left, right)), (H_out, W_out))``; a malformed padding spec or a
    window larger than the padded input raises ``ValueError`` naming ``name`` and its shape.

    >>> window_geometry((1, 5, 5, 3), (3, 3), (2, 2), (1, 1), "same")
    (((1, 1), (1, 1)), (3, 3))
    >>> window_geometry((1, 4, 6, 3), (3, 3), (2, 2), (1, 1), "same")   # extra pad goes after
    (((0, 1), (0, 1)), (2, 3))
    """
    hw = (int(x_shape[1]), int(x_shape[2]))
    try:
        pads = resolve_padding(padding, hw, kernel, stride, dilation)
    except TypeError:  # e.g. ((1, 2), 3): the second entry is not a pair
        raise ValueError(f'padding must be "same", "valid", an int or explicit pairs, got {padding!r}') from None
    h_out = window_output_size(hw[0], pads[0], kernel[0], stride[0], dilation[0],
                               name=f"{name} (shape {tuple(x_shape)}) height")
    w_out = window_output_size(hw[1], pads[1], kernel[1], stride[1], dilation[1],
                               name=f"{name} (shape {tuple(x_shape)}) width")
    return pads, (h_out, w_out)
