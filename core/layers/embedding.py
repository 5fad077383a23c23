"""Token embedding: a lookup table of learned vectors, indexed by integer ids."""

from __future__ import annotations

import numpy as np

from .base import Layer
from .options import need_rank, size


class Embedding(Layer):
    """x: INT64 (N, T) -> (N, T, E); W: (V, E), N(0, 1). As torch.nn.Embedding: y[n, t] = W[x[n, t]].

    Only a model's first layer: its inputs are class indices, checked in [0, V) by the model.
    Indices have no gradient: backward adds into W's rows and returns None.
    """

    options = {"num_embeddings": size(), "embedding_dim": size()}
    input_layout = "N, T"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (2,), "embedding", "INT64 (N, T)")
        return (*shape, spec["embedding_dim"])

    @classmethod
    def input_shape(cls, spec):
        return (None, None)

    @classmethod
    def input_classes(cls, spec):
        return spec["num_embeddings"]

    @classmethod
    def num_parameters(cls, spec):
        return spec["num_embeddings"] * spec["embedding_dim"]

    @classmethod
    def build(cls, spec, dtype, rng, following):
        return cls(rng.standard_normal((spec["num_embeddings"], spec["embedding_dim"])).astype(dtype))

    def __init__(self, weight: np.ndarray) -> None:
        super().__init__()
        self._add_param("weight", weight)

    def forward(self, x, train, rng):
        return np.take(self.params["weight"], x, axis=0), x

    def backward(self, dy, x):
        # Rows repeat when a token repeats, and a plain += would keep only one of them. np.add.at
        # sums them but one row at a time (5x slower); sorted, each token's rows are one run for
        # reduceat, and the tokens of the runs are distinct.
        tokens = x.reshape(-1)
        order = np.argsort(tokens, kind="stable")
        tokens = tokens[order]
        starts = np.flatnonzero(np.diff(tokens, prepend=-1))
        self.grads["weight"][tokens[starts]] += np.add.reduceat(dy.reshape(-1, dy.shape[-1])[order], starts, axis=0)
        self._zero_grads.discard("weight")  # written in place: no longer known to be zero
        return None
