"""Layers that only move values around: dropout and flatten."""

from __future__ import annotations

import math

from .base import Layer
from .options import number


class Dropout(Layer):
    """Zeroes each value with probability p in training and scales the rest by 1/(1-p)."""

    options = {"p": number(0.5, lambda p: 0 <= p < 1, "in [0, 1)")}
    transparent = True

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x, train, rng):
        if not train or self.p == 0:
            return x, None
        # The mask lives on the tape, so a gradient check can replay it exactly.
        mask = rng.random(x.shape, dtype=x.dtype) >= self.p
        mask = mask.astype(x.dtype)
        mask *= 1 / (1 - self.p)
        return x * mask, mask

    def backward(self, dy, mask):
        return dy if mask is None else dy * mask


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...)."""

    flattens = True

    @classmethod
    def output_shape(cls, spec, shape):
        rest = shape[1:]
        return (shape[0], None if None in rest else math.prod(rest))

    def forward(self, x, train, rng):
        return x.reshape(x.shape[0], -1), x.shape

    def backward(self, dy, shape):
        return dy.reshape(shape)
