"""2-D max and average pooling over strided windows, as torch.nn.MaxPool2d and nn.AvgPool2d."""

from __future__ import annotations

import numpy as np

from .base import Layer
from .options import ShapeError, as_pair, need_rank, pair
from .windows import add_windows, output_size, pad, unpad, windows


class _Pool2d(Layer):
    """What both pools share: x: (N, C, H, W) -> (N, C, H', W'), no parameters; the stride
    defaults to the kernel size and the padding may be at most half the kernel."""

    options = {"kernel_size": pair(), "stride": pair(None), "padding": pair(0, low=0)}
    # Looked through for initialization: conv, pool, relu is conv, relu, pool.
    transparent = True
    input_layout = "N, C, H, W"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (4,), spec["type"], "(N, C, H, W)")
        kernel, stride, padding = cls._geometry(spec)
        if any(p > k // 2 for p, k in zip(padding, kernel)):
            raise ShapeError(f"padding {spec['padding']} must be at most half of kernel_size {spec['kernel_size']}",
                             "padding")
        return (*shape[:2], *output_size(shape, kernel, stride, padding))

    @classmethod
    def input_shape(cls, spec):
        return (None, None, None, None)

    @classmethod
    def build(cls, spec, dtype, rng, following):
        return cls(*cls._geometry(spec))

    @staticmethod
    def _geometry(spec):
        kernel = as_pair(spec["kernel_size"])
        stride = kernel if spec["stride"] is None else as_pair(spec["stride"])
        return kernel, stride, as_pair(spec["padding"])

    def __init__(self, kernel, stride, padding) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def _windows(self, x, fill):
        """Return the (N, C, kH, kW, H', W') windows of x padded with `fill`."""
        out = output_size(x.shape, self.kernel, self.stride, self.padding)
        return windows(pad(x, self.padding, fill), self.kernel, self.stride, (1, 1), out)

    def _scatter(self, dwin, x_shape):
        """Return dx: (N, C, H, W) from window gradients (N, C, kH, kW, H', W')."""
        n, c, h, w = x_shape
        dxp = np.zeros((n, c, h + 2 * self.padding[0], w + 2 * self.padding[1]), dwin.dtype)
        add_windows(dxp, dwin, self.stride, (1, 1))
        return unpad(dxp, self.padding)


class MaxPool2d(_Pool2d):
    """y = the max of each window; padding is -inf, so it never wins. The gradient goes to the
    first maximum of each window, as torch."""

    def forward(self, x, train, rng):
        win = self._windows(x, -np.inf)
        n, c, kh, kw, oh, ow = win.shape
        flat = win.reshape(n, c, kh * kw, oh, ow)
        argmax = flat.argmax(axis=2)[:, :, None]
        return np.take_along_axis(flat, argmax, axis=2)[:, :, 0], (argmax, x.shape)

    def backward(self, dy, cache):
        argmax, x_shape = cache
        n, c, oh, ow = dy.shape
        dwin = np.zeros((n, c, self.kernel[0] * self.kernel[1], oh, ow), dy.dtype)
        np.put_along_axis(dwin, argmax, dy[:, :, None], axis=2)
        return self._scatter(dwin.reshape(n, c, *self.kernel, oh, ow), x_shape)


class AvgPool2d(_Pool2d):
    """y = the mean of each window, padding zeros counted (torch's count_include_pad=True)."""

    def forward(self, x, train, rng):
        y = self._windows(x, 0.0).sum(axis=(2, 3))
        y *= 1 / (self.kernel[0] * self.kernel[1])
        return y, x.shape

    def backward(self, dy, x_shape):
        dy = dy * (1 / (self.kernel[0] * self.kernel[1]))
        n, c, oh, ow = dy.shape
        return self._scatter(np.broadcast_to(dy[:, :, None, None], (n, c, *self.kernel, oh, ow)), x_shape)
