"""Elementwise activations, with PyTorch's numerics. Each maps (N, ...) -> (N, ...)."""

from __future__ import annotations

import math

import numpy as np

from ..numerics import sigmoid
from .base import Layer
from .options import choice, number

# A unit counts as saturated when its output is this close to the activation's bounds (a gated
# RNN's gate too: core/layers/recurrent.py).
SATURATION_MARGIN = 0.01


class ReLU(Layer):
    relu_family = True

    def forward(self, x, train, rng):
        # Against an array of zeros numpy's maximum runs vectorized; against the scalar 0, 2-3x slower.
        y = np.zeros_like(x)
        np.maximum(x, y, out=y)
        return y, y

    def backward(self, dy, y):
        # The mask written as float32 and multiplied in place: a bool operand takes numpy's
        # slower mixed-type loop (the same products: 1 * dy, 0 * dy).
        dx = np.greater(y, 0, out=np.empty_like(dy))
        dx *= dy
        return dx

    def activation_stats(self, y):
        # A unit is dead when it is zero for every example of the batch (a feature map's
        # channel, (N, C, H, W), when it is zero at every position too).
        units = 1 if y.ndim == 4 else y.ndim - 1
        alive = np.logical_or.reduce(y > 0, axis=tuple(a for a in range(y.ndim) if a != units))  # any(), unwrapped
        # The count over the size is alive.mean()'s float64 quotient, without its call overhead.
        return {"dead_fraction": float(1.0 - np.count_nonzero(alive) / alive.size)}


class LeakyReLU(Layer):
    options = {"negative_slope": number(0.01)}
    relu_family = True

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x, train, rng):
        positive = x > 0
        return np.where(positive, x, x * self.negative_slope), positive

    def backward(self, dy, positive):
        return np.where(positive, dy, dy * self.negative_slope)


class ELU(Layer):
    options = {"alpha": number(1.0, lambda v: v > 0, "positive")}
    relu_family = True

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x, train, rng):
        positive = x > 0
        negative_part = np.expm1(np.minimum(x, 0))
        negative_part *= self.alpha
        return np.where(positive, x, negative_part), (positive, negative_part)

    def backward(self, dy, cache):
        positive, negative_part = cache
        # d/dx alpha * (exp(x) - 1) = alpha * exp(x) = negative_part + alpha.
        return np.where(positive, dy, dy * (negative_part + self.alpha))


class GELU(Layer):
    """The tanh approximation, as torch.nn.GELU(approximate="tanh")."""

    options = {"approximate": choice("tanh", ("tanh",))}
    relu_family = True
    K = math.sqrt(2.0 / math.pi)
    C = 0.044715

    def __init__(self, approximate: str = "tanh") -> None:
        super().__init__()

    def forward(self, x, train, rng):
        # In place where it can be: a big activation's temporaries cost page faults, and every
        # pass over it time, so the constants are folded, K (x + C x^3) as x (K + K C x^2), and
        # backward gets s = 0.5 (1 + tanh). x * x, not x**2: float32 pow is ~50x slower for
        # negative bases.
        s = x * x
        s *= self.K * self.C
        s += self.K
        s *= x
        np.tanh(s, out=s)
        s *= 0.5
        s += 0.5  # s = 0.5 (1 + tanh(K (x + C x^3)))
        return x * s, (x, s)

    def backward(self, dy, cache):
        # d/dx x s = s + 0.5 x (1 - t^2) K (1 + 3 C x^2) with t = tanh, and 1 - t^2 = 4 s (1 - s):
        # dy * s (1 + (1 - s) 2 K x (1 + 3 C x^2)).
        x, s = cache
        slope = x * x
        slope *= 6 * self.K * self.C
        slope += 2 * self.K
        slope *= x
        g = np.subtract(1, s)
        g *= slope
        g += 1
        g *= s
        g *= dy
        return g


class Sigmoid(Layer):
    def forward(self, x, train, rng):
        y = sigmoid(x)
        return y, y

    def backward(self, dy, y):
        return dy * y * (1 - y)

    def activation_stats(self, y):
        saturated = (y < SATURATION_MARGIN) | (y > 1 - SATURATION_MARGIN)
        return {"saturated_fraction": float(saturated.mean())}


class Tanh(Layer):
    def forward(self, x, train, rng):
        y = np.tanh(x)
        return y, y

    def backward(self, dy, y):
        return dy * (1 - y * y)

    def activation_stats(self, y):
        return {"saturated_fraction": float((np.abs(y) > 1 - SATURATION_MARGIN).mean())}


class Softplus(Layer):
    """log(1 + exp(x)), computed stably; its derivative is sigmoid(x)."""

    def forward(self, x, train, rng):
        y = np.log1p(np.exp(-np.abs(x)))
        y += np.maximum(x, 0)
        return y, x

    def backward(self, dy, x):
        return dy * sigmoid(x)
