"""Every field takes its own JSON type only, and a body means the same whatever its size.

Scalars: no "0.5" for a number, no 1 or "yes" for a boolean (integers stay fine for floats).
Tensor data: JSON numbers only. Small bodies are parsed by orjson, big ones through the
simdjson path (service/listform.py): the answers must not differ.
"""

import re
import types
import typing
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from service import listform, schemas
from service.deps import body_models
from service.main import create_app
from service.settings import Settings
from wire import HEADER, MLP, binary_body, create, fresh_id, tensor

X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
Y = np.array([0, 1, 2])
BIG_X = np.random.default_rng(1).standard_normal((1024, 4)).astype(np.float32)  # no fast path: rows of 4
WIDE = {**MLP, "layers": [{"type": "linear", "in_features": 64, "out_features": 3}]}
WIDE_X = np.random.default_rng(2).standard_normal((512, 64)).astype(np.float32)  # 32k floats: the fast path

# Every model a route parses its body into, read off the app as the OpenAPI document is.
REQUEST_MODELS = sorted(set(body_models(create_app(Settings(data_dir=Path("unused")))).values()), key=lambda m: m.__name__)

WRONG = {
    bool: [1, 0, "yes", "true", None],
    float: ["0.5", True, "1e-3", None],
    int: ["5", True, 1.5, None],
    str: [5, True, None],
}


def scalar_type(annotation) -> type | None:
    """Gives bool, float, int or str for a scalar field (optional or not, literal or not), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return scalar_type(args[0]) if len(args) == 1 else None
    if typing.get_origin(annotation) is typing.Literal:
        return type(args[0])
    return annotation if annotation in WRONG else None


def valid_bodies(info: dict, tape_id: str) -> dict[str, tuple[str, str, type, dict]]:
    """Gives, per request model, a route and a body the model accepts."""
    model = f"/v1/models/{info['id']}"
    xy = {"inputs": tensor(X), "targets": tensor(Y)}
    return {
        "ModelSpec": ("POST", "/v1/models", schemas.ModelSpec, {**MLP, "id": fresh_id()}),
        "ForwardRequest": ("POST", f"{model}/forward", schemas.ForwardRequest, {"inputs": tensor(X)}),
        "BackwardRequest": ("POST", f"{model}/backward", schemas.BackwardRequest,
                            {"tape_id": tape_id, "targets": tensor(Y)}),
        "ForwardBackwardRequest": ("POST", f"{model}/forward_backward", schemas.ForwardBackwardRequest, xy),
        "StepRequest": ("POST", f"{model}/step", schemas.StepRequest, {}),
        "TrainStepRequest": ("POST", f"{model}/train_step", schemas.TrainStepRequest, xy),
        "GradcheckRequest": ("POST", f"{model}/gradcheck", schemas.GradcheckRequest, xy),
        "EvaluateRequest": ("POST", f"{model}/evaluate", schemas.EvaluateRequest, xy),
        "ParametersBody": ("PUT", f"{model}/parameters", schemas.ParametersBody,
                           {"parameters": {name: tensor(np.zeros(shape, np.float32))
                                           for name, shape in info["parameter_shapes"].items()}}),
        "InferRequest": ("POST", f"/v2/models/{info['id']}/infer", schemas.InferRequest,
                         {"inputs": [{"name": "inputs", **tensor(X)}]}),
        "DataRowsRequest": ("POST", f"{model}/data/d", schemas.DataRowsRequest, xy),
        "DataTrainRequest": ("POST", f"{model}/data/d/train_steps", schemas.DataTrainRequest,
                             {"rows": [2, 0, 1], "batch_size": 2}),
        "DataEvaluateRequest": ("POST", f"{model}/data/d/evaluate", schemas.DataEvaluateRequest, {"rows": [1]}),
    }


def error_locs(answer: dict) -> list[list]:
    """Gives the first two parts of each error's loc: /v1's detail list, or /v2's "loc: msg; ..." line."""
    if "detail" in answer:
        return [error["loc"][:2] for error in answer["detail"]]
    return [part.split(": ", 1)[0].split(".")[:2] for part in answer["error"].split("; ")]


