"""Model: a stack of layers built from a spec, with a loss, an optimizer and gradient buffers.

    model = Model.from_spec(spec)
    outputs, tape = model.forward(x, train=True)
    loss, grad_outputs = model.loss(outputs, targets)
    grad_inputs = model.backward(tape, grad_outputs)   # adds into model.gradients()
    model.step()                                      # optimizer update, gradients cleared

Parameters are named as the state_dict of the matching torch.nn.Sequential.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint, diagnostics, losses, onnx_export, spec as specs
from .errors import InputError, NonFiniteGradientError, NonFiniteUpdateError, NothingToStepError, StaleTapeError
from .layers import Layer, ShapeError, build, output_shape, pack, walk
from .layers.norm import BatchNorm
from .layers.shape import Dropout
from .numerics import quiet_overflow, squared_norm, zero
from .optim import Optimizer, lr_problem

SHAPES_KEPT = 64  # output shapes remembered per model, by input shape (a batch size each, mostly)


@dataclass
class Tape:
    """What backward needs from one forward: each layer's cache, and the model version it saw."""

    caches: list
    version: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    train: bool


@dataclass
class Backprop:
    """What one backward pass gives besides the gradients it adds: the loss, if a loss ran,
    the input gradient, if asked for, and the outputs, when the forward was part of the call."""

    loss: float | None
    input_grad: np.ndarray | None
    outputs: np.ndarray | None = None


@dataclass
class Shard:
    """One shard of a batch computed on a replica: the count of terms its loss is the mean of
    (None from a grad_output), that mean, the parameter gradients it gave, and its input
    gradient (if asked for) and outputs (None from a kept tape's backprop: its forward gave them);
    its examples and the activation statistics of its training forward."""

    terms: int | None
    loss: float | None
    gradients: dict[str, np.ndarray]
    input_grad: np.ndarray | None
    outputs: np.ndarray | None
    rows: int = 0
    activations: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class StepResult:
    """What a step did: the step count after it, the learning rate used, and the global L2
    norms of the gradients it applied and of the update (the one declaration of this result:
    the service answers it as it is)."""

    step: int
    lr: float
    grad_norm: float
    update_norm: float


@dataclass
class TrainStepResult(StepResult):
    """A step taken right after one batch's forward and backward: its loss, then the step."""

    loss: float | None


@dataclass
class _History:
    """Scalars kept for diagnostics from the last training forward and the last step, and the
    losses of the batches accumulated since (a step's loss is their mean)."""

    activations: dict[str, dict[str, float]] = field(default_factory=dict)
    grad_norms: dict[str, float] = field(default_factory=dict)
    update_norms: dict[str, float] = field(default_factory=dict)
    last_step: StepResult | None = None
    loss: float | None = None  # of the last step: None if its batches had only grad_outputs
    loss_sum: float = 0.0
    losses: int = 0

    def add_loss(self, loss: float | None) -> None:
        if loss is not None:
            self.loss_sum += loss
            self.losses += 1


