"""Model specs: checked whole, with every size filled in, before anything is allocated.

`normalize(spec)` returns a copy of the spec with defaults and inferred sizes written out,
or raises SpecError listing every problem with its place (["layers", 2, "in_features"]).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import SpecError
from .ids import ID_RE

# Per layer type: its options and their defaults (REQUIRED: must be given, or inferred
# from the previous layer where the option is a size).
REQUIRED = object()
LAYER_OPTIONS: dict[str, dict[str, object]] = {
    "linear": {"in_features": REQUIRED, "out_features": REQUIRED},
    "relu": {},
    "leaky_relu": {"negative_slope": 0.01},
    "elu": {"alpha": 1.0},
    "gelu": {"approximate": "tanh"},
    "sigmoid": {},
    "tanh": {},
    "softplus": {},
    "dropout": {"p": 0.5},
    "layernorm": {"num_features": REQUIRED, "eps": 1e-5},
    "batchnorm": {"num_features": REQUIRED, "eps": 1e-5, "momentum": 0.1},
    "residual": {"layers": REQUIRED},
    "rnn": {"input_size": REQUIRED, "hidden_size": REQUIRED, "return_sequences": False},
    "flatten": {},
}
# The size option through which a layer takes its input, when it has one.
INPUT_SIZE = {"linear": "in_features", "layernorm": "num_features", "batchnorm": "num_features", "rnn": "input_size"}

LOSS_OPTIONS: dict[str, dict[str, object]] = {
    "softmax_cross_entropy": {},
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
TOP_LEVEL = {"id", "layers", "loss", "optimizer", "dtype", "seed"}
MAX_NESTING = 8


@dataclass
class InputRule:
    """What inputs a model accepts: its rank (None: any rank, flattened) and feature size."""

    rank: int | None
    features: int


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

    layers = spec.get("layers")
    count = 0
    rule = None
    if not isinstance(layers, list) or not layers:
        err(["layers"], "layers must be a non-empty list", "missing" if layers is None else "type_error")
    elif (total := _count_layers(layers, max_layers)) is None or (max_layers is not None and total > max_layers):
        err(["layers"], f"the spec has more layers than the limit max_layers={max_layers}", "limit")
    else:
        state = _Shape(rank=None, features=None)
        out["layers"], count = _check_layers(layers, ["layers"], state, err, depth=0)
        rule = state.input_rule
        if not errors and rule is None:
            err(["layers"], "no layer gives the input size: the first sized layer must give it "
                "(linear in_features, rnn input_size, layernorm/batchnorm num_features)")
        if max_parameters is not None and count > max_parameters:
            err(["layers"], f"the model has {count} parameters, over the limit max_parameters={max_parameters}", "limit")

    out["loss"] = _check_choice(spec.get("loss"), ["loss"], LOSS_OPTIONS, err, optional=True)
    out["optimizer"] = _check_choice(spec.get("optimizer", DEFAULT_OPTIMIZER), ["optimizer"], OPTIMIZER_OPTIONS, err)
    if isinstance(out["optimizer"], dict) and not errors:
        from .optim import check_hyperparameters

        for loc, msg in check_hyperparameters(out["optimizer"]):
            err(["optimizer", *loc], msg)
    if errors:
        raise SpecError(errors)
    return out, rule, count


class _Shape:
    """What the layers seen so far produce: rank (2, 3, None unknown) and last-axis size."""

    def __init__(self, rank, features):
        self.rank = rank
        self.features = features
        self.input_rule: InputRule | None = None
        self.flattened_input = False


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


def _check_layers(layers: list, loc: list, state: _Shape, err, depth: int) -> tuple[list, int]:
    normalized, count = [], 0
    for i, layer in enumerate(layers):
        here = [*loc, i]
        if not isinstance(layer, dict) or not isinstance(layer.get("type"), str):
            err(here, "a layer must be an object with a string 'type'", "type_error")
            normalized.append(layer)
            continue
        kind = layer["type"]
        if kind not in LAYER_OPTIONS:
            err([*here, "type"], f"unknown layer type {kind!r}; expected one of {sorted(LAYER_OPTIONS)}")
            normalized.append(layer)
            continue
        options = LAYER_OPTIONS[kind]
        for key in layer:
            if key != "type" and key not in options:
                err([*here, key], f"unknown option {key!r} for a {kind} layer; expected one of {sorted(options)}",
                    "extra_forbidden")
        full = {"type": kind}
        for key, default in options.items():
            if key == "layers":
                continue
            full[key] = layer.get(key, None if default is REQUIRED else default)
        count += _check_layer(kind, full, layer, here, state, err, depth)
        normalized.append(full)
    return normalized, count


def _check_layer(kind, full, given, here, state: _Shape, err, depth) -> int:
    """Check one layer against the running shape; fill inferred sizes into `full`; return its parameter count."""
    # Sizes: positive integers; an input size may be inferred, and is checked where given.
    if kind in INPUT_SIZE:
        key = INPUT_SIZE[kind]
        value = full[key]
        if value is None:
            if state.features is None:
                err([*here, key], f"{key} is required: the layers before do not fix the input size", "missing")
                return 0
            full[key] = value = state.features
        elif not _positive_int(value):
            err([*here, key], f"{key} must be a positive integer, got {value!r}")
            return 0
        elif state.features is not None and value != state.features:
            err([*here, key], f"{key}={value} does not match the {state.features} features the previous layer gives")
            return 0
        if state.input_rule is None:
            state.input_rule = InputRule(None if state.flattened_input else (3 if kind == "rnn" else 2), value)
            state.rank = 3 if kind == "rnn" else 2
    for key in ("out_features", "hidden_size"):
        if key in full and not _positive_int(full[key]):
            err([*here, key], f"{key} must be a positive integer, got {full[key]!r}",
                "missing" if full[key] is None else "value_error")
            return 0
    for key in ("negative_slope", "eps", "momentum", "alpha", "p"):
        if key in full and not _number(full[key]):
            err([*here, key], f"{key} must be a number, got {full[key]!r}")
            return 0
    if kind == "dropout" and not 0 <= full["p"] < 1:
        err([*here, "p"], f"p must be in [0, 1), got {full['p']}")
    if kind in ("layernorm", "batchnorm") and full["eps"] <= 0:
        err([*here, "eps"], "eps must be positive")
    if kind == "batchnorm" and not 0 <= full["momentum"] <= 1:
        err([*here, "momentum"], "momentum must be in [0, 1]")
    if kind == "elu" and full["alpha"] <= 0:
        err([*here, "alpha"], "alpha must be positive")
    if kind == "gelu" and full["approximate"] != "tanh":
        err([*here, "approximate"], "only the tanh approximation is supported: approximate='tanh'")
    if kind == "rnn" and not isinstance(full["return_sequences"], bool):
        err([*here, "return_sequences"], "return_sequences must be true or false")

    if kind == "linear":
        state.features = full["out_features"]
        return full["in_features"] * full["out_features"] + full["out_features"]
    if kind in ("layernorm", "batchnorm"):
        if kind == "batchnorm" and state.rank == 3:
            err(here, "batchnorm needs (N, C) inputs; this layer would get (N, T, C)")
        return 2 * full["num_features"]
    if kind == "rnn":
        if state.rank not in (None, 3):
            err(here, "rnn needs batch-first (N, T, D) inputs; this layer would get (N, D)")
        d, h = full["input_size"], full["hidden_size"]
        state.features = h
        state.rank = 3 if full["return_sequences"] else 2
        return h * d + h * h + 2 * h
    if kind == "flatten":
        if state.input_rule is None:
            state.flattened_input = True
        elif state.rank == 3:
            state.features = None  # T is known only at run time
        state.rank = 2
        return 0
    if kind == "residual":
        inner = given.get("layers")
        if not isinstance(inner, list) or not inner:
            err([*here, "layers"], "a residual block needs a non-empty list of layers")
            return 0
        if depth + 1 >= MAX_NESTING:
            err([*here, "layers"], f"residual blocks nest deeper than {MAX_NESTING}")
            return 0
        rank, features = state.rank, state.features
        full["layers"], count = _check_layers(inner, [*here, "layers"], state, err, depth + 1)
        if (features is not None and state.features != features) or (rank is not None and rank != state.rank):
            err([*here, "layers"], f"the block must keep the shape of its input ({features} features), "
                f"it gives {state.features}")
        if rank is not None:
            state.rank, state.features = rank, features
        return count
    return 0


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


def _positive_int(v) -> bool:
    return _is_int(v) and v > 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
