"""The model routes a request reaches without FastAPI's router and dependency walk.

Matching a path against every route and walking a route's dependency graph cost FastAPI more
per request than a small train step costs the engine. A route whose one parameter is a
`Call[X]` (beside path parameters named as models are: a data set's name) and which answers
a `Response` itself (train_step, forward, evaluate, infer, a data set's train_steps, ...)
needs neither: `Direct` recognises its path by its segments, resolves the Call with the same
function FastAPI would call (authentication, the model, the decoded body) and calls the same
endpoint. Everything else, including any request on those paths it does not
take whole (another method, an id that breaks the pattern), goes on to the FastAPI app.
The OpenAPI document, validation and answers stay FastAPI's: the routes are still declared there.
"""

import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from core import ID_PATTERN, ID_RE
from service.auth import caller
from service.errors import error_for

ID_PARAMETER = f"^{ID_PATTERN}$"  # the pattern a path parameter Direct takes is declared with


@dataclass(frozen=True)
class _Route:
    route: APIRoute  # what the metrics and the error answers read from the scope
    resolve: Callable[..., Awaitable[Any]]  # the Call's dependency: (model_id, request, owner) -> ModelCall
    endpoint: Callable[..., Awaitable[Response]]
    call: str  # the name of the endpoint's Call parameter
    segments: tuple[str, ...]  # the path after the model id: literal segments, and "{name}" for a parameter

    def parameters(self, segments: list[str]) -> dict[str, str] | None:
        """Gives the path parameters of a path after the model id, or None if it is not this route's."""
        found = {}
        for mine, theirs in zip(self.segments, segments):
            if mine.startswith("{"):
                if ID_RE.fullmatch(theirs) is None:
                    return None  # FastAPI's 422 names the parameter
                found[mine[1:-1]] = theirs
            elif mine != theirs:
                return None
        return found


def direct_routes(app: FastAPI) -> dict[tuple[str, str, int], list[_Route]]:
    """Gives {(method, "/v1/models/" or "/v2/models/", segments after the model id): routes} of
    every route `Direct` can take whole: under /v1/models/{model_id}/ or /v2/models/{model_id}/,
    with one Call parameter and otherwise path parameters declared with the id pattern (ID_PARAMETER),
    answering a Response."""
    found: dict[tuple[str, str, int], list[_Route]] = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        hints = typing.get_type_hints(route.endpoint, include_extras=True)
        if hints.pop("return", None) is not Response:
            continue
        calls = {name: meta.dependency for name, hint in hints.items() for meta in getattr(hint, "__metadata__", ())
                 if getattr(getattr(meta, "dependency", None), "model_call", False)}
        path_params = {param.name for param in route.dependant.path_params
                       if any(getattr(meta, "pattern", None) == ID_PARAMETER for meta in param.field_info.metadata)}
        prefix, _, rest = context.path_format.partition("/{model_id}/")
        if len(calls) != 1 or set(hints) - set(calls) != path_params or prefix not in ("/v1/models", "/v2/models"):
            continue
        segments = tuple(rest.split("/"))
        if {segment[1:-1] for segment in segments if segment.startswith("{")} != path_params:
            continue
        ((call, resolve),) = calls.items()
        for method in route.methods:
            found.setdefault((method, f"{prefix}/", len(segments)), []).append(
                _Route(route, resolve, route.endpoint, call, segments))
    return found


class Direct:
    """ASGI middleware answering the routes of `direct_routes` itself (see the module's text)."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI):
        self.app, self.fastapi = app, fastapi
        self.routes: dict[tuple[str, str, int], list[_Route]] | None = None  # read once the routes are all included
        # (method, prefix, path after the id) -> the route that took it, for paths without parameters:
        # as many as there are such routes, since only a path a route took is kept
        self.literal: dict[tuple[str, str, str], _Route] = {}
        self.path = re.compile(f"^(/v[12]/models/)({ID_PATTERN})/([A-Za-z0-9_/-]+)$")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.path.match(scope["path"]) if scope["type"] == "http" and not scope.get("root_path") else None
        if found is not None:
            if self.routes is None:
                self.routes = direct_routes(self.fastapi)
            prefix, model_id, rest = found.groups()
            literal = self.literal.get((scope["method"], prefix, rest))
            if literal is not None:
                return await self._answer(literal, model_id, {}, scope, receive, send)
            segments = rest.split("/")
            for direct in self.routes.get((scope["method"], prefix, len(segments)), ()):
                parameters = direct.parameters(segments)
                if parameters is not None:
                    if not parameters:  # a path of the route's own segments only: found at once next time
                        self.literal[(scope["method"], prefix, rest)] = direct
                    return await self._answer(direct, model_id, parameters, scope, receive, send)
        await self.app(scope, receive, send)

    async def _answer(self, direct: _Route, model_id: str, parameters: dict[str, str], scope: Scope,
                      receive: Receive, send: Send) -> None:
        scope["route"], scope["endpoint"] = direct.route, direct.endpoint
        scope["path_params"] = {"model_id": model_id, **parameters}
        request = Request(scope, receive, send)
        try:
            owner = await caller(request)
            call = await direct.resolve(model_id, request, owner)
            response = await direct.endpoint(**{direct.call: call}, **parameters)
        except Exception as exc:
            response = error_for(exc, scope)
            if response is None:
                raise
        await response(scope, receive, send)
