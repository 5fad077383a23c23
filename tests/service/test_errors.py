"""Bad requests of every kind: each gets its status and code, and the server keeps serving."""

import logging
import time
import tracemalloc

import anyio
import httpx
import numpy as np
import pytest

from core import Model
from service.main import create_app
from service.settings import Settings
from wire import HEADER, MLP, create, fresh_id, tensor

X = np.zeros((2, 4), np.float32)


def test_malformed_json_is_400(api):
    info = create(api)
    response = api.post(f"/v1/models/{info['id']}/forward", content=b'{"inputs": [[1, 2',
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["code"] == "malformed_json"
    assert api.post("/v1/models", content=b"{nope").status_code == 400


def test_missing_fields_are_422_with_fastapi_locations(api):
    info = create(api)
    response = api.post(f"/v1/models/{info['id']}/forward", json={"train": True})
    assert response.status_code == 422
    assert response.json() == {"code": "validation_error", "detail": [
        {"loc": ["body", "inputs"], "msg": "Field required", "type": "missing"}]}


def test_unknown_routes_and_methods_answer_in_the_error_shape(api):
    assert api.get("/v1/nothing").json()["code"] == "not_found"
    response = api.delete("/v1/models")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"


def test_an_invalid_model_id_never_reaches_the_filesystem(api):
    assert api.get("/v1/models/" + "a" * 65).status_code == 422
    assert api.get("/v1/models/..%2F..%2Fetc").status_code in (404, 422)
    response = api.post("/v1/models", json={**MLP, "id": "../../etc/passwd"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "id"]


def test_a_body_over_the_limit_is_413_naming_it(make_client):
    client = make_client(max_body_bytes=4096)
    info = create(client)
    big = {"inputs": tensor(np.zeros((400, 4), np.float32))}
    response = client.post(f"/v1/models/{info['id']}/forward", json=big)
    assert response.status_code == 413 and "GRADSERVE_MAX_BODY_BYTES" in response.json()["detail"]

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(100):
            yield b" " * 1000

    streamed = client.post(f"/v1/models/{info['id']}/forward", content=chunks())
    assert streamed.status_code == 413 and streamed.json()["code"] == "body_too_large"
    assert client.post("/v1/models/import", content=b"x" * 5000).status_code == 413


def test_a_tensor_over_the_element_limit_is_413(make_client):
    client = make_client(max_tensor_elements=100)
    info = create(client)
    response = client.post(f"/v1/models/{info['id']}/forward", json={"inputs": tensor(np.zeros((30, 4), np.float32))})
    assert response.status_code == 413 and "GRADSERVE_MAX_TENSOR_ELEMENTS" in response.json()["detail"]
    claimed = client.post(f"/v1/models/{info['id']}/forward",
                          json={"inputs": {"shape": [10**9, 4], "data": [0.0]}})
    assert claimed.status_code == 413


def test_binary_sizes_that_do_not_add_up_are_422(api):
    info = create(api)
    head = b'{"inputs": {"shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}}'
    for body in (head + bytes(20), head + bytes(40)):
        response = api.post(f"/v1/models/{info['id']}/forward", content=body,
                            headers={HEADER: str(len(head)), "Content-Type": "application/octet-stream"})
        assert response.status_code == 422 and "binary" in response.json()["detail"][0]["msg"]
    wrong_size = head.replace(b": 32}", b": 24}")
    response = api.post(f"/v1/models/{info['id']}/forward", content=wrong_size + bytes(24),
                        headers={HEADER: str(len(wrong_size))})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "inputs", "parameters", "binary_data_size"]


def test_nan_input_is_422_and_changes_nothing(api):
    info = create(api)
    before = api.get(f"/v1/models/{info['id']}/parameters").json()
    for inputs in ({"shape": [1, 4], "data": [0.0, "NaN", 1.0, 2.0]},
                   {"shape": [1, 4], "data": [0.0, "Infinity", 1.0, 2.0]}):
        response = api.post(f"/v1/models/{info['id']}/train_step", json={"inputs": inputs, "targets": [1]})
        assert response.status_code == 422 and "non-finite" in response.json()["detail"][0]["msg"]
    assert api.get(f"/v1/models/{info['id']}/parameters").json() == before
    assert api.get(f"/v1/models/{info['id']}").json()["step"] == 0


LINEAR = {"type": "linear", "in_features": 4, "out_features": 4}


@pytest.mark.parametrize("layers, words", [
    ([{"type": "linear", "in_features": 10**6, "out_features": 10**6}], "max_parameters"),
    ([{"type": "linear", "in_features": 4, "out_features": -3}], ""),
    ([{"type": "linear", "in_features": -4, "out_features": 3}], ""),
    ([{"type": "warp_drive"}], "unknown layer"),
    ([LINEAR] + [{"type": "relu"}] * 10**5, "max_layers"),
])
def test_absurd_specs_are_422_without_allocating(api, layers, words):
    start = time.perf_counter()
    response = api.post("/v1/models", json={**MLP, "id": fresh_id(), "layers": layers})
    assert response.status_code == 422, response.text
    assert response.json()["code"] in ("invalid_spec", "validation_error")
    assert words in str(response.json()["detail"])
    assert time.perf_counter() - start < 5


def test_a_trillion_parameter_spec_is_refused_before_allocation():
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="limit"):
            Model.from_spec({**MLP, "layers": [{"type": "linear", "in_features": 10**6, "out_features": 10**6}]},
                            max_parameters=50_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_the_model_limit_is_422_naming_it(make_client):
    client = make_client(max_models=2)
    create(client), create(client)
    response = client.post("/v1/models", json=MLP)
    assert response.status_code == 422 and "GRADSERVE_MAX_MODELS" in str(response.json()["detail"])


def test_pending_tapes_are_bounded_oldest_evicted(make_client):
    client = make_client(max_tapes=2)
    info = create(client)
    tapes = [client.post(f"/v1/models/{info['id']}/forward", json={"inputs": tensor(X), "keep_tape": True}).json()["tape_id"]
             for _ in range(3)]
    assert client.post(f"/v1/models/{info['id']}/backward", json={"tape_id": tapes[0], "targets": [0, 1]}).status_code == 404
    assert client.post(f"/v1/models/{info['id']}/backward", json={"tape_id": tapes[2], "targets": [0, 1]}).status_code == 200


def test_pending_tapes_expire(make_client):
    client = make_client(tape_ttl_seconds=0.2)
    info = create(client)
    tape = client.post(f"/v1/models/{info['id']}/forward", json={"inputs": tensor(X), "keep_tape": True}).json()["tape_id"]
    assert "gradserve_pending_tapes 1.0" in client.get("/metrics").text
    time.sleep(0.3)
    assert client.post(f"/v1/models/{info['id']}/backward", json={"tape_id": tape, "targets": [0, 1]}).status_code == 404


def test_a_bug_is_a_bare_logged_500_and_the_server_carries_on(client, monkeypatch, caplog):
    info = create(client)

    def broken(self):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Model, "diagnostics", broken)
    with caplog.at_level(logging.ERROR, logger="gradserve"):
        response = client.get(f"/v1/models/{info['id']}/diagnostics")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error", "code": "internal_error"}
    assert "secret internal detail" in caplog.text and "Traceback" in caplog.text
    assert client.get(f"/v1/models/{info['id']}").status_code == 200


def test_v2_errors_keep_their_form_under_a_root_path(tmp_path):
    app = create_app(Settings(data_dir=tmp_path / "data"))

    async def ask() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, root_path="/api")
            async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
                return await client.post("/api/v2/models/nope/infer", json={})

    response = anyio.run(ask)
    assert response.status_code == 404 and set(response.json()) == {"error"}
