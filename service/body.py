"""Request bodies: read within the size limit, split JSON from binary, validate into a model.

Routes that take tensors read their body here rather than through FastAPI's own body
parameter, because a body may be binary (the JSON part followed by raw tensor bytes).
"""

from collections.abc import AsyncIterator
from typing import TypeVar

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from service import listform
from service.errors import ServiceError, field_errors, invalid
from service.protocol import ALIGN, BODY_EXTENSION, aligned_buffer  # noqa: F401 (ALIGN: read here by tests)
from service.tensors import HEADER, Decoder, Tensor, attach_binary, binary_size, byte_count, split_message
from service.threads import off_loop

M = TypeVar("M", bound=BaseModel)

# Bodies bigger than this are parsed on a worker thread so the event loop stays free. Any of
# listform.MIN_BYTES or more has its numeric arrays parsed without a Python float per element
# (service/listform.py).
OFFLOAD_BYTES = 256 * 1024


async def frames(request: Request, limit: int) -> AsyncIterator[tuple[dict, memoryview]]:
    """Yields (JSON object, binary part) for each frame of a stream of messages.

    A frame is one message on one line, JSON text then a newline (NDJSON), followed by the raw
    bytes of its binary tensors when it has any (their binary_data_size, in order). Each frame
    is held to `limit` bytes; the stream as a whole is not. Stopped early (a bad frame, or the
    caller done with it), it still reads the rest of the body, so that a client still sending
    gets its answer.
    """
    stream = request.stream()
    buffer, scanned, head = bytearray(), 0, None  # head: (message, where its bytes start, how many)
    try:
        async for chunk in stream:
            buffer += chunk
            while True:
                if head is None:
                    end = buffer.find(b"\n", scanned)
                    if end < 0:
                        scanned = len(buffer)
                        if scanned > limit:
                            raise _too_large(scanned, limit)
                        break
                    line = bytes(buffer[:end])
                    if not line.strip():  # a blank line between frames is no frame
                        del buffer[:end + 1]
                        scanned = 0
                        continue
                    message = await off_loop(load_json, line) if end > OFFLOAD_BYTES else load_json(line)
                    head = (message, end + 1, binary_size(message))
                    if end + 1 + head[2] > limit:
                        raise _too_large(end + 1 + head[2], limit)
                message, start, size = head
                if len(buffer) < start + size:
                    break
                with memoryview(buffer) as view:  # one copy, whose start (and so its tensors) is aligned
                    binary = memoryview(bytes(view[start:start + size]))
                del buffer[:start + size]
                head, scanned = None, 0
                yield message, binary
        if head is not None or buffer.strip():
            raise invalid(["body"], "the stream ends inside a frame: each frame is one JSON line (then its "
                          "binary tensors' bytes), the last one ending with a newline too")
    except ClientDisconnect:
        raise ServiceError(499, "client_disconnected", "the client closed the connection mid-stream") from None
    finally:
        try:
            async for _ in stream:  # whatever the client still sends
                pass
        except ClientDisconnect:
            pass


