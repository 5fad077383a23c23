"""Model specs: checked whole, with every size filled in, before anything is allocated.

`normalize(spec)` returns a copy of the spec with defaults and inferred sizes written out,
or raises SpecError listing every problem with its place (["layers", 2, "in_features"]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError, SpecError
from .ids import ID_RE
from .layers import LAYERS, Layer
from .layers.options import REQUIRED, ShapeError

LOSS_OPTIONS: dict[str, dict[str, object]] = {
    "softmax_cross_entropy": {"ignore_index": None},
    "mse": {},
    "bce_with_logits": {},
    "huber": {"delta": 1.0},
}

_CLIP = {"clip_grad_norm": None, "clip_grad_value": None}
OPTIMIZER_OPTIONS: dict[str, dict[str, object]] = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, **_CLIP},
    "adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, **_CLIP},
    "adamw": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, **_CLIP},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                "centered": False, **_CLIP},
}
DEFAULT_OPTIMIZER = {"type": "sgd", "lr": 0.01}
DTYPES = ("float32", "float64")
TOP_LEVEL = {"id", "layers", "input_shape", "loss", "optimizer", "dtype", "seed", "workers"}
MAX_WORKERS = 64
MAX_NESTING = 8


@dataclass
class InputRule:
    """What inputs a model accepts after the batch axis.

    `shape`: one example's shape, None where any size goes (a sequence's length), its axes
    named by `layout`; or None when the model starts with a flatten: then inputs of any shape
    holding `features` values each. `classes`: V when the inputs are class indices in [0, V)
    (INT64, for a model that starts with an embedding).
    """

    shape: tuple | None
    features: int | None = None
    layout: str = "N, D"
    classes: int | None = None
    exact: bool = False  # the spec's input_shape: exactly this shape

    def check(self, x: np.ndarray) -> None:
        """Raise InputError unless inputs `x` fit the rule."""
        shape = x.shape
        if self.classes is not None:
            if x.dtype.kind not in "iu":
                raise InputError.at(["inputs"], f"inputs must be integer class indices (INT64), got dtype {x.dtype}")
            if x.size and (x.min() < 0 or x.max() >= self.classes):
                raise InputError.at(["inputs"], f"inputs must be indices in [0, {self.classes}), got values in "
                                    f"[{x.min()}, {x.max()}]")
        if self.shape is None:
            if len(shape) < 2 or math.prod(shape[1:]) != self.features:
                raise InputError.at(["inputs"], f"inputs of shape {list(shape)} do not flatten to (N, {self.features})")
            return
        if self.exact:
            if shape[1:] != self.shape:
                raise InputError.at(["inputs"], f"inputs of shape {list(shape)} do not match the model's input_shape "
                                    f"{list(self.shape)}: they must be (N, {', '.join(map(str, self.shape))})")
            return
        rank = len(self.shape) + 1
        if len(shape) != rank:
            raise InputError.at(["inputs"], f"inputs must have rank {rank} ({self.layout}), got shape {list(shape)}")
        letters = self.layout.split(", ")
        for axis, size in enumerate(self.shape, start=1):
            if size is not None and shape[axis] != size:
                unit = "channels" if letters[axis] == "C" else "features"
                raise InputError.at(["inputs"], f"inputs have {shape[axis]} {unit}, the model expects "
                                    f"{letters[axis]}={size} (shape {list(shape)})")


def normalize(spec: dict, *, max_parameters: int | None = None, max_layers: int | None = None) -> tuple[dict, InputRule, int]:
    """Return (normalized spec, input rule, parameter count) or raise SpecError."""
    if not isinstance(spec, dict):
        raise SpecError.at([], "a model spec must be a JSON object", "type_error")
    errors: list[dict] = []

    def err(loc, msg, type="value_error"):
        errors.append({"loc": list(loc), "msg": msg, "type": type})

    for key in spec:
        if key not in TOP_LEVEL:
            err([key], f"unknown field {key!r}; expected one of {sorted(TOP_LEVEL)}", "extra_forbidden")
    out: dict = {}
    if "id" in spec:
        if not isinstance(spec["id"], str) or not ID_RE.fullmatch(spec["id"]):
            err(["id"], "id must match [A-Za-z0-9_-]{1,64}")
        else:
            out["id"] = spec["id"]
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        err(["dtype"], f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    out["dtype"] = dtype
    seed = spec.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed < 2**63:
        err(["seed"], "seed must be an integer in [0, 2**63)")
    out["seed"] = seed
    if "workers" in spec:  # data parallel: how a service splits batches; the model is the same
        workers = spec["workers"]
        if not _is_int(workers) or not 1 <= workers <= MAX_WORKERS:
            err(["workers"], f"workers must be an integer in [1, {MAX_WORKERS}]")
        else:
            out["workers"] = workers

    layers = spec.get("layers")
    count = 0
    rule = None
    if not isinstance(layers, list) or not layers:
        err(["layers"], "layers must be a non-empty list", "missing" if layers is None else "type_error")
    elif (total := _count_layers(layers, max_layers)) is None or (max_layers is not None and total > max_layers):
        err(["layers"], f"the spec has more layers than the limit max_layers={max_layers}", "limit")
    else:
        walk = _Walk()
        if "input_shape" in spec:
            out["input_shape"] = _start_at(spec["input_shape"], walk, err)
        out["layers"], count = _check_layers(layers, ["layers"], walk, err, depth=0)
        rule = walk.rule
        if not errors and rule is None:
            err(["layers"], "no layer gives the input size: give input_shape, or the first sized layer must "
                "give it (linear in_features, conv2d in_channels, rnn input_size, layernorm/batchnorm num_features)")
        if max_parameters is not None and count > max_parameters:
            err(["layers"], f"the model has {count} parameters, over the limit max_parameters={max_parameters}", "limit")

    out["loss"] = _check_choice(spec.get("loss"), ["loss"], LOSS_OPTIONS, err, optional=True)
    ignore_index = out["loss"].get("ignore_index") if isinstance(out["loss"], dict) else None
    if ignore_index is not None and not _is_int(ignore_index):
        err(["loss", "ignore_index"], f"ignore_index must be an integer (the label left out), got {ignore_index!r}")
    delta = out["loss"].get("delta") if isinstance(out["loss"], dict) else None
    if isinstance(out["loss"], dict) and out["loss"].get("type") == "huber" and not (
            not isinstance(delta, bool) and isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
        err(["loss", "delta"], f"delta must be a positive number, got {delta!r}")
    out["optimizer"] = _check_choice(spec.get("optimizer", DEFAULT_OPTIMIZER), ["optimizer"], OPTIMIZER_OPTIONS, err)
    if isinstance(out["optimizer"], dict) and not errors:
        from .optim import check_hyperparameters

        for loc, msg in check_hyperparameters(out["optimizer"]):
            err(["optimizer", *loc], msg)
    if errors:
        raise SpecError(errors)
    return out, rule, count


class _Walk:
    """The shape the layers seen so far give (None: nothing fixed yet), and the inputs' rule."""

    def __init__(self) -> None:
        self.shape: tuple | None = None
        self.rule: InputRule | None = None
        self.start: tuple | None = None  # the shape the model's first sized layer takes
        self.flattened = False  # a flatten came before the first sized layer
        self.sized = False  # the first sized layer (one that fixes an input shape) has been seen
        self.broken = False  # a layer had an error: the shapes after it are unknown


