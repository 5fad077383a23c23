"""Sliding windows over images, shared by convolution and pooling.

Images are (N, C, H, W). Inside a stack of convolutions they are laid out channel-major in
memory, (C, N, H, W) seen through a transposed view, which is the layout a convolution's
matmul produces, so that no layer has to transpose them back.

Convolution reads its windows from "planes": the padded input copied once into a flat buffer
of C * N planes of (H + 2 pH) x (W + 2 pW), with slack at the end. A window offset (i, j) is then
one strided view of that buffer, (C, N, H', Wq), whose rows run on across the full padded
width Wq = ceil((W + 2 pW) / sW): the copies into im2col columns and the adds back (col2im)
move whole rows (whole planes when the stride is 1), not W' values at a time. The columns
x >= W' of each row are junk: forward drops them, backward gives them zero gradient.
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
    out = np.full((c, n, h + 2 * ph, w + 2 * pw), value, x.dtype).transpose(1, 0, 2, 3)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def padded_zeros(shape: tuple, padding: Pair, dtype) -> np.ndarray:
    """Return zeros (N, C, H + 2 ph, W + 2 pw), laid out channel-major in memory (C, N, ., .),
    the layout convolution outputs have, so that gradients flow back without transposing copies."""
    n, c, h, w = shape
    return np.zeros((c, n, h + 2 * padding[0], w + 2 * padding[1]), dtype).transpose(1, 0, 2, 3)


def channel_major(x: np.ndarray) -> np.ndarray:
    """Return x: (N, C, H, W) laid out channel-major in memory, (C, N, H, W), copying only if it is not."""
    if x.transpose(1, 0, 2, 3).flags.c_contiguous:
        return x
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def unpad(xp: np.ndarray, padding: Pair) -> np.ndarray:
    """Return the (N, C, H, W) inside of a padded (N, C, H + 2 ph, W + 2 pw) array."""
    ph, pw = padding
    return xp[:, :, ph:xp.shape[2] - ph, pw:xp.shape[3] - pw]


class Planes:
    """The padded planes of x: (N, C, H, W) for a kernel, stride and dilation (see the module docstring)."""

    def __init__(self, shape: tuple, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> None:
        self.shape, self.kernel, self.stride, self.padding, self.dilation = shape, kernel, stride, padding, dilation
        n, c, h, w = shape
        self.hp, self.wp = h + 2 * padding[0], w + 2 * padding[1]
        self.oh, self.ow = output_size(shape, kernel, stride, padding, dilation)
        self.wq = -(-self.wp // stride[1])  # x * sW stays inside its row: no window view overlaps itself
        self.size = c * n * self.hp * self.wp
        # The junk columns of the last windows read past the last plane by less than this.
        self.slack = (kernel[1] - 1) * dilation[1] + stride[1]

    def zeros(self, dtype) -> np.ndarray:
        """Return a zero planes buffer."""
        return np.zeros(self.size + self.slack, dtype)

    def fill(self, x: np.ndarray) -> np.ndarray:
        """Return the planes buffer of x, zero-padded."""
        flat = self.zeros(x.dtype)
        self.inside(flat)[...] = x
        return flat

    def inside(self, flat: np.ndarray) -> np.ndarray:
        """Return the (N, C, H, W) view of the image inside a planes buffer."""
        n, c, h, w = self.shape
        ph, pw = self.padding
        planes = flat[:self.size].reshape(c, n, self.hp, self.wp)
        return planes[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)

    def windows(self, flat: np.ndarray, writeable: bool = False) -> np.ndarray:
        """Return the (C, kH, kW, N, H', Wq) view of a planes buffer: [c, i, j, n, y, x] is the padded
        x[n, c, y sH + i dH, x sW + j dW] (for x < W'; junk beyond)."""
        n, c = self.shape[:2]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        item, plane = flat.itemsize, self.hp * self.wp
        strides = (n * plane, dh * self.wp, dw, plane, sh * self.wp, sw)
        return as_strided(flat, (c, kh, kw, n, self.oh, self.wq), tuple(s * item for s in strides),
                          writeable=writeable)
