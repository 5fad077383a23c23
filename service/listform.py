"""List-form bodies, parsed without a Python float per element.

orjson turns the 200k numbers of a (256, 784) tensor into 200k Python floats (~20 ms here)
that np.asarray then copies again, after a strict check of each one's type; even a 32 x 32
tensor costs 53 us that way against 35 here. simdjson parses the body once and hands a numeric
array over as one buffer of doubles. That buffer is the array flattened *without* any check that it
was rectangular, so an array is taken this way only when its structure is verified:
- every array at each level has the same length (the shape read off its first elements);
- the leaves are numbers (as_buffer refuses anything else) and there are prod(shape) of them;
- the JSON text holds exactly as many '[' as the message's arrays account for, so no leaf
  hides inside brackets of its own ([3, [4]] flattens like [3, 4]; its extra '[' does not);
- it sits where a request model takes a tensor (TENSOR_FIELDS, "parameters"): a spec's option
  or a tensor's shape stays the list orjson gives, and is checked as such.
Whatever fails a check, and any array whose first number is written as an integer (it may be
class labels), goes the general way instead: orjson and np.asarray, which name the problem
(tests/service/test_listform.py holds both ways to the same arrays and the same refusals).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import simdjson

# Bodies shorter than this parse faster by orjson alone; arrays smaller than MIN_ELEMENTS are
# cheaper as Python lists.
MIN_BYTES = 2048
MIN_ELEMENTS = 16
KEEP_BYTES = 8 * 1024 * 1024
BOM = b"\xef\xbb\xbf"
OPEN = ord("[")
COUNT_BYTES = 256 * 1024
MAX_RANK = 32  # axes of a tensor (numpy's limit is 64; no layer takes more than 4)
# The request fields that are tensors (service/schemas.py's TensorInput fields), and "parameters"
# (PUT /parameters: a tensor per name)
TENSOR_FIELDS = frozenset({"inputs", "targets", "grad_output", "rows"})


class NumericArray:
    """A JSON array of numbers already parsed: float64 values, row-major, and its nested shape."""

    __slots__ = ("values", "shape")

    def __init__(self, values: np.ndarray, shape: list[int]):
        self.values, self.shape = values, shape


_local = threading.local()


def _parse(json_part):
    """Parse with this thread's parser (parsers are not thread-safe); keeping it keeps its
    buffers, which a fresh parser would allocate, and the kernel fault in, on every request.
    Bodies over KEEP_BYTES get a parser of their own, so no thread keeps a huge one."""
    if len(json_part) > KEEP_BYTES:
        return simdjson.Parser().parse(json_part)
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    try:
        return parser.parse(json_part)
    except RuntimeError:  # a document of its last parse is still referenced somewhere
        return simdjson.Parser().parse(json_part)


def loads(json_part) -> dict | None:
    """Return the message with its big float arrays as NumericArray, or None for the general way.

    This is only a faster way to the message orjson would give: whatever simdjson refuses or
    reads differently (too deep, integers beyond 64 bits, numbers out of range, repeated keys,
    a key holding a NUL, a byte-order mark that orjson refuses and simdjson skips) goes the general way, so
    that orjson's answer is the answer whatever the body's size.
    """
    if bytes(json_part[:3]) == BOM:
        return None
    try:
        doc = _parse(json_part)
        if not isinstance(doc, simdjson.Object):
            return None
        arrays = [0]
        message = _convert(doc, arrays)
    except (ValueError, RuntimeError, TypeError, OverflowError, KeyError):
        return None
    if arrays[0] != _brackets(json_part):
        return None
    return message


def _brackets(text) -> int:
    """Gives how many '[' the text holds, counted a cache-sized piece at a time (numpy compares
    them a vector at a time: 0.3 ms for 4 MB where bytes.count takes 1.9; ~10 us either way for
    a 21 KB body inside a request)."""
    octets = np.frombuffer(text, np.uint8)
    if len(octets) <= COUNT_BYTES:
        return int(np.count_nonzero(octets == OPEN))
    return sum(int(np.count_nonzero(octets[at:at + COUNT_BYTES] == OPEN)) for at in range(0, len(octets), COUNT_BYTES))


def _convert(doc, arrays: list[int]) -> dict:
    """Return the message `doc` as Python values, its tensors' numeric arrays as NumericArray;
    count arrays in arrays[0]. An array is a tensor's only where the request models take one:
    a top-level TENSOR_FIELDS value or a value of the top-level "parameters", bare or as a tensor
    object's "data". Anywhere else (a spec's options, a shape) it stays a list, as orjson gives it."""
    return {key: _tensor(value, arrays) if key in TENSOR_FIELDS else
            _tensors(value, arrays) if key == "parameters" else _plain(value, arrays)
            for key, value in _items(doc)}


def _tensors(node, arrays: list[int]):
    if isinstance(node, simdjson.Object):
        return {key: _tensor(value, arrays) for key, value in _items(node)}
    return _plain(node, arrays)


def _tensor(node, arrays: list[int]):
    if isinstance(node, simdjson.Object):  # a tensor object: its data may be numeric
        return {key: _tensor(value, arrays) if key == "data" and isinstance(value, simdjson.Array)
                else _plain(value, arrays) for key, value in _items(node)}
    if isinstance(node, simdjson.Array):
        numeric = _numeric(node, arrays)
        if numeric is not None:
            return numeric
    return _plain(node, arrays)


def _plain(node, arrays: list[int]):
    if isinstance(node, simdjson.Object):
        return {key: _plain(value, arrays) for key, value in _items(node)}
    if isinstance(node, simdjson.Array):
        value = node.as_list()
        arrays[0] += _count_lists(value)
        return value
    return node


def _items(node) -> list[tuple[str, object]]:
    keys = list(node.keys())
    if len(set(keys)) != len(keys):  # node[key] would give the first; orjson keeps the last
        raise ValueError("duplicate keys")
    if "\0" in "".join(keys):  # node[key] stops at a NUL: "x\u0000" finds "x"
        raise ValueError("a key holds a NUL")
    return [(key, node[key]) for key in keys]


def _numeric(array, arrays: list[int]) -> NumericArray | None:
    """Gives a rectangular array of numbers, its first one written as a float, of at least
    MIN_ELEMENTS and at most MAX_RANK axes, as a NumericArray; None for anything else. Its
    arrays are counted only if it is taken: one given up on is counted by whoever takes it."""
    shape, first = [], array
    while isinstance(first, simdjson.Array):
        if len(first) == 0 or len(shape) == MAX_RANK:
            return None
        shape.append(len(first))
        first = first[0]
    size = math.prod(shape)
    if not isinstance(first, float) or size < MIN_ELEMENTS:
        return None
    level, counted = [array], 0
    try:
        for depth, length in enumerate(shape):
            # len() of a number raises TypeError; a string or object of the right length
            # passes here, but as_buffer below refuses it
            if set(map(len, level)) != {length}:
                return None
            counted += len(level)
            if depth + 1 < len(shape):
                level = [child for node in level for child in node]
        values = np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:  # a leaf that is not a number
        return None
    if values.size != size:
        return None
    arrays[0] += counted
    return NumericArray(values, shape)


def _count_lists(value) -> int:
    if isinstance(value, list):
        return 1 + sum(_count_lists(v) for v in value)
    if isinstance(value, dict):
        return sum(_count_lists(v) for v in value.values())
    return 0