def _start_at(example, walk: _Walk, err) -> list:
    """Start the walk at the spec's input_shape (one example's shape); return it."""
    if not isinstance(example, list) or not example or not all(_is_int(d) and d > 0 for d in example):
        err(["input_shape"], "input_shape must be one example's shape, a non-empty list of positive "
            f"integers such as [1, 28, 28], got {example!r}")
        walk.broken = True
    else:
        walk.shape = walk.start = (None, *example)
        walk.rule = InputRule(tuple(example), exact=True)
    return example


def _count_layers(layers: list, limit: int | None, depth: int = 0) -> int | None:
    """Return how many layers the spec holds, nested ones included (None past the limit)."""
    total = 0
    for layer in layers:
        total += 1
        if isinstance(layer, dict) and isinstance(layer.get("layers"), list) and depth < MAX_NESTING:
            inner = _count_layers(layer["layers"], limit, depth + 1)
            if inner is None:
                return None
            total += inner
        if limit is not None and total > limit:
            return None
    return total


def _check_layers(layers: list, loc: list, walk: _Walk, err, depth: int) -> tuple[list, int]:
    """Return (the normalized layer specs, their parameter count), reporting problems through err."""
    normalized, count = [], 0
    for i, layer in enumerate(layers):
        here = [*loc, i]
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str):
            err(here, "a layer must be an object with a string 'type'", "type_error")
            normalized.append(layer)
            walk.broken = True
            continue
        kind = layer["type"]
        if kind not in LAYERS:
            err([*here, "type"], f"unknown layer type {kind!r}; expected one of {sorted(LAYERS)}")
            normalized.append(layer)
            walk.broken = True
            continue
        cls = LAYERS[kind]
        for key in layer:
            if key != "type" and key not in cls.options:
                err([*here, key], f"unknown option {key!r} for a {kind} layer; expected one of {sorted(cls.options)}",
                    "extra_forbidden")
        full = {"type": kind}
        for key, option in cls.options.items():
            full[key] = value = layer.get(key, None if option.default is REQUIRED else option.default)
            if (problem := option.problem(value)) is not None:
                err([*here, key], f"{key} {problem}", "missing" if value is None else "value_error")
                walk.broken = True
        if not walk.broken or any(option.nested for option in cls.options.values()):
            count += _check_layer(cls, full, here, walk, err, depth)
        normalized.append(full)
    return normalized, count