class Model:
    """A trainable stack of layers; see the module docstring."""

    def __init__(self, spec: dict, input_rule: specs.InputRule, num_parameters: int) -> None:
        self.spec = spec
        self.dtype = np.dtype(spec["dtype"])
        self.input_rule = input_rule
        self.num_parameters = num_parameters
        self.layers: list[Layer] = build(spec["layers"], self.dtype, np.random.default_rng(spec["seed"]))
        pack(self.layers)
        self._params = _named(self.layers, "params")
        self._grads = _named(self.layers, "grads")
        self._buffers = _named(self.layers, "buffers")
        self.optimizer = Optimizer(spec["optimizer"], self._params, self._grads)
        # Dropout masks come from their own stream, so they never shift the initial weights.
        self.rng = np.random.default_rng([spec["seed"], 1])
        self.loss_fn = None
        if spec["loss"] is not None:
            options = {k: v for k, v in spec["loss"].items() if k != "type"}
            fn = losses.LOSSES[spec["loss"]["type"]]
            self.loss_fn = (lambda o, t: fn(o, t, **options)) if options else fn
        self.version = 0
        self.step_count = 0
        self.accumulated = 0
        self._has_batchnorm = any(isinstance(layer, BatchNorm) for layer in walk(self.layers))
        self._draws = any(isinstance(layer, Dropout) for layer in walk(self.layers))  # the only layer that uses rng
        self._with_grads = [layer for layer in walk(self.layers) if layer.grads]
        self._output_shapes: dict[tuple, tuple[int, ...]] = {}  # by input shape: the layers never change
        self.history = _History()

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: dict, *, max_parameters: int | None = None, max_layers: int | None = None) -> "Model":
        """Return a new model, after checking the whole spec (SpecError names each problem)."""
        normalized, rule, count = specs.normalize(spec, max_parameters=max_parameters, max_layers=max_layers)
        return cls(normalized, rule, count)

    def copy(self, dtype=None) -> "Model":
        """Return a deep copy, optionally cast to another float dtype."""
        spec = copy.deepcopy(self.spec)
        if dtype is not None:
            spec["dtype"] = np.dtype(dtype).name
        other = Model(spec, self.input_rule, self.num_parameters)
        checkpoint.load_state(other, checkpoint.state_tensors(self), checkpoint.state_metadata(self), cast=True)
        return other

    def save(self, path) -> None:
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path, **limits) -> "Model":
        return checkpoint.load(path, **limits)

    def to_bytes(self, include_optimizer: bool = True) -> bytes:
        """Return the model as a safetensors file (spec, step and optimizer state included)."""
        return checkpoint.to_bytes(self, include_optimizer=include_optimizer)

    @classmethod
    def from_bytes(cls, data: bytes, **limits) -> "Model":
        return checkpoint.from_bytes(data, **limits)

    def to_onnx(self) -> bytes:
        """Return the eval-mode forward as a serialized ONNX model (input `inputs`, output `outputs`,
        batch axis dynamic); ExportError when the onnx package is not installed."""
        return onnx_export.to_onnx(self)

    def to_onnx_model(self):
        """Return the eval-mode forward as an onnx.ModelProto, checked by onnx.checker."""
        return onnx_export.to_onnx_model(self)

    # ---- state ---------------------------------------------------------------------------

    def parameters(self) -> dict[str, np.ndarray]:
        return self._params

    def gradients(self) -> dict[str, np.ndarray]:
        return self._grads

    def buffers(self) -> dict[str, np.ndarray]:
        return self._buffers

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: p.shape for name, p in self._params.items()}

    def set_parameters(self, values: dict[str, np.ndarray]) -> None:
        """Replace every parameter (names and shapes must match); the version moves on."""
        missing = sorted(set(self._params) - set(values))
        unknown = sorted(set(values) - set(self._params))
        errors = [{"loc": ["parameters"], "msg": f"missing parameters: {missing}", "type": "missing"}] if missing else []
        errors += [{"loc": ["parameters", n], "msg": f"unknown parameter {n!r}", "type": "extra_forbidden"}
                   for n in unknown]
        cast = {}
        for name, value in values.items():
            if name in self._params:
                value = np.asarray(value)
                if value.shape != self._params[name].shape:
                    errors.append({"loc": ["parameters", name], "type": "value_error",
                                   "msg": f"shape {list(value.shape)} does not match {list(self._params[name].shape)}"})
                    continue
                if value.dtype.kind in "fiu":
                    with quiet_overflow():  # checked right below: 1e300 is no float32
                        cast[name] = value.astype(self.dtype, copy=False)
                if name not in cast or not np.isfinite(cast[name]).all():
                    errors.append({"loc": ["parameters", name], "type": "value_error",
                                   "msg": f"values must be finite numbers within {self.dtype.name} range "
                                          f"(|x| <= {np.finfo(self.dtype).max:.4g})"})
        if errors:
            raise InputError(errors)
        for name, value in cast.items():
            np.copyto(self._params[name], value)
        self.optimizer.parameters_changed()
        self.version += 1

    # ---- validation ----------------------------------------------------------------------

    def signature(self) -> tuple[tuple, tuple]:
        """Return the shapes of a batch's inputs and outputs, None for the batch axis and for
        sizes known at run time only (a model that flattens inputs of any rank: (N, D))."""
        rule = self.input_rule
        inputs = (None, *(rule.shape if rule.shape is not None else (rule.features,)))
        return inputs, self.output_shape(inputs)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the shape forward gives for inputs of `input_shape`."""
        input_shape = tuple(input_shape)
        known = self._output_shapes.get(input_shape)
        if known is not None:
            return known
        try:
            known = output_shape(self.spec["layers"], input_shape)
        except ShapeError as e:
            # Only reachable for sizes known at run time only (a flattened sequence, an image).
            raise InputError.at(["inputs"], e.at_run_time(input_shape)) from None
        if len(self._output_shapes) >= SHAPES_KEPT:
            self._output_shapes.clear()
        self._output_shapes[input_shape] = known
        return known

    @property
    def input_dtype(self) -> np.dtype:
        """Return the dtype inputs are taken in: int64 class indices for a model that starts
        with an embedding, else the model's dtype."""
        return np.dtype(np.int64) if self.input_rule.classes is not None else self.dtype

    def validate_inputs(self, x, train: bool = False) -> np.ndarray:
        """Return x as a model-dtype array, or raise InputError naming the problem."""
        return self._checked_inputs(x, train)[0]

    def _checked_inputs(self, x, train: bool) -> tuple[np.ndarray, tuple[int, ...]]:
        """Return (x ready for the layers, the outputs' shape), or raise InputError."""
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise InputError.at(["inputs"], f"inputs must be numbers, got dtype {x.dtype}")
        self.input_rule.check(x)
        if 0 in x.shape:
            raise InputError.at(["inputs"], f"inputs must not be empty, got shape {list(x.shape)}")
        out_shape = self.output_shape(x.shape)
        if train and self._has_batchnorm and x.shape[0] < 2:
            raise InputError.at(["inputs"], "batchnorm needs more than one example per batch in training")
        if self.input_rule.classes is not None:
            return x.astype(np.int64, copy=False), out_shape
        return _finite(x.astype(self.dtype, copy=False), "inputs"), out_shape

    def validate_targets(self, targets, output_shape: tuple[int, ...]) -> np.ndarray:
        """Return targets ready for the loss, or raise InputError naming the problem."""
        if self.loss_fn is None:
            raise InputError.at(["targets"], "this model has no loss in its spec; send grad_output instead")
        t = np.asarray(targets)
        loss = self.spec["loss"]
        if loss["type"] == "softmax_cross_entropy":
            if len(output_shape) not in (2, 3):
                raise InputError.at(["targets"], f"softmax_cross_entropy needs (N, C) or (N, T, C) outputs, the model "
                                    f"gives {list(output_shape)}; add a flatten or a linear layer")
            if t.ndim != len(output_shape):
                return _class_labels(t, output_shape, loss["ignore_index"])
            if loss["ignore_index"] is not None:
                raise InputError.at(["targets"], "ignore_index leaves out class labels, so this model takes labels, "
                                    "not probabilities (as torch's cross_entropy)")
        if t.dtype.kind not in "fiu":
            raise InputError.at(["targets"], f"targets must be numbers, got dtype {t.dtype}")
        if t.shape != output_shape:
            # (N,) targets for (N, 1) outputs are the common regression case.
            if len(output_shape) == 2 and output_shape[1] == 1 and t.shape == output_shape[:1]:
                t = t.reshape(output_shape)
            else:
                raise InputError.at(["targets"], f"targets of shape {list(t.shape)} do not match the outputs' "
                                    f"shape {list(output_shape)}")
        return _finite(t.astype(self.dtype, copy=False), "targets")

    def validate_grad_output(self, grad_output, output_shape: tuple[int, ...]) -> np.ndarray:
        g = np.asarray(grad_output)
        if g.dtype.kind not in "fiu" or g.shape != tuple(output_shape):
            raise InputError.at(["grad_output"], f"grad_output of shape {list(g.shape)} must match the outputs' "
                                f"shape {list(output_shape)}")
        return _finite(g.astype(self.dtype, copy=False), "grad_output")

    def validate_batch(self, x, targets=None, grad_output=None,
                       train: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Return a batch's (inputs, targets, grad_output) checked, targets unless a grad_output
        is given, or raise InputError naming the problem; a training batch unless `train` is False."""
        x, out_shape = self._checked_inputs(x, train=train)
        if grad_output is None:
            return x, self.validate_targets(targets, out_shape), None
        return x, None, self.validate_grad_output(grad_output, out_shape)

    # ---- compute -------------------------------------------------------------------------

    def forward(self, x, train: bool = False, rng: np.random.Generator | None = None) -> tuple[np.ndarray, Tape]:
        """Return (outputs, tape). x: (N, D) or (N, T, D) as the first layer takes.

        The outputs may share memory with the tape: change them in place only after backward.
        """
        return self._forward(self.validate_inputs(x, train), train, rng)

    def _forward(self, x: np.ndarray, train: bool, rng: np.random.Generator | None = None) -> tuple[np.ndarray, Tape]:
        """forward on inputs already checked."""
        rng = self.rng if rng is None else rng
        h, caches = x, []
        with quiet_overflow():
            for layer in self.layers:
                h, cache = layer.forward(h, train, rng)
                caches.append(cache)
        if train:
            self.history.activations = dict(_activation_stats(self.layers, caches))
        return h, Tape(caches, self.version, x.shape, h.shape, train)

    def loss(self, outputs: np.ndarray, targets) -> tuple[float, np.ndarray]:
        """Return (mean loss, gradient w.r.t. the outputs)."""
        targets = self.validate_targets(targets, outputs.shape)
        with quiet_overflow():
            return self.loss_fn(outputs, targets)

    def backward(self, tape: Tape, grad_output, need_input_grad: bool = True) -> np.ndarray | None:
        """Return the gradient w.r.t. the inputs (None if not needed); add parameter gradients into the buffers."""
        return self.backprop(tape, grad_output=grad_output, need_input_grad=need_input_grad).input_grad

    def backprop(self, tape: Tape, outputs: np.ndarray | None = None, *, targets=None, grad_output=None,
                 need_input_grad: bool = False) -> Backprop:
        """Backward through `tape` from the loss of its `outputs` against `targets`, or from `grad_output`."""
        if tape.version != self.version:
            raise StaleTapeError(f"the tape was made at version {tape.version}, the parameters are now at "
                                 f"version {self.version}; run forward again")
        loss = None
        if grad_output is None:
            loss, grad_output = self.loss(outputs, targets)
        else:
            grad_output = self.validate_grad_output(grad_output, tape.output_shape)
        input_grad = self._backward(tape, grad_output, need_input_grad)
        self.history.add_loss(loss)
        return Backprop(loss, input_grad)

    def forward_backward(self, x, targets=None, *, grad_output=None) -> float | None:
        """Forward in training mode, then backward from the loss (or from grad_output); return the loss."""
        return self.train_batch(x, targets, grad_output=grad_output).loss

    def train_batch(self, x, targets=None, *, grad_output=None, need_input_grad: bool = False) -> Backprop:
        """forward_backward, giving the outputs and (if asked) the input gradient too.

        Everything is checked before the forward, so a bad request changes no state.
        """
        x, targets, grad_output = self.validate_batch(x, targets, grad_output)
        outputs, tape = self._forward(x, train=True)
        loss = None
        if grad_output is None:
            # The loss's own gradient may be non-finite (diverged weights): that is for step to refuse.
            with quiet_overflow():
                loss, grad_output = self.loss_fn(outputs, targets)
        input_grad = self._backward(tape, grad_output, need_input_grad)
        self.history.add_loss(loss)
        return Backprop(loss, input_grad, outputs)

    def train_step(self, x, targets, lr: float | None = None) -> TrainStepResult:
        """forward_backward on one batch, then step: the loss and the step taken."""
        if lr is not None:
            _checked_lr(lr)  # before the batch: a bad request changes nothing
        # A refused step must leave the model as it was: the batch's forward moved batchnorm's
        # running statistics, the dropout generator and the diagnostics of the last batch.
        buffers = {name: b.copy() for name, b in self._buffers.items()}
        rng_state = self.rng.bit_generator.state if self._draws else None
        activations = self.history.activations
        loss = self.train_batch(x, targets).loss
        try:
            return TrainStepResult(**vars(self.step(lr)), loss=loss)  # its fields are scalars: no asdict's deep copy
        except (NonFiniteGradientError, NonFiniteUpdateError):
            for name, saved in buffers.items():
                np.copyto(self._buffers[name], saved)
            if rng_state is not None:
                self.rng.bit_generator.state = rng_state
            self.history.activations = activations
            raise

    # ---- data parallel: a batch in shards, each computed on a replica -------------------

    def shard_problem(self) -> str | None:
        """Return why a batch of this model cannot be computed in shards apart (a layer whose
        result depends on the whole batch, or on random draws), or None if it can."""
        for layer in walk(self.layers):
            if isinstance(layer, BatchNorm):
                return "batchnorm normalizes over the whole batch: shards would each see other statistics"
            if isinstance(layer, Dropout):
                return "dropout draws random masks: shards on replicas would not draw the full batch's masks"
        return None

    def loss_terms(self, targets: np.ndarray, output_shape: tuple[int, ...]) -> int:
        """Return how many terms the loss's mean over validated `targets` divides by: the labels
        not ignored for class labels, the positions (N or N*T) for class probabilities, the
        elements for the elementwise losses (core/losses.py)."""
        loss = self.spec["loss"]
        if loss["type"] != "softmax_cross_entropy":
            return int(targets.size)
        if targets.ndim == len(output_shape) - 1:  # labels
            ignore = loss["ignore_index"]
            return int(targets.size if ignore is None else np.count_nonzero(targets != ignore))
        return int(targets.size // output_shape[-1])

    def shard(self, x, targets=None, *, grad_output=None, need_input_grad: bool = False) -> Shard:
        """Return one shard's part of a batch, as train_batch computes it from zeroed gradients
        (a replica's work: this model's own accumulated gradients are cleared after)."""
        self.zero_grad()
        result = self.train_batch(x, targets, grad_output=grad_output, need_input_grad=need_input_grad)
        return self._shard_of(result, targets, grad_output, result.outputs.shape, result.outputs,
                              self.history.activations)

    def shard_forward(self, x) -> tuple[np.ndarray, Tape]:
        """Return (outputs, tape) of one shard of a batch, a training forward on a replica whose
        tape shard_backprop takes later (a kept tape, split over replicas)."""
        return self.forward(x, train=True)

    def check_tape(self, tape, targets=None, grad_output=None) -> tuple:
        """Return (targets, grad_output) checked for a backprop through `tape` (anything with a
        tape's `version` and `output_shape`, a sharded one too): StaleTapeError if the
        parameters changed since its forward, InputError if they do not fit its outputs."""
        if tape.version != self.version:
            raise StaleTapeError(f"the tape was made at version {tape.version}, the parameters are now at "
                                 f"version {self.version}; run forward again")
        if grad_output is None:
            return self.validate_targets(targets, tape.output_shape), None
        return targets, self.validate_grad_output(grad_output, tape.output_shape)

    def shard_backprop(self, tape: Tape, outputs: np.ndarray, *, targets=None, grad_output=None,
                       need_input_grad: bool = False) -> Shard:
        """Return one shard's part of a backprop through a kept tape, as backprop computes it
        from zeroed gradients (a replica's work: this model's own accumulated gradients are
        cleared after). `tape` and `outputs` are shard_forward's, targets or grad_output the
        rows of that shard. Its outputs are None, as backprop's: the forward gave them.

        Raises StaleTapeError, as backprop, if the parameters changed since the forward; a bad
        targets or grad_output raises InputError before any gradient changes.
        """
        targets, grad_output = self.check_tape(tape, targets, grad_output)
        self.zero_grad()
        result = self.backprop(tape, outputs, targets=targets, grad_output=grad_output,
                               need_input_grad=need_input_grad)
        activations = dict(_activation_stats(self.layers, tape.caches)) if tape.train else {}
        return self._shard_of(result, targets, grad_output, tape.output_shape, None, activations)

    def _shard_of(self, result: Backprop, targets, grad_output, out_shape: tuple[int, ...],
                  outputs: np.ndarray | None, activations: dict) -> Shard:
        """Return the Shard of `result`, a backprop from zeroed gradients, which it then clears."""
        terms = None
        if grad_output is None:
            terms = self.loss_terms(self.validate_targets(targets, out_shape), out_shape)
        gradients = {name: g.copy() for name, g in self._grads.items()}
        self.zero_grad()
        return Shard(terms, result.loss, gradients, result.input_grad, outputs, out_shape[0], dict(activations))

    def add_shards(self, shards: list[Shard]) -> Backprop:
        """Add one batch's gradients from its shards, counted as one batch; return the batch's
        loss, input gradient and outputs (None if the shards have none).

        Each shard's loss is a mean over its n_i terms, so weights n_i / N give the gradient of
        the full batch's mean (a shard with no terms adds nothing); gradients from a grad_output
        add up as they are.
        """
        total = sum(s.terms for s in shards) if shards[0].terms is not None else None
        weights = [1.0 if total is None else (s.terms / total if s.terms else 0.0) for s in shards]
        with quiet_overflow():
            for shard, weight in zip(shards, weights):
                if weight:
                    for name, g in self._grads.items():
                        g += weight * shard.gradients[name]
        self.accumulated += 1
        loss = None
        if total is not None:
            loss = sum(s.loss * s.terms for s in shards if s.terms) / total if total else float("nan")
        input_grad = None
        if shards[0].input_grad is not None:
            input_grad = np.concatenate([weight * s.input_grad for s, weight in zip(shards, weights)])
        outputs = None if shards[0].outputs is None else np.concatenate([s.outputs for s in shards])
        self.history.add_loss(loss)
        if shards[0].activations:
            self.history.activations = _combined_activations(shards)
        return Backprop(loss, input_grad, outputs)

    def _backward(self, tape: Tape, dh: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        with quiet_overflow():
            for layer, cache in zip(reversed(self.layers[1:]), reversed(tape.caches[1:])):
                dh = layer.backward(dh, cache)
            if need_input_grad:
                dh = self.layers[0].backward(dh, tape.caches[0])
            else:
                self.layers[0].backward_params(dh, tape.caches[0])
                dh = None
        self.accumulated += 1
        return dh

    def grad_norm(self) -> float:
        """Return the global L2 norm of the accumulated gradients."""
        return math.sqrt(sum(squared_norm(g) for g in self._grads.values()))

    def step(self, lr: float | None = None) -> StepResult:
        """Apply the optimizer to the accumulated gradients, then clear them."""
        if self.accumulated == 0:
            raise NothingToStepError("no gradients accumulated since the last step; run backward first")
        previous_lr = self.optimizer.lr
        if lr is not None:
            self.optimizer.lr = _checked_lr(lr)
        try:
            with quiet_overflow():  # an update that overflows is refused below, not printed
                grad_norm, update_norm, grad_norms, update_norms = self.optimizer.step()
        except (NonFiniteGradientError, NonFiniteUpdateError):
            self.optimizer.lr = previous_lr  # a refused step changes nothing but the gradients
            self.zero_grad()
            raise
        self.spec["optimizer"]["lr"] = self.optimizer.lr
        history = self.history
        history.grad_norms, history.update_norms = grad_norms, update_norms
        history.loss = history.loss_sum / history.losses if history.losses else None
        self.step_count += 1
        self.version += 1
        self.zero_grad()
        history.last_step = StepResult(self.step_count, self.optimizer.lr, grad_norm, update_norm)
        return history.last_step

    def zero_grad(self) -> None:
        packed = self.optimizer.packed_grads
        if packed is not None:  # every gradient is a view of it: one memset instead of one per parameter
            zero(packed)
            for layer in self._with_grads:
                layer.grads_zeroed()
        else:
            for layer in self.layers:
                layer.zero_grad()
        self.accumulated = 0
        self.history.loss_sum, self.history.losses = 0.0, 0

    def step_record(self) -> dict:
        """Return the health of the last step taken (diagnostics.step_record), None before one."""
        return diagnostics.step_record(self)

    def diagnostics(self) -> dict:
        """Return per-layer gradient/parameter health from the last training batch and step."""
        return diagnostics.report(self)


def _activation_stats(layers: list[Layer], caches: list, prefix: str = ""):
    """Yield (module name, statistics) for every relu/tanh/sigmoid/lstm/gru, nested ones included."""
    for i, (layer, cache) in enumerate(zip(layers, caches)):
        if type(layer).activation_stats is not Layer.activation_stats:
            # Each reads its forward's cache: an activation's output, a gated RNN's gates.
            yield f"{prefix}{i}", layer.activation_stats(cache)
        if layer.sublayers():
            yield from _activation_stats(layer.sublayers(), cache, f"{prefix}{i}.block.")


def _combined_activations(shards: list[Shard]) -> dict[str, dict[str, float]]:
    """Return the activation statistics of a batch from those of its shards: a fraction of
    values (saturation) is the row-weighted mean; a unit is dead for the batch only if it is
    dead in every shard, so its dead_fraction is at most the smallest shard's, which it takes."""
    rows = sum(s.rows for s in shards)
    combined = {}
    for name, first in shards[0].activations.items():
        combined[name] = {key: min(s.activations[name][key] for s in shards) if key == "dead_fraction"
                          else sum(s.activations[name][key] * s.rows for s in shards) / rows for key in first}
    return combined


def _class_labels(t: np.ndarray, output_shape: tuple[int, ...], ignore_index: int | None) -> np.ndarray:
    """Return labels (N,) or (N, T) for outputs (N, C) or (N, T, C), or raise InputError naming the problem."""
    letters = "(N,)" if len(output_shape) == 2 else "(N, T)"
    if t.dtype.kind not in "iu":
        raise InputError.at(["targets"], f"class labels must be integers (INT64), got {t.dtype}")
    if t.shape != output_shape[:-1]:
        raise InputError.at(["targets"], f"labels of shape {list(t.shape)} for outputs of shape {list(output_shape)}: "
                            f"they must be {letters} with {list(output_shape[:-1])}")
    classes = output_shape[-1]
    counted = t if ignore_index is None else t[t != ignore_index]
    if counted.size and (counted.min() < 0 or counted.max() >= classes):
        ignoring = "" if ignore_index is None else f" (or ignore_index={ignore_index})"
        raise InputError.at(["targets"], f"labels must be in [0, {classes}){ignoring}, got values in "
                            f"[{counted.min()}, {counted.max()}]")
    return t.astype(np.intp, copy=False)


def _checked_lr(lr):
    """Return lr, or raise InputError at lr (optim.lr_problem says what a learning rate is)."""
    if (problem := lr_problem(lr)) is not None:
        raise InputError.at(["lr"], problem)
    return lr


def _finite(a: np.ndarray, field: str) -> np.ndarray:
    """Return `a`, or raise InputError at `field` if it holds NaN or Inf."""
    if not np.logical_and.reduce(np.isfinite(a), axis=None):  # all(), without its Python wrapper
        raise InputError.at([field], f"{field} hold non-finite values (NaN or Inf)")
    return a


def _named(layers: list[Layer], attr: str) -> dict[str, np.ndarray]:
    return {f"{i}.{name}": value for i, layer in enumerate(layers) for name, value in getattr(layer, attr).items()}
