"""The tensor codec: numpy arrays <-> Open Inference Protocol tensor objects, list or binary form.

A request payload is plain JSON-able data in which numpy arrays may appear anywhere; each
array becomes a tensor object (DESIGN section 3)::

    {"shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}      # list form
    {"shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}      # binary form

In binary form the body is the JSON text followed by each tensor's raw little-endian bytes in
the order the tensor objects appear in that text; the JSON part's length travels in the
``Inference-Header-Content-Length`` header. Decoding turns every tensor object of a response
back into an array of its datatype, whichever form it came in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

JSON_LENGTH_HEADER = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype] = {
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
}
_NAMES = {dtype: name for name, dtype in DATATYPES.items()}


def as_tensor(x: Any, dtype: Any = None) -> np.ndarray:
    """Returns ``x`` as an array of a wire datatype: floats and booleans in ``dtype`` (if given,
    else float32 unless float64), integers as INT32 or INT64."""
    arr = np.asarray(x)
    if arr.dtype.kind in "fb":  # booleans are 0/1 targets (bce_with_logits), not labels
        target = np.dtype(dtype) if dtype is not None else arr.dtype
        if target not in _NAMES or target.kind != "f":  # float16 and friends travel as float32
            target = np.dtype(np.float32)
        return arr.astype(target, copy=False)
    if arr.dtype.kind in "iu":
        return arr if arr.dtype in _NAMES else arr.astype(np.int64)
    raise TypeError(f"cannot send an array of dtype {arr.dtype} (want float or int)")


# A binary body of more than this many bytes is sent as pieces of at most this size, views of the
# arrays, instead of one joined copy. A fresh copy of a large body faults its pages in, and the
# sync transport re-slices (copies) what a partial send left: measured, adding 25.8 MB of rows
# took the client 40 ms as one body against 22 for http.client sending it.
PIECE_BYTES = 1 << 20


class Rows:
    """One tensor made of the rows of several arrays of one dtype and row shape, one after the
    other: in binary form each array's bytes are sent as they are, not joined into a new array
    first (a fit's training and validation rows, added to one data set in one request)."""

    def __init__(self, *blocks: np.ndarray) -> None:
        if not blocks or any(b.dtype != blocks[0].dtype or b.shape[1:] != blocks[0].shape[1:] for b in blocks):
            raise ValueError("Rows takes arrays of one dtype and one row shape")
        self.blocks = blocks
        self.dtype = blocks[0].dtype
        self.shape = (sum(len(b) for b in blocks), *blocks[0].shape[1:])


def encode(payload: Mapping[str, Any], *, binary: bool) -> tuple[bytes, dict[str, str]]:
    """Returns the request body and its headers for a payload that may hold numpy arrays."""
    pieces, headers = encode_pieces(payload, binary=binary)
    return b"".join(pieces), headers


def encode_pieces(payload: Mapping[str, Any], *, binary: bool) -> tuple[list[bytes | memoryview], dict[str, str]]:
    """Returns the request body as pieces to send one after the other, and its headers: the JSON
    text, then (binary form) views of the arrays' bytes in pieces of at most PIECE_BYTES; a body
    of PIECE_BYTES or less is one bytes object."""
    buffers: list[memoryview] = []  # views of the arrays, not copies
    document = _to_wire(payload, buffers if binary else None, copy=False)
    if not buffers:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
        return [text], {"Content-Type": "application/json"}
    document["binary_data_output"] = True
    text = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    headers = {"Content-Type": "application/octet-stream", JSON_LENGTH_HEADER: str(len(text))}
    size = len(text) + sum(len(buffer) for buffer in buffers)
    if size <= PIECE_BYTES:
        return [b"".join([text, *buffers])], headers
    pieces: list[bytes | memoryview] = [text]
    for buffer in buffers:
        pieces.extend(buffer[start:start + PIECE_BYTES] for start in range(0, len(buffer), PIECE_BYTES))
    return pieces, {**headers, "Content-Length": str(size)}


def encode_frame(payload: Mapping[str, Any], *, binary: bool) -> list[bytes | memoryview]:
    """Returns one frame of a stream of messages (``train_steps``), in pieces to send one after
    the other: the JSON text on one line, then the raw bytes of its binary tensors (views of
    the arrays, not copies)."""
    buffers: list[bytes | memoryview] = []
    document = _to_wire(payload, buffers if binary else None, copy=False)
    return [json.dumps(document, separators=(",", ":"), allow_nan=False).encode() + b"\n", *buffers]


def decode(content: bytes, headers: Mapping[str, str]) -> Any:
    """Returns the response body as JSON data with every tensor object turned into an array."""
    if not content:
        return None
    json_length = headers.get(JSON_LENGTH_HEADER)
    if json_length is None:
        return _from_wire(json.loads(content), None)
    n = int(json_length)
    chunks = _Chunks(memoryview(content)[n:])
    document = _from_wire(json.loads(content[:n]), chunks)
    chunks.check_consumed()
    return document


def _to_wire(value: Any, buffers: list | None, copy: bool = True) -> Any:
    # Walks in insertion order, which is the order json.dumps writes, so buffers line up.
    if isinstance(value, np.ndarray):
        return _tensor_object(as_tensor(value), buffers, copy)
    if isinstance(value, Rows):
        if buffers is None:  # list form: the numbers are written out anyway
            return _tensor_object(as_tensor(np.concatenate(value.blocks)), None)
        parts = [_tensor_object(as_tensor(block), buffers, copy) for block in value.blocks]
        size = sum(part["parameters"]["binary_data_size"] for part in parts)
        return {"shape": list(value.shape), "datatype": parts[0]["datatype"], "parameters": {"binary_data_size": size}}
    if isinstance(value, Mapping):
        return {str(k): _to_wire(v, buffers, copy) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v, buffers, copy) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tensor_object(arr: np.ndarray, buffers: list | None, copy: bool = True) -> dict[str, Any]:
    obj: dict[str, Any] = {"shape": list(arr.shape), "datatype": _NAMES[arr.dtype]}
    if buffers is not None:
        contiguous = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        raw = contiguous.tobytes() if copy else memoryview(contiguous.reshape(-1).view(np.uint8))
        buffers.append(raw)
        obj["parameters"] = {"binary_data_size": len(raw)}
    elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
        # Bare NaN is not JSON; strings keep the body valid (the server then says 422, not 400).
        obj["data"] = [_finite_or_string(v) for v in arr.ravel().tolist()]
    else:
        obj["data"] = arr.ravel().tolist()
    return obj


def _finite_or_string(v: float) -> float | str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _from_wire(value: Any, chunks: _Chunks | None) -> Any:
    if isinstance(value, dict):
        if _is_tensor_object(value):
            return _tensor_from_object(value, chunks)
        return {k: _from_wire(v, chunks) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v, chunks) for v in value]
    return value


def _is_tensor_object(obj: dict[str, Any]) -> bool:
    return "datatype" in obj and "shape" in obj and ("data" in obj or "parameters" in obj)


def _tensor_from_object(obj: dict[str, Any], chunks: _Chunks | None) -> np.ndarray:
    dtype = DATATYPES[obj["datatype"]]
    shape = tuple(obj["shape"])
    size = (obj.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if chunks is None:
            raise ValueError("binary tensor in a response without binary data")
        raw = chunks.take(int(size))
        return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    # numpy parses the strings "NaN", "Infinity" and "-Infinity" itself.
    return np.array(obj["data"], dtype=dtype).reshape(shape)


class _Chunks:
    """Hands out the binary part of a body tensor by tensor, in order."""

    def __init__(self, view: memoryview) -> None:
        self.view, self.offset = view, 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.view):
            raise ValueError("binary tensor sizes exceed the body")
        chunk = self.view[self.offset : self.offset + size]
        self.offset += size
        return chunk.tobytes()

    def check_consumed(self) -> None:
        if self.offset != len(self.view):
            raise ValueError(f"{len(self.view) - self.offset} unclaimed bytes after the tensors")

