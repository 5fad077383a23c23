"""service/direct.py: the routes answered without FastAPI's router and dependency walk answer
exactly as FastAPI answers them, failures included, and are counted under their route."""

from pathlib import Path

import numpy as np
import orjson
import pytest

from service.direct import Direct, direct_routes
from service.main import create_app
from service.settings import Settings
from tests.service.conftest import asgi_client
from tests.service.test_metrics import samples
from wire import MLP, binary_body, tensor

KEY = "k-direct"
AUTH = {"Authorization": f"Bearer {KEY}"}
x = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]], np.float32)
labels = np.array([2, 0])


def without_direct(settings: Settings):
    """Gives the app with every request going through FastAPI's router."""
    app = create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not Direct]
    return app


@pytest.fixture
def pair(tmp_path: Path):
    """Gives (client of the app as served, client of the same app without Direct), each with
    the same model `m`."""
    def settings(name: str) -> Settings:
        return Settings(data_dir=tmp_path / name, api_keys=[KEY], durability="none")

    with asgi_client(settings("direct")) as direct, asgi_client(None, without_direct(settings("fastapi"))) as plain:
        for client in (direct, plain):
            assert client.post("/v1/models", json={**MLP, "id": "m"}, headers=AUTH).status_code == 201
        yield direct, plain


def test_the_routes_taken_directly():
    routes = direct_routes(create_app(Settings(data_dir="/nonexistent-direct")))
    taken = [(method, prefix, "/".join(route.segments)) for (method, prefix, _), found in routes.items()
             for route in found]
    assert sorted(taken) == sorted(
        [("POST", "/v1/models/", name) for name in
         ("forward", "backward", "forward_backward", "step", "evaluate", "train_step")]
        + [("POST", "/v1/models/", f"data/{{name}}{suffix}") for suffix in ("", "/train_steps", "/evaluate")]
        + [("POST", "/v2/models/", "infer")])


def answer(response) -> tuple:
    return (response.status_code, response.headers.get("content-type"), response.headers.get("www-authenticate"),
            response.content)


def body_of(message: dict) -> bytes:
    return orjson.dumps(message)


JSON = {"Content-Type": "application/json", **AUTH}


def binary(message: dict, tensors: dict) -> tuple[bytes, dict]:
    body, headers = binary_body(message, tensors)
    return body, {**headers, **AUTH}


