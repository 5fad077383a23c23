"""Fully connected layer: y = x @ W.T + b, with PyTorch's (out_features, in_features) layout."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Linear(Layer):
    """x: (N, D) -> (N, M); W: (M, D), b: (M,). Leading batch axes may be more than one."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self._add_param("weight", weight)
        self._add_param("bias", bias)

    def forward(self, x, train, rng):
        w, b = self.params["weight"], self.params["bias"]
        y = x @ w.T
        y += b
        return y, x

    def backward(self, dy, x):
        self.backward_params(dy, x)
        return dy @ self.params["weight"]

    def backward_params(self, dy, x):
        m, d = self.params["weight"].shape
        x2, dy2 = x.reshape(-1, d), dy.reshape(-1, m)
        self._add_matmul("weight", dy2.T, x2)
        self._add_sum("bias", dy2, axis=0)
        self.grads_zero = False
