"""Normalization layers: layernorm over the last axis, batchnorm over the batch."""

from __future__ import annotations

import numpy as np

from ..numerics import column_sums, row_sums
from .base import Layer
from .options import need_rank, number, size, take_size

EPS = number(1e-5, lambda v: v > 0, "positive")


def _normalize_backward_(dxhat: np.ndarray, xhat: np.ndarray, rstd: np.ndarray,
                         mean_dxhat: np.ndarray, mean_dxhat_xhat: np.ndarray) -> np.ndarray:
    """Return dx for xhat = (x - mean) * rstd, written into `dxhat`, the mean and biased variance
    being over the axes that mean_dxhat and mean_dxhat_xhat (the means of dxhat and dxhat * xhat)
    were taken over."""
    dxhat -= mean_dxhat
    dxhat -= xhat * mean_dxhat_xhat
    dxhat *= rstd
    return dxhat


class _Norm(Layer):
    """What layernorm and batchnorm share as types: a weight and a bias of num_features."""

    transparent = True

    @classmethod
    def input_shape(cls, spec):
        return (None, spec["num_features"])

    @classmethod
    def num_parameters(cls, spec):
        return 2 * spec["num_features"]


class LayerNorm(_Norm):
    """x: (N, ..., C) -> same; normalizes each example over its last axis (C features)."""

    options = {"num_features": size(inferred=True), "eps": EPS}

    @classmethod
    def output_shape(cls, spec, shape):
        take_size(spec, "num_features", shape[-1])
        return shape

    @classmethod
    def build(cls, spec, dtype, rng, following):
        c = spec["num_features"]
        return cls(np.ones(c, dtype), np.zeros(c, dtype), eps=spec["eps"])

    def __init__(self, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> None:
        super().__init__()
        self._add_param("weight", weight)
        self._add_param("bias", bias)
        self.eps = eps

    def forward(self, x, train, rng):
        c = x.shape[-1]
        xc = x - row_sums(x) / c
        var = row_sums(xc * xc) / c
        rstd = 1 / np.sqrt(var + self.eps)
        xhat = xc
        xhat *= rstd
        y = xhat * self.params["weight"]
        y += self.params["bias"]
        return y, (xhat, rstd)

    def backward(self, dy, cache):
        xhat, rstd = cache
        c, w = xhat.shape[-1], self.params["weight"]
        dy_xhat = dy * xhat
        self._add("weight", column_sums(dy_xhat))
        self._add("bias", column_sums(dy))
        # dxhat = dy * w: its row means are dy's and dy * xhat's weighted by w, with no pass over dxhat.
        return _normalize_backward_(dy * w, xhat, rstd, row_sums(dy, w) / c, row_sums(dy_xhat, w) / c)


class BatchNorm(_Norm):
    """x: (N, C) or (N, C, H, W) -> same, as torch.nn.BatchNorm1d / BatchNorm2d: statistics per
    channel C, over the batch (and every position H, W); batch statistics in training, running
    ones in eval (the running variance unbiased)."""

    options = {"num_features": size(inferred=True), "eps": EPS,
               "momentum": number(0.1, lambda v: 0 <= v <= 1, "in [0, 1]")}

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (2, 4), "batchnorm", "(N, C) or (N, C, H, W)")
        take_size(spec, "num_features", shape[1], "channels" if len(shape) == 4 else "features")
        return shape

    @classmethod
    def build(cls, spec, dtype, rng, following):
        c = spec["num_features"]
        return cls(np.ones(c, dtype), np.zeros(c, dtype), np.zeros(c, dtype), np.ones(c, dtype),
                   eps=spec["eps"], momentum=spec["momentum"])

    def __init__(self, weight, bias, running_mean, running_var, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self._add_param("weight", weight)
        self._add_param("bias", bias)
        self.buffers = {
            "running_mean": running_mean,
            "running_var": running_var,
            "num_batches_tracked": np.zeros((), dtype=np.int64),
        }
        self.eps = eps
        self.momentum = momentum

    def forward(self, x, train, rng):
        # Per-channel vectors broadcast as (C,) against (N, C), as (C, 1, 1) against (N, C, H, W).
        axes, shape = ((0,), (-1,)) if x.ndim == 2 else ((0, 2, 3), (-1, 1, 1))
        if train:
            mean = x.mean(axis=axes)
            xc = x - mean.reshape(shape)
            var = np.mean(xc * xc, axis=axes)
            n = x.size // x.shape[1]
            m = self.momentum
            self.buffers["running_mean"] *= 1 - m
            self.buffers["running_mean"] += m * mean
            self.buffers["running_var"] *= 1 - m
            self.buffers["running_var"] += (m * n / (n - 1)) * var
            self.buffers["num_batches_tracked"] += 1
        else:
            xc = x - self.buffers["running_mean"].reshape(shape)
            var = self.buffers["running_var"]
        rstd = (1 / np.sqrt(var + self.eps)).reshape(shape)
        xhat = xc
        xhat *= rstd
        y = xhat * self.params["weight"].reshape(shape)
        y += self.params["bias"].reshape(shape)
        return y, (xhat, rstd, train)

    def backward(self, dy, cache):
        xhat, rstd, train = cache
        axes = (0,) if dy.ndim == 2 else (0, 2, 3)
        self._add_sum("weight", dy * xhat, axis=axes)
        self._add_sum("bias", dy, axis=axes)
        dxhat = dy * self.params["weight"].reshape(rstd.shape)
        if not train:
            return dxhat * rstd
        return _normalize_backward_(dxhat, xhat, rstd, dxhat.mean(axis=axes, keepdims=True),
                                    (dxhat * xhat).mean(axis=axes, keepdims=True))
