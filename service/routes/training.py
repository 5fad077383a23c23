"""Forward, backward, accumulation, optimizer steps and evaluation on one model."""

import asyncio
from contextlib import aclosing, suppress
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from core import (
    Backprop, Evaluation, Model, NonFiniteGradientError, NonFiniteUpdateError, NothingToStepError, StepResult,
    TrainStepResult,
)
from core import evaluate as evaluate_model
from service.datasets import DataSets, WithData
from service.deps import Call, DataName, EntryDep, StoreDep
from service.body import frames, validated
from service.errors import CORE_ERRORS, ModelNotFound, ServiceError, answer_for
from service.metrics import Metrics
from service.schemas import (
    ERRORS, BackwardRequest, BackwardResponse, EvaluateRequest, ForwardBackwardRequest,
    ForwardBackwardResponse,
    ForwardRequest, ForwardResponse, ModelInfo, StepRequest, StreamErrorBody, TrainStepRequest, TrainStepsResponse,
)
from service.shelf import Run
from service.store import inline_rows
from service.tensors import Decoder, number, reply, respond

# A data set's batches are applied in Runs of about this long, and of at most RUN_BATCHES: one
# hop (on Ray, one actor call) a run rather than a step, and requests of others on the model
# wait at most about this long.
RUN_SECONDS = 0.01
RUN_BATCHES = 256

KeepQuery = Annotated[DataName | None, Query(description="Also add each applied batch to this data set of "
                                           "the model (made if needed), so that later epochs name its rows.")]

# No router-wide authenticate: every route takes Call or EntryDep, which authenticate (a node
# fewer for FastAPI to walk per request; tests/service/test_auth.py checks each /v1 route).
router = APIRouter(prefix="/v1/models/{model_id}", tags=["training"], responses=ERRORS)


@router.post("/forward", response_model=ForwardResponse)
async def forward(call: Call[ForwardRequest]) -> Response:
    """Gives the outputs; with keep_tape, also the id of a tape for a later backward."""
    body = call.body
    outputs, tape_id = await call.store.run(call.entry, _forward, body.inputs, body.train or body.keep_tape,
                                            rows=call.rows, keep_tape=body.keep_tape)
    return await reply({"outputs": outputs, "tape_id": tape_id}, binary=body.binary_data_output)


def _forward(model: Model, inputs, train: bool):
    outputs, tape = model.forward(inputs, train=train)
    return outputs, (tape, outputs)


@router.post("/backward", response_model=BackwardResponse)
async def backward(call: Call[BackwardRequest]) -> Response:
    """Backpropagates through a kept tape, adding into the accumulated gradients."""
    body = call.body
    return await _reply_backprop(body, *await call.store.run_on_tape(call.entry, body.tape_id, _backward, body))


def _backward(model: Model, pending, body: BackwardRequest):
    tape, outputs = pending
    result = model.backprop(tape, outputs, targets=body.targets, grad_output=body.grad_output,
                            need_input_grad=body.return_input_grad)
    return result, model.grad_norm(), model.accumulated


@router.post("/forward_backward", response_model=ForwardBackwardResponse)
async def forward_backward(call: Call[ForwardBackwardRequest]) -> Response:
    """Forward in train mode, loss (or a given grad_output), backward: gradients add up."""
    body = call.body
    return await _reply_backprop(body, *await call.store.run(call.entry, _forward_backward, body, rows=call.rows))


def _forward_backward(model: Model, body: ForwardBackwardRequest):
    result = model.train_batch(body.inputs, body.targets, grad_output=body.grad_output,
                               need_input_grad=body.return_input_grad)
    return result, model.grad_norm(), model.accumulated


async def _reply_backprop(body: BackwardRequest | ForwardBackwardRequest, result: Backprop, grad_norm: float,
                          accumulated: int) -> Response:
    """Gives the answer of backward and forward_backward: loss, norm, and the tensors asked for."""
    payload = {"loss": number(result.loss), "grad_norm": number(grad_norm), "accumulated": accumulated}
    if getattr(body, "return_outputs", False):
        payload["outputs"] = result.outputs
    if body.return_input_grad:
        payload["input_grad"] = result.input_grad
    return await reply(payload, binary=body.binary_data_output)


REFUSALS = (NothingToStepError, NonFiniteGradientError, NonFiniteUpdateError)  # steps core refuses


