"""Creating, reading, listing, deleting, exporting and importing models, in-process and over uvicorn."""

import numpy as np
from safetensors.numpy import load

from core import Model
from wire import MLP, array, create, fresh_id, tensor


def test_healthz_readyz_and_metrics(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and "gradserve_requests_total" in metrics.text


def test_create_gives_201_with_the_model_info(api):
    model_id = fresh_id()
    response = api.post("/v1/models", json={**MLP, "id": model_id})
    assert response.status_code == 201
    info = response.json()
    assert info["id"] == model_id and info["step"] == 0 and info["accumulated"] == 0
    assert info["parameter_shapes"] == {"0.weight": [8, 4], "0.bias": [8], "2.weight": [3, 8], "2.bias": [3]}
    assert info["num_parameters"] == 8 * 4 + 8 + 3 * 8 + 3
    assert info["spec"]["layers"][0] == {"type": "linear", "in_features": 4, "out_features": 8}


def test_the_server_generates_an_id_when_none_is_given(api):
    response = api.post("/v1/models", json=MLP)
    assert response.status_code == 201 and response.json()["id"]


def test_initial_weights_are_those_of_the_engine_for_the_same_spec_and_seed(api):
    info = create(api)
    served = api.get(f"/v1/models/{info['id']}/parameters").json()["parameters"]
    local = Model.from_spec({**MLP, "id": info["id"]})
    for name, value in local.parameters().items():
        assert np.array_equal(array(served[name]), value)


def test_an_id_taken_is_409(api):
    info = create(api)
    response = api.post("/v1/models", json={**MLP, "id": info["id"]})
    assert response.status_code == 409 and response.json()["code"] == "id_taken"


def test_get_list_and_delete(api):
    info = create(api)
    assert api.get(f"/v1/models/{info['id']}").json() == info
    assert info["id"] in [m["id"] for m in api.get("/v1/models").json()["models"]]
    assert api.delete(f"/v1/models/{info['id']}").status_code == 204
    missing = api.get(f"/v1/models/{info['id']}")
    assert missing.status_code == 404 and missing.json()["code"] == "model_not_found"
    assert api.delete(f"/v1/models/{info['id']}").status_code == 404


def test_checkpoint_is_a_safetensors_file_that_imports_back(api):
    info = create(api)
    x, y = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2])
    assert api.post(f"/v1/models/{info['id']}/train_step", json={"inputs": tensor(x), "targets": tensor(y)}).status_code == 200
    checkpoint = api.get(f"/v1/models/{info['id']}/checkpoint")
    assert checkpoint.headers["content-type"] == "application/octet-stream"
    copy_id = fresh_id("copy")
    imported = api.post(f"/v1/models/import?id={copy_id}", content=checkpoint.content,
                        headers={"Content-Type": "application/octet-stream"})
    assert imported.status_code == 201 and imported.json()["id"] == copy_id and imported.json()["step"] == 1
    original = api.get(f"/v1/models/{info['id']}/parameters").json()
    assert api.get(f"/v1/models/{copy_id}/parameters").json() == original
    # Both continue identically: the optimizer state came along.
    for model_id in (info["id"], copy_id):
        api.post(f"/v1/models/{model_id}/train_step", json={"inputs": tensor(x), "targets": tensor(y)})
    assert api.get(f"/v1/models/{copy_id}/parameters").json() == api.get(f"/v1/models/{info['id']}/parameters").json()


def test_checkpoint_without_optimizer_is_a_pure_state_dict(api):
    info = create(api)
    content = api.get(f"/v1/models/{info['id']}/checkpoint?include_optimizer=false").content
    assert set(load(content)) == set(info["parameter_shapes"])


def test_importing_garbage_is_422_and_an_existing_id_409(api):
    response = api.post("/v1/models/import", content=b"not a checkpoint at all")
    assert response.status_code == 422 and response.json()["code"] == "invalid_checkpoint"
    info = create(api)
    checkpoint = api.get(f"/v1/models/{info['id']}/checkpoint").content
    assert api.post("/v1/models/import", content=checkpoint).status_code == 409


def test_workers_need_a_ray_backed_server(client):
    response = client.post("/v1/models", json={**MLP, "id": fresh_id(), "workers": 2})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "workers"] and "--ray" in error["msg"]
    single = client.post("/v1/models", json={**MLP, "id": fresh_id(), "workers": 1})
    assert single.status_code == 201 and single.json()["spec"]["workers"] == 1
    assert client.get("/readyz").json()["models"] == 1  # the refused one was never registered


def test_a_checkpoint_asking_for_workers_is_refused_by_the_embedded_server(client):
    spec = {**MLP, "id": "parallel", "workers": 3}
    response = client.post("/v1/models/import", content=Model.from_spec(spec).to_bytes(),
                           headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "workers"]
