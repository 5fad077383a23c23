"""RemoteModel and AsyncRemoteModel: a server-side model driven like a local one.

Both inherit the call builders of :class:`ModelCalls` (no I/O) and differ only in
``client._call(...)`` versus ``await client._call(...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

import numpy as np

from ._base import Call
from ._codec import Rows, as_tensor, encode_frame
from ._exceptions import APIError, stream_failure
from ._fit import FitLoop, History, Plan, request_rows
from ._history import StepHistory
from ._types import (
    BackwardResult,
    DataSetInfo,
    DataSetList,
    Evaluation,
    ForwardBackwardResult,
    GradcheckReport,
    ModelInfo,
    StepResult,
    Tape,
    TrainStepResult,
    from_body,
)

if TYPE_CHECKING:
    from ._client import AsyncClient, Client


class Frames:
    """The body of a train_steps request: one frame per batch, encoded as httpx sends it."""

    def __init__(self, payloads: list[dict[str, Any]], binary: bool) -> None:
        self.payloads, self.binary = payloads, binary

    def __iter__(self) -> Iterator[bytes | memoryview]:
        for payload in self.payloads:
            yield from encode_frame(payload, binary=self.binary)


class AsyncFrames(Frames):
    """Frames for httpx.AsyncClient, which wants an async iterable."""

    __iter__ = None  # type: ignore[assignment]  # httpx would take a sync iterable as sync content

    async def __aiter__(self) -> AsyncIterator[bytes | memoryview]:
        for payload in self.payloads:
            for piece in encode_frame(payload, binary=self.binary):
                yield piece


def _steps(body: dict[str, Any]) -> list[TrainStepResult]:
    return [from_body(TrainStepResult, step) for step in body["steps"]]


def model_info(body: dict[str, Any]) -> ModelInfo:
    """Returns the ModelInfo of a model-info body."""
    shapes = {name: tuple(shape) for name, shape in (body.get("parameter_shapes") or {}).items()}
    return from_body(ModelInfo, {**body, "parameter_shapes": shapes, "flags": tuple(body.get("flags") or ())})


class ModelCalls:
    """Builds every call on one model; arrays go out in the model's float dtype."""

    def __init__(self, info: ModelInfo) -> None:
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.info.spec.get("dtype", "float32"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, step={self.info.step})"

    def _path(self, suffix: str = "") -> str:
        return f"/v1/models/{quote(self.id, safe='')}{suffix}"

    def _tensor(self, x: Any) -> np.ndarray:
        return as_tensor(x, self.dtype)

    def _inputs(self, x: Any) -> np.ndarray:
        """Returns inputs as they travel. In binary form, integers of 8 or 16 bits (uint8 pixels,
        say) go to a model whose inputs are floats in its float dtype, not as INT64: every such
        integer is a float exactly, the one the server would turn it into, in half the bytes or
        less. A model that starts with an embedding takes them as the indices they are."""
        arr = np.asarray(x)
        if (arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2 and self._client.binary
                and self.info.spec["layers"][0].get("type") != "embedding"):
            return arr.astype(self.dtype)
        return self._tensor(arr)

    def _objective(self, targets: Any, grad_output: Any) -> dict[str, np.ndarray]:
        if (targets is None) == (grad_output is None):
            raise TypeError("pass exactly one of targets= or grad_output=")
        if targets is not None:
            return {"targets": self._tensor(targets)}
        return {"grad_output": self._tensor(grad_output)}

    def _refresh_call(self) -> Call:
        return Call("GET", self._path(), idempotent=True, read=self._keep_info)

    def _forward_call(self, x: Any, train: bool, keep_tape: bool) -> Call:
        payload: dict[str, Any] = {"inputs": self._inputs(x), "train": train or keep_tape}
        if keep_tape:
            payload["keep_tape"] = True
            return Call(
                "POST", self._path("/forward"), payload,
                read=lambda body: (body["outputs"], Tape(body["tape_id"], self.id)),
            )
        # A train-mode forward may move batchnorm running statistics: not replayed.
        return Call("POST", self._path("/forward"), payload, idempotent=not train,
                    read=lambda body: body["outputs"])

    def _backward_call(self, tape: Tape, targets: Any, grad_output: Any, return_input_grad: bool) -> Call:
        if tape.model_id != self.id:
            raise ValueError(f"tape {tape.id!r} was made by model {tape.model_id!r}, not {self.id!r}")
        payload = {"tape_id": tape.id, **self._objective(targets, grad_output)}
        if return_input_grad:
            payload["return_input_grad"] = True
        return Call("POST", self._path("/backward"), payload,
                    read=lambda body: from_body(BackwardResult, body))

    def _forward_backward_call(
        self, x: Any, targets: Any, grad_output: Any, return_outputs: bool, return_input_grad: bool
    ) -> Call:
        payload = {"inputs": self._inputs(x), **self._objective(targets, grad_output)}
        if return_outputs:
            payload["return_outputs"] = True
        if return_input_grad:
            payload["return_input_grad"] = True
        return Call("POST", self._path("/forward_backward"), payload,
                    read=lambda body: from_body(ForwardBackwardResult, body))

    def _step_call(self, lr: float | None) -> Call:
        payload = {} if lr is None else {"lr": lr}
        return Call("POST", self._path("/step"), payload, read=lambda body: from_body(StepResult, body))

    def _keep_info(self, body: dict[str, Any]) -> ModelInfo:
        self.info = model_info(body)
        return self.info

    def _zero_grad_call(self) -> Call:
        # Clearing twice leaves the same state as clearing once.
        return Call("POST", self._path("/zero_grad"), {}, idempotent=True, read=self._keep_info)

    def _train_step_call(self, x: Any, y: Any, lr: float | None) -> Call:
        payload = {"inputs": self._inputs(x), **self._objective(y, None)}
        if lr is not None:
            payload["lr"] = lr
        return Call("POST", self._path("/train_step"), payload,
                    read=lambda body: from_body(TrainStepResult, body))

    def _train_steps_call(self, batches: list[tuple[Any, Any]], binary: bool, asynchronous: bool,
                          keep: str | None = None) -> Call:
        # Not idempotent: the steps may have been applied. Frames are encoded as they are sent.
        frames = (AsyncFrames if asynchronous else Frames)(
            [{"inputs": self._inputs(x), **self._objective(y, None)} for x, y in batches], binary)
        return Call("POST", self._path("/train_steps"), content=frames, content_type="application/x-ndjson",
                    params=None if keep is None else {"keep": keep}, read=_steps)

    def _add_data_call(self, name: str, x: Any, y: Any) -> Call:
        """The call adding (x, y) to the data set `name`: arrays, or Rows of arrays already as they
        travel (see _inputs)."""
        inputs, targets = (x, y) if isinstance(x, Rows) else (self._inputs(x), self._tensor(y))
        # Not idempotent: a replay would add the rows twice.
        return Call("POST", self._data_path(name), {"inputs": inputs, "targets": targets},
                    read=lambda body: from_body(DataSetInfo, body))

    def _data_sets_call(self) -> Call:
        return Call("GET", self._path("/data"), idempotent=True, read=DataSetList.from_body)

    def _delete_data_call(self, name: str) -> Call:
        return Call("DELETE", self._data_path(name), idempotent=True, read=lambda body: None)

    def _train_on_data_call(self, name: str, rows: Any, batch_size: int, lr: float | None,
                            evaluate: list[tuple[str, Any]] | None = None) -> Call:
        """The call of train_on_data; with `evaluate` [(data set, row indices or None for all)],
        its answer is (steps, the evaluations after them), from the same request."""
        payload: dict[str, Any] = {"rows": np.asarray(rows, np.int64), "batch_size": batch_size}
        if lr is not None:
            payload["lr"] = lr
        if not evaluate:
            return Call("POST", self._data_path(name, "/train_steps"), payload, read=_steps)
        payload["evaluate"] = [{"data": data, **({} if rows is None else {"rows": np.asarray(rows, np.int64)})}
                               for data, rows in evaluate]
        return Call("POST", self._data_path(name, "/train_steps"), payload, read=lambda body: (
            _steps(body), [from_body(Evaluation, evaluation) for evaluation in body["evaluations"]]))

    def _evaluate_data_call(self, name: str, rows: Any) -> Call:
        payload = {} if rows is None else {"rows": np.asarray(rows, np.int64)}
        return Call("POST", self._data_path(name, "/evaluate"), payload, idempotent=True,
                    read=lambda body: from_body(Evaluation, body))

    def _data_path(self, name: str, suffix: str = "") -> str:
        return self._path(f"/data/{quote(name, safe='')}{suffix}")

    def _evaluate_call(self, x: Any, y: Any) -> Call:
        payload = {"inputs": self._inputs(x), **self._objective(y, None)}
        # Eval mode, no gradients: nothing changes on the server, safe to replay.
        return Call("POST", self._path("/evaluate"), payload, idempotent=True,
                    read=lambda body: from_body(Evaluation, body))

    def _request_rows(self, x: Any, y: Any) -> int:
        """Returns how many examples of (x, y) one request carries, counted as they travel."""
        sent = [self._inputs(np.asarray(x)[:1]), self._tensor(np.asarray(y)[:1])]
        return request_rows(sum(a.nbytes for a in sent), max(a.size for a in sent), self._client.binary)

    def _evaluation_chunks(self, x: Any, y: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        x, y = np.asarray(x), np.asarray(y)
        rows = self._request_rows(x, y)
        return [(x[i : i + rows], y[i : i + rows]) for i in range(0, len(x), rows)]

    def _gradcheck_call(self, x: Any, targets: Any, grad_output: Any, options: dict[str, Any]) -> Call:
        payload = {"inputs": self._inputs(x), **self._objective(targets, grad_output)}
        payload.update((k, v) for k, v in options.items() if v is not None)
        # Runs on a float64 copy of the model on the server: no state changes, safe to replay.
        return Call("POST", self._path("/gradcheck"), payload, idempotent=True,
                    read=lambda body: from_body(GradcheckReport, body))

    def _parameters_call(self) -> Call:
        return Call("GET", self._path("/parameters"), idempotent=True, tensor_answer=True,
                    read=lambda body: body["parameters"])

    def _load_parameters_call(self, parameters: dict[str, Any]) -> Call:
        payload = {"parameters": {name: self._tensor(value) for name, value in parameters.items()}}
        # Replacing with the same values twice gives the same parameters.
        return Call("PUT", self._path("/parameters"), payload, idempotent=True, read=self._keep_info)

    def _gradients_call(self) -> Call:
        return Call("GET", self._path("/gradients"), idempotent=True, tensor_answer=True,
                    read=lambda body: body["gradients"])

    def _diagnostics_call(self) -> Call:
        return Call("GET", self._path("/diagnostics"), idempotent=True)

    def _history_call(self, since: int | None, limit: int | None, points: int | None) -> Call:
        params = {name: value for name, value in (("since", since), ("limit", limit), ("points", points))
                  if value is not None}
        return Call("GET", self._path("/history"), params=params, idempotent=True, read=StepHistory.from_body)

    @staticmethod
    def _next_page(page: StepHistory, limit: int | None, points: int | None) -> int | None:
        """Returns the `since` of the next page of a history read whole (None: it is complete);
        each page's total counts the records after its own `since`."""
        whole = limit is None and points is None
        return int(page.step[-1]) if whole and 0 < len(page) < page.total else None

    def _download_call(self, route: str, path: str | Path, params: dict[str, str]) -> Call:
        """A GET of a file the server gives (a checkpoint, an export), written to `path`."""
        def read(content: bytes) -> Path:
            Path(path).write_bytes(content)
            return Path(path)

        return Call("GET", self._path(route), params=params, idempotent=True, raw=True, read=read)

    def _checkpoint_call(self, path: str | Path, include_optimizer: bool) -> Call:
        return self._download_call("/checkpoint", path, {"include_optimizer": str(include_optimizer).lower()})

    def _export_call(self, path: str | Path, format: str) -> Call:
        return self._download_call("/export", path, {"format": format})

    def _delete_call(self) -> Call:
        return Call("DELETE", self._path(), idempotent=True, read=lambda body: None)

    def _fit_loop(self, x: Any, y: Any, **settings: Any) -> FitLoop:
        return FitLoop(self.info.spec, x, y, **settings)


class RemoteModel(ModelCalls):
    """A model on a gradserve server, driven through a :class:`Client`."""

    def __init__(self, client: Client, info: ModelInfo) -> None:
        super().__init__(info)
        self._client = client

    def refresh(self) -> ModelInfo:
        """Returns the model's current info (step, version, accumulated) and keeps it in ``info``."""
        return self._client._call(self._refresh_call())

    @overload
    def forward(self, x: Any, *, train: bool = ..., keep_tape: Literal[False] = ...) -> np.ndarray: ...
    @overload
    def forward(self, x: Any, *, train: bool = ..., keep_tape: Literal[True]) -> tuple[np.ndarray, Tape]: ...

    def forward(self, x: Any, *, train: bool = False, keep_tape: bool = False) -> Any:
        """Returns the outputs for ``x`` (N, D) -> (N, M); with ``keep_tape=True``, ``(outputs, tape)``."""
        return self._client._call(self._forward_call(x, train, keep_tape))

    def predict(self, x: Any, *, batch_size: int = 256) -> np.ndarray:
        """Returns eval-mode outputs for ``x``, sent ``batch_size`` rows at a time."""
        x = np.asarray(x)
        parts = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.empty((0,), self.dtype)

    def backward(
        self, tape: Tape, *, targets: Any = None, grad_output: Any = None, return_input_grad: bool = False
    ) -> BackwardResult:
        """Returns the loss (given targets) and grad norm; gradients add into the model's buffers."""
        return self._client._call(self._backward_call(tape, targets, grad_output, return_input_grad))

    def forward_backward(
        self,
        x: Any,
        targets: Any = None,
        *,
        grad_output: Any = None,
        return_outputs: bool = False,
        return_input_grad: bool = False,
    ) -> ForwardBackwardResult:
        """Returns the loss and grad norm of one batch; gradients add into the model's buffers."""
        return self._client._call(
            self._forward_backward_call(x, targets, grad_output, return_outputs, return_input_grad)
        )

    def step(self, *, lr: float | None = None) -> StepResult:
        """Returns the optimizer step taken from the accumulated gradients (which are then cleared)."""
        return self._client._call(self._step_call(lr))

    def zero_grad(self) -> ModelInfo:
        """Returns the model's info after clearing the accumulated gradients."""
        return self._client._call(self._zero_grad_call())

    def train_step(self, x: Any, y: Any, *, lr: float | None = None) -> TrainStepResult:
        """Returns the loss and step of forward_backward + step on one batch, in one round trip."""
        return self._client._call(self._train_step_call(x, y, lr))

    def evaluate(self, x: Any, y: Any) -> Evaluation:
        """Returns the loss (and a classifier's accuracy) of eval-mode outputs for (x, y), sent in
        requests of about 32 MiB (8 in list form); nothing on the server changes."""
        return Evaluation.combine([self._client._call(self._evaluate_call(xb, yb))
                                   for xb, yb in self._evaluation_chunks(x, y)])

    def train_steps(self, batches: Any, *, keep: str | None = None) -> list[TrainStepResult]:
        """Returns the result of a train_step on each (x, y) batch, in order, from one request
        (the server computes each batch while the next arrives). If a batch fails, its error is
        raised with ``.batch`` (its index) and ``.completed`` (the steps applied before it).
        With ``keep``, the server also adds each applied batch to its data set of that name."""
        batches = list(batches)
        try:
            return self._client._call(self._train_steps_call(batches, self._client.binary, False, keep))
        except APIError as error:
            error.batch, error.completed = stream_failure(error)
            raise

    def add_data(self, name: str, x: Any, y: Any) -> DataSetInfo:
        """Adds rows (x, y) to the model's data set ``name`` on the server (made if needed), sent in
        requests of about 32 MiB (8 in list form). Data sets live in the server's memory, not in checkpoints."""
        info = None
        for xb, yb in self._evaluation_chunks(x, y):
            info = self._client._call(self._add_data_call(name, xb, yb))
        return info

    def data_sets(self) -> DataSetList:
        """Returns the model's data sets, and the memory the server's data sets may still take."""
        return self._client._call(self._data_sets_call())

    def delete_data(self, name: str) -> None:
        """Deletes the model's data set ``name`` on the server."""
        self._client._call(self._delete_data_call(name))

    def train_on_data(
        self, name: str, rows: Any, *, batch_size: int, lr: float | None = None
    ) -> list[TrainStepResult]:
        """Returns the result of a train_step on each batch of ``batch_size`` rows of the data set,
        in the order of ``rows`` (row indices), from one small request: the same steps as
        ``train_steps`` sending those rows. Errors as ``train_steps``."""
        try:
            return self._client._call(self._train_on_data_call(name, rows, batch_size, lr))
        except APIError as error:
            error.batch, error.completed = stream_failure(error)
            raise

    def evaluate_data(self, name: str, rows: Any = None) -> Evaluation:
        """Returns ``evaluate`` of rows of the data set (row indices; all if None), nothing sent but them."""
        return self._client._call(self._evaluate_data_call(name, rows))

    def gradcheck(
        self,
        x: Any,
        targets: Any = None,
        *,
        grad_output: Any = None,
        mode: str | None = None,
        eps: float | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        max_entries: int | None = None,
        seed: int | None = None,
    ) -> GradcheckReport:
        """Returns the server's comparison of analytic and numeric gradients (model untouched)."""
        options = dict(mode=mode, eps=eps, atol=atol, rtol=rtol, max_entries=max_entries, seed=seed)
        return self._client._call(self._gradcheck_call(x, targets, grad_output, options))

    def parameters(self) -> dict[str, np.ndarray]:
        """Returns every parameter by its state_dict name."""
        return self._client._call(self._parameters_call())

    def load_parameters(self, parameters: dict[str, Any]) -> ModelInfo:
        """Returns the model's info after replacing its parameters; pending tapes go stale.

        Every name must exist and every shape match; values go out in the model's dtype.
        """
        return self._client._call(self._load_parameters_call(parameters))

    def gradients(self) -> dict[str, np.ndarray]:
        """Returns the accumulated gradients by parameter name."""
        return self._client._call(self._gradients_call())

    def diagnostics(self) -> dict[str, Any]:
        """Returns per-layer gradient and parameter norms, ratios and health flags."""
        return self._client._call(self._diagnostics_call())

    def history(self, *, since: int | None = None, limit: int | None = None,
                points: int | None = None) -> StepHistory:
        """Returns the records of the steps after ``since`` (all of them, page by page, unless
        ``limit``), downsampled by the server to at most ``points`` keeping each bucket's extremes."""
        pages = [self._client._call(self._history_call(since, limit, points))]
        while (after := self._next_page(pages[-1], limit, points)) is not None:
            pages.append(self._client._call(self._history_call(after, limit, points)))
        return StepHistory.concat(pages)

    def download_checkpoint(self, path: str | Path, *, include_optimizer: bool = True) -> Path:
        """Returns ``path`` after writing the model's safetensors checkpoint there.

        ``include_optimizer=False`` leaves out the optimizer state: a plain PyTorch state_dict.
        """
        return self._client._call(self._checkpoint_call(path, include_optimizer))

    def export_onnx(self, path: str | Path) -> Path:
        """Returns ``path`` after writing the model's eval-mode forward there as an ONNX file
        (input ``inputs``, output ``outputs``, batch axis dynamic), for onnxruntime and the like.

        A server without the onnx package answers 501 (:class:`ServerError`).
        """
        return self._client._call(self._export_call(path, "onnx"))

    def delete(self) -> None:
        """Deletes the model on the server."""
        return self._client._call(self._delete_call())

    def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        seed: int | None = None,
        verbose: int = 1,
    ) -> History:
        """Returns the History of training on (x, y), as Keras's ``fit``: the same train steps
        as one train_step per batch, on rows it first adds to a data set of the model when the
        server has room, else sent as train_steps streams (see _fit.py)."""
        loop = self._fit_loop(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                              validation_data=validation_data, seed=seed, verbose=verbose)
        return self._drive(loop.calls(self, self._client.binary, asynchronous=False))

    def _drive(self, plan: Plan) -> Any:
        """Makes the calls `plan` yields, sending each its answer or throwing in its error; gives
        what the plan returns."""
        answer: Any = None
        error: Exception | None = None
        while True:
            try:
                call = plan.send(answer) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value
            try:
                answer, error = self._client._call(call), None
            except BaseException as exc:  # an interrupt too: the plan deletes what it made, then raises
                answer, error = None, exc