def cases():
    """Yields (request model name, field, wrong value) for every scalar field of every request model."""
    for model in REQUEST_MODELS:
        for name, field in model.model_fields.items():
            kind = scalar_type(field.annotation)
            if kind is not None:
                for value in WRONG[kind]:
                    if value is None and not field.is_required() and type(None) in typing.get_args(field.annotation):
                        continue  # null is a fine value for an optional field
                    yield model.__name__, name, value


def test_every_request_model_has_a_body_here():
    assert {model.__name__ for model in REQUEST_MODELS} == set(valid_bodies({"id": "x", "parameter_shapes": {}}, ""))


LIVE_SETTINGS = {"max_models": 10_000, "durability": "none"}  # these tests make a few hundred models


@pytest.fixture(scope="module")
def live(module_live):
    with httpx.Client(base_url=module_live, timeout=30) as client:
        yield client


@pytest.mark.parametrize("model_name, field, value", list(cases()))
def test_a_scalar_of_the_wrong_type_is_422_naming_it_and_changes_nothing(live, model_name, field, value):
    info = create(live)
    tape_id = live.post(f"/v1/models/{info['id']}/forward", json={"inputs": tensor(X), "keep_tape": True}).json()["tape_id"]
    assert live.post(f"/v1/models/{info['id']}/forward_backward", json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200
    assert live.post(f"/v1/models/{info['id']}/data/d", json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200
    method, path, _, body = valid_bodies(info, tape_id)[model_name]
    before = live.get(f"/v1/models/{info['id']}").json(), live.get(f"/v1/models/{info['id']}/parameters").json()
    response = live.request(method, path, json={**body, field: value})
    assert response.status_code == 422, response.text
    assert error_locs(response.json()) == [["body", field]], response.text
    after = live.get(f"/v1/models/{info['id']}").json(), live.get(f"/v1/models/{info['id']}/parameters").json()
    assert after == before
    assert live.request(method, path, json=body).status_code in (200, 201)  # the right type is taken


@pytest.mark.parametrize("data, words", [
    ([["0.5", 1, 2, 3]], "data[0][0] is str"),
    ([[True, 1, 2, 3]], "data[0][0] is bool"),
    ([[0.5, 1, 2, None]], "data[0][3] is NoneType"),
    ([[0.5, 1, 2, [3]]], "data[0][3] is list"),
])
def test_tensor_data_takes_json_numbers_only(live, data, words):
    info = create(live)
    response = live.post(f"/v1/models/{info['id']}/forward", json={"inputs": {"data": data}})
    assert response.status_code == 422 and words in response.json()["detail"][0]["msg"]
    assert response.json()["detail"][0]["loc"] == ["body", "inputs", "data"]
    assert live.post(f"/v1/models/{info['id']}/forward", json={"inputs": [[0.5, 1, 2, 3]]}).status_code == 200


@pytest.mark.parametrize("tensor_field, value", [
    ("shape", ["3", 4]), ("shape", [True, 4]), ("datatype", 32), ("parameters", {"binary_data_size": "48"}),
])
def test_the_tensor_objects_own_fields_are_strict(live, tensor_field, value):
    info = create(live)
    body, headers = binary_body({}, {"inputs": X})
    head_length = int(headers[HEADER])
    message = orjson.loads(body[:head_length])
    message["inputs"][tensor_field] = value
    head = orjson.dumps(message)
    response = live.post(f"/v1/models/{info['id']}/forward", content=head + body[head_length:],
                         headers={**headers, HEADER: str(len(head))})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:3] == ["body", "inputs", tensor_field]


@pytest.mark.parametrize("header", ["2_5_1", "+25", "25.0", "0x19", "-0"])
def test_the_binary_header_is_decimal_digits_only(live, header):
    info = create(live)
    body, headers = binary_body({}, {"inputs": X})
    response = live.post(f"/v1/models/{info['id']}/forward", content=body, headers={**headers, HEADER: header})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["header", HEADER]


# -- one JSON semantics whatever the size --------------------------------------------------


def sized(message_text: str, big: bool) -> bytes:
    """Gives a forward body: `message_text` with `INPUTS` replaced by a small inputs tensor, or by
    one big enough for the simdjson path."""
    x = WIDE_X if big else WIDE_X[:2]
    inputs = orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    with_a_bool = re.sub(r"^\[\[[^,]+", "[[true", inputs)  # its first number made `true`
    body = message_text.replace("BOOL_INPUTS", with_a_bool).replace("INPUTS", inputs).encode()
    assert (len(body) > 256 * 1024) == big
    return body


TEXTS = {
    "plain": '{"inputs": INPUTS}',
    "deep nesting": '{"inputs": INPUTS, "extra": ' + "[" * 3000 + "]" * 3000 + "}",
    "deep nesting in data": '{"inputs": {"data": INPUTS, "parameters": ' + '{"a":' * 2000 + "1" + "}" * 2000 + "}}",
    "integer over 64 bits in a flag": '{"inputs": INPUTS, "train": 18446744073709551616}',
    "integer over 64 bits, negative": '{"inputs": INPUTS, "keep_tape": -9223372036854775809}',
    "number out of range": '{"inputs": INPUTS, "train": 1e400}',
    "duplicate keys, last wins": '{"inputs": [[1, 2]], "inputs": INPUTS}',
    "duplicate keys, last is bad": '{"inputs": INPUTS, "inputs": [[1, 2]]}',
    "duplicate flag": '{"inputs": INPUTS, "train": "no", "train": false}',
    "bool in data": '{"inputs": BOOL_INPUTS}',
    "string in data": '{"inputs": {"shape": [2, 2], "data": ["1", 2, 3, 4]}, "extra": INPUTS}',
}


@pytest.mark.parametrize("name", list(TEXTS))
def test_a_big_and_a_small_body_get_the_same_answer(live, name):
    info = create(live, WIDE)
    answers = []
    for big in (False, True):
        response = live.post(f"/v1/models/{info['id']}/forward", content=sized(TEXTS[name], big),
                             headers={"Content-Type": "application/json"})
        detail = response.json().get("detail")
        if isinstance(detail, list):  # the error's place and kind; messages may name sizes
            detail = [(error["loc"], error["type"]) for error in detail]
        elif isinstance(detail, str):
            detail = detail.split(":")[0]  # orjson's reason, not its character offset
        answers.append((response.status_code, response.json().get("code"), detail))
    assert answers[0] == answers[1]
    assert answers[0][0] != 500


def test_the_big_plain_body_does_take_the_simdjson_path():
    assert listform.loads(memoryview(sized(TEXTS["plain"], big=True))) is not None


@pytest.mark.parametrize("form", ["list", "big list", "binary"])
@pytest.mark.parametrize("route, field, value", [
    ("train_step", "lr", "0.5"), ("train_step", "lr", True), ("forward", "train", 1),
    ("forward", "keep_tape", "yes"), ("forward_backward", "return_outputs", "true"),
    ("gradcheck", "max_entries", 1.5), ("gradcheck", "eps", "1e-6"),
])
def test_strict_scalars_hold_in_every_form_and_size(live, form, route, field, value):
    info = create(live, WIDE)
    x = WIDE_X if form == "big list" else WIDE_X[:8]
    y = np.arange(len(x)) % 3
    tensors = {"inputs": x} if route == "forward" else {"inputs": x, "targets": y}
    path = f"/v1/models/{info['id']}/{route}"
    if form == "binary":
        body, headers = binary_body({field: value}, tensors)
    else:
        message = {name: {"shape": list(t.shape), "data": t} for name, t in tensors.items()}
        body = orjson.dumps({**message, field: value}, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = {"Content-Type": "application/json"}
        assert (len(body) > 256 * 1024) == (form == "big list")
    before = live.get(f"/v1/models/{info['id']}").json()
    response = live.post(path, content=body, headers=headers)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", field], response.text
    assert live.get(f"/v1/models/{info['id']}").json() == before
