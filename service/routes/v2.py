"""The Open Inference Protocol (KServe V2), as Triton's clients speak it: health, metadata, infer.

A model is served as it is now: `infer` is an eval-mode forward (no tape kept, no state
changed), its one input named `inputs` and its one output `outputs`. A model has one version,
its optimizer step count, which moves as it trains. Server health and metadata are open, as
/healthz is; every route on a model takes the API key, as /v1 does. Errors are the protocol's
`{"error": "<message>"}` (service/errors.py), with the statuses /v1 answers.
"""

from functools import partial

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from core import Model
from service.deps import Call, EntryDep, StoreDep
from service.errors import ServiceError
from service.schemas import INFERENCE_ERRORS, InferRequest, InferResponse, ModelMetadata, ServerMetadata
from service.store import inline_rows
from service.tensor_object import DATATYPE_OF
from service.tensors import OFFLOAD_ELEMENTS, encode_tensor, message
from service.threads import off_loop

router = APIRouter(prefix="/v2", tags=["inference"], responses=INFERENCE_ERRORS)

EXTENSIONS = ["binary_tensor_data"]


@router.get("", response_model=ServerMetadata)
async def server_metadata(request: Request) -> ServerMetadata:
    """Gives the server's name, version and protocol extensions."""
    return ServerMetadata(name="gradserve", version=request.app.version, extensions=EXTENSIONS)


@router.get("/health/live")
async def server_live() -> dict:
    """Gives 200 while the process serves requests."""
    return {"live": True}


@router.get("/health/ready")
async def server_ready(store: StoreDep) -> Response:
    """Gives 200 once every checkpoint has been loaded, 503 before."""
    return JSONResponse({"ready": store.ready}, status_code=200 if store.ready else 503)


@router.get("/models/{model_id}", response_model=ModelMetadata)
async def model_metadata(entry: EntryDep, store: StoreDep) -> ModelMetadata:
    """Gives the model's version, and its input and output tensors: datatype, and shape with -1
    for the batch axis (and for a sequence's length, an image's height and width)."""
    return ModelMetadata(name=entry.id, platform="gradserve", **await store.run(entry, _metadata))


@router.get("/models/{model_id}/versions/{version}", response_model=ModelMetadata)
async def model_version_metadata(entry: EntryDep, store: StoreDep, version: str) -> ModelMetadata:
    """The model's metadata, if `version` is its version now (its step); else 404."""
    return ModelMetadata(name=entry.id, platform="gradserve", **await store.run(entry, _metadata, version))


def _at(model: Model, version: str | None) -> None:
    """Refuses a version the model is not at: it has one, its step, which moves as it trains."""
    if version is not None and version != str(model.step_count):
        raise ServiceError(404, "version_not_found", f"model {model.spec.get('id')!r} has no version {version!r}; "
                           f"its one version is its step, now {model.step_count}")


def _metadata(model: Model, version: str | None = None) -> dict:
    _at(model, version)
    inputs, outputs = model.signature()
    return {"versions": [str(model.step_count)],
            "inputs": [_tensor_metadata("inputs", model.input_dtype, inputs)],
            "outputs": [_tensor_metadata("outputs", model.dtype, outputs)]}


def _tensor_metadata(name: str, dtype: np.dtype, shape: tuple) -> dict:
    return {"name": name, "datatype": DATATYPE_OF[dtype], "shape": [-1 if size is None else size for size in shape]}


@router.get("/models/{model_id}/ready")
async def model_ready(entry: EntryDep) -> dict:
    """Gives 200 when the model is there to infer with (404 when it is not)."""
    return {"name": entry.id, "ready": True}


@router.get("/models/{model_id}/versions/{version}/ready")
async def model_version_ready(entry: EntryDep, store: StoreDep, version: str) -> dict:
    """Gives 200 when the model is there at `version` (its step now), else 404."""
    await store.run(entry, _at, version)
    return {"name": entry.id, "ready": True}


@router.post("/models/{model_id}/infer", response_model=InferResponse)
async def infer(call: Call[InferRequest]) -> Response:
    """Gives the outputs of an eval-mode forward: no tape, no state change.

    JSON, or Triton's binary form both ways: a body with `Inference-Header-Content-Length` (no
    Content-Type needed) carries its binary inputs after the JSON part; `outputs` comes back in
    binary form when the requested output says `"parameters": {"binary_data": true}`, or, if it
    says nothing, when the request's `parameters.binary_data_output` is true.
    """
    return await _infer_answer(call)


@router.post("/models/{model_id}/versions/{version}/infer", response_model=InferResponse)
async def infer_version(call: Call[InferRequest], version: str) -> Response:
    """`infer`, if `version` is the model's version now (its step); else 404."""
    return await _infer_answer(call, version)


async def _infer_answer(call, version: str | None = None) -> Response:
    body = call.body
    inputs = body.inputs[0]
    outputs, step = await call.store.run(call.entry, _infer, inputs, version, rows=inline_rows(inputs))
    encode = partial(_answer, call.entry.id, str(step), body.id, outputs, body.binary_output)
    return await off_loop(encode) if outputs.size > OFFLOAD_ELEMENTS else encode()


def _infer(model: Model, inputs: np.ndarray, version: str | None) -> tuple[np.ndarray, int]:
    _at(model, version)
    outputs, _ = model.forward(inputs, train=False)
    return outputs, model.step_count


def _answer(model_id: str, version: str, request_id: str | None, outputs: np.ndarray, binary: bool) -> Response:
    chunks: list | None = [] if binary else None
    head = {"model_name": model_id, "model_version": version,
            "outputs": [{"name": "outputs", **encode_tensor(outputs, chunks)}]}
    if request_id is not None:
        head["id"] = request_id
    return message(head, chunks)
