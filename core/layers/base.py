"""The layer protocol: forward returns (output, cache), backward consumes the cache.

A layer owns its parameters and their gradient buffers (same names, same shapes) and,
for batchnorm, its running buffers. It never stores activations: everything backward
needs goes into the cache that forward returns, so several forwards can be pending.

Shapes use the same letters everywhere: N batch, D in, M out, T time, H hidden.
"""

from __future__ import annotations

import numpy as np


class Layer:
    """Base layer: no parameters. Subclasses register theirs with `_add_param`."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        # True while every gradient buffer is known to be zero: backward may then
        # write into it with `out=` instead of allocating a temporary and adding.
        self.grads_zero = True

    def forward(self, x: np.ndarray, train: bool, rng: np.random.Generator):
        """Return (y, cache)."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray, cache) -> np.ndarray:
        """Return dx, adding parameter gradients into `self.grads`."""
        raise NotImplementedError

    def backward_params(self, dy: np.ndarray, cache) -> None:
        """Add parameter gradients only; the first layer's input gradient is rarely wanted."""
        self.backward(dy, cache)

    def activation_stats(self, y: np.ndarray) -> dict[str, float]:
        """Return health statistics of a training forward's output (dead units, saturation)."""
        return {}

    def sublayers(self) -> list["Layer"]:
        """Return the layers nested inside this one (residual blocks)."""
        return []

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)
        self.grads_zero = True

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def _add_matmul(self, name: str, a: np.ndarray, b: np.ndarray) -> None:
        """grads[name] += a @ b."""
        if self.grads_zero:
            np.matmul(a, b, out=self.grads[name])
        else:
            self.grads[name] += a @ b

    def _add_sum(self, name: str, x: np.ndarray, axis) -> None:
        """grads[name] += x.sum(axis)."""
        if self.grads_zero:
            np.sum(x, axis=axis, out=self.grads[name])
        else:
            self.grads[name] += x.sum(axis=axis)
