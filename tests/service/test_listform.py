"""Big list-form tensors take the fast parse only when it gives what the general one would."""

import json
import typing

import numpy as np
import orjson
import pytest
from hypothesis import given, settings, strategies as st

from service import listform, schemas
from service.body import parse_message, parse_parts
from service.errors import ServiceError
from service.listform import MIN_BYTES, MIN_ELEMENTS, TENSOR_FIELDS, NumericArray, loads
from service.schemas import ForwardRequest, TrainStepRequest
from service.tensor_object import TensorInput
from service.tensors import Decoder, decode

RNG = np.random.default_rng(0)
BIG = RNG.standard_normal((64, 96)).astype(np.float32)  # 6144 values: over MIN_ELEMENTS
SMALL = RNG.standard_normal((32, 32)).astype(np.float32)  # a small model's batch: over MIN_BYTES as text


def decoded(body: bytes, dtype=np.dtype("float32")) -> np.ndarray:
    request = parse_message(body, None, ForwardRequest)
    return decode(request.inputs, ("inputs",), dtype=dtype, max_elements=10**7)


def general(message: dict, dtype=np.dtype("float32")) -> np.ndarray:
    """The same message decoded the general way (orjson's Python lists)."""
    request = ForwardRequest.model_validate(orjson.loads(orjson.dumps(message)))
    return decode(request.inputs, ("inputs",), dtype=dtype, max_elements=10**7)


def body_of(message: dict) -> bytes:
    return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize("message", [
    {"inputs": {"shape": [64, 96], "datatype": "FP32", "data": BIG}},
    {"inputs": {"shape": [64, 96], "datatype": "FP32", "data": BIG.ravel()}},
    {"inputs": {"shape": [64, 96], "data": BIG.astype(np.float64)}},
    {"inputs": BIG},
    {"inputs": {"shape": [8, 8, 96], "datatype": "FP64", "data": BIG.reshape(8, 8, 96).astype(np.float64)}},
    {"inputs": {"shape": [32, 32], "datatype": "FP32", "data": SMALL}},
    {"inputs": np.ascontiguousarray(BIG[:, :1].repeat(4, axis=0))},  # (256, 1), as targets are
], ids=["nested", "flat", "fp64-values", "bare", "rank-3", "small", "one-column"])
def test_fast_and_general_parses_agree(message):
    body = body_of(message)
    assert len(body) >= MIN_BYTES  # parse_message takes the fast way
    inputs = loads(memoryview(body))["inputs"]
    assert isinstance(inputs["data"] if isinstance(inputs, dict) else inputs, NumericArray)
    fast, slow = decoded(body), general(orjson.loads(body))
    assert fast.dtype == slow.dtype and np.array_equal(fast, slow)


def refusal(message_json: bytes) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        decoded(message_json)
    return caught.value


def test_a_jagged_array_is_refused_not_flattened():
    rows = BIG.tolist()
    rows[3] = rows[3][:-1]
    rows[5] = rows[5] + [1.0]  # same count of numbers as a rectangle
    assert loads(memoryview(orjson.dumps({"inputs": rows})))["inputs"] == rows  # a list, as orjson gives it
    error = refusal(orjson.dumps({"inputs": rows}))
    assert error.status == 422 and "rectangular" in str(error.detail)


def test_a_number_inside_its_own_brackets_is_refused():
    rows = BIG.tolist()
    rows[3][5] = [rows[3][5]]  # flattens to the same numbers; only the brackets tell
    assert loads(memoryview(orjson.dumps({"inputs": rows}))) is None
    assert refusal(orjson.dumps({"inputs": rows})).status == 422


def test_non_numbers_take_the_general_way():
    rows = BIG.tolist()
    rows[1][2] = "NaN"
    assert loads(memoryview(orjson.dumps({"inputs": rows})))["inputs"] == rows
    assert np.isnan(decoded(orjson.dumps({"inputs": rows}))[1, 2])  # the engine refuses it later


def test_a_body_under_min_bytes_takes_the_general_way():
    body = body_of({"inputs": SMALL[:2]})
    assert len(body) < MIN_BYTES
    assert isinstance(parse_message(body, None, ForwardRequest).inputs.data, list)
    assert np.array_equal(decoded(body), SMALL[:2])


def test_integers_first_take_the_general_way():
    labels = RNG.integers(0, 10, MIN_ELEMENTS * 2).tolist()
    message = loads(memoryview(orjson.dumps({"inputs": [labels[:96]] * 64})))
    assert message is None or not isinstance(message["inputs"], NumericArray)


def test_brackets_in_strings_fall_back_and_still_decode():
    message = {"inputs": {"shape": [64, 96], "data": BIG}, "note[": "x]["}
    body = body_of(message)
    assert loads(memoryview(body)) is None
    assert np.array_equal(decoded(body), BIG)


