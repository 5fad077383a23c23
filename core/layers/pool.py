"""2-D max and average pooling, as torch.nn.MaxPool2d and nn.AvgPool2d.

A window is reduced along W, then along H, each step a loop over the kernel's offsets along one
axis of elementwise operations on strided views (whole rows at a time, never pixel by pixel).
"""

from __future__ import annotations

import numpy as np

from .base import Layer
from .options import ShapeError, as_pair, need_rank, pair
from .windows import batch_last, output_size, pad, padded_full, unpad


class _Pool2d(Layer):
    """What both pools share: x: (N, C, H, W) -> (N, C, H', W'), no parameters; the stride
    defaults to the kernel size and the padding may be at most half the kernel."""

    options = {"kernel_size": pair(), "stride": pair(None), "padding": pair(0, low=0)}
    # Looked through for initialization: conv, pool, relu is conv, relu, pool.
    transparent = True
    input_layout = "N, C, H, W"

    @classmethod
    def output_shape(cls, spec, shape):
        need_rank(shape, (4,), spec["type"], "(N, C, H, W)")
        kernel, stride, padding = cls._geometry(spec)
        if any(p > k // 2 for p, k in zip(padding, kernel)):
            raise ShapeError(f"padding {spec['padding']} must be at most half of kernel_size {spec['kernel_size']}",
                             "padding")
        return (*shape[:2], *output_size(shape, kernel, stride, padding))

    @classmethod
    def input_shape(cls, spec):
        return (None, None, None, None)

    @classmethod
    def build(cls, spec, dtype, rng, following):
        return cls(*cls._geometry(spec))

    @staticmethod
    def _geometry(spec):
        kernel = as_pair(spec["kernel_size"])
        stride = kernel if spec["stride"] is None else as_pair(spec["stride"])
        return kernel, stride, as_pair(spec["padding"])

    def __init__(self, kernel, stride, padding) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def _reduce(self, x, fill, step):
        """Reduce x: (N, C, H, W), padded with `fill`, over each window: first along W (each input
        row, every output column), then along H. `step(axis, a, kernel, size, stride)` reduces
        `a` over one axis; return the two (result, what backward needs) pairs."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        oh, ow = output_size(x.shape, self.kernel, self.stride, self.padding)
        rows, along_w = step(3, pad(x, self.padding, fill), kw, ow, sw)  # (N, C, H + 2 pH, W')
        y, along_h = step(2, rows, kh, oh, sh)  # (N, C, H', W')
        return y, (along_h, along_w)

    def _scatter(self, dy, x_shape, spread):
        """Return dx: (N, C, H, W), sending dy back along H, then along W; `spread(axis, k, g, out)`
        writes into `out` the part of g that kernel offset k receives (None: returns it)."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        dy = batch_last(dy)  # as the gradients written here (after a flatten it is not): one order to walk
        dxp = padded_full(x_shape, self.padding, 0, dy.dtype)
        drows = padded_full((*dxp.shape[:3], dy.shape[3]), (0, 0), 0, dy.dtype)  # (N, C, H + 2 pH, W')
        _spread_along(drows, 2, dy, kh, sh, spread)
        _spread_along(dxp, 3, drows, kw, sw, spread)
        return unpad(dxp, self.padding)


def _spread_along(out, axis, g, kernel, stride, spread):
    """Add into `out` (zeros) what each kernel offset along `axis` receives of g."""
    for k in range(kernel):
        view = _offset(out, axis, k, g.shape[axis], stride)
        if stride >= kernel:  # the offsets' views do not overlap: write, do not add
            spread(axis, k, g, view)
        else:
            view += spread(axis, k, g, None)


def _offset(a: np.ndarray, axis: int, k: int, size: int, stride: int) -> np.ndarray:
    """Return the view of a: (N, C, ., .) that kernel offset k sees along `axis` at each of `size` outputs."""
    index = [slice(None)] * 4
    index[axis] = slice(k, k + stride * (size - 1) + 1, stride)
    return a[tuple(index)]


def _running_max(axis, a, kernel, size, stride):
    """Return (max over the kernel offsets along `axis`, the first offset reaching it)."""
    first = _offset(a, axis, 0, size, stride)
    if kernel == 1:
        return first.copy(order="K"), np.zeros_like(first, np.min_scalar_type(kernel))
    second = _offset(a, axis, 1, size, stride)
    # Offsets 0 and 1 at once: the argmax is 1 exactly where the second is greater.
    better, dtype = second > first, np.min_scalar_type(kernel)
    argmax = better.view(dtype) if dtype == np.uint8 else better.astype(dtype)
    best = np.maximum(first, second)  # in a's memory order
    for k in range(2, kernel):
        candidate = _offset(a, axis, k, size, stride)
        better = candidate > best
        np.maximum(best, candidate, out=best)
        # k exceeds every earlier offset, so "k where better" is a max (and far faster than a masked copy).
        np.maximum(argmax, better.view(np.uint8) * argmax.dtype.type(k), out=argmax)
    return best, argmax


def _sum(axis, a, kernel, size, stride):
    """Return (the sum over the kernel offsets along `axis`, nothing)."""
    total = np.empty_like(_offset(a, axis, 0, size, stride))
    np.copyto(total, _offset(a, axis, 0, size, stride))
    for k in range(1, kernel):
        total += _offset(a, axis, k, size, stride)
    return total, None


class MaxPool2d(_Pool2d):
    """y = the max of each window; padding is -inf, so it never wins. The gradient goes to the
    first maximum of each window in row-major order, as torch: the first along W in each row,
    then the first row."""

    def forward(self, x, train, rng):
        y, argmax = self._reduce(x, -np.inf, _running_max)
        return y, (argmax, x.shape)

    def backward(self, dy, cache):
        (along_h, along_w), x_shape = cache
        return self._scatter(dy, x_shape, lambda axis, k, g, out: np.multiply(
            g, (along_h if axis == 2 else along_w) == k, out=out))


class AvgPool2d(_Pool2d):
    """y = the mean of each window, padding zeros counted (torch's count_include_pad=True)."""

    def forward(self, x, train, rng):
        y, _ = self._reduce(x, 0.0, _sum)
        y *= 1 / (self.kernel[0] * self.kernel[1])
        return y, x.shape

    def backward(self, dy, x_shape):
        dy = dy * (1 / (self.kernel[0] * self.kernel[1]))
        return self._scatter(dy, x_shape, lambda axis, k, g, out: g if out is None else np.copyto(out, g))
