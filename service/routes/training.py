"""Forward, backward, accumulation and optimizer steps on one model."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from core import Backprop, NonFiniteGradientError, NonFiniteUpdateError, NothingToStepError
from service.auth import authenticate
from service.deps import DecoderDep, EntryDep, MetricsDep, StoreDep, body_of
from service.errors import CORE_ERRORS
from service.metrics import Metrics
from service.schemas import (
    ERRORS, BackwardRequest, BackwardResponse, ForwardBackwardRequest, ForwardBackwardResponse,
    ForwardRequest, ForwardResponse, ModelInfo, StepRequest, StepResponse, TrainStepRequest,
    TrainStepResponse, request_body,
)
from service.tensors import number, reply

router = APIRouter(prefix="/v1/models/{model_id}", tags=["training"], dependencies=[Depends(authenticate)],
                   responses=ERRORS)


@router.post("/forward", response_model=ForwardResponse, openapi_extra=request_body(ForwardRequest))
async def forward(entry: EntryDep, store: StoreDep, decode: DecoderDep,
                  body: Annotated[ForwardRequest, body_of(ForwardRequest)]) -> Response:
    """Gives the outputs; with keep_tape, also the id of a tape for a later backward."""
    model = entry.model

    def work():
        return model.forward(decode(body.inputs, "inputs"), train=body.train or body.keep_tape)

    outputs, tape = await store.run(entry, work)
    tape_id = store.keep_tape(entry, (tape, outputs)) if body.keep_tape else None
    return await reply({"outputs": outputs, "tape_id": tape_id}, binary=body.binary_data_output)


@router.post("/backward", response_model=BackwardResponse, openapi_extra=request_body(BackwardRequest))
async def backward(entry: EntryDep, store: StoreDep, decode: DecoderDep,
                   body: Annotated[BackwardRequest, body_of(BackwardRequest)]) -> Response:
    """Backpropagates through a kept tape, adding into the accumulated gradients."""
    model = entry.model

    def work(pending):
        tape, outputs = pending
        result = model.backprop(tape, outputs, targets=decode(body.targets, "targets", labels=True),
                                grad_output=decode(body.grad_output, "grad_output"),
                                need_input_grad=body.return_input_grad)
        return result, model.grad_norm(), model.accumulated

    return await _reply_backprop(body, *await store.run_with_tape(entry, body.tape_id, work))


@router.post("/forward_backward", response_model=ForwardBackwardResponse,
             openapi_extra=request_body(ForwardBackwardRequest))
async def forward_backward(entry: EntryDep, store: StoreDep, decode: DecoderDep,
                           body: Annotated[ForwardBackwardRequest, body_of(ForwardBackwardRequest)]) -> Response:
    """Forward in train mode, loss (or a given grad_output), backward: gradients add up."""
    model = entry.model

    def work():
        result = model.train_batch(decode(body.inputs, "inputs"), decode(body.targets, "targets", labels=True),
                                   grad_output=decode(body.grad_output, "grad_output"),
                                   need_input_grad=body.return_input_grad)
        return result, model.grad_norm(), model.accumulated

    return await _reply_backprop(body, *await store.run(entry, work))


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


@router.post("/step", response_model=StepResponse, openapi_extra=request_body(StepRequest))
async def step(entry: EntryDep, store: StoreDep, metrics: MetricsDep,
               body: Annotated[StepRequest, body_of(StepRequest)]) -> StepResponse:
    """Applies the optimizer to the accumulated gradients, then clears them."""
    result = await _counting_steps(metrics, store.run(entry, lambda: entry.model.step(body.lr), save="step"))
    return StepResponse(step=result.step, lr=result.lr, grad_norm=result.grad_norm, update_norm=result.update_norm)


@router.post("/zero_grad", response_model=ModelInfo)
async def zero_grad(entry: EntryDep, store: StoreDep) -> ModelInfo:
    """Clears the accumulated gradients."""
    await store.run(entry, entry.model.zero_grad)
    return ModelInfo.of(entry)


@router.post("/train_step", response_model=TrainStepResponse, openapi_extra=request_body(TrainStepRequest))
async def train_step(entry: EntryDep, store: StoreDep, metrics: MetricsDep, decode: DecoderDep,
                     body: Annotated[TrainStepRequest, body_of(TrainStepRequest)]) -> TrainStepResponse:
    """forward_backward then step, in one round trip."""
    model = entry.model

    def work():
        loss = model.forward_backward(decode(body.inputs, "inputs"), decode(body.targets, "targets", labels=True))
        return loss, model.step(body.lr)

    loss, result = await _counting_steps(metrics, store.run(entry, work, save="step"))
    return TrainStepResponse(loss=number(loss), step=result.step, lr=result.lr, grad_norm=result.grad_norm,
                             update_norm=result.update_norm)
