"""The one tensor codec: KServe V2 tensor objects <-> NumPy arrays, in list or binary form.

List form:   {"shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}
             (data flat or nested; a bare nested list is accepted too, its shape inferred).
Binary form: the tensor object carries {"parameters": {"binary_data_size": <bytes>}} instead
             of data; the message is the JSON part (its length in the header
             `Inference-Header-Content-Length`) followed by each tensor's raw little-endian,
             row-major bytes, in the order the tensor objects appear in the JSON text.

Decoding never loops over elements in Python: the body is parsed by orjson and handed to
`np.asarray` (list form; from 2 KB up, service/listform.py parses numeric arrays straight into
one buffer) or viewed in place with `np.frombuffer` (binary form). Encoding
serialises arrays with orjson's NumPy support; non-finite values (slow path only) become the
strings "NaN", "Infinity" and "-Infinity".
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import orjson
from fastapi.responses import Response
from pydantic import ConfigDict, TypeAdapter, ValidationError

from service.errors import ServiceError, invalid
from service.listform import MAX_RANK, NumericArray
from service.tensor_object import DATATYPE_OF, DTYPES, HEADER, Tensor
from service.threads import off_loop

# -- decoding ----------------------------------------------------------------------------


def byte_count(header: str) -> bool:
    """Tells whether a header is a byte count: decimal digits only (int() would also take
    "2_5_1", " 25", "+25", and refuse more than 4,300 digits with a ValueError)."""
    return header.isascii() and header.isdigit() and len(header) <= 18


def split_message(body: bytes | memoryview, header: str | None) -> tuple[memoryview, memoryview]:
    """Gives the JSON part and the binary part of a request body."""
    whole = memoryview(body)
    if header is None:
        return whole, whole[:0]
    if not byte_count(header):
        raise invalid(["header", HEADER], f"{HEADER} must be a decimal integer, got {header[:40]!r}")
    length = int(header)
    if not 0 <= length <= len(body):
        raise invalid(["header", HEADER], f"{HEADER} is {length}, but the body has {len(body)} bytes")
    return whole[:length], whole[length:]


def attach_binary(message: dict, binary: memoryview) -> None:
    """Puts each binary tensor's bytes in its `data`, checking that the sizes add up to the body."""
    offset = 0
    for loc, tensor in _binary_tensors(message):
        size = tensor["parameters"]["binary_data_size"]
        size_loc = ["body", *loc, "parameters", "binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid(size_loc, "binary_data_size must be a non-negative integer")
        if tensor.get("data") is not None:
            raise invalid(["body", *loc, "data"], "give data or parameters.binary_data_size, not both")
        if offset + size > len(binary):
            raise invalid(size_loc, f"binary tensors need more than the {len(binary)} bytes after the JSON part")
        tensor["data"] = binary[offset:offset + size]
        offset += size
    if offset != len(binary):
        raise invalid(["body"], f"the binary part has {len(binary)} bytes, but its tensors declare {offset}")


def binary_size(message: dict) -> int:
    """Gives how many bytes the binary tensors of a message's JSON object declare (0 in list form)."""
    sizes = [tensor["parameters"]["binary_data_size"] for _, tensor in _binary_tensors(message)]
    return sum(size for size in sizes if isinstance(size, int) and not isinstance(size, bool) and size > 0)


def _binary_tensors(message: dict) -> Iterator[tuple[list, dict]]:
    """Yields (loc, tensor object) of binary tensors in the order they appear in the JSON text."""
    stack: list[tuple[list, dict]] = [([], message)]
    while stack:  # iterative pre-order walk: depth cannot overflow the Python stack
        loc, node = stack.pop()
        parameters = node.get("parameters")
        if isinstance(parameters, dict) and "binary_data_size" in parameters:
            yield loc, node
            continue
        children = []
        for key, value in node.items():
            if isinstance(value, dict):
                children.append(([*loc, key], value))
            elif isinstance(value, list) and value and isinstance(value[0], dict):  # /v2's lists of tensors;
                children.extend(([*loc, key, index], item)  # a list of numbers is never walked
                                for index, item in enumerate(value) if isinstance(item, dict))
        stack.extend(reversed(children))


def decode(value: Tensor | list, loc: tuple[str, ...], *, dtype: np.dtype, max_elements: int,
           labels: bool = False) -> np.ndarray:
    """Gives the ndarray a tensor object (or bare nested list) stands for, or raises 413/422.

    `dtype` is used when the tensor does not name its datatype; with `labels`, list data
    that holds only integers becomes INT64 instead (class labels).
    """
    loc = ("body", *loc)
    tensor = value if isinstance(value, Tensor) else Tensor(data=value)
    if tensor.datatype is not None:
        dtype = DTYPES[tensor.datatype]
    shape = tensor.shape
    if shape is not None:
        check_size(math.prod(shape), loc, max_elements)
    data = tensor.data
    if isinstance(data, memoryview):
        if shape is None:
            raise invalid([*loc, "shape"], "a binary tensor needs its shape")
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            raise invalid([*loc, "parameters", "binary_data_size"],
                          f"binary_data_size is {len(data)} bytes, shape {shape} of {DATATYPE_OF[dtype]} "
                          f"needs {expected}")
        array = np.frombuffer(data, dtype=dtype).reshape(shape)
        # The bytes start wherever the JSON part ends; BLAS wants aligned data, and a copy
        # of an unaligned tensor costs less than what unaligned loads cost the engine.
        return array if array.flags.aligned else array.copy()
    if isinstance(data, NumericArray):  # a float array, parsed by service/listform.py
        if dtype.kind != "f":  # its first value is written as a float: refused as the list way refuses it
            raise invalid([*loc, "data"], f"{DATATYPE_OF[dtype]} data must be integers: data{'[0]' * len(data.shape)} "
                          f"is float {str(float(data.values[0]))[:20]!r}", "int_type")
        with np.errstate(over="ignore"):  # past the dtype's range: inf, refused as non-finite later
            array = data.values.astype(dtype, copy=False)
        check_size(array.size, loc, max_elements)
        shape = data.shape if shape is None else shape
        if array.size != math.prod(shape):
            raise invalid([*loc, "data"], f"data has {array.size} values, shape {shape} needs {math.prod(shape)}")
        return array.reshape(shape)
    if not isinstance(data, list):
        raise invalid([*loc, "data"], "data must be a list of numbers (or use binary_data_size)")
    if labels and tensor.datatype is None:
        array = _from_list(data, None, [*loc, "data"])
        array = array if array.dtype.kind in "iu" else array.astype(dtype)
    else:
        array = _from_list(data, dtype, [*loc, "data"])
    check_size(array.size, loc, max_elements)
    if shape is None:
        return array
    if array.size != math.prod(shape):
        raise invalid([*loc, "data"], f"data has {array.size} values, shape {shape} needs {math.prod(shape)}")
    return array.reshape(shape)


@dataclass(frozen=True)
class Decoder:
    """`decode` bound to a model's dtype and the element limit; None stays None.

    `inputs` default to the dtype the model's inputs take (INT64 class indices for a model that
    starts with an embedding), everything else to the model's float dtype.
    """

    dtype: np.dtype
    max_elements: int
    input_dtype: np.dtype | None = None

    @classmethod
    def of(cls, model: Any, max_elements: int) -> "Decoder":
        """Gives the decoder for the requests of a model (a core Model, or a store's entry)."""
        return cls(model.dtype, max_elements, model.input_dtype)

    def __call__(self, value: Tensor | list | None, field: str | tuple[str, ...], *,
                 labels: bool = False) -> np.ndarray | None:
        if value is None:
            return None
        loc = (field,) if isinstance(field, str) else field
        dtype = self.input_dtype if loc == ("inputs",) and self.input_dtype is not None else self.dtype
        return decode(value, loc, dtype=dtype, max_elements=self.max_elements, labels=labels)


# JSON numbers only, never a string or a boolean that numpy would quietly turn into one
# (pydantic-core checks each element in Rust: ~7 ns each). The strings the API writes for
# non-finite outputs name what they stand for, and are refused later as non-finite inputs.
_STRICT = ConfigDict(strict=True)
_NAMED_NON_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})


