"""The layer protocol: forward returns (output, cache), backward consumes the cache.

A layer owns its parameters and their gradient buffers (same names, same shapes) and,
for batchnorm, its running buffers. It never stores activations: everything backward
needs goes into the cache that forward returns, so several forwards can be pending.

A layer class is also its type's record, read by the spec checker, the shape inference and
the builder (`core.layers.LAYERS` maps each spec type to its class):
`options` (defaults and checks), `output_shape` (the shape rule, run at creation on sizes
that may be unknown and at run time on the real ones), `input_shape` and `input_classes`
(what inputs a model starting with this layer takes), `num_parameters` and `build`
(construction with init).

Shapes use the same letters everywhere: N batch, D in, M out, T time, H hidden,
C channels, H and W image height and width.
"""

from __future__ import annotations

import numpy as np

from ..numerics import zero
from .options import Option


class Layer:
    """Base layer: no parameters, any shape in, the same shape out. Subclasses register
    parameters with `_add_param` and add gradients through `_add_matmul` / `_add_sum` / `_add`."""

    # ---- the type's record -----------------------------------------------------------------

    options: dict[str, Option] = {}
    # Looked through when deciding which activation follows a layer (for its initialization).
    transparent = False
    # A ReLU-family activation: the layer before it gets He initialization, else Xavier.
    relu_family = False
    # The model takes inputs of any rank, flattened, when it starts with this layer.
    flattens = False
    # The input's axes in words, for messages about a model's inputs (with `input_shape`).
    input_layout = "N, D"

    @classmethod
    def output_shape(cls, spec: dict, shape: tuple) -> tuple:
        """Return the output shape for inputs of `shape`, filling inferred sizes into `spec`.

        Raises ShapeError (options.py) when the layer cannot take such inputs.
        """
        return shape

    @classmethod
    def input_shape(cls, spec: dict) -> tuple | None:
        """Return the input shape this layer fixes when it is the model's first sized layer
        (batch axis first, None where any size goes), or None when it takes any shape."""
        return None

    @classmethod
    def input_classes(cls, spec: dict) -> int | None:
        """Return V when a model starting with this layer takes class indices in [0, V) (INT64
        inputs, an embedding), None when it takes numbers in the model's dtype."""
        return None

    @classmethod
    def num_parameters(cls, spec: dict) -> int:
        return 0

    @classmethod
    def build(cls, spec: dict, dtype: np.dtype, rng: np.random.Generator, following: type | None) -> "Layer":
        """Return a layer of this type, its parameters drawn from `rng`; `following` is the class
        of the next layer that is not transparent (None at the end)."""
        return cls(**{key: spec[key] for key in cls.options})

    # ---- the layer ---------------------------------------------------------------------------

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        # Gradients known to be zero: the next addition writes into them with `out=`
        # instead of allocating a temporary and adding.
        self._zero_grads: set[str] = set()

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
            zero(g)
        self._zero_grads = set(self.grads)

    def grads_zeroed(self) -> None:
        """Note that the gradient buffers were zeroed from outside (the model's packed buffer)."""
        self._zero_grads = set(self.grads)

    def grads_written(self) -> None:
        """Note that the gradient buffers were written from outside (a checkpoint was loaded)."""
        self._zero_grads = set()

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)
        self._zero_grads.add(name)

    def _add_matmul(self, name: str, a: np.ndarray, b: np.ndarray) -> None:
        """grads[name] += a @ b, the product reshaped to the gradient's shape (a conv's (C', C, kH, kW))."""
        grad = self.grads[name].reshape(a.shape[0], b.shape[1])  # a view: the buffers are contiguous
        if name in self._zero_grads:
            np.matmul(a, b, out=grad)
            self._zero_grads.discard(name)
        else:
            grad += a @ b

    def _add_sum(self, name: str, x: np.ndarray, axis) -> None:
        """grads[name] += x.sum(axis)."""
        # np.add.reduce is what np.sum calls, the same bits, without its Python wrapper (1.5 us a call)
        if name in self._zero_grads:
            np.add.reduce(x, axis=axis, out=self.grads[name])
            self._zero_grads.discard(name)
        else:
            self.grads[name] += np.add.reduce(x, axis=axis)

    def _add(self, name: str, g: np.ndarray) -> None:
        """grads[name] += g."""
        if name in self._zero_grads:
            np.copyto(self.grads[name], g)
            self._zero_grads.discard(name)
        else:
            self.grads[name] += g
