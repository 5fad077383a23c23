"""Initializations, as torch draws them (biases are zero unless a layer says otherwise)."""

from __future__ import annotations

import math

import numpy as np


def he_or_xavier(shape: tuple[int, ...], following: type | None, rng: np.random.Generator) -> np.ndarray:
    """Return a weight of `shape` (M, D, *kernel): He normal (fan-in) when a ReLU-family
    activation follows, Xavier/Glorot uniform otherwise; fans count the kernel's positions."""
    receptive = math.prod(shape[2:])
    fan_out, fan_in = shape[0] * receptive, shape[1] * receptive
    if following is not None and following.relu_family:
        return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, shape)


def uniform_hidden(shapes: list[tuple[int, ...]], hidden: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Return arrays of `shapes`, each uniform in +-1/sqrt(hidden), as torch's RNN, LSTM and GRU."""
    bound = 1.0 / math.sqrt(hidden)
    return [rng.uniform(-bound, bound, s) for s in shapes]
