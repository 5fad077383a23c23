"""Fully connected layer: y = x @ W.T + b, with PyTorch's (out_features, in_features) layout."""

from __future__ import annotations

import numpy as np

from .base import Layer
from .init import he_or_xavier
from .options import size, take_size


class Linear(Layer):
    """x: (N, D) -> (N, M); W: (M, D), b: (M,). Leading batch axes may be more than one."""

    options = {"in_features": size(inferred=True), "out_features": size()}

    @classmethod
    def output_shape(cls, spec, shape):
        take_size(spec, "in_features", shape[-1])
        return (*shape[:-1], spec["out_features"])

    @classmethod
    def input_shape(cls, spec):
        return (None, spec["in_features"])

    @classmethod
    def num_parameters(cls, spec):
        return (spec["in_features"] + 1) * spec["out_features"]

    @classmethod
    def build(cls, spec, dtype, rng, following):
        m = spec["out_features"]
        return cls(he_or_xavier((m, spec["in_features"]), following, rng).astype(dtype), np.zeros(m, dtype))

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self._add_param("weight", weight)
        self._add_param("bias", bias)

    def forward(self, x, train, rng):
        w, b = self.params["weight"], self.params["bias"]
        # One 2-D matmul over every leading axis: numpy's stacked (N, T, D) @ (D, M) runs ~10x slower.
        y = x.reshape(-1, x.shape[-1]) @ w.T
        y += b
        return y.reshape(*x.shape[:-1], w.shape[0]), x

    def backward(self, dy, x):
        self.backward_params(dy, x)
        w = self.params["weight"]
        return (dy.reshape(-1, w.shape[0]) @ w).reshape(*dy.shape[:-1], w.shape[1])

    def backward_params(self, dy, x):
        m, d = self.params["weight"].shape
        x2, dy2 = x.reshape(-1, d), dy.reshape(-1, m)
        self._add_matmul("weight", dy2.T, x2)
        self._add_sum("bias", dy2, axis=0)
