"""The one mapping from failures to HTTP answers: `{"detail": ..., "code": ...}`, and under
/v2 the Open Inference Protocol's `{"error": "<message>"}` with the same status.

    ServiceError            raised by the service itself (400, 401, 404, 409, 413, 422; 499 for a
                            client gone mid-request, 503 deadline_exceeded for work past its budget)
    core.SpecError          422 invalid_spec          (detail: [{loc, msg, type}])
    core.InputError         422 invalid_input         (detail: [{loc, msg, type}])
    core.CheckpointError    422 invalid_checkpoint
    core.StaleTapeError     409 stale_tape
    core.NothingToStepError 409 nothing_to_step
    core.NonFiniteGradientError 409 non_finite_gradient
    core.NonFiniteUpdateError   409 non_finite_update
    core.ExportError        501 export_unavailable    (the export's package is not installed, or a
                                                      layer has no rule in the format)
    RequestValidationError  422 validation_error      (FastAPI's, without echoing input)
    HTTPException           its status (404 unknown route, 405, ...)
    anything else           500 internal_error, logged with its traceback, bare message
"""

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import (
    CheckpointError,
    ExportError,
    InputError,
    NonFiniteGradientError,
    NonFiniteUpdateError,
    NothingToStepError,
    SpecError,
    StaleTapeError,
)

log = logging.getLogger("gradserve")

CORE_ERRORS: dict[type[Exception], tuple[int, str]] = {
    SpecError: (422, "invalid_spec"),
    InputError: (422, "invalid_input"),
    CheckpointError: (422, "invalid_checkpoint"),
    StaleTapeError: (409, "stale_tape"),
    NothingToStepError: (409, "nothing_to_step"),
    NonFiniteGradientError: (409, "non_finite_gradient"),
    NonFiniteUpdateError: (409, "non_finite_update"),
    ExportError: (501, "export_unavailable"),
}

HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
              405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


class ServiceError(Exception):
    """A failure the service names itself, with its status and `code`."""

    def __init__(self, status: int, code: str, detail: Any, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers

    def __reduce__(self):  # pickled whole: a model host on Ray raises it in another process
        return type(self), (self.status, self.code, self.detail, self.headers)


class ModelNotFound(ServiceError):
    """404 model_not_found: no such model for this caller (or it was deleted meanwhile)."""

    @classmethod
    def of(cls, model_id: str) -> "ModelNotFound":
        return cls(404, "model_not_found", f"no model {model_id!r}")


def invalid(loc: Sequence[str | int], msg: str, type: str = "value_error") -> ServiceError:
    """Gives a 422 naming one field, in FastAPI's `[{loc, msg, type}]` form."""
    return ServiceError(422, "validation_error", [{"loc": list(loc), "msg": msg, "type": type}])


def error_response(status: int, code: str, detail: Any, headers: dict[str, str] | None = None,
                   path: str = "") -> Response:
    """Gives the JSON error body every failure on `path` is answered with: `{"detail", "code"}`,
    or `{"error": "<message>"}` under /v2 (the protocol's form: Triton clients read `error`)."""
    if path == "/v2" or path.startswith("/v2/"):
        body = orjson.dumps({"error": message_of(detail)})
    else:
        body = orjson.dumps({"detail": detail, "code": code})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def app_path(scope: dict) -> str:
    """Gives the request's path within the app (without the root_path it is mounted under)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def message_of(detail: Any) -> str:
    """Gives a detail as one line: a list of {loc, msg} as "body.inputs.0.data: msg; ..."."""
    if not isinstance(detail, list):
        return str(detail)
    return "; ".join(f"{'.'.join(map(str, error.get('loc', ())))}: {error.get('msg', '')}"
                     if isinstance(error, dict) else str(error) for error in detail)


def field_errors(errors: Sequence[dict], prefix: Sequence[str | int] = ()) -> list[dict]:
    """Gives `[{loc, msg, type}]` from pydantic's or core's error dicts, without the input."""
    return [
        {"loc": [*prefix, *error.get("loc", ())], "msg": str(error.get("msg", "")),
         "type": str(error.get("type", "value_error"))}
        for error in errors
    ]


def _core_detail(exc: Exception, status: int) -> Any:
    if status == 422:
        errors = getattr(exc, "errors", None)
        if errors:
            return field_errors(errors, prefix=("body",))
        return [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]
    return str(exc)


def answer_for(exc: Exception) -> tuple[int, str, Any] | None:
    """Gives (status, code, detail) for a failure this mapping knows, None for a bug."""
    if isinstance(exc, ServiceError):
        return exc.status, exc.code, exc.detail
    for cls in type(exc).__mro__:
        if cls in CORE_ERRORS:
            status, code = CORE_ERRORS[cls]
            return status, code, _core_detail(exc, status)
    return None


def error_for(exc: Exception, scope: Scope) -> Response | None:
    """Gives the answer to a failure this mapping knows, None for a bug."""
    answer = answer_for(exc)
    if answer is None:
        return None
    return error_response(*answer, headers=getattr(exc, "headers", None), path=app_path(scope))


async def _known_error(request: Request, exc: Exception) -> Response:
    response = error_for(exc, request.scope)
    if response is None:
        raise exc
    return response


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    return error_response(422, "validation_error", field_errors(exc.errors()), path=app_path(request.scope))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, exc.detail, getattr(exc, "headers", None), app_path(request.scope))


class CatchUnhandled:
    """ASGI middleware turning an unexpected exception into a logged, bare 500."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(500, "internal_error", "Internal Server Error", path=app_path(scope))
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Registers every handler above on `app`."""
    for cls in (ServiceError, *CORE_ERRORS):
        app.add_exception_handler(cls, _known_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(CatchUnhandled)
