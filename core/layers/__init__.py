"""Layers: the table of layer types, the builder and the shape inference that read it.

Each spec type maps to its layer class, which is also the type's record (see base.py):
adding a type is adding its class (one concept per file) and one line to LAYERS.
"""

from __future__ import annotations

import numpy as np

from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh
from .base import Layer
from .conv import Conv2d
from .linear import Linear
from .norm import BatchNorm, LayerNorm
from .options import ShapeError
from .pool import AvgPool2d, MaxPool2d
from .residual import Residual
from .rnn import RNN
from .lstm import LSTM
from .gru import GRU
from .embedding import Embedding
from .positional import Positional
from .attention import Attention
from .shape import Dropout, Flatten

LAYERS: dict[str, type[Layer]] = {
    "linear": Linear,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
    "gelu": GELU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softplus": Softplus,
    "dropout": Dropout,
    "layernorm": LayerNorm,
    "batchnorm": BatchNorm,
    "residual": Residual,
    "rnn": RNN,
    "lstm": LSTM,
    "gru": GRU,
    "embedding": Embedding,
    "positional": Positional,
    "attention": Attention,
    "flatten": Flatten,
    "conv2d": Conv2d,
    "maxpool2d": MaxPool2d,
    "avgpool2d": AvgPool2d,
}


def build(specs: list[dict], dtype: np.dtype, rng: np.random.Generator) -> list[Layer]:
    """Return the layers of a normalized spec list, parameters drawn from `rng` in order."""
    types = [LAYERS[spec["type"]] for spec in specs]
    layers = []
    for i, (cls, spec) in enumerate(zip(types, specs)):
        following = next((t for t in types[i + 1:] if not t.transparent), None)
        layers.append(cls.build(spec, dtype, rng, following))
    return layers


# Each parameter starts on a 64-byte boundary of the shared buffer (16 float32), as numpy's own
# allocations do; the gaps hold zeros, which every update rule leaves zero.
ALIGN = 16


def pack(layers: list[Layer]) -> None:
    """Move every parameter into one contiguous buffer, and its gradient into another, in order
    (the values unchanged, nested and shared ones included): an optimizer then updates all of
    them with one call per operation instead of one per parameter (optim.Optimizer)."""
    owned = {}  # id -> (parameter, gradient), each array once (a residual block shares its layers')
    for layer in walk(layers):
        for name, p in layer.params.items():
            owned.setdefault(id(p), (p, layer.grads[name]))
    if not owned or len({p.dtype for p, _ in owned.values()}) != 1:
        return
    starts, total = [], 0
    for p, _ in owned.values():
        starts.append(total)
        total += -(-p.size // ALIGN) * ALIGN
    dtype = next(iter(owned.values()))[0].dtype
    flat_params, flat_grads = np.zeros(total, dtype), np.zeros(total, dtype)
    moved = {}
    for (p, g), start in zip(owned.values(), starts):
        for old, flat in ((p, flat_params), (g, flat_grads)):
            view = flat[start:start + old.size].reshape(old.shape)
            np.copyto(view, old)
            moved[id(old)] = view
    for layer in walk(layers):
        for arrays in (layer.params, layer.grads):
            for name, a in arrays.items():
                arrays[name] = moved[id(a)]


def output_shape(specs: list[dict], shape: tuple) -> tuple:
    """Return the shape a normalized spec list gives for inputs of `shape`; ShapeError if it cannot."""
    for i, spec in enumerate(specs):
        try:
            shape = LAYERS[spec["type"]].output_shape(spec, shape)
        except ShapeError as e:
            e.reached(i, spec["type"], shape)
            raise
    return shape


def walk(layers: list[Layer]):
    """Yield every layer, nested ones included."""
    for layer in layers:
        yield layer
        yield from walk(layer.sublayers())


__all__ = ["LAYERS", "Layer", "ShapeError", "build", "output_shape", "pack", "walk", "Linear", "ReLU", "LeakyReLU", "ELU", "GELU",
           "Sigmoid", "Tanh", "Softplus", "Dropout", "Flatten", "LayerNorm", "BatchNorm", "Residual", "RNN",
           "Conv2d", "MaxPool2d", "AvgPool2d"]
