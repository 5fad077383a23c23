"""2-D convolution as one large matmul over im2col columns, as torch.nn.Conv2d (cross-correlation)."""

from __future__ import annotations

import numpy as np

from .base import Layer
from .init import he_or_xavier
from .options import as_pair, need_rank, pair, size, take_size
from .windows import add_windows, output_size, pad, unpad, windows


class Conv2d(Layer):
    """x: (N, C, H, W) -> (N, C', H', W'); weight (C', C, kH, kW), bias (C').

    y[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] xp[n, c, y * sH + i * dH, x * sW + j * dW],
    xp being x zero-padded; H' = (H + 2 pH - dH (kH - 1) - 1) // sH + 1, likewise W'.
    """

    options = {"in_channels": size(inferred=True), "out_channels": size(), "kernel_size": pair(),
               "stride": pair(1), "padding": pair(0, low=0), "dilation": pair(1)}
    input_layout = "N, C, H, W"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (4,), "conv2d", "(N, C, H, W)")
        take_size(spec, "in_channels", shape[1], "channels")
        geometry = (as_pair(spec[k]) for k in ("kernel_size", "stride", "padding", "dilation"))
        return (shape[0], spec["out_channels"], *output_size(shape, *geometry))

    @classmethod
    def input_shape(cls, spec):
        return (None, spec["in_channels"], None, None)

    @classmethod
    def num_parameters(cls, spec):
        kh, kw = as_pair(spec["kernel_size"])
        return spec["out_channels"] * (spec["in_channels"] * kh * kw + 1)

    @classmethod
    def build(cls, spec, dtype, rng, following):
        c_out = spec["out_channels"]
        weight = he_or_xavier((c_out, spec["in_channels"], *as_pair(spec["kernel_size"])), following, rng)
        return cls(weight.astype(dtype), np.zeros(c_out, dtype),
                   *(as_pair(spec[k]) for k in ("stride", "padding", "dilation")))

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride=(1, 1), padding=(0, 0), dilation=(1, 1)) -> None:
        super().__init__()
        self._add_param("weight", weight)
        self._add_param("bias", bias)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x, train, rng):
        w = self.params["weight"]
        c_out, c, kh, kw = w.shape
        n = x.shape[0]
        oh, ow = output_size(x.shape, (kh, kw), self.stride, self.padding, self.dilation)
        win = windows(pad(x, self.padding), (kh, kw), self.stride, self.dilation, (oh, ow))
        # im2col: (C kH kW, N H' W'), the one copy; then one matmul for the whole batch.
        cols = win.transpose(1, 2, 3, 0, 4, 5).reshape(c * kh * kw, n * oh * ow)
        y = w.reshape(c_out, -1) @ cols
        y += self.params["bias"][:, None]
        # (C', N, H', W') in memory, seen as (N, C', H', W'): no copy back.
        return y.reshape(c_out, n, oh, ow).transpose(1, 0, 2, 3), (cols, x.shape)

    def backward(self, dy, cache):
        cols, x_shape = cache
        dy2 = self._backward_params(dy, cols)
        w = self.params["weight"]
        c_out, c, kh, kw = w.shape
        n, _, oh, ow = dy.shape
        dcols = w.reshape(c_out, -1).T @ dy2  # (C kH kW, N H' W')
        dxp = np.zeros((n, c, x_shape[2] + 2 * self.padding[0], x_shape[3] + 2 * self.padding[1]), dy.dtype)
        add_windows(dxp, dcols.reshape(c, kh, kw, n, oh, ow).transpose(3, 0, 1, 2, 4, 5), self.stride, self.dilation)
        return unpad(dxp, self.padding)

    def backward_params(self, dy, cache):
        self._backward_params(dy, cache[0])

    def _backward_params(self, dy, cols):
        """Add the weight and bias gradients; return dy as (C', N H' W')."""
        dy2 = dy.transpose(1, 0, 2, 3).reshape(dy.shape[1], -1)
        self._add_matmul("weight", dy2, cols.T)
        self._add_sum("bias", dy2, axis=1)
        return dy2
