"""2-D convolution as one large matmul over im2col columns, as torch.nn.Conv2d (cross-correlation)."""

from __future__ import annotations

import numpy as np

from .base import Layer
from .init import he_or_xavier
from .options import as_pair, need_rank, pair, size, take_size
from .windows import Planes, output_size


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
        c_out = w.shape[0]
        planes = Planes(x.shape, w.shape[2:], self.stride, self.padding, self.dilation)
        # im2col: (C kH kW, N H' Wq), the one big copy; then one matmul for the whole batch.
        cols = planes.windows(planes.fill(x)).reshape(w[0].size, -1)
        y = w.reshape(c_out, -1) @ cols
        y += self.params["bias"][:, None]
        # (C', N, H', Wq) in memory, seen as (N, C', H', W') without the junk columns: no copy back.
        y = y.reshape(c_out, x.shape[0], planes.oh, planes.wq)[..., :planes.ow]
        return y.transpose(1, 0, 2, 3), (cols, planes)

    def backward(self, dy, cache):
        cols, planes = cache
        dy_wide = self._backward_params(dy, cols, planes)
        w = self.params["weight"]
        c_out, c, kh, kw = w.shape
        dcols = (w.reshape(c_out, -1).T @ dy_wide.reshape(c_out, -1)).reshape(c, kh, kw, *dy_wide.shape[1:])
        dflat = planes.zeros(dy.dtype)
        dwindows = planes.windows(dflat, writeable=True)
        for i in range(kh):  # col2im: one add per kernel position, rows at a time
            for j in range(kw):
                dwindows[:, i, j] += dcols[:, i, j]
        return planes.inside(dflat)

    def backward_params(self, dy, cache):
        self._backward_params(dy, *cache)

    def _backward_params(self, dy, cols, planes):
        """Add the weight and bias gradients; return dy as (C', N, H', Wq), zero in the junk columns."""
        dy_wide = np.zeros((dy.shape[1], dy.shape[0], planes.oh, planes.wq), dy.dtype)
        dy_wide[..., :planes.ow] = dy.transpose(1, 0, 2, 3)
        dy2 = dy_wide.reshape(dy.shape[1], -1)
        self._add_matmul("weight", dy2, cols.T)
        self._add_sum("bias", dy2, axis=1)
        return dy_wide