class AsyncRemoteModel(ModelCalls):
    """A model on a gradserve server, driven through an :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient, info: ModelInfo) -> None:
        super().__init__(info)
        self._client = client

    async def refresh(self) -> ModelInfo:
        """Returns the model's current info (step, version, accumulated) and keeps it in ``info``."""
        return await self._client._call(self._refresh_call())

    @overload
    async def forward(self, x: Any, *, train: bool = ..., keep_tape: Literal[False] = ...) -> np.ndarray: ...
    @overload
    async def forward(self, x: Any, *, train: bool = ..., keep_tape: Literal[True]) -> tuple[np.ndarray, Tape]: ...

    async def forward(self, x: Any, *, train: bool = False, keep_tape: bool = False) -> Any:
        """Returns the outputs for ``x`` (N, D) -> (N, M); with ``keep_tape=True``, ``(outputs, tape)``."""
        return await self._client._call(self._forward_call(x, train, keep_tape))

    async def predict(self, x: Any, *, batch_size: int = 256) -> np.ndarray:
        """Returns eval-mode outputs for ``x``, sent ``batch_size`` rows at a time."""
        x = np.asarray(x)
        parts = [await self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.empty((0,), self.dtype)

    async def backward(
        self, tape: Tape, *, targets: Any = None, grad_output: Any = None, return_input_grad: bool = False
    ) -> BackwardResult:
        """Returns the loss (given targets) and grad norm; gradients add into the model's buffers."""
        return await self._client._call(self._backward_call(tape, targets, grad_output, return_input_grad))

    async def forward_backward(
        self,
        x: Any,
        targets: Any = None,
        *,
        grad_output: Any = None,
        return_outputs: bool = False,
        return_input_grad: bool = False,
    ) -> ForwardBackwardResult:
        """Returns the loss and grad norm of one batch; gradients add into the model's buffers."""
        return await self._client._call(
            self._forward_backward_call(x, targets, grad_output, return_outputs, return_input_grad)
        )

    async def step(self, *, lr: float | None = None) -> StepResult:
        """Returns the optimizer step taken from the accumulated gradients (which are then cleared)."""
        return await self._client._call(self._step_call(lr))

    async def zero_grad(self) -> ModelInfo:
        """Returns the model's info after clearing the accumulated gradients."""
        return await self._client._call(self._zero_grad_call())

    async def train_step(self, x: Any, y: Any, *, lr: float | None = None) -> TrainStepResult:
        """Returns the loss and step of forward_backward + step on one batch, in one round trip."""
        return await self._client._call(self._train_step_call(x, y, lr))

    async def evaluate(self, x: Any, y: Any) -> Evaluation:
        """Returns the loss (and a classifier's accuracy) of eval-mode outputs for (x, y), sent in
        requests of about 32 MiB (8 in list form); nothing on the server changes."""
        return Evaluation.combine([await self._client._call(self._evaluate_call(xb, yb))
                                   for xb, yb in self._evaluation_chunks(x, y)])

    async def train_steps(self, batches: Any, *, keep: str | None = None) -> list[TrainStepResult]:
        """Returns the result of a train_step on each (x, y) batch, in order, from one request
        (the server computes each batch while the next arrives). If a batch fails, its error is
        raised with ``.batch`` (its index) and ``.completed`` (the steps applied before it).
        With ``keep``, the server also adds each applied batch to its data set of that name."""
        batches = list(batches)
        try:
            return await self._client._call(self._train_steps_call(batches, self._client.binary, True, keep))
        except APIError as error:
            error.batch, error.completed = stream_failure(error)
            raise

    async def add_data(self, name: str, x: Any, y: Any) -> DataSetInfo:
        """Adds rows (x, y) to the model's data set ``name`` on the server (made if needed), sent in
        requests of about 32 MiB (8 in list form). Data sets live in the server's memory, not in checkpoints."""
        info = None
        for xb, yb in self._evaluation_chunks(x, y):
            info = await self._client._call(self._add_data_call(name, xb, yb))
        return info

    async def data_sets(self) -> DataSetList:
        """Returns the model's data sets, and the memory the server's data sets may still take."""
        return await self._client._call(self._data_sets_call())

    async def delete_data(self, name: str) -> None:
        """Deletes the model's data set ``name`` on the server."""
        await self._client._call(self._delete_data_call(name))

    async def train_on_data(
        self, name: str, rows: Any, *, batch_size: int, lr: float | None = None
    ) -> list[TrainStepResult]:
        """Returns the result of a train_step on each batch of ``batch_size`` rows of the data set,
        in the order of ``rows`` (row indices), from one small request: the same steps as
        ``train_steps`` sending those rows. Errors as ``train_steps``."""
        try:
            return await self._client._call(self._train_on_data_call(name, rows, batch_size, lr))
        except APIError as error:
            error.batch, error.completed = stream_failure(error)
            raise

    async def evaluate_data(self, name: str, rows: Any = None) -> Evaluation:
        """Returns ``evaluate`` of rows of the data set (row indices; all if None), nothing sent but them."""
        return await self._client._call(self._evaluate_data_call(name, rows))

    async def gradcheck(
        self,
        x: Any,
        targets: Any = None,
        *,
        grad_output: Any = None,
        mode: str | None = None,
        eps: float | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        max_entries: int | None = None,
        seed: int | None = None,
    ) -> GradcheckReport:
        """Returns the server's comparison of analytic and numeric gradients (model untouched)."""
        options = dict(mode=mode, eps=eps, atol=atol, rtol=rtol, max_entries=max_entries, seed=seed)
        return await self._client._call(self._gradcheck_call(x, targets, grad_output, options))

    async def parameters(self) -> dict[str, np.ndarray]:
        """Returns every parameter by its state_dict name."""
        return await self._client._call(self._parameters_call())

    async def load_parameters(self, parameters: dict[str, Any]) -> ModelInfo:
        """Returns the model's info after replacing its parameters; pending tapes go stale.

        Every name must exist and every shape match; values go out in the model's dtype.
        """
        return await self._client._call(self._load_parameters_call(parameters))

    async def gradients(self) -> dict[str, np.ndarray]:
        """Returns the accumulated gradients by parameter name."""
        return await self._client._call(self._gradients_call())

    async def diagnostics(self) -> dict[str, Any]:
        """Returns per-layer gradient and parameter norms, ratios and health flags."""
        return await self._client._call(self._diagnostics_call())

    async def history(self, *, since: int | None = None, limit: int | None = None,
                      points: int | None = None) -> StepHistory:
        """Returns the records of the steps after ``since`` (all of them, page by page, unless
        ``limit``), downsampled by the server to at most ``points`` keeping each bucket's extremes."""
        pages = [await self._client._call(self._history_call(since, limit, points))]
        while (after := self._next_page(pages[-1], limit, points)) is not None:
            pages.append(await self._client._call(self._history_call(after, limit, points)))
        return StepHistory.concat(pages)

    async def download_checkpoint(self, path: str | Path, *, include_optimizer: bool = True) -> Path:
        """Returns ``path`` after writing the model's safetensors checkpoint there.

        ``include_optimizer=False`` leaves out the optimizer state: a plain PyTorch state_dict.
        """
        return await self._client._call(self._checkpoint_call(path, include_optimizer))

    async def export_onnx(self, path: str | Path) -> Path:
        """Returns ``path`` after writing the model's eval-mode forward there as an ONNX file
        (input ``inputs``, output ``outputs``, batch axis dynamic), for onnxruntime and the like.

        A server without the onnx package answers 501 (:class:`ServerError`).
        """
        return await self._client._call(self._export_call(path, "onnx"))

    async def delete(self) -> None:
        """Deletes the model on the server."""
        return await self._client._call(self._delete_call())

    async def fit(
        self,
        x: Any,
        y: Any,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        seed: int | None = None,
        verbose: int = 1,
    ) -> History:
        """Returns the History of training on (x, y), as Keras's ``fit``: the same train steps
        as one train_step per batch, on rows it first adds to a data set of the model when the
        server has room, else sent as train_steps streams (see _fit.py)."""
        loop = self._fit_loop(x, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                              validation_data=validation_data, seed=seed, verbose=verbose)
        return await self._drive(loop.calls(self, self._client.binary, asynchronous=True))

    async def _drive(self, plan: Plan) -> Any:
        """Makes the calls `plan` yields, sending each its answer or throwing in its error; gives
        what the plan returns."""
        answer: Any = None
        error: Exception | None = None
        while True:
            try:
                call = plan.send(answer) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value
            try:
                answer, error = await self._client._call(call), None
            except BaseException as exc:  # an interrupt too: the plan deletes what it made, then raises
                answer, error = None, exc
