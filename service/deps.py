"""Typed dependencies shared by the routes.

All are `async def`: FastAPI runs a plain `def` dependency on a worker thread, a hop that
costs more than these functions do. Every node of the dependency graph costs FastAPI more per
request than the function it calls, so a route on one model takes a single one, `Call[X]`:
the caller's model (auth and lookup), its body parsed into the request model X with every
tensor decoded into an array, and the store. The request model is named once, in that
annotation; the OpenAPI document reads it from there (`body_models`).
"""

import typing
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, FastAPI, Path, Request
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from core import ID_PATTERN
from service.auth import OwnerDep
from service.body import parse_body
from service.metrics import Metrics
from service.schemas import DataName  # noqa: F401 (the routes take it from here, beside the other path types)
from service.settings import Settings
from service.store import Entry, ModelStore, inline_rows
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
ModelIdPath = Annotated[str, Path(pattern=f"^{ID_PATTERN}$", examples=["xor-mlp"])]


async def get_entry(model_id: ModelIdPath, request: Request, owner: OwnerDep) -> Entry:
    return await request.app.state.store.get(model_id, owner)


EntryDep = Annotated[Entry, Depends(get_entry)]


@dataclass(frozen=True)
class ModelCall(Generic[M]):
    """A request on one model: the model's entry, its decoded body, the store and the request."""

    entry: Entry
    body: M
    store: ModelStore
    request: Request

    @property
    def rows(self) -> int | None:
        """Gives the examples the store's inline rule counts (store.inline_rows), 1 without inputs."""
        return inline_rows(self.body.inputs) if hasattr(self.body, "inputs") else 1


def _model_call(model: type[M]) -> Any:
    async def resolve(model_id: ModelIdPath, request: Request, owner: OwnerDep) -> ModelCall[M]:
        state = request.app.state
        entry = await state.store.get(model_id, owner)
        decoder = Decoder.of(entry, state.settings.max_tensor_elements)
        body = await parse_body(request, model, state.settings.max_body_bytes, decoder)
        return ModelCall(entry, body, state.store, request)

    resolve.body_model = model  # type: ignore[attr-defined]
    resolve.model_call = True  # type: ignore[attr-defined]  # service/direct.py calls it itself
    return Depends(resolve)


def _body(model: type[M]) -> Any:
    async def resolve(request: Request) -> M:
        return await parse_body(request, model, request.app.state.settings.max_body_bytes)

    resolve.body_model = model  # type: ignore[attr-defined]
    return Depends(resolve)


class Call:
    """`call: Call[TrainStepRequest]`: the model, its decoded TrainStepRequest, the store."""

    def __class_getitem__(cls, model: type[M]) -> Any:
        return Annotated[ModelCall[model], _model_call(model)]


class Body:
    """`spec: Body[ModelSpec]`: a body parsed (JSON or binary form) into the model, not on a model."""

    def __class_getitem__(cls, model: type[M]) -> Any:
        return Annotated[model, _body(model)]


def body_models(app: FastAPI) -> dict[tuple[str, str], type[BaseModel]]:
    """Gives {(path, method): request model} of every route whose body a Call or Body parses,
    read off the endpoints' annotations."""
    found = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for hint in typing.get_type_hints(route.endpoint, include_extras=True).values():
            for meta in getattr(hint, "__metadata__", ()):
                model = getattr(getattr(meta, "dependency", None), "body_model", None)
                if model is not None:
                    found.update({(context.path_format, method.lower()): model for method in route.methods})
    return found
