"""Residual block: y = x + block(x), the block being a nested list of layers."""

from __future__ import annotations

from .base import Layer


class Residual(Layer):
    """x: (N, ..., D) -> same shape; parameters named "block.<index>.<name>" as in PyTorch."""

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
