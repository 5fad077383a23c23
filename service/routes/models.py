"""Creating, listing, deleting, exporting and importing models."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from core import Model
from service.auth import OwnerDep, authenticate
from service.body import read_body
from service.deps import Body, EntryDep, SettingsDep, StoreDep
from service.schemas import ERRORS, ModelId, ModelInfo, ModelList, ModelSpec

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(authenticate)], responses=ERRORS)


@router.post("", status_code=201, response_model=ModelInfo)
async def create_model(store: StoreDep, owner: OwnerDep, spec: Body[ModelSpec]) -> ModelInfo:
    """Creates a model from a spec; the whole spec is checked before anything is allocated."""
    return ModelInfo(**await store.create(spec.model_dump(exclude_unset=True), owner))


@router.get("", response_model=ModelList)
async def list_models(store: StoreDep, owner: OwnerDep) -> ModelList:
    """Lists the caller's models."""
    return ModelList(models=[ModelInfo(**info) for info in await store.list(owner)])


@router.post("/import", status_code=201, response_model=ModelInfo, openapi_extra={"requestBody": {
    "required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "description": "A safetensors checkpoint, as GET /v1/models/{model_id}/checkpoint gives it."}})
async def import_model(request: Request, store: StoreDep, settings: SettingsDep, owner: OwnerDep,
                       id: Annotated[ModelId | None, Query(description="Id for the new model.")] = None) -> ModelInfo:
    """Creates a model from a safetensors checkpoint sent as the raw body."""
    checkpoint = await read_body(request, settings.max_body_bytes)
    return ModelInfo(**await store.import_checkpoint(checkpoint, id, owner))


@router.get("/{model_id}", response_model=ModelInfo)
async def get_model(entry: EntryDep, store: StoreDep) -> ModelInfo:
    """Describes one model: spec, parameter shapes, step, version, accumulated batches."""
    return ModelInfo(**await store.info(entry))


@router.delete("/{model_id}", status_code=204, response_class=Response)
async def delete_model(entry: EntryDep, store: StoreDep) -> Response:
    """Deletes a model and its checkpoint."""
    await store.delete(entry)
    return Response(status_code=204)


@router.get("/{model_id}/checkpoint", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "A safetensors file; spec and step in its metadata."}})
async def get_checkpoint(entry: EntryDep, store: StoreDep,
                         include_optimizer: Annotated[bool, Query(
                             description="false gives a pure PyTorch state_dict")] = True) -> Response:
    """Gives the model as a safetensors file."""
    checkpoint = await store.run(entry, Model.to_bytes, include_optimizer)
    return Response(checkpoint, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{entry.id}.safetensors"'})


@router.get("/{model_id}/export", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "An ONNX model: input `inputs`, output `outputs`, batch axis dynamic."},
                       501: {"description": "The onnx package is not installed: pip install 'gradserve[onnx]'."}})
async def export_model(entry: EntryDep, store: StoreDep,
                       format: Annotated[Literal["onnx"], Query(description="The export format.")] = "onnx") -> Response:
    """Gives the model's eval-mode forward as an ONNX file."""
    exported = await store.run(entry, Model.to_onnx)
    return Response(exported, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{entry.id}.onnx"'})