def test_float_data_for_an_integer_datatype_is_refused():
    error = refusal(body_of({"inputs": {"shape": [64, 96], "datatype": "INT64", "data": BIG}}))
    assert error.status == 422 and "integers" in str(error.detail)


def test_a_shape_that_does_not_match_is_refused():
    error = refusal(body_of({"inputs": {"shape": [64, 95], "datatype": "FP32", "data": BIG}}))
    assert error.status == 422 and "6144 values" in str(error.detail)


def test_malformed_big_json_is_400():
    body = body_of({"inputs": BIG})[:-3]
    assert refusal(body).status == 400


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       scale=st.sampled_from([1e-30, 1.0, 1e30]))
def test_any_rectangle_decodes_as_the_general_way_does(shape, scale):
    x = (np.random.default_rng(len(shape)).standard_normal(shape) * scale).astype(np.float32)
    body = body_of({"inputs": x})
    assert np.array_equal(decoded(body), general({"inputs": x.tolist()}))


def test_a_document_still_held_does_not_break_the_next_parse():
    from service.listform import _parse

    held = _parse(memoryview(body_of({"inputs": BIG})))  # keeps this thread's parser busy
    assert np.array_equal(decoded(body_of({"inputs": BIG * 2})), BIG * 2)
    assert len(held["inputs"]) == 64


def test_threads_parse_at_once_each_with_its_own_parser():
    from concurrent.futures import ThreadPoolExecutor

    bodies = [body_of({"inputs": BIG * k}) for k in range(1, 9)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(decoded, bodies * 3))
    assert all(np.array_equal(r, BIG * (i % 8 + 1)) for i, r in enumerate(results))


def test_what_simdjson_reads_differently_takes_the_general_way():
    rows = {"inputs": SMALL}
    assert loads(memoryview(b"\xef\xbb\xbf" + body_of(rows))) is None  # orjson refuses a BOM: 400
    assert refusal(b"\xef\xbb\xbf" + body_of(rows)).status == 400
    repeated = body_of(rows)[:-1] + b', "inputs": [[1.5]]}'  # orjson keeps the last
    assert loads(memoryview(repeated)) is None
    assert decoded(repeated).tolist() == [[1.5]]
    nul_keys = b'{"x\\u0000": 5, "x": 6, ' + body_of(rows)[1:]  # a key lookup would stop at the NUL
    assert loads(memoryview(nul_keys)) is None
    assert np.array_equal(decoded(nul_keys), SMALL)


SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text()
           | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(SCALARS,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=4), JSON, max_size=3), rows=st.integers(1, 4),
       cut=st.integers(0, 2**16), byte=st.integers(0, 255))
def test_the_fast_way_gives_what_orjson_gives_or_nothing(extra, rows, cut, byte):
    """Any body the fast way takes, orjson reads the same, arrays for the numbers; bodies
    broken by one byte included."""
    text = body_of({**extra, "inputs": SMALL[:rows * 8]})
    for body in (text, text[:cut % len(text)] + bytes([byte]) + text[cut % len(text) + 1:]):
        fast = loads(memoryview(body))
        if fast is None:
            continue
        try:
            slow = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AssertionError(f"the fast way read a body orjson refuses: {body[:80]!r}") from None
        assert _plain(fast) == slow


def _plain(value):
    """`value` with each NumericArray as the nested lists of floats orjson would give."""
    if isinstance(value, NumericArray):
        return value.values.reshape(value.shape).tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def outcome(body: bytes, model=TrainStepRequest, fast: bool = True):
    """What a route's body parse gives: each field as (dtype, shape, bytes) for an array, or the error."""
    with pytest.MonkeyPatch.context() as patch:
        if not fast:
            patch.setattr(listform, "MIN_BYTES", 1 << 60)  # orjson for every size
        try:
            parsed = parse_parts(memoryview(body), memoryview(b""), model, Decoder(np.dtype("float32"), 10**7))
        except ServiceError as error:
            return "refused", error.status, error.code, error.detail
    return {name: (value.dtype.str, value.shape, value.tobytes()) if isinstance(value, np.ndarray) else value
            for name, value in vars(parsed).items()}


def same_both_ways(body: bytes, model=TrainStepRequest):
    assert len(body) >= MIN_BYTES
    fast, general = outcome(body, model), outcome(body, model, fast=False)
    assert fast == general
    return fast


VALUES = ",".join(["0.5"] * 16)
PAD = b" " * MIN_BYTES


