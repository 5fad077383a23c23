"""Layers, and `build`: the layer objects of a normalized spec, initialized from a seed."""

from __future__ import annotations

import math

import numpy as np

from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh
from .base import Layer
from .linear import Linear
from .norm import BatchNorm, LayerNorm
from .residual import Residual
from .rnn import RNN
from .shape import Dropout, Flatten

# A linear layer followed by one of these gets He initialization, Xavier otherwise.
RELU_FAMILY = {"relu", "leaky_relu", "elu", "gelu"}
# Layers looked through when deciding what activation follows a linear layer.
TRANSPARENT = {"dropout", "layernorm", "batchnorm"}


def build(specs: list[dict], dtype: np.dtype, rng: np.random.Generator) -> list[Layer]:
    """Return the layers of a normalized spec list, parameters drawn from `rng` in order."""
    layers = []
    for i, spec in enumerate(specs):
        kind = spec["type"]
        if kind == "linear":
            following = next((s["type"] for s in specs[i + 1:] if s["type"] not in TRANSPARENT), None)
            d, m = spec["in_features"], spec["out_features"]
            if following in RELU_FAMILY:
                weight = rng.standard_normal((m, d)) * math.sqrt(2.0 / d)
            else:
                bound = math.sqrt(6.0 / (d + m))
                weight = rng.uniform(-bound, bound, (m, d))
            layers.append(Linear(weight.astype(dtype), np.zeros(m, dtype)))
        elif kind in ("layernorm", "batchnorm"):
            c = spec["num_features"]
            weight, bias = np.ones(c, dtype), np.zeros(c, dtype)
            if kind == "layernorm":
                layers.append(LayerNorm(weight, bias, eps=spec["eps"]))
            else:
                layers.append(BatchNorm(weight, bias, np.zeros(c, dtype), np.ones(c, dtype),
                                        eps=spec["eps"], momentum=spec["momentum"]))
        elif kind == "rnn":
            d, h = spec["input_size"], spec["hidden_size"]
            # torch.nn.RNN's initialization: every weight and bias uniform in +-1/sqrt(H).
            bound = 1.0 / math.sqrt(h)
            shapes = [(h, d), (h, h), (h,), (h,)]
            layers.append(RNN(*(rng.uniform(-bound, bound, s).astype(dtype) for s in shapes),
                              return_sequences=spec["return_sequences"]))
        elif kind == "residual":
            layers.append(Residual(build(spec["layers"], dtype, rng)))
        elif kind == "leaky_relu":
            layers.append(LeakyReLU(spec["negative_slope"]))
        elif kind == "elu":
            layers.append(ELU(spec["alpha"]))
        elif kind == "dropout":
            layers.append(Dropout(spec["p"]))
        else:
            layers.append(SIMPLE[kind]())
    return layers


def walk(layers: list[Layer]):
    """Yield every layer, nested ones included."""
    for layer in layers:
        yield layer
        yield from walk(layer.sublayers())


SIMPLE = {"relu": ReLU, "gelu": GELU, "sigmoid": Sigmoid, "tanh": Tanh, "softplus": Softplus, "flatten": Flatten}

__all__ = ["Layer", "build", "walk", "Linear", "ReLU", "LeakyReLU", "ELU", "GELU", "Sigmoid", "Tanh", "Softplus",
           "Dropout", "Flatten", "LayerNorm", "BatchNorm", "Residual", "RNN"]