def _check_layer(cls: type[Layer], full: dict, here: list, walk: _Walk, err, depth: int) -> int:
    """Run one layer's shape rule on the running shape, filling inferred sizes into `full`;
    return its parameter count (nested layers included)."""
    count, before = 0, walk.shape
    nested = [key for key, option in cls.options.items() if option.nested]
    for key in nested:
        if not isinstance(full[key], list):
            return 0
        if depth + 1 >= MAX_NESTING:
            err([*here, key], f"{full['type']} blocks nest deeper than {MAX_NESTING}")
            walk.broken = True
            return 0
        full[key], inner = _check_layers(full[key], [*here, key], walk, err, depth + 1)
        count += inner
    if walk.broken:
        return count
    if nested:
        shape = before if before is not None else walk.start  # the block may fix the input shape
        if shape is None:
            return count
    elif walk.shape is None:
        implied = cls.input_shape(full)
        if implied is None:  # takes any shape: nothing fixed yet
            walk.flattened |= cls.flattens
            return count
        shape = (None, implied[-1]) if walk.flattened else implied
        walk.start, walk.sized = shape, True
        walk.rule = (InputRule(None, features=implied[-1]) if walk.flattened else
                     InputRule(implied[1:], layout=cls.input_layout, classes=cls.input_classes(full)))
    else:
        shape = walk.shape
        if not walk.sized and cls.input_shape(full) is not None:  # the first sized layer, after input_shape
            walk.sized = True
            walk.rule.classes = cls.input_classes(full)
    if cls.input_classes(full) is not None and here != ["layers", 0]:
        err(here, f"{full['type']} takes class indices (INT64 inputs), so it must be the model's first layer")
        walk.broken = True
        return count
    try:
        walk.shape = cls.output_shape(full, shape)
    except ShapeError as e:
        err([*here, *e.path, *([e.option] if e.option else [])], e.msg, e.type)
        walk.broken = True
        return count
    return count + cls.num_parameters(full)


def _check_choice(value, loc, table, err, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, dict) or value.get("type") not in table:
        err([*loc, "type"], f"{loc[0]} must be an object whose type is one of {sorted(table)}")
        return value
    options = table[value["type"]]
    for key in value:
        if key != "type" and key not in options:
            err([*loc, key], f"unknown option {key!r} for {value['type']}; expected one of {sorted(options)}",
                "extra_forbidden")
    return {"type": value["type"], **{k: value.get(k, d) for k, d in options.items()}}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