@pytest.mark.parametrize("text", [
    # a leaf in brackets of its own, beside an array the fast way gives up on (its arrays counted once)
    '{"inputs": [[' + ",".join(["1.5"] * 15) + ',[4.0]]], "targets": [[0.5]], "x": [[' + VALUES + '],[0.5]]}',
    '{"inputs": ' + "[" * 33 + VALUES + "]" * 33 + ', "targets": [[0.5]]}',  # deeper than MAX_RANK
    '{"inputs": ' + "[" * 65 + VALUES + "]" * 65 + ', "targets": [[0.5]]}',  # deeper than numpy goes
    '{"inputs": {"datatype": "INT64", "shape": [1, 16], "data": [[' + VALUES + ']]}, "targets": [[0.5]]}',
    '{"inputs": {"datatype": "INT64", "shape": [16], "data": [' + ",".join(["1.0"] * 16) + ']}, "targets": [1]}',
    '{"inputs": {"shape": [' + ",".join(["1.0"] * 16) + '], "data": [' + VALUES + ']}, "targets": [1]}',
    '{"inputs": {"shape": [2, 16], "data": [' + VALUES + ']}, "targets": [1]}',
    '{"inputs": [[' + VALUES + ']], "targets": {"datatype": "INT64", "data": [' + VALUES + ']}}',
    '{"inputs": [[' + ",".join(["1e39"] * 16) + ']], "targets": [[0.5]]}',  # past FP32: inf either way
], ids=["hidden-leaf", "rank-33", "rank-65", "float-int64", "float-int64-flat", "float-shape", "wrong-shape",
        "float-labels", "overflow"])
def test_bodies_the_fast_way_once_read_differently_now_read_the_same(text):
    same_both_ways(text.encode() + PAD)


def test_a_spec_option_written_as_floats_stays_a_list():
    spec = {"id": "m", "layers": [{"type": "linear", "in_features": 16, "out_features": 2}],
            "loss": {"type": "mse"}, "input_shape": [1.0] * 16}
    assert isinstance(loads(memoryview(orjson.dumps(spec) + PAD))["input_shape"], list)


def test_tensor_fields_are_the_request_models_tensor_fields():
    hints = {(name, hint) for model in vars(schemas).values()
             if isinstance(model, type) and issubclass(model, schemas.BaseModel)
             for name, hint in typing.get_type_hints(model, include_extras=True).items()}
    assert {name for name, hint in hints if hint in (TensorInput, TensorInput | None)} == TENSOR_FIELDS
    assert {name for name, hint in hints if hint == dict[str, TensorInput]} == {"parameters"}


ODD = st.sampled_from([True, "1.5", None, 7, [0.5], 2**70, -0.0])


@st.composite
def arrays(draw):
    """A rectangle of floats, or rows of floats and integers, then maybe one value made odd."""
    if draw(st.booleans()):
        rows, columns = draw(st.integers(1, 8)), draw(st.integers(1, 40))
        data = [[draw(st.floats(-1e6, 1e6, width=32)) for _ in range(columns)] for _ in range(rows)]
    else:
        data = draw(st.lists(st.lists(st.floats(-1e6, 1e6, width=32) | st.integers(-3, 3), min_size=1, max_size=20),
                             min_size=1, max_size=6))
    if draw(st.booleans()):
        row = draw(st.integers(0, len(data) - 1))
        data[row][draw(st.integers(0, len(data[row]) - 1))] = draw(ODD)
    return data


@settings(max_examples=300, deadline=None)
@given(data=arrays(), nest=st.integers(0, 2), datatype=st.sampled_from([None, "FP32", "FP64", "INT64"]),
       shape=st.one_of(st.none(), st.lists(st.integers(1, 40), max_size=3)), bare=st.booleans(),
       extra=st.dictionaries(st.sampled_from(["x", "lr", "shape"]), JSON, max_size=2))
def test_any_body_decodes_the_same_both_ways(data, nest, datatype, shape, bare, extra):
    """Rows of floats and integers, rectangular or not, with the odd non-number or bracketed
    value, maybe nested in extra brackets, under a datatype and shape or bare: whatever the
    fast way takes, the route sees what the orjson way gives it, arrays bit for bit and
    refusals word for word."""
    for _ in range(nest):
        data = [data]
    inputs = data if bare else {key: value for key, value in
                                (("shape", shape), ("datatype", datatype), ("data", data)) if value is not None}
    message = {**extra, "inputs": inputs, "targets": {"data": [[0.5] * 16]}}
    try:
        body = orjson.dumps(message) + PAD
    except TypeError:  # 2**70: orjson writes no integer past 64 bits
        text = json.dumps(inputs).encode()
        body = orjson.dumps({**message, "inputs": 0}).replace(b'"inputs":0', b'"inputs":' + text) + PAD
    same_both_ways(body)