@lru_cache(maxsize=None)
def _numbers(depth: int, integers: bool) -> TypeAdapter:
    kind: Any = int if integers else float
    for _ in range(depth):
        kind = list[kind]
    return TypeAdapter(kind, config=_STRICT)


def _check_numbers(data: list, dtype: np.dtype | None, loc: list) -> None:
    """Raises 422 at the first element of `data` that is not a JSON number (integer if asked)."""
    integers = dtype is not None and dtype.kind in "iu"
    wanted = f"{DATATYPE_OF[dtype]} data must be integers" if integers else "tensor data holds JSON numbers only"
    depth, first = 0, data
    while isinstance(first, list):
        depth += 1
        first = first[0] if first else None
    if depth > MAX_RANK:
        raise invalid(loc, f"tensor data is nested {depth} lists deep; a tensor has at most {MAX_RANK} axes",
                      "too_deep")
    try:
        _numbers(depth, integers).validate_python(data)
    except ValidationError as exc:
        for error in exc.errors():
            named = isinstance(error["input"], str) and error["input"] in _NAMED_NON_FINITE
            if integers or error["type"] != "float_type" or not named:
                where = "".join(f"[{i}]" for i in error["loc"])
                raise invalid(loc, f"{wanted}: data{where} is {type(error['input']).__name__} "
                              f"{str(error['input'])[:20]!r}", error["type"]) from None


