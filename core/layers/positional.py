"""Learned positional embedding: every position of a sequence gets its own vector added."""

from __future__ import annotations

from .base import Layer
from .options import ShapeError, need_rank, size, take_size


class Positional(Layer):
    """x: (N, T, E) -> x + P[:T]; P: (max_len, E), learned, N(0, 0.02^2), the parameter named "weight"."""

    options = {"max_len": size(), "embedding_dim": size(inferred=True)}
    input_layout = "N, T, E"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (3,), "positional", "(N, T, E)")
        take_size(spec, "embedding_dim", shape[-1])
        if shape[1] is not None and shape[1] > spec["max_len"]:
            raise ShapeError(f"a sequence of {shape[1]} steps is longer than max_len={spec['max_len']}", "max_len")
        return shape

    @classmethod
    def input_shape(cls, spec):
        return (None, None, spec["embedding_dim"])

    @classmethod
    def num_parameters(cls, spec):
        return spec["max_len"] * spec["embedding_dim"]

    @classmethod
    def build(cls, spec, dtype, rng, following):
        return cls((0.02 * rng.standard_normal((spec["max_len"], spec["embedding_dim"]))).astype(dtype))

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
        self._zero_grads.discard("weight")  # written in place: no longer known to be zero
