"""Checkpoints: one safetensors file holding a model's whole state.

Tensors: the parameters and buffers under their torch state_dict names ("0.weight",
"1.running_mean", ...), so `torch_model.load_state_dict(tensors, strict=False)` takes them
as they are; optimizer state as "optimizer.<parameter>.<slot>"; accumulated gradients as
"grad.<parameter>". Metadata (strings): the spec, step, version, accumulated count (with the
sum and count of the accumulated batches' losses) and the dropout generator's state. Nothing
is unpickled; everything read is checked against the spec.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import safetensors.numpy

from .errors import CheckpointError, SpecError
from .optim import state_slots

if TYPE_CHECKING:
    from .model import Model

FORMAT = "gradserve/1"
OPTIMIZER_PREFIX = "optimizer."
GRAD_PREFIX = "grad."
OPTIMIZER_SLOTS = {"momentum_buffer", "exp_avg", "exp_avg_sq", "step", "square_avg", "grad_avg"}


def state_tensors(model: "Model", include_optimizer: bool = True) -> dict[str, np.ndarray]:
    """Return every tensor of the model's state under its checkpoint name."""
    tensors = {**model.parameters(), **model.buffers()}
    if include_optimizer:
        for name, slots in model.optimizer.state.items():
            for slot, value in slots.items():
                tensors[f"{OPTIMIZER_PREFIX}{name}.{slot}"] = value
        if model.accumulated:
            for name, g in model.gradients().items():
                tensors[f"{GRAD_PREFIX}{name}"] = g
    return tensors


def state_metadata(model: "Model", include_optimizer: bool = True) -> dict[str, str]:
    meta = {"format": FORMAT, "spec": json.dumps(model.spec), "step": str(model.step_count),
            "version": str(model.version)}
    if include_optimizer:
        meta["accumulated"] = str(model.accumulated)
        meta["rng"] = json.dumps(model.rng.bit_generator.state)
        if model.history.losses:  # the losses of the accumulated batches: the next step's loss is their mean
            meta["losses"] = json.dumps([model.history.loss_sum, model.history.losses])
    return meta


def to_bytes(model: "Model", include_optimizer: bool = True) -> bytes:
    # np.ascontiguousarray would turn 0-d step counters into 1-d arrays.
    tensors = {k: np.require(v, requirements="C") for k, v in state_tensors(model, include_optimizer).items()}
    return safetensors.numpy.save(tensors, metadata=state_metadata(model, include_optimizer))


def save(model: "Model", path) -> None:
    """Write the checkpoint to `path` atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(to_bytes(model))
    os.replace(tmp, path)


def load(path, **limits) -> "Model":
    return from_bytes(Path(path).read_bytes(), **limits)


def read_metadata(data: bytes) -> dict[str, str]:
    """Return the metadata of a safetensors file's header."""
    if len(data) < 8:
        raise CheckpointError("not a safetensors file: shorter than its 8-byte header length")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise CheckpointError("not a safetensors file: the header runs past the end (truncated?)")
    try:
        header = json.loads(data[8:8 + size])
    except ValueError as e:
        raise CheckpointError(f"not a safetensors file: unreadable header ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def from_bytes(data: bytes, **limits) -> "Model":
    """Return the model a checkpoint holds, after checking every tensor against its spec."""
    from .model import Model

    meta = read_metadata(data)
    if meta.get("format") != FORMAT or "spec" not in meta:
        raise CheckpointError(f"not a gradserve checkpoint (metadata format {meta.get('format')!r})")
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as e:  # the library raises its own error types for damaged files
        raise CheckpointError(f"unreadable safetensors data: {e}") from None
    try:
        model = Model.from_spec(json.loads(meta["spec"]), **limits)
    except (ValueError, SpecError) as e:
        raise CheckpointError(f"the checkpoint's spec is invalid: {e}") from None
    load_state(model, tensors, meta)
    return model


def load_state(model: "Model", tensors: dict[str, np.ndarray], meta: dict[str, str], cast: bool = False) -> None:
    """Fill `model` from checkpoint tensors and metadata; CheckpointError if anything does not fit."""
    expected = {**model.parameters(), **model.buffers()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"the checkpoint lacks tensors {missing}")
    optimizer_state: dict[str, dict[str, np.ndarray]] = {name: {} for name in model.parameters()}
    grads = {}
    for key, value in tensors.items():
        if key in expected:
            continue
        if key.startswith(GRAD_PREFIX) and key[len(GRAD_PREFIX):] in model.parameters():
            grads[key[len(GRAD_PREFIX):]] = value
            continue
        name, _, slot = key[len(OPTIMIZER_PREFIX):].rpartition(".")
        if not key.startswith(OPTIMIZER_PREFIX) or name not in optimizer_state or slot not in OPTIMIZER_SLOTS:
            raise CheckpointError(f"unexpected tensor {key!r} in the checkpoint")
        optimizer_state[name][slot] = value
    for name, target in expected.items():
        _copy_checked(name, target, tensors[name], cast)
    for name, g in grads.items():
        _copy_checked(GRAD_PREFIX + name, model.gradients()[name], g, cast)
    expected_slots = {*state_slots(model.optimizer.hp), "step"}
    for name, slots in optimizer_state.items():
        if slots and set(slots) != expected_slots:
            raise CheckpointError(f"optimizer state of {name!r} has {sorted(slots)}, "
                                  f"{model.spec['optimizer']['type']} keeps {sorted(expected_slots)}")
        shape = model.parameters()[name].shape
        for slot, value in slots.items():
            if slot == "step":
                if value.shape != () or value.dtype != np.int64:
                    raise CheckpointError(f"optimizer step of {name!r} must be an int64 scalar")
                slots[slot] = value.copy()
            else:
                target = np.empty(shape, model.dtype)
                _copy_checked(f"{OPTIMIZER_PREFIX}{name}.{slot}", target, value, cast)
                slots[slot] = target
    model.optimizer.state = optimizer_state
    model.optimizer.parameters_changed()
    try:
        model.step_count = int(meta.get("step", 0))
        model.version = int(meta.get("version", 0))
        model.accumulated = int(meta.get("accumulated", 0)) if grads else 0
        if grads and "losses" in meta:
            loss_sum, losses = json.loads(meta["losses"])
            model.history.loss_sum, model.history.losses = float(loss_sum), int(losses)
        if "rng" in meta:
            model.rng.bit_generator.state = json.loads(meta["rng"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"invalid checkpoint metadata: {e}") from None
    if grads:
        for layer in model.layers:
            layer.grads_written()


def _copy_checked(name: str, target: np.ndarray, value: np.ndarray, cast: bool) -> None:
    if value.shape != target.shape:
        raise CheckpointError(f"tensor {name!r} has shape {list(value.shape)}, the spec gives {list(target.shape)}")
    if value.dtype != target.dtype and not cast:
        raise CheckpointError(f"tensor {name!r} has dtype {value.dtype}, the model's is {target.dtype}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise CheckpointError(f"tensor {name!r} holds non-finite values")
    np.copyto(target, value, casting="unsafe")
