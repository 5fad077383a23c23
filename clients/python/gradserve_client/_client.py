"""Client (httpx.Client) and AsyncClient (httpx.AsyncClient), mirroring each other method for method."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ._base import DEFAULT_MAX_RETRIES, SOCKET_OPTIONS, BaseClient, Call, connection_error
from ._model import AsyncRemoteModel, RemoteModel, model_info


class ClientCalls(BaseClient):
    """Builds the calls that are not about one model; ``_model_class`` wraps the answers."""

    _model_class: type[RemoteModel] | type[AsyncRemoteModel]

    def _wrap(self, body: dict[str, Any]) -> Any:
        return self._model_class(self, model_info(body))  # type: ignore[arg-type]

    def _create_model_call(self, spec: dict[str, Any] | None, keywords: dict[str, Any]) -> Call:
        # Not idempotent: a replay would make a second model, or hit "id taken".
        return Call("POST", "/v1/models", {**(spec or {}), **keywords}, read=self._wrap)

    def _model_call(self, model_id: str) -> Call:
        return Call("GET", f"/v1/models/{quote(model_id, safe='')}", idempotent=True, read=self._wrap)

    def _list_models_call(self) -> Call:
        def read(body: Any) -> list[Any]:
            infos = body["models"] if isinstance(body, dict) else body
            return [self._wrap(info) for info in infos]

        return Call("GET", "/v1/models", idempotent=True, read=read)

    def _import_checkpoint_call(self, checkpoint: str | Path | bytes, model_id: str | None) -> Call:
        content = checkpoint if isinstance(checkpoint, bytes) else Path(checkpoint).read_bytes()
        params = None if model_id is None else {"id": model_id}
        return Call("POST", "/v1/models/import", params=params, content=content, read=self._wrap)


class Client(ClientCalls):
    """A synchronous gradserve client.

    >>> with Client("http://127.0.0.1:8000") as client:
    ...     model = client.create_model(layers=[...], loss={"type": "mse"})
    ...     model.train_step(x, y).loss

    ``base_url`` and ``api_key`` default to the GRADSERVE_BASE_URL and GRADSERVE_API_KEY
    environment variables. Arrays travel in binary form unless ``binary=False``.
    """

    _model_class = RemoteModel

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        binary: bool = True,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, binary)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            timeout=self.timeout, transport=httpx.HTTPTransport(socket_options=SOCKET_OPTIONS)
        )

    def close(self) -> None:
        """Closes the connection pool (unless it was passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_model(self, spec: dict[str, Any] | None = None, **keywords: Any) -> RemoteModel:
        """Returns a new model built from ``spec`` (DESIGN section 4), keywords updating it."""
        return self._call(self._create_model_call(spec, keywords))

    def model(self, model_id: str) -> RemoteModel:
        """Returns the existing model ``model_id``."""
        return self._call(self._model_call(model_id))

    def list_models(self) -> list[RemoteModel]:
        """Returns every model visible to this client's key."""
        return self._call(self._list_models_call())

    def import_checkpoint(self, checkpoint: str | Path | bytes, *, id: str | None = None) -> RemoteModel:
        """Returns a new model made from a safetensors checkpoint (a path, or its bytes).

        The model takes the checkpoint's id unless ``id`` is given (ConflictError if taken).
        """
        return self._call(self._import_checkpoint_call(checkpoint, id))

    def _call(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.send(self._build_request(self._http, call))
            except httpx.TransportError as error:
                if not self._should_retry(call, attempt, error=error):
                    raise connection_error(error) from error
                time.sleep(self._retry_delay(attempt))
            else:
                if not self._should_retry(call, attempt, response=response):
                    return self._read_response(response, call)
                time.sleep(self._retry_delay(attempt, response))
            attempt += 1


class AsyncClient(ClientCalls):
    """An asyncio gradserve client; the same methods as :class:`Client`, awaited.

    >>> async with AsyncClient("http://127.0.0.1:8000") as client:
    ...     models = [await client.create_model(spec) for _ in range(4)]
    ...     await asyncio.gather(*(m.fit(x, y, epochs=5) for m in models))
    """

    _model_class = AsyncRemoteModel

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        binary: bool = True,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, binary)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=self.timeout, transport=httpx.AsyncHTTPTransport(socket_options=SOCKET_OPTIONS)
        )

    async def close(self) -> None:
        """Closes the connection pool (unless it was passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def create_model(self, spec: dict[str, Any] | None = None, **keywords: Any) -> AsyncRemoteModel:
        """Returns a new model built from ``spec`` (DESIGN section 4), keywords updating it."""
        return await self._call(self._create_model_call(spec, keywords))

    async def model(self, model_id: str) -> AsyncRemoteModel:
        """Returns the existing model ``model_id``."""
        return await self._call(self._model_call(model_id))

    async def list_models(self) -> list[AsyncRemoteModel]:
        """Returns every model visible to this client's key."""
        return await self._call(self._list_models_call())

    async def import_checkpoint(self, checkpoint: str | Path | bytes, *, id: str | None = None) -> AsyncRemoteModel:
        """Returns a new model made from a safetensors checkpoint (a path, or its bytes).

        The model takes the checkpoint's id unless ``id`` is given (ConflictError if taken).
        """
        return await self._call(self._import_checkpoint_call(checkpoint, id))

    async def _call(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.send(self._build_request(self._http, call))
            except httpx.TransportError as error:
                if not self._should_retry(call, attempt, error=error):
                    raise connection_error(error) from error
                await asyncio.sleep(self._retry_delay(attempt))
            else:
                if not self._should_retry(call, attempt, response=response):
                    return self._read_response(response, call)
                await asyncio.sleep(self._retry_delay(attempt, response))
            attempt += 1
