"""What the server's answers hold, as small read-only records (arrays already decoded)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def from_body(cls: type[T], body: dict[str, Any]) -> T:
    """Returns a ``cls`` record from a response body; fields the body lacks are None, extras ignored."""
    return cls(**{f.name: _number(body.get(f.name)) for f in fields(cls)})  # type: ignore[arg-type]


def _number(value: Any) -> Any:
    # Non-finite numbers arrive as the strings "NaN", "Infinity", "-Infinity".
    return float(value) if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity") else value


@dataclass(frozen=True)
class ModelInfo:
    """A model as the server describes it (``GET /v1/models/{id}``)."""

    id: str
    spec: dict[str, Any]
    parameter_shapes: dict[str, tuple[int, ...]]
    num_parameters: int
    step: int
    version: int
    accumulated: int
    # On a Ray-backed server, where the model lives: {"actor": name, "node": Ray node id}.
    placement: dict[str, str] | None = None
    last_loss: float | None = None  # the loss of the last step
    flags: tuple[str, ...] = ()  # the diagnostics flags of the last step


@dataclass(frozen=True)
class Tape:
    """A stored forward pass, consumed once by ``backward``."""

    id: str
    model_id: str


@dataclass(frozen=True)
class BackwardResult:
    loss: float | None
    grad_norm: float
    accumulated: int
    input_grad: np.ndarray | None


@dataclass(frozen=True)
class ForwardBackwardResult:
    loss: float | None
    grad_norm: float
    accumulated: int
    outputs: np.ndarray | None
    input_grad: np.ndarray | None


@dataclass(frozen=True)
class StepResult:
    step: int
    lr: float
    grad_norm: float
    update_norm: float


@dataclass(frozen=True)
class TrainStepResult:
    """forward_backward and step in one: the batch's loss, then the step taken."""

    loss: float
    step: int
    lr: float
    grad_norm: float
    update_norm: float


@dataclass(frozen=True)
class GradcheckReport:
    """``passed``, and per parameter (and for the inputs) the entries checked and the worst errors."""

    passed: bool
    mode: str
    parameters: dict[str, dict[str, Any]]
    inputs: dict[str, Any] | None


@dataclass(frozen=True)
class DataSetInfo:
    """A data set the server keeps beside a model: its rows, their shapes and datatypes, its memory."""

    name: str
    rows: int
    inputs: dict[str, Any]  # {"shape": [rows, ...], "datatype": "FP32"}
    targets: dict[str, Any]
    bytes: int


@dataclass(frozen=True)
class DataSetList:
    """A model's data sets, and the memory the server's data sets may still take."""

    data_sets: tuple[DataSetInfo, ...]
    free_bytes: int

    @staticmethod
    def from_body(body: dict[str, Any]) -> DataSetList:
        return DataSetList(tuple(from_body(DataSetInfo, item) for item in body["data_sets"]), body["free_bytes"])


@dataclass(frozen=True)
class Evaluation:
    """The loss (and a classifier's accuracy) of eval-mode outputs; ``count`` is how many terms
    the loss averages (positions for cross-entropy, elements otherwise)."""

    loss: float
    accuracy: float | None
    count: int

    @staticmethod
    def combine(parts: list[Evaluation]) -> Evaluation:
        """Returns the evaluation of the union of batches evaluated one by one (a batch of no
        counted term, e.g. every label its ignore_index, adds nothing)."""
        if not parts:
            raise ValueError("no batches to evaluate")
        counted = [p for p in parts if p.count] or parts[:1]
        if len(counted) == 1:
            return counted[0]
        count = sum(p.count for p in counted)
        loss = sum(p.loss * p.count for p in counted) / count
        scored = [p for p in counted if p.accuracy is not None]
        accuracy = sum(p.accuracy * p.count for p in scored) / sum(p.count for p in scored) if scored else None
        return Evaluation(loss, accuracy, count)
