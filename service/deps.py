"""Typed dependencies shared by the routes.

All are `async def`: FastAPI runs a plain `def` dependency on a worker thread, a hop that
costs more than these functions do. The ones every compute request needs read the app state
from the request themselves rather than through further dependencies: each node of the
dependency graph costs FastAPI more per request than the function it calls.
"""

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from pydantic import BaseModel

from service.auth import OwnerDep
from service.body import parse_body
from service.metrics import Metrics
from service.persistence import ID_PATTERN
from service.settings import Settings
from service.store import Entry, ModelStore
from service.tensors import Decoder

M = TypeVar("M", bound=BaseModel)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> ModelStore:
    return request.app.state.store


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ModelIdPath = Annotated[str, Path(pattern=ID_PATTERN, examples=["xor-mlp"])]


async def get_entry(model_id: ModelIdPath, request: Request, owner: OwnerDep) -> Entry:
    return request.app.state.store.get(model_id, owner)


EntryDep = Annotated[Entry, Depends(get_entry)]


async def get_decoder(entry: EntryDep, request: Request) -> Decoder:
    return Decoder(entry.model.dtype, request.app.state.settings.max_tensor_elements)


DecoderDep = Annotated[Decoder, Depends(get_decoder)]


def body_of(model: type[M]) -> Any:
    """Gives a dependency parsing the request body (JSON or binary form) into `model`."""

    async def parse(request: Request) -> M:
        return await parse_body(request, model, request.app.state.settings.max_body_bytes)

    return Depends(parse)
