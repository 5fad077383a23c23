"""Forward, backward, accumulation, optimizer steps and evaluation on one model."""

from dataclasses import asdict

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from core import Backprop, NonFiniteGradientError, NonFiniteUpdateError, NothingToStepError
from core import evaluate as evaluate_model
from service.auth import authenticate
from service.deps import Call, EntryDep, StoreDep
from service.errors import CORE_ERRORS
from service.metrics import Metrics
from service.schemas import (
    ERRORS, BackwardRequest, BackwardResponse, EvaluateRequest, EvaluateResponse, ForwardBackwardRequest,
    ForwardBackwardResponse,
    ForwardRequest, ForwardResponse, ModelInfo, StepRequest, StepResponse, TrainStepRequest,
    TrainStepResponse,
)
from service.tensors import number, reply, respond

router = APIRouter(prefix="/v1/models/{model_id}", tags=["training"], dependencies=[Depends(authenticate)],
                   responses=ERRORS)


@router.post("/forward", response_model=ForwardResponse)
async def forward(call: Call[ForwardRequest]) -> Response:
    """Gives the outputs; with keep_tape, also the id of a tape for a later backward."""
    body, model = call.body, call.model
    outputs, tape = await call.store.run(
        call.entry, lambda: model.forward(body.inputs, train=body.train or body.keep_tape), rows=call.rows)
    tape_id = call.store.keep_tape(call.entry, (tape, outputs)) if body.keep_tape else None
    return await reply({"outputs": outputs, "tape_id": tape_id}, binary=body.binary_data_output)


@router.post("/backward", response_model=BackwardResponse)
async def backward(call: Call[BackwardRequest]) -> Response:
    """Backpropagates through a kept tape, adding into the accumulated gradients."""
    body, model = call.body, call.model

    def work(pending):
        tape, outputs = pending
        result = model.backprop(tape, outputs, targets=body.targets, grad_output=body.grad_output,
                                need_input_grad=body.return_input_grad)
        return result, model.grad_norm(), model.accumulated

    return await _reply_backprop(body, *await call.store.run_with_tape(call.entry, body.tape_id, work))


@router.post("/forward_backward", response_model=ForwardBackwardResponse)
async def forward_backward(call: Call[ForwardBackwardRequest]) -> Response:
    """Forward in train mode, loss (or a given grad_output), backward: gradients add up."""
    body, model = call.body, call.model

    def work():
        result = model.train_batch(body.inputs, body.targets, grad_output=body.grad_output,
                                   need_input_grad=body.return_input_grad)
        return result, model.grad_norm(), model.accumulated

    return await _reply_backprop(body, *await call.store.run(call.entry, work, rows=call.rows))


async def _reply_backprop(body: BackwardRequest | ForwardBackwardRequest, result: Backprop, grad_norm: float,
                          accumulated: int) -> Response:
    """Gives the answer of backward and forward_backward: loss, norm, and the tensors asked for."""
    payload = {"loss": number(result.loss), "grad_norm": number(grad_norm), "accumulated": accumulated}
    if getattr(body, "return_outputs", False):
        payload["outputs"] = result.outputs
    if body.return_input_grad:
        payload["input_grad"] = result.input_grad
    return await reply(payload, binary=body.binary_data_output)


async def _counting_steps(metrics: Metrics, step):
    """Gives `await step`, counting applied and refused steps."""
    try:
        result = await step
    except (NothingToStepError, NonFiniteGradientError, NonFiniteUpdateError) as exc:
        metrics.refused_steps.labels(CORE_ERRORS[type(exc)][1]).inc()
        raise
    metrics.steps.inc()
    return result


@router.post("/step", response_model=StepResponse)
async def step(call: Call[StepRequest]) -> Response:
    """Applies the optimizer to the accumulated gradients, then clears them."""
    metrics = call.request.app.state.metrics
    result = await _counting_steps(metrics, call.store.run(call.entry, lambda: call.model.step(call.body.lr),
                                                           save="step", rows=1))
    return respond(asdict(result))


@router.post("/evaluate", response_model=EvaluateResponse)
async def evaluate(call: Call[EvaluateRequest]) -> Response:
    """Gives the loss (and a classifier's accuracy) of an eval-mode forward; no gradients, no state change."""
    result = await call.store.run(call.entry, lambda: evaluate_model(call.model, call.body.inputs, call.body.targets),
                                  rows=call.rows)
    return respond({"loss": number(result.loss), "accuracy": result.accuracy, "count": result.count})


@router.post("/zero_grad", response_model=ModelInfo)
async def zero_grad(entry: EntryDep, store: StoreDep) -> ModelInfo:
    """Clears the accumulated gradients."""
    await store.run(entry, entry.model.zero_grad, rows=1)
    return ModelInfo.of(entry)


@router.post("/train_step", response_model=TrainStepResponse)
async def train_step(call: Call[TrainStepRequest]) -> Response:
    """forward_backward then step, in one round trip."""
    body, model = call.body, call.model

    def work():
        loss = model.forward_backward(body.inputs, body.targets)
        return loss, model.step(body.lr)

    metrics = call.request.app.state.metrics
    loss, result = await _counting_steps(metrics, call.store.run(call.entry, work, save="step", rows=call.rows))
    return respond({"loss": number(loss), **asdict(result)})
