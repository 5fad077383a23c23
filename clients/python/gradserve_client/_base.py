"""What Client and AsyncClient share, with no I/O: settings, requests, answers, the retry policy.

Every API call is first described as a :class:`Call` (method, path, payload, whether it is
safe to replay, how to read the answer); the two clients only differ in how they send it.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import _codec
from ._exceptions import APIConnectionError, APITimeoutError, error_from_response

__version__ = "0.1.0"

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2

# Without TCP_NODELAY a request's headers and body go out as two segments and the body waits
# for the server's delayed ACK (tens of ms per call on loopback); urllib3 sets it too.
SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

# URLs joined to the base URL, kept by path: httpx parses a URL anew for every join (~20 us),
# and a model's calls go to a few paths over and over. A plain dict, not an lru_cache of a bound
# method, which would make each client a reference cycle.
URLS_KEPT = 1024

# Nothing reached the server: replaying any request is safe.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The server (or a proxy) asks to try again later; replayed only when the call is idempotent.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Call:
    """One API call: the request to send and how to read its answer."""

    method: str
    path: str
    payload: Any = None  # JSON-able, numpy arrays allowed anywhere
    params: dict[str, Any] | None = None  # query string
    tensor_answer: bool = False  # a GET whose answer holds tensors (binary on request)
    content: Any = None  # a raw body instead: bytes (checkpoint import), or an iterable of frames
    content_type: str = "application/octet-stream"
    idempotent: bool = False  # safe to replay after the request may have reached the server
    raw: bool = False  # answer is bytes (checkpoint download), not JSON
    read: Callable[[Any], Any] = field(default=lambda body: body)


class _AsyncPieces:
    """A body's pieces as the async transport takes them (an async iterable, and not a plain
    iterable, which httpx would take for a sync body)."""

    def __init__(self, pieces: list[bytes | memoryview]) -> None:
        self.pieces = pieces

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece


class BaseClient:
    """Settings, URL building, encoding, decoding and error mapping shared by both clients."""

    initial_retry_delay = 0.5
    max_retry_delay = 8.0

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        binary: bool,
    ) -> None:
        base_url = base_url or os.environ.get("GRADSERVE_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self.api_key = api_key if api_key is not None else os.environ.get("GRADSERVE_API_KEY")
        self.timeout = DEFAULT_TIMEOUT if timeout is None else httpx.Timeout(timeout)
        if max_retries < 0:
            raise ValueError(f"Invalid max_retries: {max_retries}")
        self.max_retries = max_retries
        self.binary = binary
        self._urls: dict[str, httpx.URL] = {}

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= URLS_KEPT:
                self._urls.clear()
            url = self._urls[path] = self.base_url.join(path.lstrip("/"))
        return url

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"gradserve-client/{__version__}", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _build_request(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        headers = self._headers()
        params = call.params
        if call.tensor_answer and self.binary:
            params = {**(params or {}), "binary_data_output": "true"}  # a GET has no body to carry the flag
        content = call.content
        if content is not None:
            headers["Content-Type"] = call.content_type
        elif call.payload is not None:
            pieces, body_headers = _codec.encode_pieces(call.payload, binary=self.binary)
            headers.update(body_headers)
            if len(pieces) == 1:
                content = pieces[0]
            else:  # sent piece by piece, under the Content-Length of their sum
                content = pieces if isinstance(http, httpx.Client) else _AsyncPieces(pieces)
        return http.build_request(  # params None, not {}: httpx would parse the URL again to merge nothing
            call.method, self._url(call.path), params=params or None, content=content, headers=headers,
            timeout=self.timeout,
        )

    def _read_response(self, response: httpx.Response, call: Call) -> Any:
        if response.is_error:
            raise error_from_response(response.status_code, _error_body(response))
        if call.raw:
            return call.read(response.content)
        return call.read(_codec.decode(response.content, response.headers))

    def _should_retry(
        self,
        call: Call,
        attempt: int,
        *,
        error: httpx.TransportError | None = None,
        response: httpx.Response | None = None,
    ) -> bool:
        if attempt >= self.max_retries:
            return False
        if error is not None:
            return isinstance(error, _NOT_SENT) or call.idempotent
        if response is None or not call.idempotent or response.status_code not in _RETRY_STATUSES:
            return False
        return _error_code(response) != "deadline_exceeded"  # the same work would run out of time again

    def _retry_delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        """Returns the seconds to wait before retry ``attempt + 1``: exponential, with jitter."""
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after is not None and retry_after.isdigit():
            return min(float(retry_after), self.max_retry_delay)
        delay = min(self.initial_retry_delay * 2**attempt, self.max_retry_delay)
        return delay * (0.75 + 0.25 * random.random())


def connection_error(error: httpx.TransportError) -> APIConnectionError:
    """Returns the client error for a transport failure."""
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(f"request timed out: {error!r}")
    return APIConnectionError(f"connection failed: {error!r}")


def _error_code(response: httpx.Response) -> str | None:
    body = _error_body(response)
    return body.get("code") if isinstance(body, dict) else None


def _error_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text or response.reason_phrase
