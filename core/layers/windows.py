"""Sliding windows over images, shared by convolution and pooling.

Images are (N, C, H, W). Inside a stack of convolutions and pools they are laid out batch-last
in memory, (C, H, W, N) seen through a transposed view: the batch is the innermost axis, so a
window offset (i, j) sees, in each channel and output row, one contiguous run of W' * N values
(runs of N when the stride along W is above 1). The im2col copies, the col2im adds and the
pools' elementwise steps then move long runs, never W' values at a time, and a convolution's
matmul output, (C', H' W' N), is already that layout: no layer transposes back.
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


def batch_last(x: np.ndarray) -> np.ndarray:
    """Return x: (N, C, H, W) laid out batch-last in memory, (C, H, W, N), copying only if it is not."""
    if x.transpose(1, 2, 3, 0).flags.c_contiguous:
        return x
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def padded_full(shape: tuple, padding: Pair, value: float, dtype) -> np.ndarray:
    """Return (N, C, H + 2 pH, W + 2 pW) filled with `value`, laid out batch-last."""
    n, c, h, w = shape
    size = (c, h + 2 * padding[0], w + 2 * padding[1], n)
    out = np.zeros(size, dtype) if value == 0 else np.full(size, value, dtype)  # zeros: calloc, no fill pass
    return out.transpose(3, 0, 1, 2)


def pad(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    """Return x: (N, C, H, W) batch-last, padded to (N, C, H + 2 pH, W + 2 pW) with `value`
    (x itself, if it is batch-last and there is no padding)."""
    if padding == (0, 0):
        return batch_last(x)
    out = padded_full(x.shape, padding, value, x.dtype)
    unpad(out, padding)[...] = x
    return out


def unpad(xp: np.ndarray, padding: Pair) -> np.ndarray:
    """Return the (N, C, H, W) inside of a padded (N, C, H + 2 pH, W + 2 pW) array."""
    ph, pw = padding
    return xp[:, :, ph:xp.shape[2] - ph, pw:xp.shape[3] - pw]


def windows(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, size: Pair,
            writeable: bool = False) -> np.ndarray:
    """Return the (C, kH, kW, H', W', N) view of a padded xp: (N, C, Hp, Wp) whose
    [c, i, j, y, x, n] is xp[n, c, y sH + i dH, x sW + j dW]; `size` is (H', W')."""
    sn, sc, sh, sw = xp.strides
    (kh, kw), (th, tw), (dh, dw) = kernel, stride, dilation
    return as_strided(xp, (xp.shape[1], kh, kw, *size, xp.shape[0]),
                      (sc, dh * sh, dw * sw, th * sh, tw * sw, sn), writeable=writeable)
