"""Multi-head self-attention, batched over heads, with an optional causal mask."""

from __future__ import annotations

import math

import numpy as np

from ..numerics import column_sums
from .base import Layer
from .init import he_or_xavier
from .options import ShapeError, flag, need_rank, size, take_size


class Attention(Layer):
    """x: (N, T, E) -> (N, T, E), with `heads` heads of size d = E / heads.

    As torch.nn.MultiheadAttention(E, heads, batch_first=True)(x, x, x, need_weights=False),
    with attn_mask=torch.triu(torch.ones(T, T), 1).bool() when causal:

        q, k, v = split(x @ W_in.T + b_in)            each (N, heads, T, d)
        A = softmax(q @ k^T / sqrt(d))                (N, heads, T, T); causal: step t sees s <= t
        y = merge(A @ v) @ W_out.T + b_out            heads merged back to (N, T, E)

    Parameters in_proj_weight (3E, E), in_proj_bias (3E,), out_proj.weight (E, E), out_proj.bias (E,):
    the weights Xavier-uniform (in_proj_weight as one (3E, E) matrix, as torch), the biases zero.
    """

    options = {"embed_dim": size(inferred=True), "num_heads": size(), "causal": flag(False)}
    input_layout = "N, T, E"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (3,), "attention", "(N, T, E)")
        e = take_size(spec, "embed_dim", shape[-1])
        if e % spec["num_heads"]:
            raise ShapeError(f"embed_dim={e} is not divisible by num_heads={spec['num_heads']}", "num_heads")
        return shape

    @classmethod
    def input_shape(cls, spec):
        return (None, None, spec["embed_dim"])

    @classmethod
    def num_parameters(cls, spec):
        e = spec["embed_dim"]
        return 4 * e * e + 4 * e

    @classmethod
    def build(cls, spec, dtype, rng, following):
        e = spec["embed_dim"]
        in_proj, out_proj = (he_or_xavier(shape, None, rng).astype(dtype) for shape in ((3 * e, e), (e, e)))
        return cls(in_proj, np.zeros(3 * e, dtype), out_proj, np.zeros(e, dtype), spec["num_heads"], spec["causal"])

    def __init__(self, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                 num_heads: int, causal: bool = False) -> None:
        super().__init__()
        self._add_param("in_proj_weight", in_proj_weight)
        self._add_param("in_proj_bias", in_proj_bias)
        self._add_param("out_proj.weight", out_proj_weight)
        self._add_param("out_proj.bias", out_proj_bias)
        self.num_heads = num_heads
        self.causal = causal

    def forward(self, x, train, rng):
        p = self.params
        n, t, e = x.shape
        heads, d = self.num_heads, e // self.num_heads
        # q scaled before the product, as torch, by the projection: its rows of W_in and b_in
        # scaled (E x E values) instead of its output (N T x E).
        w_in, b_in = _scaled_q_rows(p["in_proj_weight"], d), _scaled_q_rows(p["in_proj_bias"], d)
        qkv = _project(x, w_in, b_in)
        q, k, v = qkv.reshape(n, t, 3, heads, d).transpose(2, 0, 3, 1, 4)  # each (N, heads, T, d)
        # Scores, then A, kept transposed, keys by queries (N, heads, S, T) with S = T: the
        # softmax's reductions over the keys then run down columns, which numpy does whole rows
        # at a time, 1.7x faster than along short rows.
        scores = k @ q.swapaxes(-1, -2)
        if self.causal:
            scores += np.tril(np.full((t, t), -np.inf, x.dtype), -1)  # key s after query t
        probs = _softmax_over_keys_(scores)
        merged = np.empty((n, t, e), x.dtype)  # the heads' outputs side by side, written in place
        np.matmul(probs.swapaxes(-1, -2), v, out=merged.reshape(n, t, heads, d).transpose(0, 2, 1, 3))
        return _project(merged, p["out_proj.weight"], p["out_proj.bias"]), (x, w_in, q, k, v, probs, merged)

    def backward(self, dy, cache):
        dqkv = self._add_grads(dy, cache)
        n, t, _ = dqkv.shape
        return (dqkv.reshape(n * t, -1) @ cache[1]).reshape(n, t, -1)  # the scaled W_in: dqkv is the scaled q's

    def backward_params(self, dy, cache):
        self._add_grads(dy, cache)

    def _add_grads(self, dy, cache):
        """Add every parameter gradient; return the gradient of the projection with q scaled, (N, T, 3E)."""
        x, _, q, k, v, probs, merged = cache
        n, t, e = x.shape
        heads, d = self.num_heads, e // self.num_heads
        self._add_projection_grads("out_proj.weight", "out_proj.bias", dy, merged)
        dctx = (dy.reshape(n * t, e) @ self.params["out_proj.weight"]).reshape(n, t, heads, d).transpose(0, 2, 1, 3)
        dprobs = v @ dctx.swapaxes(-1, -2)  # (N, heads, S, T), as probs
        # Softmax backward, query by query: dscores = A * (dA - sum over keys of dA * A).
        dscores = dprobs
        dscores -= _key_sums(dprobs * probs)
        dscores *= probs
        dqkv = np.empty((n, t, 3, heads, d), x.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)
        np.matmul(dscores.swapaxes(-1, -2), k, out=dq)  # of the scaled q
        np.matmul(dscores, q, out=dk)  # q is already scaled
        np.matmul(probs, dctx, out=dv)
        dqkv2 = dqkv.reshape(n * t, 3 * e)
        self._add("in_proj_weight", _scaled_q_rows(dqkv2.T @ x.reshape(n * t, e), d))
        self._add("in_proj_bias", _scaled_q_rows(column_sums(dqkv2), d))
        return dqkv.reshape(n, t, 3 * e)

    def _add_projection_grads(self, weight: str, bias: str, dy, x):
        """grads[weight] += dy.T @ x and grads[bias] += dy summed, over every (N, T) position."""
        dy2, x2 = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
        self._add_matmul(weight, dy2.T, x2)
        self._add(bias, column_sums(dy2))


def _scaled_q_rows(a: np.ndarray, d: int) -> np.ndarray:
    """Return a copy of a: (3E, ...) (in_proj's weight, bias or their gradients) with q's E rows times 1 / sqrt(d)."""
    a = a.copy()
    a[:len(a) // 3] *= 1 / math.sqrt(d)
    return a


def _project(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Return x @ weight.T + bias for x: (N, T, E), as one 2-D matmul over the N*T positions."""
    n, t, e = x.shape
    y = x.reshape(n * t, e) @ weight.T
    y += bias
    return y.reshape(n, t, -1)


def _softmax_over_keys_(scores: np.ndarray) -> np.ndarray:
    """Return the softmax over axis -2 of (..., S, T), written into `scores` (the max subtracted first)."""
    # np.fmax passes over NaN, but scores minus the max keeps it: the column is NaN all the same.
    scores -= np.fmax.reduce(scores, axis=-2, keepdims=True)
    np.exp(scores, out=scores)
    scores /= _key_sums(scores)
    return scores


def _key_sums(a: np.ndarray) -> np.ndarray:
    """Return a: (..., S, T) summed over S, kept as an axis of 1: (..., 1, T), by products with a row of ones."""
    return np.ones((1, a.shape[-2]), a.dtype) @ a
