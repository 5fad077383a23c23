"""What a user puts on the wire, written out for the tests: tensor objects, binary bodies."""

import uuid

import numpy as np
import orjson

HEADER = "Inference-Header-Content-Length"
DATATYPES = {np.dtype("float32"): "FP32", np.dtype("float64"): "FP64",
             np.dtype("int32"): "INT32", np.dtype("int64"): "INT64"}
DTYPES = {name: dtype for dtype, name in DATATYPES.items()}

MLP = {
    "layers": [{"type": "linear", "in_features": 4, "out_features": 8}, {"type": "relu"},
               {"type": "linear", "in_features": 8, "out_features": 3}],
    "loss": {"type": "softmax_cross_entropy"},
    "optimizer": {"type": "adam", "lr": 0.01},
    "seed": 0,
}


def fresh_id(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def tensor(array) -> dict:
    """Gives the list-form tensor object of `array`."""
    array = np.asarray(array)
    return {"shape": list(array.shape), "datatype": DATATYPES[array.dtype], "data": array.ravel().tolist()}


def array(obj: dict) -> np.ndarray:
    """Gives the ndarray of a list-form tensor object from a response."""
    data = [float(v) if isinstance(v, str) else v for v in obj["data"]]
    return np.asarray(data, dtype=DTYPES[obj["datatype"]]).reshape(obj["shape"])


def binary_body(message: dict, tensors: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    """Gives (body, headers) of a binary-form request: `tensors` go after the JSON part."""
    message = dict(message)
    for name, value in tensors.items():
        message[name] = {"shape": list(value.shape), "datatype": DATATYPES[value.dtype],
                         "parameters": {"binary_data_size": value.nbytes}}
    head = orjson.dumps(message)
    body = head + b"".join(np.ascontiguousarray(value).tobytes() for value in tensors.values())
    return body, {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def read_binary(response) -> tuple[dict, dict[str, np.ndarray]]:
    """Gives (JSON part, {name: array}) of a binary-form response (nested dicts flattened by name)."""
    length = int(response.headers[HEADER])
    head, rest = orjson.loads(response.content[:length]), memoryview(response.content)[length:]
    arrays, offset = {}, 0

    def walk(node: dict) -> None:
        nonlocal offset
        for key, value in node.items():
            if isinstance(value, dict) and "binary_data_size" in value.get("parameters", {}):
                size = value["parameters"]["binary_data_size"]
                arrays[key] = np.frombuffer(rest[offset:offset + size], DTYPES[value["datatype"]]).reshape(value["shape"])
                offset += size
            elif isinstance(value, dict):
                walk(value)

    walk(head)
    assert offset == len(rest)
    return head, arrays


def create(client, spec: dict | None = None, **overrides) -> dict:
    """Creates a model (a fresh id unless given) and gives its info."""
    spec = {**(spec or MLP), "id": fresh_id(), **overrides}
    response = client.post("/v1/models", json=spec)
    assert response.status_code == 201, response.text
    return response.json()
