"""Bearer-key authentication: who is asking, as the owner id their models are filed under."""

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ServiceError

bearer = HTTPBearer(auto_error=False, description="One of GRADSERVE_API_KEYS, when the server sets any.")


def owner_id(key: str) -> str:
    """Gives the owner id of an API key: its SHA-256, so keys never reach the disk."""
    return hashlib.sha256(key.encode()).hexdigest()


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str | None:
    """Gives the caller's owner id (None when the server has no keys), or raises 401."""
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return None
    token = credentials.credentials.encode() if credentials else b""
    matched = False
    for key in keys:  # compare against every key, in constant time, whatever matches
        matched |= hmac.compare_digest(token, key.encode())
    if not matched:
        raise ServiceError(401, "unauthorized", "missing or wrong API key (Authorization: Bearer <key>)",
                           headers={"WWW-Authenticate": "Bearer"})
    return owner_id(token.decode())


async def caller(request: Request) -> str | None:
    """Gives `authenticate`'s answer for a request taken outside FastAPI's dependencies
    (service/direct.py), reading the Authorization header only when the server has keys."""
    if not request.app.state.settings.api_keys:
        return None
    return await authenticate(request, await bearer(request))


OwnerDep = Annotated[str | None, Depends(authenticate)]
