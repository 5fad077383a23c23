"""Residual block: y = x + block(x), the block being a nested list of layers."""

from __future__ import annotations

from .base import Layer
from .options import ShapeError, describe, layer_list


class Residual(Layer):
    """x: (N, ..., D) -> same shape; parameters named "block.<index>.<name>" as in PyTorch.

    The spec checker checks, sizes and counts the nested layers itself (it walks every
    `layer_list` option); this record only says that the block must keep its input's shape.
    """

    options = {"layers": layer_list()}

    @classmethod
    def output_shape(cls, spec, shape):
        from . import output_shape  # the registry imports this module, so not at the top

        try:
            out = output_shape(spec["layers"], shape)
        except ShapeError as e:
            e.path.insert(0, "layers")
            raise
        if out != shape:
            raise ShapeError(f"the block must keep the shape of its input {describe(shape)}, "
                             f"it gives {describe(out)}", "layers")
        return shape

    @classmethod
    def build(cls, spec, dtype, rng, following):
        from . import build

        return cls(build(spec["layers"], dtype, rng))

    def __init__(self, block: list[Layer]) -> None:
        super().__init__()
        self.block = block
        for i, layer in enumerate(block):
            for name in layer.params:
                self.params[f"block.{i}.{name}"] = layer.params[name]
                self.grads[f"block.{i}.{name}"] = layer.grads[name]
            for name in layer.buffers:
                self.buffers[f"block.{i}.{name}"] = layer.buffers[name]

    def sublayers(self):
        return self.block

    def forward(self, x, train, rng):
        h, caches = x, []
        for layer in self.block:
            h, cache = layer.forward(h, train, rng)
            caches.append(cache)
        return x + h, caches

    def backward(self, dy, caches):
        dh = dy
        for layer, cache in zip(reversed(self.block), reversed(caches)):
            dh = layer.backward(dh, cache)
        return dy + dh

    def zero_grad(self):
        for layer in self.block:
            layer.zero_grad()

    def grads_written(self):
        for layer in self.block:
            layer.grads_written()