def _from_list(data: list, dtype: np.dtype | None, loc: list) -> np.ndarray:
    """Gives `data` as an array of `dtype`; with no dtype, integers become INT64."""
    _check_numbers(data, dtype, loc)
    try:
        if dtype is not None and dtype.kind == "f":
            with np.errstate(over="ignore"):  # past the dtype's range: inf, refused as non-finite later
                return np.asarray(data, dtype=dtype)
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(loc, f"not a (rectangular) list of numbers: {_first_line(exc)}") from None
    if dtype is None:
        if array.dtype.kind in "fb":
            return array.astype(np.float64)
        if array.dtype.kind not in "iu":
            raise invalid(loc, "not a list of numbers")
        dtype = DTYPES["INT64"]
    if array.size and array.dtype.kind == "O":  # Python ints numpy could not hold
        raise invalid(loc, f"values out of the {DATATYPE_OF[dtype]} range")
    if array.size and array.dtype.kind not in "iu":
        raise invalid(loc, f"{DATATYPE_OF[dtype]} data must be integers", "int_type")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise invalid(loc, f"values out of the {DATATYPE_OF[dtype]} range")
    return array.astype(dtype, copy=False)


def check_size(elements: int, loc: tuple, max_elements: int) -> None:
    """Raises 413 if a tensor at `loc` (("body", field, ...)) holds more than `max_elements`."""
    if elements > max_elements:
        raise ServiceError(413, "tensor_too_large",
                           f"{'.'.join(map(str, loc[1:]))} has {elements} elements, over the limit of "
                           f"{max_elements} (GRADSERVE_MAX_TENSOR_ELEMENTS)")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# -- encoding ----------------------------------------------------------------------------


# Responses with more tensor elements than this are encoded on a worker thread.
OFFLOAD_ELEMENTS = 64 * 1024
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def number(value: float | None) -> float | str | None:
    """Gives a scalar for a JSON body: non-finite values as "NaN", "Infinity", "-Infinity"."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else _NON_FINITE[value]


async def reply(payload: dict, *, binary: bool = False, status_code: int = 200) -> Response:
    """Gives `respond(...)`, encoded on a worker thread when the payload is big."""
    encode = partial(respond, payload, binary=binary, status_code=status_code)
    if _elements(payload) > OFFLOAD_ELEMENTS:
        return await off_loop(encode)
    return encode()


def _elements(node: dict) -> int:
    return sum(value.size if isinstance(value, np.ndarray) else _elements(value) if isinstance(value, dict) else 0
               for value in node.values())


def respond(payload: dict, *, binary: bool = False, status_code: int = 200) -> Response:
    """Gives the response for `payload`, a dict whose ndarray values become tensor objects."""
    chunks: list[memoryview] | None = [] if binary else None
    return message(_encode(payload, chunks), chunks, status_code=status_code)


def message(head: dict, chunks: list[memoryview] | None, *, status_code: int = 200) -> Response:
    """Gives the response of an encoded JSON part: JSON alone (chunks None), or binary form, the
    JSON part then the bytes `encode_tensor` appended to `chunks`."""
    if chunks is None:
        body = orjson.dumps(head, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, status_code=status_code, media_type="application/json")
    json_part = orjson.dumps(head)
    return Response(b"".join([json_part, *chunks]), status_code=status_code, media_type="application/octet-stream",
                    headers={HEADER: str(len(json_part))})


def _encode(node: dict, chunks: list[memoryview] | None) -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, np.ndarray):
            out[key] = encode_tensor(value, chunks)
        elif isinstance(value, dict):
            out[key] = _encode(value, chunks)
        else:
            out[key] = value
    return out


def encode_tensor(array: np.ndarray, chunks: list[memoryview] | None = None) -> dict:
    """Gives the tensor object for `array`: list form, or binary form appending to `chunks`."""
    if array.dtype not in DATATYPE_OF:
        array = array.astype(np.float64 if array.dtype.kind == "f" else np.int64)
    dtype = array.dtype.newbyteorder("<")
    tensor: dict[str, Any] = {"shape": list(array.shape), "datatype": DATATYPE_OF[dtype]}
    flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    if chunks is not None:
        chunks.append(memoryview(flat).cast("B"))
        tensor["parameters"] = {"binary_data_size": flat.nbytes}
    elif flat.dtype.kind == "f" and not np.isfinite(flat).all():
        tensor["data"] = _with_named_non_finite(flat)
    else:
        tensor["data"] = flat
    return tensor


def _with_named_non_finite(flat: np.ndarray) -> list:
    values = flat.astype(np.float64).astype(object)
    values[np.isnan(flat)] = "NaN"
    values[flat == np.inf] = "Infinity"
    values[flat == -np.inf] = "-Infinity"
    return values.tolist()
