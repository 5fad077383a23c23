"""The client's tensor codec: numpy in, numpy out, dtypes kept, in list and binary form."""

import json

import numpy as np
import pytest

from gradserve_client._codec import JSON_LENGTH_HEADER, as_tensor, decode, encode, encode_frame

ARRAYS = [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.linspace(-1, 1, 5, dtype=np.float64),
    np.array([[1, -2], [3, 2**31 - 1]], dtype=np.int32),
    np.array([0, 2, 2**40], dtype=np.int64),
    np.zeros((0, 4), dtype=np.float32),
]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "list"])
@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_an_array_comes_back_with_its_values_shape_and_dtype(arr, binary):
    body, headers = encode({"inputs": arr}, binary=binary)
    back = decode(body, headers)["inputs"]
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("arr", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_a_binary_frame_is_the_json_line_then_the_bytes_of_the_array(arr):
    line, raw = encode_frame({"inputs": arr}, binary=True)
    assert json.loads(line)["inputs"]["parameters"]["binary_data_size"] == arr.nbytes == len(raw)
    assert bytes(raw) == arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def test_binary_body_is_the_json_part_then_little_endian_bytes_in_text_order():
    x = np.array([[1.5, -2.0]], dtype=np.float32)
    y = np.array([3], dtype=np.int64)
    body, headers = encode({"inputs": x, "targets": y}, binary=True)
    n = int(headers[JSON_LENGTH_HEADER])
    assert headers["Content-Type"] == "application/octet-stream"
    assert json.loads(body[:n]) == {
        "inputs": {"shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        "targets": {"shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}},
        "binary_data_output": True,
    }
    assert body[n:] == x.astype("<f4").tobytes() + y.astype("<i8").tobytes()


def test_list_form_is_plain_json_without_binary_flag():
    body, headers = encode({"inputs": np.array([[1, 2]], dtype=np.float32), "train": False}, binary=False)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {"inputs": {"shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}, "train": False}


def test_non_finite_values_travel_as_protobuf_json_strings():
    body, _ = encode({"inputs": np.array([np.nan, np.inf, -np.inf, 1.0])}, binary=False)
    assert json.loads(body)["inputs"]["data"] == ["NaN", "Infinity", "-Infinity", 1.0]
    response = b'{"outputs": {"shape": [2, 2], "datatype": "FP32", "data": [["NaN", 1.0], ["-Infinity", "Infinity"]]}}'
    outputs = decode(response, {})["outputs"]
    assert outputs.dtype == np.float32
    np.testing.assert_array_equal(outputs, [[np.nan, 1.0], [-np.inf, np.inf]])


def test_nested_tensors_decode_in_text_order():
    a, b = np.float32([1, 2]), np.float32([[3], [4], [5]])
    part = json.dumps({"parameters": {
        "0.weight": {"shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        "0.bias": {"shape": [3, 1], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
    }}).encode()
    decoded = decode(part + a.tobytes() + b.tobytes(), {JSON_LENGTH_HEADER: str(len(part))})
    np.testing.assert_array_equal(decoded["parameters"]["0.weight"], a)
    np.testing.assert_array_equal(decoded["parameters"]["0.bias"], b)


def test_binary_sizes_that_do_not_add_up_are_refused():
    part = b'{"outputs": {"shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}}'
    with pytest.raises(ValueError):
        decode(part + b"\0" * 8, {JSON_LENGTH_HEADER: str(len(part))})
    with pytest.raises(ValueError):
        decode(part + b"\0" * 24, {JSON_LENGTH_HEADER: str(len(part))})


def test_as_tensor_casts_floats_to_the_model_dtype_and_keeps_labels_integer():
    assert as_tensor([[0.5, 1.0]], np.float32).dtype == np.float32
    assert as_tensor(np.float64([1.0]), "float64").dtype == np.float64
    assert as_tensor(np.array([1, 2], dtype=np.uint8), np.float32).dtype == np.int64
    assert as_tensor(np.array([1, 2], dtype=np.int32), np.float32).dtype == np.int32
    with pytest.raises(TypeError):
        as_tensor(np.array(["a"]))


def test_a_large_binary_body_is_views_of_the_arrays_in_pieces():
    from gradserve_client._codec import PIECE_BYTES, encode_pieces

    x = np.random.default_rng(0).standard_normal((1024, 784)).astype(np.float32)  # 3.2 MB
    y = np.arange(1024, dtype=np.int64)
    pieces, headers = encode_pieces({"inputs": x, "targets": y}, binary=True)
    text, *views = pieces
    assert len(views) == 5 and all(len(view) <= PIECE_BYTES for view in views)
    assert np.shares_memory(np.frombuffer(views[0], np.uint8), x)  # no copy of the array
    joined = b"".join(pieces)
    assert int(headers["Content-Length"]) == len(joined)
    assert int(headers[JSON_LENGTH_HEADER]) == len(text)
    assert joined == encode({"inputs": x, "targets": y}, binary=True)[0]
    np.testing.assert_array_equal(decode(joined, headers)["inputs"], x)


def test_a_small_binary_body_is_one_piece():
    from gradserve_client._codec import encode_pieces

    pieces, headers = encode_pieces({"inputs": np.ones((4, 4), np.float32)}, binary=True)
    assert len(pieces) == 1 and isinstance(pieces[0], bytes) and "Content-Length" not in headers


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "list"])
def test_rows_of_several_arrays_travel_as_the_one_tensor_of_their_rows(binary):
    from gradserve_client._codec import PIECE_BYTES, Rows, encode_pieces

    rng = np.random.default_rng(1)
    first = rng.standard_normal((900, 784)).astype(np.float32)
    second = rng.standard_normal((300, 784)).astype(np.float32)
    labels = Rows(np.arange(900), np.arange(300))
    pieces, headers = encode_pieces({"inputs": Rows(first, second), "targets": labels}, binary=binary)
    joined = np.concatenate([first, second])
    expected = encode({"inputs": joined, "targets": np.concatenate([np.arange(900), np.arange(300)])}, binary=binary)
    assert b"".join(pieces) == expected[0] and {**headers, **expected[1]} == headers
    if binary:  # each array's bytes are views of it: no joined copy
        assert len(pieces[0]) < PIECE_BYTES and np.shares_memory(np.frombuffer(pieces[1], np.uint8), first)
        assert any(np.shares_memory(np.frombuffer(piece, np.uint8), second) for piece in pieces[1:])
    with pytest.raises(ValueError, match="one dtype and one row shape"):
        Rows(first, second[:, :10])