async def _counting_steps(metrics: Metrics, step):
    """Gives `await step`, counting applied and refused steps."""
    try:
        result = await step
    except REFUSALS as exc:
        _count_refused(metrics, exc)
        raise
    metrics.steps.inc()
    return result


def _count_refused(metrics: Metrics, exc: Exception) -> None:
    if isinstance(exc, REFUSALS):
        metrics.refused_steps.labels(CORE_ERRORS[type(exc)][1]).inc()


@router.post("/step", response_model=StepResult)
async def step(call: Call[StepRequest]) -> Response:
    """Applies the optimizer to the accumulated gradients, then clears them."""
    metrics = call.request.app.state.metrics
    result = await _counting_steps(metrics, call.store.run(call.entry, _step, call.body.lr, save="step", rows=1))
    return respond(result)


def _step(model: Model, lr: float | None) -> dict:
    return step_answer(model.step(lr))


@router.post("/evaluate", response_model=Evaluation)
async def evaluate(call: Call[EvaluateRequest]) -> Response:
    """Gives the loss (and a classifier's accuracy) of an eval-mode forward; no gradients, no state change."""
    body = call.body
    return respond(await call.store.run(call.entry, evaluation, body.inputs, body.targets, rows=call.rows))


def evaluation(model: Model, inputs, targets) -> dict:
    result = evaluate_model(model, inputs, targets)
    return {**asdict(result), "loss": number(result.loss)}


@router.post("/zero_grad", response_model=ModelInfo)
async def zero_grad(entry: EntryDep, store: StoreDep) -> ModelInfo:
    """Clears the accumulated gradients."""
    await store.run(entry, Model.zero_grad, rows=1)
    return ModelInfo(**await store.info(entry))


@router.post("/train_step", response_model=TrainStepResult)
async def train_step(call: Call[TrainStepRequest]) -> Response:
    """forward_backward then step, in one round trip."""
    body, metrics = call.body, call.request.app.state.metrics
    result = await _counting_steps(metrics, call.store.run(call.entry, _train_step, body, save="step",
                                                           rows=call.rows))
    return respond(result)


def _train_step(model: Model, body: TrainStepRequest) -> dict:
    return step_answer(model.train_step(body.inputs, body.targets, body.lr))


def _saved(model: Model) -> None:
    """Nothing: the work of a request that only writes the checkpoint."""


def step_answer(result: StepResult) -> dict:
    """Gives the JSON of a step's result: as core declares it, a non-finite loss named."""
    answer = dict(vars(result))  # scalars only: asdict's deep copy costs more than the copy
    if "loss" in answer:
        answer["loss"] = number(answer["loss"])
    return answer


