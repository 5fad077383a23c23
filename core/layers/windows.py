"""Sliding windows over images, shared by convolution and pooling.

Images are (N, C, H, W). A layer with kernel (kH, kW), stride, padding and dilation sees
`windows(pad(x))`: a strided view (N, C, kH, kW, H', W') of every kernel position of every
output position, made without copying. Gradients go back the other way with `add_windows`,
one strided add per kernel position (kH * kW of them), never a loop over pixels.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .options import ShapeError

Pair = tuple[int, int]


def output_size(shape: tuple, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)) -> tuple:
    """Return (H', W') for inputs of `shape` (N, C, H, W) (None where H or W is known only at run time).

    H' = (H + 2 padding - dilation (kH - 1) - 1) // stride + 1, as torch; ShapeError if below 1.
    """
    sizes = []
    for size, k, s, p, d in zip(shape[2:], kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if size is not None and size + 2 * p < span:
            raise ShapeError(f"the kernel {kernel[0]}x{kernel[1]} spans {span} with dilation {d}, more than its "
                             f"input of {size} padded to {size + 2 * p}: the output would be smaller than 1",
                             "kernel_size")
        sizes.append(None if size is None else (size + 2 * p - span) // s + 1)
    return tuple(sizes)


def pad(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    """Return x: (N, C, H, W) padded to (N, C, H + 2 ph, W + 2 pw) with `value` (x itself without padding)."""
    ph, pw = padding
    if ph == pw == 0:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + 2 * ph, w + 2 * pw), value, x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def unpad(xp: np.ndarray, padding: Pair) -> np.ndarray:
    """Return the (N, C, H, W) inside of a padded (N, C, H + 2 ph, W + 2 pw) array."""
    ph, pw = padding
    return xp[:, :, ph:xp.shape[2] - ph, pw:xp.shape[3] - pw]


def windows(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out: Pair) -> np.ndarray:
    """Return a read-only view (N, C, kH, kW, H', W') of xp: (N, C, Hp, Wp): [.., i, j, y, x] is
    xp[.., y * stride + i * dilation, x * stride + j * dilation]."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    return as_strided(xp, (n, c, *kernel, *out),
                      (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]), writeable=False)


def add_windows(dxp: np.ndarray, dwin: np.ndarray, stride: Pair, dilation: Pair) -> None:
    """dxp: (N, C, Hp, Wp) += the window gradients dwin: (N, C, kH, kW, H', W'), where they came from."""
    kh, kw, oh, ow = dwin.shape[2:]
    for i in range(kh):
        top = i * dilation[0]
        rows = slice(top, top + stride[0] * (oh - 1) + 1, stride[0])
        for j in range(kw):
            left = j * dilation[1]
            dxp[:, :, rows, left:left + stride[1] * (ow - 1) + 1:stride[1]] += dwin[:, :, i, j]
