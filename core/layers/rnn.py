"""Vanilla tanh RNN over batch-first sequences, with backpropagation through time."""

from __future__ import annotations

import numpy as np

from .base import Layer
from .init import uniform_hidden
from .options import flag, need_rank, size, take_size


class RNN(Layer):
    """x: (N, T, D) -> (N, H), the last step, or (N, T, H) with return_sequences.

    h_t = tanh(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh), h_0 = 0, as torch.nn.RNN
    with batch_first=True; parameters named weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0.
    """

    options = {"input_size": size(inferred=True), "hidden_size": size(), "return_sequences": flag(False)}
    input_layout = "N, T, D"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (3,), "rnn", "batch-first (N, T, D)")
        take_size(spec, "input_size", shape[-1])
        n, t, _ = shape
        h = spec["hidden_size"]
        return (n, t, h) if spec["return_sequences"] else (n, h)

    @classmethod
    def input_shape(cls, spec):
        return (None, None, spec["input_size"])

    @classmethod
    def num_parameters(cls, spec):
        d, h = spec["input_size"], spec["hidden_size"]
        return h * d + h * h + 2 * h

    @classmethod
    def build(cls, spec, dtype, rng, following):
        d, h = spec["input_size"], spec["hidden_size"]
        weights = uniform_hidden([(h, d), (h, h), (h,), (h,)], h, rng)
        return cls(*(w.astype(dtype) for w in weights), return_sequences=spec["return_sequences"])

    def __init__(self, weight_ih, weight_hh, bias_ih, bias_hh, return_sequences: bool = False) -> None:
        super().__init__()
        self._add_param("weight_ih_l0", weight_ih)
        self._add_param("weight_hh_l0", weight_hh)
        self._add_param("bias_ih_l0", bias_ih)
        self._add_param("bias_hh_l0", bias_hh)
        self.return_sequences = return_sequences

    def forward(self, x, train, rng):
        p = self.params
        n, t, _ = x.shape
        w_hh = p["weight_hh_l0"]
        # All input projections in one matmul: (N, T, D) @ (D, H) -> (N, T, H).
        hs = x @ p["weight_ih_l0"].T
        hs += p["bias_ih_l0"]
        hs += p["bias_hh_l0"]
        h = np.tanh(hs[:, 0], out=hs[:, 0])
        for step in range(1, t):
            a = hs[:, step]
            a += h @ w_hh.T
            h = np.tanh(a, out=a)
        y = hs if self.return_sequences else hs[:, -1]
        return y, (x, hs)

    def backward(self, dy, cache):
        da = self._backward_through_time(dy, cache)
        return da @ self.params["weight_ih_l0"]

    def backward_params(self, dy, cache):
        self._backward_through_time(dy, cache)

    def _backward_through_time(self, dy, cache):
        """Add the parameter gradients; return the pre-activation gradients da: (N, T, H)."""
        x, hs = cache
        w_hh = self.params["weight_hh_l0"]
        n, t, d = x.shape
        hidden = hs.shape[-1]
        # da[:, s] is the gradient at step s's pre-activation.
        da = np.empty_like(hs)
        dh = dy[:, -1].copy() if self.return_sequences else dy.copy()
        for step in range(t - 1, -1, -1):
            h = hs[:, step]
            np.multiply(dh, 1 - h * h, out=da[:, step])
            if step > 0:
                dh = da[:, step] @ w_hh
                if self.return_sequences:
                    dh += dy[:, step - 1]
        da2 = da.reshape(n * t, hidden)
        self._add_matmul("weight_ih_l0", da2.T, x.reshape(n * t, d))
        # h_{s-1} pairs with da[:, s] for s >= 1.
        self._add_matmul(
            "weight_hh_l0", da[:, 1:].reshape(-1, hidden).T, hs[:, :-1].reshape(-1, hidden)
        )
        self._add_sum("bias_ih_l0", da2, axis=0)
        self._add_sum("bias_hh_l0", da2, axis=0)
        return da