STREAM = {"requestBody": {"required": True, "description": (
    "One train_step body per line (NDJSON). A line whose tensors are in binary form "
    "(parameters.binary_data_size) is followed by their raw bytes, as in a binary request."),
    "content": {"application/x-ndjson": {"schema": {"type": "string"}, "example": (
        '{"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]]}\n'
        '{"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]], "lr": 0.005}\n')},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/train_steps", response_model=TrainStepsResponse, openapi_extra=STREAM,
             responses={422: {"model": StreamErrorBody, "description": "A batch was refused; those before it "
                              "were applied (completed)"}, 409: {"model": StreamErrorBody}})
async def train_steps(entry: EntryDep, request: Request, keep: KeepQuery = None) -> Response:
    """Applies a stream of train steps in order, each batch computed while the next one arrives.

    The same steps as one train_step per batch, bit for bit, in one request. The first batch
    that fails stops the stream: the answer is its error, with `batch` (its index) and
    `completed` (the steps applied before it, which stay applied). Each batch takes the model's
    lock on its own, as a train_step would: requests of other clients on the same model may run
    between two batches of a stream. With `keep`, each applied batch's rows are also added to
    the model's data set of that name, in order (see /data).
    """
    state = request.app.state
    store, metrics = state.store, state.metrics
    decoder = Decoder.of(entry, state.settings.max_tensor_elements)
    batches: asyncio.Queue = asyncio.Queue(maxsize=2)  # read and decoded ahead of the compute
    stopped = asyncio.Event()
    step, kept = (WithData(_kept_train_step), (keep,)) if keep is not None else (_train_step, ())

    async def read() -> None:
        try:
            # aclosing: a stream left early still reads what the client sends (frames' finally)
            async with aclosing(frames(request, state.settings.max_body_bytes)) as stream:
                index = 0
                async for message, binary in stream:
                    if index == state.settings.max_stream_batches:
                        raise too_many_batches(index, "the stream has")
                    await batches.put(validated(message, binary, TrainStepRequest, decoder))
                    index += 1
                    if stopped.is_set():
                        break
        except Exception as exc:  # this frame is the one that failed
            await batches.put(exc)
        await batches.put(None)

    reader = asyncio.create_task(read())
    steps = Steps(store, metrics, entry)
    try:
        while (body := await batches.get()) is not None:
            if steps.failure is not None:
                continue
            if isinstance(body, Exception):
                steps.fail(body)
            else:
                await steps.apply(step, *kept, body, rows=inline_rows(body.inputs))
            if steps.failure is not None:
                stopped.set()
        await reader
    finally:
        reader.cancel()  # steps saved "later" reach the disk at the latest with the next flush,
    return await steps.answer()  # and under durability "step" before the answer


def too_many_batches(batches: int, what: str) -> ServiceError:
    """Gives the 413 of a request carrying more batches than GRADSERVE_MAX_STREAM_BATCHES (`what`
    has them: "the stream has", "the rows make")."""
    return ServiceError(413, "stream_too_long", f"{what} more than {batches} batches "
                        f"(GRADSERVE_MAX_STREAM_BATCHES); send several requests")


def _kept_train_step(model: Model, data_sets: DataSets, name: str, body: TrainStepRequest) -> dict:
    """Gives a train step's answer, its batch added to the data set `name` (taken back if the step fails)."""
    inputs, targets, _ = model.validate_batch(body.inputs, body.targets)
    data_sets.expire()  # a set past its time is made anew by add: its batch's failure must drop it
    made = name not in data_sets.sets
    data_set = data_sets.add(name, inputs, targets)
    try:
        return _train_step(model, body)
    except BaseException:
        data_set.pop(data_sets.budget)
        if made:  # no set of an empty first batch's shape left behind
            data_sets.drop(name)
        raise


class Steps:
    """Train steps applied in order on one model, stopping at the first that fails, and the
    answer of the whole: every step's result, or the failure with the steps before it."""

    def __init__(self, store, metrics: Metrics, entry):
        self.store, self.metrics, self.entry = store, metrics, entry
        self.completed: list[dict] = []
        self.failure: Exception | None = None

    async def apply(self, fn, *args, rows: int | None = None) -> bool:
        """Applies `fn(model, *args)` as the next step; gives False if it failed."""
        try:
            self.completed.append(await _counting_steps(self.metrics, self.store.run(
                self.entry, fn, *args, save=self.store.stream_save, rows=rows)))
        except Exception as exc:
            self.fail(exc)
        return self.failure is None

    async def run(self, fn, *args, start: int, stop: int) -> int:
        """Applies `fn(model, *args, i)` as the next steps, i from `start` (before `stop`), as
        many as one Run takes (RUN_SECONDS); gives how many it applied. Never on the event loop:
        a run's steps may fill the history's buffer, whose write syncs to disk."""
        try:
            done, failure = await self.store.run(self.entry, Run(fn, start, stop, RUN_SECONDS), *args,
                                                 save=self.store.stream_save)
        except Exception as exc:
            done, failure = [], exc
        self.metrics.steps.inc(len(done))
        self.completed += done
        if failure is not None:
            _count_refused(self.metrics, failure)
            self.fail(failure)
        return len(done)

    def fail(self, exc: Exception) -> None:
        """Stops at this batch, failed with `exc` (re-raised if it is a bug: no answer maps it)."""
        if answer_for(exc) is None:
            raise exc
        self.failure = exc

    async def answer(self, **more) -> Response:
        """Gives the answer: every step's result (and `more` beside them), or the failure."""
        if self.completed and self.store.stream_save == "later":
            with suppress(ModelNotFound):  # deleted meanwhile
                await self.store.run(self.entry, _saved, save="step")
        if self.failure is None:
            return respond({"steps": self.completed, **more})
        status, code, detail = answer_for(self.failure)
        return respond({"detail": detail, "code": code, "batch": len(self.completed), "completed": self.completed},
                       status_code=status)
