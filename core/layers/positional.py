"""Learned positional embedding: every position of a sequence gets its own vector added."""

from __future__ import annotations

from .base import Layer


class Positional(Layer):
    """x: (N, T, E) -> x + P[:T]; P: (max_len, E), the parameter named "weight"."""

    def __init__(self, weight) -> None:
        super().__init__()
        self._add_param("weight", weight)

    def forward(self, x, train, rng):
        t = x.shape[1]
        return x + self.params["weight"][:t], t

    def backward(self, dy, t):
        self.backward_params(dy, t)
        return dy

    def backward_params(self, dy, t):
        self.grads["weight"][:t] += dy.sum(axis=0)
        self.grads_zero = False
