"""Errors raised by the gradserve client, one class per failure the caller may handle.

::

    GradserveError
    ├── APIError                      the server answered with an error (.status, .code, .detail)
    │   ├── BadRequestError           400  malformed body
    │   ├── AuthenticationError       401  missing or wrong API key
    │   ├── NotFoundError             404  unknown model, or unknown / used / evicted tape
    │   ├── ConflictError             409  state conflict (e.g. model id taken)
    │   │   ├── StaleTapeError             code "stale_tape": backward after a step or PUT parameters
    │   │   ├── NothingToStepError         code "nothing_to_step": step with no accumulated gradients
    │   │   ├── NonFiniteGradientError     code "non_finite_gradient": step refused, gradients cleared
    │   │   └── NonFiniteUpdateError       code "non_finite_update": the update would overflow (lr too big)
    │   ├── PayloadTooLargeError      413  body or tensor over a server limit
    │   ├── ValidationError           422  invalid spec or tensor; .errors is the server's
    │   │                                  list of {"loc", "msg", "type"}
    │   └── ServerError               5xx  a server bug (or a proxy in front of it)
    │       └── DeadlineExceededError      code "deadline_exceeded": over GRADSERVE_REQUEST_TIMEOUT_SECONDS
    └── APIConnectionError            no answer: connection refused, reset, ...
        └── APITimeoutError           no answer in time

Every status is mapped to its class in one place, :func:`error_from_response`.
"""

from __future__ import annotations

from typing import Any

from ._types import TrainStepResult, from_body

__all__ = [
    "GradserveError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "StaleTapeError",
    "NothingToStepError",
    "NonFiniteGradientError",
    "NonFiniteUpdateError",
    "PayloadTooLargeError",
    "ValidationError",
    "ServerError",
    "DeadlineExceededError",
    "APIConnectionError",
    "APITimeoutError",
    "error_from_response",
]


class GradserveError(Exception):
    """Base of every error this client raises."""


class APIError(GradserveError):
    """The server answered with a non-2xx status."""

    def __init__(self, status: int, code: str | None, detail: Any, body: Any = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body  # the whole decoded answer (train_steps adds "batch" and "completed")
        super().__init__(f"{status} {code or 'error'}: {_describe(detail)}")


class BadRequestError(APIError):
    """400: the body could not be parsed."""


class AuthenticationError(APIError):
    """401: missing or wrong API key."""


class NotFoundError(APIError):
    """404: unknown model (or one owned by another key), or unknown tape."""


class ConflictError(APIError):
    """409: the request conflicts with the model's state."""


class StaleTapeError(ConflictError):
    """409 stale_tape: the tape was made before a step or a parameter update."""


class NothingToStepError(ConflictError):
    """409 nothing_to_step: step called with no accumulated gradients."""


class NonFiniteGradientError(ConflictError):
    """409 non_finite_gradient: the step was refused, parameters untouched, gradients cleared."""


class NonFiniteUpdateError(ConflictError):
    """409 non_finite_update: the update would leave a parameter NaN or Inf (a learning rate far
    too big); the step was refused, parameters and learning rate untouched, gradients cleared."""


class PayloadTooLargeError(APIError):
    """413: a body or tensor over the server's limits."""


class ValidationError(APIError):
    """422: invalid spec or tensor; ``errors`` lists ``{"loc", "msg", "type"}`` entries."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        if isinstance(self.detail, list):
            return self.detail
        return [{"loc": [], "msg": str(self.detail), "type": self.code or "invalid"}]


class ServerError(APIError):
    """5xx: the server failed; the request may or may not have taken effect."""


class DeadlineExceededError(ServerError):
    """503 deadline_exceeded: the work did not finish within the server's time budget
    (GRADSERVE_REQUEST_TIMEOUT_SECONDS) and was stopped with the model unchanged; ask for less
    (a smaller max_entries, mode="directional"). Not retried."""


class APIConnectionError(GradserveError):
    """The server could not be reached, or the connection broke before an answer."""


class APITimeoutError(APIConnectionError):
    """The server did not answer in time."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
}

_CONFLICTS_BY_CODE: dict[str, type[ConflictError]] = {
    "stale_tape": StaleTapeError,
    "nothing_to_step": NothingToStepError,
    "non_finite_gradient": NonFiniteGradientError,
    "non_finite_update": NonFiniteUpdateError,
}


def error_from_response(status: int, body: Any) -> APIError:
    """Returns the exception for an error response (``body``: decoded JSON, or text)."""
    if isinstance(body, dict):
        code, detail = body.get("code"), body.get("detail", body)
    else:
        code, detail = None, body
    if status == 409 and code in _CONFLICTS_BY_CODE:
        cls: type[APIError] = _CONFLICTS_BY_CODE[code]
    elif status >= 500:
        cls = DeadlineExceededError if code == "deadline_exceeded" else ServerError
    else:
        cls = _BY_STATUS.get(status, APIError)
    return cls(status, code, detail, body)


def _describe(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI style: [{"loc": [...], "msg": ...}, ...]
        return "; ".join(
            f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" if isinstance(e, dict) else str(e)
            for e in detail
        )
    return str(detail)


def stream_failure(error: APIError) -> tuple[int, list[TrainStepResult]]:
    """Returns (the index of the batch that failed, the steps applied before it) of a train_steps error."""
    body = error.body if isinstance(error.body, dict) else {}
    completed = [from_body(TrainStepResult, step) for step in body.get("completed") or []]
    return body.get("batch", len(completed)), completed
