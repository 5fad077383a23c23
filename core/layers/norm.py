"""Normalization layers: layernorm over the last axis, batchnorm over the batch."""

from __future__ import annotations

import numpy as np

from .base import Layer


def _normalize_backward(dxhat: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, axis) -> np.ndarray:
    """Return dx for xhat = (x - mean) * rstd, with mean and biased variance taken over `axis`."""
    mean_dxhat = dxhat.mean(axis=axis, keepdims=True)
    mean_dxhat_xhat = (dxhat * xhat).mean(axis=axis, keepdims=True)
    return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


class LayerNorm(Layer):
    """x: (N, ..., C) -> same; normalizes each example over its last axis (C features)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> None:
        super().__init__()
        self._add_param("weight", weight)
        self._add_param("bias", bias)
        self.eps = eps

    def forward(self, x, train, rng):
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        var = np.mean(xc * xc, axis=-1, keepdims=True)
        rstd = 1 / np.sqrt(var + self.eps)
        xhat = xc
        xhat *= rstd
        y = xhat * self.params["weight"]
        y += self.params["bias"]
        return y, (xhat, rstd)

    def backward(self, dy, cache):
        xhat, rstd = cache
        c = xhat.shape[-1]
        self._add_sum("weight", (dy * xhat).reshape(-1, c), axis=0)
        self._add_sum("bias", dy.reshape(-1, c), axis=0)
        self.grads_zero = False
        return _normalize_backward(dy * self.params["weight"], xhat, rstd, axis=-1)


class BatchNorm(Layer):
    """x: (N, C) -> (N, C), as torch.nn.BatchNorm1d: batch statistics in training, running ones in eval."""

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
        if train:
            mean = x.mean(axis=0)
            xc = x - mean
            var = np.mean(xc * xc, axis=0)
            n = x.shape[0]
            m = self.momentum
            self.buffers["running_mean"] *= 1 - m
            self.buffers["running_mean"] += m * mean
            self.buffers["running_var"] *= 1 - m
            self.buffers["running_var"] += (m * n / (n - 1)) * var
            self.buffers["num_batches_tracked"] += 1
        else:
            xc = x - self.buffers["running_mean"]
            var = self.buffers["running_var"]
        rstd = 1 / np.sqrt(var + self.eps)
        xhat = xc
        xhat *= rstd
        y = xhat * self.params["weight"]
        y += self.params["bias"]
        return y, (xhat, rstd, train)

    def backward(self, dy, cache):
        xhat, rstd, train = cache
        self._add_sum("weight", dy * xhat, axis=0)
        self._add_sum("bias", dy, axis=0)
        self.grads_zero = False
        dxhat = dy * self.params["weight"]
        if not train:
            return dxhat * rstd
        return _normalize_backward(dxhat, xhat, rstd, axis=0)
