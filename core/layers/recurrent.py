"""What the recurrent layers (RNN, LSTM, GRU) share: parameters, time-major steps, BPTT's weight gradients.

Inside, sequences are kept time-major, (T, N, ...), so each step's slice is contiguous (LSTM
goes further and keeps each step transposed, (T, ..., N): see lstm.py); the layers take and
give batch-first (N, T, ...) arrays, as torch with batch_first=True.
"""

from __future__ import annotations

import numpy as np

from .activations import SATURATION_MARGIN
from .base import Layer
from .init import uniform_hidden
from .options import flag, need_rank, size, take_size


def gate_saturation(gates: np.ndarray, names: str, axis: int) -> dict:
    """Return the fraction of saturated gate values, of all gates together and of each gate.

    gates: every step's activated gates in equal blocks along `axis`, named by the letters of
    `names`: the sigmoid gates' blocks, then the tanh gate's, last. A sigmoid gate is saturated
    within SATURATION_MARGIN of 0 or 1, the tanh gate within SATURATION_MARGIN of -1 or 1. The
    sigmoid gates are compared as one block, then counted gate by gate: 1.6x faster than gate by
    gate on an LSTM's (T, 4H, N) gates (as fast on a GRU's (T, N, 3H), whose blocks are short rows).
    """
    hidden = gates.shape[axis] // len(names)

    def blocks(a: np.ndarray, start: int, stop: int) -> np.ndarray:
        return a[(slice(None),) * (axis % a.ndim) + (slice(start * hidden, stop * hidden),)]

    sigmoids = blocks(gates, 0, len(names) - 1)
    near = sigmoids < SATURATION_MARGIN
    near |= sigmoids > 1 - SATURATION_MARGIN
    size = near.size // (len(names) - 1)
    per_gate = {name: float(np.count_nonzero(blocks(near, k, k + 1))) / size for k, name in enumerate(names[:-1])}
    tanh = blocks(gates, len(names) - 1, len(names))
    per_gate[names[-1]] = float(np.count_nonzero(np.abs(tanh) > 1 - SATURATION_MARGIN)) / tanh.size
    return {"saturated_fraction": sum(per_gate.values()) / len(names), "gates": per_gate}


class Recurrent(Layer):
    """Base of RNN, LSTM and GRU. x: (N, T, D) -> (N, H), the last step, or (N, T, H) with return_sequences.

    Parameters as torch: weight_ih_l0 (G*H, D), weight_hh_l0 (G*H, H), bias_ih_l0 and
    bias_hh_l0 (G*H,), with G gates stacked in the rows, each U(-1/sqrt(H), 1/sqrt(H)) as torch.
    Subclasses give GATES, forward and `_backward_through_time` (LSTM, its own backward).
    """

    GATES = 1
    options = {"input_size": size(inferred=True), "hidden_size": size(), "return_sequences": flag(False)}
    input_layout = "N, T, D"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (3,), cls.__name__.lower(), "batch-first (N, T, D)")
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
        return cls.GATES * h * (d + h + 2)

    @classmethod
    def build(cls, spec, dtype, rng, following):
        d, h = spec["input_size"], spec["hidden_size"]
        rows = cls.GATES * h
        weights = uniform_hidden([(rows, d), (rows, h), (rows,), (rows,)], h, rng)
        return cls(*(w.astype(dtype) for w in weights), return_sequences=spec["return_sequences"])

    def __init__(self, weight_ih, weight_hh, bias_ih, bias_hh, return_sequences: bool = False) -> None:
        super().__init__()
        self._add_param("weight_ih_l0", weight_ih)
        self._add_param("weight_hh_l0", weight_hh)
        self._add_param("bias_ih_l0", bias_ih)
        self._add_param("bias_hh_l0", bias_hh)
        self.return_sequences = return_sequences
        self.hidden_size = weight_hh.shape[1]

    def backward(self, dy, cache):
        da_x = self._backward_through_time(dy, cache)
        t, n, _ = da_x.shape
        dx = da_x.reshape(t * n, -1) @ self.params["weight_ih_l0"]
        return dx.reshape(t, n, -1).transpose(1, 0, 2)

    def backward_params(self, dy, cache):
        self._backward_through_time(dy, cache)

    def _backward_through_time(self, dy, cache) -> np.ndarray:
        """Add the parameter gradients; return the gradients of the input projections, (T, N, G*H)."""
        raise NotImplementedError

    @staticmethod
    def _input_projections(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (x time-major (T, N, D), x_t @ weight.T + bias for every step in one matmul (T, N, G*H))."""
        xt = np.ascontiguousarray(x.transpose(1, 0, 2))
        t, n, d = xt.shape
        projections = xt.reshape(t * n, d) @ weight.T
        projections += bias
        return xt, projections.reshape(t, n, -1)

    def _output(self, hs: np.ndarray) -> np.ndarray:
        """hs: (T, N, H) -> (N, T, H) with return_sequences, else the last step (N, H)."""
        return hs.transpose(1, 0, 2) if self.return_sequences else hs[-1]

    def _output_grads(self, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (dh of the last step (N, H), every step's output gradient time-major (T, N, H) or None).

        With return_sequences the loop adds dys[t] into dh at each step; without, only the last step has one.
        """
        if self.return_sequences:
            return np.zeros_like(dy[:, -1]), dy.transpose(1, 0, 2)
        return dy.copy(), None

    def _add_weight_grads(self, da_x: np.ndarray, da_h: np.ndarray, xt: np.ndarray, hs: np.ndarray) -> None:
        """Add the four parameter gradients from the pre-activation gradients of every step.

        da_x: (T, N, G*H), of x_t @ W_ih.T + b_ih; da_h: (T, N, G*H), of h_{t-1} @ W_hh.T + b_hh;
        xt: (T, N, D); hs: (T, N, H). h_0 = 0, so step 0 adds nothing to weight_hh.
        """
        t, n, gh = da_x.shape
        da_x2, da_h2 = da_x.reshape(t * n, gh), da_h.reshape(t * n, gh)
        self._add_matmul("weight_ih_l0", da_x2.T, xt.reshape(t * n, xt.shape[-1]))
        self._add_matmul("weight_hh_l0", da_h2[n:].T, hs[:-1].reshape((t - 1) * n, hs.shape[-1]))
        bias = da_x2.sum(axis=0)
        self._add("bias_ih_l0", bias)
        self._add("bias_hh_l0", bias if da_h is da_x else da_h2.sum(axis=0))  # RNN, LSTM: one array for both
