"""A layer type's spec: its options (defaults and checks) and the errors of its shape rule.

Shapes here are tuples with the batch axis first; a size known only at run time is None
(the batch size always, a sequence length or image size when no `input_shape` fixes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

# The default of an option that must be given (or, for an input size, inferred).
REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """One option: its default, and `problem(value)` saying what is wrong with a value (None: fine)."""

    default: object = REQUIRED
    problem: Callable[[object], str | None] = lambda value: None
    nested: bool = False  # a list of layer specs, which the spec checker walks


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def size(inferred: bool = False) -> Option:
    """A positive integer; `inferred` ones may be left out where the previous layer fixes them."""
    return Option(REQUIRED, lambda v: None if (_is_int(v) and v > 0) or (inferred and v is None)
                  else f"must be a positive integer, got {v!r}")


def number(default: float, valid: Callable[[float], bool] = lambda v: True, says: str = "") -> Option:
    """A finite number, in the range `valid` accepts (`says` puts that range in words)."""
    def problem(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"must be a number, got {v!r}"
        return None if valid(v) else f"must be {says}, got {v!r}"
    return Option(default, problem)


def flag(default: bool) -> Option:
    return Option(default, lambda v: None if isinstance(v, bool) else "must be true or false")


def choice(default: str, allowed: tuple[str, ...]) -> Option:
    return Option(default, lambda v: None if v in allowed else f"must be one of {list(allowed)}, got {v!r}")


def pair(default=REQUIRED, low: int = 1) -> Option:
    """An int or [h, w] of ints >= low (kernel_size, stride, padding, dilation); a None
    default may stay None (a pool's stride: the kernel size)."""
    def problem(v):
        if v is None and default is None:
            return None
        values = v if isinstance(v, list) and len(v) == 2 else [v]
        if all(_is_int(x) and x >= low for x in values):
            return None
        return f"must be an integer >= {low} or a list [h, w] of them, got {v!r}"
    return Option(default, problem)


def as_pair(v) -> tuple[int, int]:
    """Return (h, w) of an option that is an int or [h, w]."""
    return (v[0], v[1]) if isinstance(v, list) else (v, v)


def layer_list() -> Option:
    """A nested, non-empty list of layer specs (residual blocks); the spec checker walks it."""
    return Option(REQUIRED, lambda v: None if isinstance(v, list) and v else "needs a non-empty list of layers",
                  nested=True)


class ShapeError(Exception):
    """A layer cannot take inputs of the shape it is given.

    `option` names the option at fault (None: the layer as a whole); `path` is filled in on the
    way out of nested layers ([1, "layers", 0]); `kind` and `shape` are where the error arose.
    """

    def __init__(self, msg: str, option: str | None = None, type: str = "value_error") -> None:
        super().__init__(msg)
        self.msg, self.option, self.type = msg, option, type
        self.path: list = []
        self.kind: str | None = None
        self.shape: tuple | None = None

    def reached(self, index: int, kind: str, shape: tuple) -> None:
        """Record that the error arose at layer `index` (a `kind` layer given `shape`), one level up."""
        if self.kind is None:
            self.kind, self.shape = kind, shape
        self.path.insert(0, index)

    def at_run_time(self, input_shape: tuple) -> str:
        """Return the message for inputs of `input_shape` that met this error."""
        where = ".".join(map(str, ["layers", *self.path]))
        return f"inputs of shape {list(input_shape)} reach {where} ({self.kind}): {self.msg}"


class SizeMismatch(ShapeError):
    """A size option does not match the size the previous layer gives."""

    def __init__(self, option: str, expected: int, got: int, unit: str) -> None:
        super().__init__(f"{option}={expected} does not match the {got} {unit} the previous layer gives", option)
        self.expected, self.got, self.unit = expected, got, unit

    def at_run_time(self, input_shape: tuple) -> str:
        where = ".".join(map(str, ["layers", *self.path]))
        return (f"inputs of shape {list(self.shape)} reach {where} ({self.kind}) with {self.got} {self.unit}, "
                f"it expects {self.expected}")


def take_size(spec: dict, option: str, size: int | None, unit: str = "features") -> int:
    """Return spec[option], filled in from `size` (what the previous layer gives, None if known
    only at run time) where it was left out, and checked against it where given."""
    value = spec[option]
    if value is None:
        if size is None:
            raise ShapeError(f"{option} is required: the layers before do not fix the input size", option, "missing")
        spec[option] = value = size
    elif size is not None and value != size:
        raise SizeMismatch(option, value, size, unit)
    return value


def need_rank(shape: tuple, ranks: tuple[int, ...], kind: str, layouts: str) -> None:
    """Raise ShapeError unless `shape` has one of `ranks` (layouts: what the layer takes, in words)."""
    if len(shape) not in ranks:
        raise ShapeError(f"{kind} needs {layouts} inputs; this layer would get {letters(shape)}")


def letters(shape: tuple) -> str:
    """Return a shape in the field's letters: (N, D), (N, T, D), (N, C, H, W)."""
    return {2: "(N, D)", 3: "(N, T, D)", 4: "(N, C, H, W)"}.get(len(shape), f"rank {len(shape)}")


def describe(shape: tuple) -> str:
    """Return a shape as (N, 8, ?): N the batch, ? a size known only at run time."""
    return "(" + ", ".join(["N", *("?" if d is None else str(d) for d in shape[1:])]) + ")"