async def read_body(request: Request, limit: int, aligned_at: int | None = None) -> bytes | memoryview:
    """Gives the raw body, refusing with 413 as soon as it is known to exceed `limit` bytes, and
    with 415 a compressed one (it would be read as garbage: a byte count that does not add up).

    With `aligned_at` (where a binary body's tensors start) and a Content-Length, the body is
    read into a buffer where that byte is aligned, so that its tensors are read in place
    rather than copied once more to align them: the one service/protocol.py read it into, when
    it did."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ServiceError(415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported; "
                           f"send the body uncompressed")
    declared = request.headers.get("content-length")
    declared = int(declared) if declared is not None and byte_count(declared) else None
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:  # nobody will read the answer; a client may always go away
        raise ServiceError(499, "client_disconnected",
                           f"the client closed the connection after {size} bytes of its body") from None
    whole = getattr(request, "scope", {}).get("extensions", {}).get(BODY_EXTENSION)  # (a test's stand-in has none)
    if whole is not None and len(whole) == size:
        return whole
    if aligned_at is None or declared != size or not 0 <= aligned_at <= size or len(chunks) < 2:
        return b"".join(chunks)  # (one chunk: bytes as they came; a binary tensor in it is copied if unaligned)
    return _aligned_join(chunks, size, aligned_at)


def _aligned_join(chunks: list[bytes], size: int, aligned_at: int) -> memoryview:
    """Gives the chunks joined in one buffer whose byte `aligned_at` is aligned."""
    body = aligned_buffer(size, aligned_at)
    at = 0
    for chunk in chunks:
        body[at:at + len(chunk)] = chunk
        at += len(chunk)
    return body


def _too_large(size: int, limit: int) -> ServiceError:
    return ServiceError(413, "body_too_large",
                        f"the body has at least {size} bytes, over the limit of {limit} (GRADSERVE_MAX_BODY_BYTES)")


async def parse_body(request: Request, model: type[M], limit: int, decoder: Decoder | None = None) -> M:
    """Gives the request body as `model`: JSON, or binary form with its tensors attached.

    With a `decoder`, its tensor fields are decoded into arrays too: on a worker thread with
    the parsing when the body is big, and before the route waits for its model's lock.
    """
    header = request.headers.get(HEADER)
    aligned_at = int(header) if header is not None and byte_count(header) else None
    body = await read_body(request, limit, aligned_at)
    json_part, binary = split_message(body, header)
    if len(json_part) > OFFLOAD_BYTES:  # list-form tensors: parsing them takes a while
        return await off_loop(parse_parts, json_part, binary, model, decoder)
    return parse_parts(json_part, binary, model, decoder)


def parse_message(body: bytes, header: str | None, model: type[M]) -> M:
    """Gives `model` validated from a JSON or binary-form message (400 / 422 otherwise)."""
    return parse_parts(*split_message(body, header), model)


def parse_parts(json_part: memoryview, binary: memoryview, model: type[M], decoder: Decoder | None = None) -> M:
    """Gives `model` validated from the JSON part, binary tensors taken from `binary` (and, with a
    `decoder`, every tensor field decoded into an array)."""
    return validated(load_json(json_part), binary, model, decoder)


def load_json(json_part: memoryview) -> dict:
    """Gives the JSON object of a message (400 if it is no JSON, 422 if no object)."""
    if not json_part:
        json_part = memoryview(b"{}")  # an empty body means every field takes its default
    message = listform.loads(json_part) if len(json_part) >= listform.MIN_BYTES else None
    if message is None:
        try:
            message = orjson.loads(json_part)
        except orjson.JSONDecodeError as exc:
            raise ServiceError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ServiceError(422, "validation_error",
                           [{"loc": ["body"], "msg": "the body must be a JSON object", "type": "dict_type"}])
    return message


def validated(message: dict, binary: memoryview, model: type[M], decoder: Decoder | None = None) -> M:
    """Gives `model` validated from a message's JSON object and its binary part (see parse_parts)."""
    attach_binary(message, binary)
    try:
        parsed = model.model_validate(message)
    except ValidationError as exc:
        raise ServiceError(422, "validation_error", field_errors(exc.errors(), prefix=("body",))) from None
    if decoder is not None:
        decode_fields(parsed, decoder)
    return parsed


def decode_fields(body: BaseModel, decoder: Decoder, loc: tuple = ()) -> None:
    """Replaces each tensor field of `body` (and each tensor of a dict or list field, and those
    of a list of request models) by its array; `loc` is where `body` sits in the request's.

    `targets` (labels) and `rows` (row indices): integer data without a datatype becomes INT64.
    """
    for name in type(body).model_fields:
        value = getattr(body, name)
        if isinstance(value, Tensor):
            setattr(body, name, decoder(value, (*loc, name), labels=name in ("targets", "rows")))
        elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), Tensor):
            setattr(body, name, {key: decoder(tensor, (name, key)) for key, tensor in value.items()})
        elif isinstance(value, list) and value and isinstance(value[0], Tensor):
            setattr(body, name, [decoder(tensor, (name, index)) for index, tensor in enumerate(value)])
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):  # after Tensor, itself a model
            for index, item in enumerate(value):
                decode_fields(item, decoder, (*loc, name, index))
