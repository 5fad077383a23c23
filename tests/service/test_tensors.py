"""The tensor codec on its own: list and binary forms, datatypes, validation, encoding."""

import numpy as np
import orjson
import pytest

from service.body import parse_message
from service.errors import ServiceError
from service.listform import NumericArray
from service.schemas import ForwardBackwardRequest, ParametersBody
from service.tensors import HEADER, Tensor, decode, respond

F32 = np.dtype("float32")


def decoded(value, dtype=F32, max_elements=10**6, labels=False):
    tensor = Tensor.model_validate(value) if isinstance(value, dict) else value
    return decode(tensor, ("inputs",), dtype=dtype, max_elements=max_elements, labels=labels)


def refusal(value, **kwargs) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        decoded(value, **kwargs)
    return caught.value


def test_flat_nested_and_bare_lists_give_the_same_array():
    expected = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=np.float32)
    flat = decoded({"shape": [2, 3], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    nested = decoded({"shape": [2, 3], "data": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]})
    bare = decoded([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    for array in (flat, nested, bare):
        assert array.dtype == np.float32 and np.array_equal(array, expected)


@pytest.mark.parametrize("datatype, dtype", [("FP32", np.float32), ("FP64", np.float64),
                                             ("INT32", np.int32), ("INT64", np.int64)])
def test_each_datatype_decodes_to_its_dtype(datatype, dtype):
    array = decoded({"shape": [3], "datatype": datatype, "data": [1, 2, 3]})
    assert array.dtype == dtype and array.tolist() == [1, 2, 3]


def test_integer_lists_are_labels_when_asked_and_floats_otherwise():
    assert decoded([2, 0, 1], labels=True).dtype == np.int64
    assert decoded([0.5, 1.0], labels=True).dtype == np.float32
    assert decoded([2, 0, 1]).dtype == np.float32


@pytest.mark.parametrize("value, loc, words", [
    ({"shape": [2, 3], "data": [1, 2, 3]}, ["body", "inputs", "data"], "shape [2, 3] needs 6"),
    ({"shape": [2], "data": [[1, 2], [3]]}, ["body", "inputs", "data"], "rectangular"),
    ({"shape": [2], "data": ["a", "b"]}, ["body", "inputs", "data"], "numbers"),
    ({"shape": [2], "datatype": "INT64", "data": [1.5, 2]}, ["body", "inputs", "data"], "integers"),
    ({"shape": [1], "datatype": "INT32", "data": [2**40]}, ["body", "inputs", "data"], "range"),
    ({"shape": [2], "data": "1,2"}, ["body", "inputs", "data"], "list"),
])
def test_bad_list_tensors_are_422_naming_the_field(value, loc, words):
    error = refusal(value)
    assert error.status == 422 and error.detail[0]["loc"] == loc and words in error.detail[0]["msg"]


def test_unknown_datatype_is_refused_by_the_request_model():
    with pytest.raises(ServiceError) as caught:
        parse_message(orjson.dumps({"inputs": {"shape": [1], "datatype": "FP16", "data": [1]},
                                    "targets": [0]}), None, ForwardBackwardRequest)
    assert caught.value.status == 422
    assert caught.value.detail[0]["loc"] == ["body", "inputs", "datatype"]


def test_a_tensor_over_the_element_limit_is_413_before_any_allocation():
    error = refusal({"shape": [10**6, 10**6], "data": []}, max_elements=1000)
    assert error.status == 413 and "GRADSERVE_MAX_TENSOR_ELEMENTS" in error.detail
    assert refusal([0.0] * 1001, max_elements=1000).status == 413


def binary_message(message: dict, *payloads: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(message)
    return head + b"".join(payloads), str(len(head))


def test_binary_tensors_are_taken_in_the_order_of_the_json_text():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    labels = np.array([1, 0], dtype=np.int64)
    # targets comes first in the text, so its bytes come first in the body.
    body, length = binary_message({
        "targets": {"shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
        "inputs": {"shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
    }, labels.tobytes(), x.tobytes())
    request = parse_message(body, length, ForwardBackwardRequest)
    assert np.array_equal(decoded(request.inputs), x)
    assert np.array_equal(decoded(request.targets, labels=True), labels)


def test_binary_parameters_nested_under_names():
    w, b = np.ones((2, 2), np.float32), np.zeros(2, np.float32)
    body, length = binary_message({"parameters": {
        "0.weight": {"shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
        "0.bias": {"shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}}},
        w.tobytes(), b.tobytes())
    request = parse_message(body, length, ParametersBody)
    assert np.array_equal(decoded(request.parameters["0.weight"]), w)
    assert np.array_equal(decoded(request.parameters["0.bias"]), b)


@pytest.mark.parametrize("declared, extra, words", [
    (24, b"", "declare 24"),                       # 48 bytes sent, 24 declared
    (64, b"", "need more than"),                   # 64 declared, 48 sent
])
def test_binary_sizes_that_do_not_add_up_are_422(declared, extra, words):
    x = np.zeros(12, np.float32)
    body, length = binary_message({
        "inputs": {"shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": declared}},
        "targets": [0, 1]}, x.tobytes() + extra)
    with pytest.raises(ServiceError) as caught:
        parse_message(body, length, ForwardBackwardRequest)
    assert caught.value.status == 422 and words in caught.value.detail[0]["msg"]


def test_binary_size_that_does_not_match_the_shape_is_422():
    body, length = binary_message({
        "inputs": {"shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
        "targets": [0, 1]}, bytes(16))
    request = parse_message(body, length, ForwardBackwardRequest)
    error = refusal(request.inputs)
    assert error.status == 422 and error.detail[0]["loc"] == ["body", "inputs", "parameters", "binary_data_size"]


@pytest.mark.parametrize("header", ["abc", "-1", "999999"])
def test_a_bad_json_length_header_is_422(header):
    with pytest.raises(ServiceError) as caught:
        parse_message(b'{"inputs": [1], "targets": [1]}', header, ForwardBackwardRequest)
    assert caught.value.status == 422 and caught.value.detail[0]["loc"] == ["header", HEADER]


def test_malformed_json_is_400_and_a_non_object_422():
    with pytest.raises(ServiceError) as caught:
        parse_message(b'{"inputs": [1,', None, ForwardBackwardRequest)
    assert (caught.value.status, caught.value.code) == (400, "malformed_json")
    with pytest.raises(ServiceError) as caught:
        parse_message(b"[1, 2]", None, ForwardBackwardRequest)
    assert caught.value.status == 422


def test_non_finite_outputs_are_named_strings():
    outputs = np.array([[1.5, np.nan], [np.inf, -np.inf]], dtype=np.float32)
    body = orjson.loads(respond({"outputs": outputs}).body)
    assert body["outputs"] == {"shape": [2, 2], "datatype": "FP32", "data": [1.5, "NaN", "Infinity", "-Infinity"]}


def test_list_encoding_round_trips_float32_exactly():
    x = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    body = orjson.loads(respond({"outputs": x}).body)
    assert np.array_equal(decoded(Tensor.model_validate(body["outputs"])), x)


def test_binary_encoding_puts_bytes_after_the_json_part():
    a, b = np.arange(3, dtype=np.float32), np.arange(4, dtype=np.float64).reshape(2, 2)
    response = respond({"loss": 1.0, "outputs": a, "nested": {"input_grad": b}}, binary=True)
    length = int(response.headers[HEADER])
    head = orjson.loads(response.body[:length])
    assert head["loss"] == 1.0 and head["nested"]["input_grad"]["shape"] == [2, 2]
    assert response.body[length:] == a.tobytes() + b.tobytes()
    assert response.media_type == "application/octet-stream"


def test_list_form_256_by_784_decodes_without_a_python_float_per_element():
    x = np.random.default_rng(0).standard_normal((256, 784)).astype(np.float32)
    body = orjson.dumps({"inputs": {"shape": [256, 784], "datatype": "FP32", "data": x}, "targets": [0] * 256},
                        option=orjson.OPT_SERIALIZE_NUMPY)
    request = parse_message(body, None, ForwardBackwardRequest)
    # The speed comes from here (see service/listform.py; timed in benchmarks/bench_service.py).
    assert isinstance(request.inputs.data, NumericArray)
    assert np.array_equal(decoded(request.inputs), x)


class _Request:
    """What read_body reads of a request: its headers and its body, in chunks."""

    def __init__(self, chunks: list[bytes], headers: dict[str, str]):
        self.chunks, self.headers = chunks, headers

    async def stream(self):
        for chunk in self.chunks:
            yield chunk


@pytest.mark.parametrize("json_length", [0, 1, 37, 64, 1001])
def test_a_binary_body_is_read_with_its_tensors_aligned_and_not_copied_again(json_length):
    import asyncio

    from service.body import ALIGN, read_body
    from service.tensors import split_message

    x = np.arange(3000, dtype=np.float64)
    body = b"{" + b" " * (json_length - 2) + b"}" if json_length >= 2 else b"{}"[:json_length]
    raw = body + x.tobytes()
    chunks = [raw[i:i + 4096] for i in range(0, len(raw), 4096)]
    request = _Request(chunks, {"content-length": str(len(raw)), HEADER: str(json_length)})
    read = asyncio.run(read_body(request, 1 << 20, aligned_at=json_length))
    assert bytes(read) == raw
    json_part, binary = split_message(read, str(json_length))
    tensor = np.frombuffer(binary, np.float64)
    assert tensor.ctypes.data % ALIGN == 0 and tensor.flags.aligned and (tensor == x).all()
    unaligned = asyncio.run(read_body(_Request(chunks, {"content-length": str(len(raw))}), 1 << 20))
    assert unaligned == raw  # without a binary part to align: the chunks joined


@pytest.mark.parametrize("header", ["9" * 5000, "1" * 19, "+25", " 25", "2_5"])
def test_a_json_length_header_that_is_no_byte_count_is_422_naming_it(header):
    from service.tensors import split_message

    with pytest.raises(ServiceError) as caught:
        split_message(b"{}", header)
    assert caught.value.status == 422 and caught.value.detail[0]["loc"] == ["header", HEADER]
