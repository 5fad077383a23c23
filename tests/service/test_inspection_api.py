"""Parameters, gradients, diagnostics and gradcheck over the API."""

import numpy as np

from wire import MLP, array, binary_body, create, read_binary, tensor

X = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 1, 0])


def test_put_parameters_replaces_them_and_makes_tapes_stale(api):
    info = create(api)
    tape = api.post(f"/v1/models/{info['id']}/forward", json={"inputs": tensor(X), "keep_tape": True}).json()["tape_id"]
    new = {name: np.full(shape, 0.25, np.float32) for name, shape in info["parameter_shapes"].items()}
    response = api.put(f"/v1/models/{info['id']}/parameters",
                       json={"parameters": {name: tensor(value) for name, value in new.items()}})
    assert response.status_code == 200 and response.json()["version"] == info["version"] + 1
    served = api.get(f"/v1/models/{info['id']}/parameters").json()["parameters"]
    for name, value in new.items():
        assert np.array_equal(array(served[name]), value)
    stale = api.post(f"/v1/models/{info['id']}/backward", json={"tape_id": tape, "targets": tensor(Y)})
    assert stale.status_code == 409 and stale.json()["code"] == "stale_tape"


def test_put_parameters_in_binary_form(api):
    info = create(api)
    new = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)
           for name, shape in info["parameter_shapes"].items()}
    message = {"parameters": {name: {"shape": list(v.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": v.nbytes}} for name, v in new.items()}}
    body, headers = binary_body(message, {})
    body += b"".join(v.tobytes() for v in new.values())
    assert api.put(f"/v1/models/{info['id']}/parameters", content=body, headers=headers).status_code == 200
    _, served = read_binary(api.get(f"/v1/models/{info['id']}/parameters?binary_data_output=true"))
    for name, value in new.items():
        assert served[name].tobytes() == value.tobytes()


def test_put_parameters_with_a_wrong_shape_is_422_and_changes_nothing(api):
    info = create(api)
    before = api.get(f"/v1/models/{info['id']}/parameters").json()
    wrong = {name: tensor(np.zeros(shape, np.float32)) for name, shape in info["parameter_shapes"].items()}
    wrong["0.bias"] = tensor(np.zeros(7, np.float32))
    response = api.put(f"/v1/models/{info['id']}/parameters", json={"parameters": wrong})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "parameters", "0.bias"]
    assert api.get(f"/v1/models/{info['id']}/parameters").json() == before


def test_diagnostics_after_a_step(api):
    info = create(api)
    api.post(f"/v1/models/{info['id']}/train_step", json={"inputs": tensor(X), "targets": tensor(Y)})
    report = api.get(f"/v1/models/{info['id']}/diagnostics")
    assert report.status_code == 200
    assert set(info["parameter_shapes"]) <= set(report.json()["parameters"])


def test_gradcheck_passes_on_a_float64_model_and_leaves_it_untouched(api):
    info = create(api, {**MLP, "dtype": "float64"})
    before = api.get(f"/v1/models/{info['id']}/parameters").json()
    response = api.post(f"/v1/models/{info['id']}/gradcheck", json={
        "inputs": tensor(X.astype(np.float64)), "targets": tensor(Y), "max_entries": 5})
    assert response.status_code == 200
    report = response.json()
    assert report["passed"] is True and report["mode"] == "entries"
    assert set(report["parameters"]) == set(info["parameter_shapes"])
    directional = api.post(f"/v1/models/{info['id']}/gradcheck", json={
        "inputs": tensor(X.astype(np.float64)), "targets": tensor(Y), "mode": "directional"}).json()
    assert directional["passed"] is True and directional["mode"] == "directional"
    assert api.get(f"/v1/models/{info['id']}/parameters").json() == before
    assert api.get(f"/v1/models/{info['id']}").json()["accumulated"] == 0


def test_gradcheck_refuses_bad_options(api):
    info = create(api)
    response = api.post(f"/v1/models/{info['id']}/gradcheck", json={
        "inputs": tensor(X), "targets": tensor(Y), "mode": "sideways", "eps": -1})
    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["detail"]} >= {("body", "mode"), ("body", "eps")}


def test_put_parameters_that_overflow_float32_are_422_and_change_nothing(api):
    info = create(api)
    before = api.get(f"/v1/models/{info['id']}/parameters").json()
    values = {name: np.zeros(shape) for name, shape in info["parameter_shapes"].items()}  # FP64
    values["2.weight"][0, 0] = 1e300  # finite in float64, Infinity in the float32 model
    response = api.put(f"/v1/models/{info['id']}/parameters",
                       json={"parameters": {name: tensor(value) for name, value in values.items()}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "parameters", "2.weight"]
    assert "float32 range" in response.json()["detail"][0]["msg"]
    message = {"parameters": {name: {"shape": list(v.shape), "datatype": "FP64",
                                     "parameters": {"binary_data_size": v.nbytes}} for name, v in values.items()}}
    body, headers = binary_body(message, {})
    body += b"".join(v.tobytes() for v in values.values())
    binary = api.put(f"/v1/models/{info['id']}/parameters", content=body, headers=headers)
    assert binary.status_code == 422 and binary.json()["detail"][0]["loc"] == ["body", "parameters", "2.weight"]
    assert api.get(f"/v1/models/{info['id']}/parameters").json() == before
