"""The model routes a request reaches without FastAPI's router and dependency walk.

Matching a path against every route and walking a route's dependency graph cost FastAPI more
per request than a small train step costs the engine. A route whose one parameter is a
`Call[X]` and which answers a `Response` itself (train_step, forward, evaluate, infer, ...)
needs neither: `Direct` recognises its path with one regular expression, resolves the Call
with the same function FastAPI would call (authentication, the model, the decoded body) and
calls the same endpoint. Everything else, including any request on those paths it does not
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

from core import ID_PATTERN
from service.auth import authenticate, bearer
from service.errors import error_for


@dataclass(frozen=True)
class _Route:
    route: APIRoute  # what the metrics and the error answers read from the scope
    resolve: Callable[..., Awaitable[Any]]  # the Call's dependency: (model_id, request, owner) -> ModelCall
    endpoint: Callable[[Any], Awaitable[Response]]


def direct_routes(app: FastAPI) -> dict[tuple[str, str, str], _Route]:
    """Gives {(method, "/v1/models/" or "/v2/models/", path after the model id): route} of every
    route `Direct` can take whole: under /v1/models/{model_id}/ or /v2/models/{model_id}/, with
    one Call parameter, answering a Response."""
    found = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        hints = typing.get_type_hints(route.endpoint, include_extras=True)
        answer = hints.pop("return", None)
        if len(hints) != 1 or answer is not Response:
            continue
        (hint,) = hints.values()
        resolve = next((meta.dependency for meta in getattr(hint, "__metadata__", ())
                        if getattr(getattr(meta, "dependency", None), "model_call", False)), None)
        prefix, _, rest = context.path_format.partition("/{model_id}/")
        if resolve is None or prefix not in ("/v1/models", "/v2/models") or "{" in rest:
            continue
        for method in route.methods:
            found[method, f"{prefix}/", rest] = _Route(route, resolve, route.endpoint)
    return found


class Direct:
    """ASGI middleware answering the routes of `direct_routes` itself (see the module's text)."""

    def __init__(self, app: ASGIApp, fastapi: FastAPI):
        self.app, self.fastapi = app, fastapi
        self.routes: dict[tuple[str, str, str], _Route] | None = None  # read once the routes are all included
        self.path = re.compile(f"^(/v[12]/models/)({ID_PATTERN})/([a-z_]+)$")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.path.match(scope["path"]) if scope["type"] == "http" and not scope.get("root_path") else None
        if found is not None:
            if self.routes is None:
                self.routes = direct_routes(self.fastapi)
            prefix, model_id, rest = found.groups()
            direct = self.routes.get((scope["method"], prefix, rest))
            if direct is not None:
                return await self._answer(direct, model_id, scope, receive, send)
        await self.app(scope, receive, send)

    async def _answer(self, direct: _Route, model_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"], scope["endpoint"] = direct.route, direct.endpoint
        scope["path_params"] = {"model_id": model_id}
        request = Request(scope, receive, send)
        try:
            owner = await authenticate(request, await bearer(request))
            response = await direct.endpoint(await direct.resolve(model_id, request, owner))
        except Exception as exc:
            response = error_for(exc, scope)
            if response is None:
                raise
        await response(scope, receive, send)