REQUESTS = [
    ("POST", "/v1/models/m/train_step", body_of({"inputs": tensor(x), "targets": tensor(labels)}), JSON),
    ("POST", "/v1/models/m/train_step", *binary({}, {"inputs": x, "targets": labels})),
    ("POST", "/v1/models/m/forward_backward", body_of({"inputs": tensor(x), "targets": tensor(labels),
                                                       "return_input_grad": True}), JSON),
    ("POST", "/v1/models/m/step", body_of({"lr": 0.5}), JSON),
    ("POST", "/v1/models/m/step", b"", JSON),  # nothing to step: 409
    ("POST", "/v1/models/m/evaluate", body_of({"inputs": tensor(x), "targets": tensor(labels)}), JSON),
    ("POST", "/v1/models/m/forward", body_of({"inputs": tensor(x), "binary_data_output": True}), JSON),
    ("POST", "/v1/models/m/train_step", body_of({"inputs": tensor(x)}), JSON),  # no targets: 422
    ("POST", "/v1/models/m/train_step", b'{"inputs": [[1, 2', JSON),  # malformed: 400
    ("POST", "/v1/models/m/train_step", body_of({"inputs": tensor(x), "targets": tensor(labels), "lr": "0.5"}), JSON),
    ("POST", "/v1/models/m/train_step", body_of({"inputs": tensor(x), "targets": tensor(labels), "lr": 1e300}), JSON),
    ("POST", "/v1/models/m/train_step", body_of({"inputs": tensor(x), "targets": tensor(labels)}),
     {"Content-Type": "application/json", "Authorization": "Bearer wrong"}),  # 401
    ("POST", "/v1/models/m/train_step", body_of({"inputs": tensor(x), "targets": tensor(labels)}),
     {"Content-Type": "application/json"}),  # no key: 401
    ("POST", "/v1/models/nope/train_step", body_of({"inputs": tensor(x), "targets": tensor(labels)}), JSON),  # 404
    ("POST", "/v1/models/bad.id!/train_step", body_of({"inputs": tensor(x), "targets": tensor(labels)}), JSON),
    ("GET", "/v1/models/m/train_step", None, AUTH),  # 405
    ("POST", "/v1/models/m/train_step/", body_of({}), JSON),
    ("POST", "/v1/models/m/no_such_route", body_of({}), JSON),
    ("POST", "/v2/models/m/infer", body_of({"inputs": [{"name": "inputs", "shape": [2, 4], "datatype": "FP32",
                                                        "data": x.ravel().tolist()}]}), JSON),
    ("POST", "/v2/models/m/infer", body_of({"inputs": []}), JSON),  # the protocol's {"error": ...}
    ("POST", "/v2/models/nope/infer", body_of({"inputs": []}), JSON),
    # a data set: its rows added, trained on and evaluated, and each way such a request fails
    ("POST", "/v1/models/m/data/rows", body_of({"inputs": tensor(x), "targets": tensor(labels)}), JSON),
    ("POST", "/v1/models/m/data/rows", *binary({}, {"inputs": x, "targets": labels})),
    ("POST", "/v1/models/m/data/rows/train_steps", body_of({"rows": [3, 0, 2, 1], "batch_size": 2}), JSON),
    ("POST", "/v1/models/m/data/rows/evaluate", body_of({"rows": [0, 1]}), JSON),
    ("POST", "/v1/models/m/data/rows/evaluate", b"", JSON),  # every row
    ("POST", "/v1/models/m/data/rows/evaluate", body_of({"rows": [0, 9]}), JSON),  # no row 9: 422
    ("POST", "/v1/models/m/data/rows/train_steps", body_of({"rows": [0, 1]}), JSON),  # no batch_size: 422
    ("POST", "/v1/models/m/data/nothing/evaluate", b"", JSON),  # no such set: 404
    ("POST", "/v1/models/m/data/bad.name/evaluate", b"", JSON),  # a name off the pattern: FastAPI's 422
    ("POST", "/v1/models/m/data/rows", body_of({"inputs": tensor(x), "targets": tensor(labels)}),
     {"Content-Type": "application/json"}),  # no key: 401
    ("GET", "/v1/models/m/data/rows/evaluate", None, AUTH),  # 405
    ("POST", "/v1/models/m/data/rows/no_such_route", body_of({}), JSON),
]


def test_direct_answers_equal_fastapi_answers(pair):
    direct, plain = pair
    statuses = set()
    for method, path, body, headers in REQUESTS:
        answers = [answer(client.request(method, path, content=body, headers=headers)) for client in pair]
        assert answers[0] == answers[1], (method, path)
        statuses.add(answers[0][0])
    assert statuses >= {200, 400, 401, 404, 405, 409, 422}
    seen = samples(direct)  # counted under the route's template, as FastAPI's routes are
    route = (("method", "POST"), ("route", "/v1/models/{model_id}/train_step"))
    assert seen[("gradserve_requests_total", (*route, ("status", "200")))] == 2
    assert seen[("gradserve_requests_total", (*route, ("status", "401")))] == 2
    assert seen[("gradserve_request_duration_seconds_count", route)] == 10  # and the bad id, FastAPI's
    assert seen[("gradserve_steps_total", ())] == 5  # 3 train steps, a data set's 2 batches
    route = (("method", "POST"), ("route", "/v1/models/{model_id}/data/{name}/evaluate"))
    assert seen[("gradserve_requests_total", (*route, ("status", "200")))] == 2


def test_a_kept_tape_goes_back_through_backward(pair):
    outputs = []
    for client in pair:
        tape = client.post("/v1/models/m/forward", json={"inputs": tensor(x), "keep_tape": True}, headers=AUTH).json()
        assert tape["tape_id"]
        backward = client.post("/v1/models/m/backward", json={"tape_id": tape["tape_id"], "targets": tensor(labels)},
                               headers=AUTH)
        outputs.append((tape["outputs"], backward.status_code, backward.json()))
    assert outputs[0] == outputs[1]
    assert outputs[0][1] == 200
