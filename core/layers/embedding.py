"""Token embedding: a lookup table of learned vectors, indexed by integer ids."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Embedding(Layer):
    """x: INT64 (N, T) -> (N, T, E); W: (V, E). As torch.nn.Embedding: y[n, t] = W[x[n, t]].

    Indices have no gradient: backward adds into W's rows and returns None.
    """

    def __init__(self, weight: np.ndarray) -> None:
        super().__init__()
        self._add_param("weight", weight)

    def forward(self, x, train, rng):
        return np.take(self.params["weight"], x, axis=0), x

    def backward(self, dy, x):
        e = dy.shape[-1]
        # Rows repeat when a token repeats: add.at sums them (a plain += would keep only one).
        np.add.at(self.grads["weight"], x.reshape(-1), dy.reshape(-1, e))
        self.grads_zero = False
        return None
