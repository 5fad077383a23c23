"""2-D convolution as one large matmul over im2col columns, as torch.nn.Conv2d (cross-correlation)."""

from __future__ import annotations

import math

import numpy as np

from .base import Layer
from .init import he_or_xavier
from .options import as_pair, need_rank, pair, size, take_size
from .windows import batch_last, output_size, pad, padded_full, unpad, windows


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
        size = output_size(x.shape, (kh, kw), self.stride, self.padding, self.dilation)
        # im2col: (C kH kW + 1, H' W' N), the one big copy (of long runs, x being batch-last), its last
        # row ones; then one matmul for the whole batch, which adds the bias too.
        cols = np.empty((w[0].size + 1, math.prod(size) * x.shape[0]), x.dtype)
        np.copyto(cols[:-1].reshape(c, kh, kw, *size, x.shape[0]),
                  windows(pad(x, self.padding), (kh, kw), self.stride, self.dilation, size))
        cols[-1] = 1
        y = np.concatenate([w.reshape(c_out, -1), self.params["bias"][:, None]], axis=1) @ cols
        # (C', H', W', N) in memory, seen as (N, C', H', W'): batch-last, no copy back.
        return y.reshape(c_out, *size, x.shape[0]).transpose(3, 0, 1, 2), (cols, x.shape)

    def backward(self, dy, cache):
        cols, x_shape = cache
        dy2 = self._backward_params(dy, cols)
        dy4 = dy2.reshape(dy.shape[1], *dy.shape[2:], dy.shape[0])  # (C', H', W', N)
        dxp = padded_full(x_shape, self.padding, 0, dy.dtype)
        (self._add_back_rows if self.stride[1] == 1 else self._col2im)(dy4, dxp)
        return unpad(dxp, self.padding)

    def _col2im(self, dy4, dxp):
        """Add the input gradient into the padded dxp: the columns' gradient W.T @ dy, sent back
        with one add per kernel position (of runs of W' N)."""
        w = self.params["weight"]
        c_out, c, kh, kw = w.shape
        dcols = (w.reshape(c_out, -1).T @ dy4.reshape(c_out, -1)).reshape(c, kh, kw, *dy4.shape[1:])
        dwindows = windows(dxp, (kh, kw), self.stride, self.dilation, dy4.shape[1:3], writeable=True)
        for i in range(kh):
            for j in range(kw):
                dwindows[:, i, j] += dcols[:, i, j]

    def _add_back_rows(self, dy4, dxp):
        """Add the input gradient into the padded dxp for a stride of 1 along W: along W a full
        correlation of dy with the kernel, one product of (C kH, C' kW) against dy shifted kW ways,
        rows (C' kW, H' Wp N); then along H, kH adds of whole padded rows (runs of Wp N).

        Fewer and longer adds than col2im's kH kW (runs of W' N): -2% on the LeNet step."""
        w = self.params["weight"]
        c_out, c, kh, kw = w.shape
        _, oh, ow, n = dy4.shape
        (sh, dh), dw, wp = (self.stride[0], self.dilation[0]), self.dilation[1], dxp.shape[3]
        rows = np.zeros((c_out, kw, oh, wp, n), dy4.dtype)  # rows[o, j, y, x] = dy[o, y, x - j dW]
        for j in range(kw):
            rows[:, j, :, j * dw:j * dw + ow] = dy4
        e = w.transpose(1, 2, 0, 3).reshape(c * kh, c_out * kw) @ rows.reshape(c_out * kw, -1)
        e = e.reshape(c, kh, oh, wp * n)
        planes = dxp.transpose(1, 2, 3, 0).reshape(c, dxp.shape[2], wp * n)  # a view: dxp is batch-last
        for i in range(kh):
            planes[:, i * dh:i * dh + sh * (oh - 1) + 1:sh] += e[:, i]

    def backward_params(self, dy, cache):
        self._backward_params(dy, cache[0])

    def _backward_params(self, dy, cols):
        """Add the weight and bias gradients; return dy as (C', H' W' N)."""
        dy2 = batch_last(dy).transpose(1, 2, 3, 0).reshape(dy.shape[1], -1)  # no copy when dy is batch-last
        grads = dy2 @ cols.T  # the weight's gradient, then the bias's (against the ones row)
        self._add("weight", grads[:, :-1].reshape(self.grads["weight"].shape))
        self._add("bias", grads[:, -1])
        return dy2
