"""The Open Inference Protocol V2 (/v2): Triton's own client against a real uvicorn (embedded and
Ray), and the raw protocol: metadata fields, errors as {"error": ...}, the binary framing."""

import functools
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from wire import HEADER, MLP, array, binary_body, create, fresh_id, read_binary, tensor

KEY = "alice-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def key() -> dict:
    """Gives the key's headers for one tritonclient call: its infer adds its own to the dict it is given."""
    return dict(AUTH)

MLP64 = {**MLP, "dtype": "float64"}
LSTM = {"layers": [{"type": "lstm", "input_size": 3, "hidden_size": 5, "return_sequences": True}], "seed": 0}
RNG = np.random.default_rng(0)


@pytest.fixture
def served(make_live) -> Iterator[tuple[triton.InferenceServerClient, httpx.Client]]:
    """Gives Triton's client and an httpx client of one keyed server (embedded, then on Ray)."""
    url = make_live(api_keys=[KEY])
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)
        yield client, http
        client.close()


def infer(client: triton.InferenceServerClient, model_id: str, x: np.ndarray, binary: bool) -> np.ndarray:
    """Gives `outputs` of tritonclient's infer, inputs and outputs in binary form or JSON."""
    inputs = triton.InferInput("inputs", list(x.shape), {np.float32: "FP32", np.float64: "FP64"}[x.dtype.type])
    inputs.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("outputs", binary_data=binary)]
    result = client.infer(model_id, [inputs], outputs=outputs, headers=key())
    return result.as_numpy("outputs")


def test_tritonclient_asks_for_the_version_the_model_is_at(served):
    client, http = served
    model_id = create(http, MLP)["id"]
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    inputs = triton.InferInput("inputs", [3, 4], "FP32")
    inputs.set_data_from_numpy(x)
    assert client.get_model_metadata(model_id, model_version="0", headers=key())["versions"] == ["0"]
    assert client.is_model_ready(model_id, model_version="0", headers=key())
    at_0 = client.infer(model_id, [inputs], model_version="0", headers=key())
    np.testing.assert_array_equal(at_0.as_numpy("outputs"), forward(http, model_id, x))
    step = {"inputs": tensor(x), "targets": tensor(RNG.integers(0, 3, 3))}
    assert http.post(f"/v1/models/{model_id}/train_step", json=step).json()["step"] == 1
    with pytest.raises(InferenceServerException) as moved_on:  # version 0 is gone: the model trained
        client.infer(model_id, [inputs], model_version="0", headers=key())
    assert moved_on.value.status() == "404" and "now 1" in moved_on.value.message()
    assert not client.is_model_ready(model_id, model_version="0", headers=key())
    assert client.infer(model_id, [inputs], model_version="1", headers=key()).get_response()["model_version"] == "1"


def forward(http: httpx.Client, model_id: str, x: np.ndarray) -> np.ndarray:
    response = http.post(f"/v1/models/{model_id}/forward", json={"inputs": tensor(x)})
    assert response.status_code == 200, response.text
    return array(response.json()["outputs"])


def test_tritonclient_sees_a_live_ready_server_and_its_models(served):
    client, http = served
    model_id = create(http, MLP)["id"]
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata() == {"name": "gradserve", "version": "0.1.0",
                                            "extensions": ["binary_tensor_data"]}
    assert client.is_model_ready(model_id, headers=key())
    assert not client.is_model_ready(model_id)  # no key: 401
    assert not client.is_model_ready("no-such-model", headers=key())
    assert client.get_model_metadata(model_id, headers=key()) == {
        "name": model_id, "versions": ["0"], "platform": "gradserve",
        "inputs": [{"name": "inputs", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "outputs", "datatype": "FP32", "shape": [-1, 3]}]}
    lstm = create(http, LSTM)["id"]
    metadata = client.get_model_metadata(lstm, headers=key())
    assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, -1, 3]}]
    assert metadata["outputs"] == [{"name": "outputs", "datatype": "FP32", "shape": [-1, -1, 5]}]


@pytest.mark.parametrize("spec, shape, dtype", [(MLP, (5, 4), np.float32), (MLP64, (5, 4), np.float64),
                                                (LSTM, (2, 6, 3), np.float32)], ids=["fp32", "fp64", "lstm"])
def test_tritonclient_infer_gives_the_outputs_of_v1_forward(served, spec, shape, dtype):
    client, http = served
    model_id = create(http, spec)["id"]
    x = RNG.standard_normal(shape).astype(dtype)
    expected = forward(http, model_id, x)
    for binary in (False, True):  # JSON both ways; tritonclient's default, binary both ways
        outputs = infer(client, model_id, x, binary)
        assert outputs.dtype == dtype and outputs.shape == expected.shape
        np.testing.assert_array_equal(outputs, expected)


def test_tritonclient_echoes_the_request_id_and_needs_the_key(served):
    client, http = served
    model_id = create(http, MLP)["id"]
    x = np.ones((2, 4), np.float32)
    inputs = triton.InferInput("inputs", [2, 4], "FP32")
    inputs.set_data_from_numpy(x)
    result = client.infer(model_id, [inputs], request_id="req-7", headers=key())  # no outputs: binary_data_output
    assert result.get_response()["id"] == "req-7" and result.get_response()["model_version"] == "0"
    np.testing.assert_array_equal(result.as_numpy("outputs"), forward(http, model_id, x))
    with pytest.raises(InferenceServerException) as refused:
        client.infer(model_id, [inputs])
    assert refused.value.status() == "401" and "API key" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [inputs], headers=key())
    assert unknown.value.status() == "404"


def test_model_routes_need_the_key_and_answer_errors_in_the_protocols_form(make_live):
    url = make_live(api_keys=[KEY])
    with httpx.Client(base_url=url, timeout=30) as http:
        model_id = http.post("/v1/models", json={**MLP, "id": fresh_id()}, headers=AUTH).json()["id"]
        for method, path in [("GET", ""), ("GET", "/ready"), ("POST", "/infer")]:
            response = http.request(method, f"/v2/models/{model_id}{path}", json={})
            assert response.status_code == 401 and response.json() == {
                "error": "missing or wrong API key (Authorization: Bearer <key>)"}
        for path in ("/v2", "/v2/health/live", "/v2/health/ready"):  # open, as /healthz is
            assert http.get(path).status_code == 200


# -- the raw protocol, in-process and over uvicorn (embedded and Ray) --------------------------


def v2_infer(x: np.ndarray, **extra) -> dict:
    return {"inputs": [{"name": "inputs", **tensor(x)}], **extra}


def test_metadata_fields(api):
    assert api.get("/v2").json() == {"name": "gradserve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert api.get("/v2/health/live").json() == {"live": True}
    assert api.get("/v2/health/ready").json() == {"ready": True}
    model_id = create(api, MLP64)["id"]
    metadata = api.get(f"/v2/models/{model_id}").json()
    assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP64", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "outputs", "datatype": "FP64", "shape": [-1, 3]}]
    assert api.get(f"/v2/models/{model_id}/ready").json() == {"name": model_id, "ready": True}


def test_infer_answers_json_with_the_id_and_changes_nothing(api):
    info = create(api, MLP)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    response = api.post(f"/v2/models/{info['id']}/infer", json=v2_infer(x, id="a1"))
    assert response.status_code == 200 and HEADER.lower() not in response.headers
    answer = response.json()
    assert {key: answer[key] for key in ("model_name", "model_version", "id")} == {
        "model_name": info["id"], "model_version": "0", "id": "a1"}
    [output] = answer["outputs"]
    assert output["name"] == "outputs" and output["datatype"] == "FP32" and output["shape"] == [3, 3]
    np.testing.assert_array_equal(array(output), forward(api, info["id"], x))
    after = api.get(f"/v1/models/{info['id']}").json()
    assert (after["version"], after["step"], after["accumulated"]) == (info["version"], 0, 0)


def test_a_token_model_takes_int64_inputs_as_v1_does(api):
    model_id = create(api, {"layers": [{"type": "embedding", "num_embeddings": 10, "embedding_dim": 4},
                                       {"type": "lstm", "hidden_size": 3}], "seed": 0})["id"]
    assert api.get(f"/v2/models/{model_id}").json()["inputs"] == [
        {"name": "inputs", "datatype": "INT64", "shape": [-1, -1]}]
    tokens = np.array([[1, 2, 3], [9, 0, 4]], np.int64)
    response = api.post(f"/v2/models/{model_id}/infer", json=v2_infer(tokens))
    np.testing.assert_array_equal(array(response.json()["outputs"][0]), forward(api, model_id, tokens))
    as_floats = v2_infer(tokens.astype(np.float32))  # a datatype the model does not take: 422, as on /v1
    assert "INT64" in error_of(api.post(f"/v2/models/{model_id}/infer", json=as_floats), 422)


def test_binary_outputs_as_the_output_or_else_the_request_asks(api):
    model_id = create(api, MLP)["id"]
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    expected = forward(api, model_id, x)
    binary = {"name": "outputs", "parameters": {"binary_data": True}}
    for extra, is_binary in [({"outputs": [binary]}, True), ({"parameters": {"binary_data_output": True}}, True),
                             ({"parameters": {"binary_data_output": True},
                               "outputs": [{"name": "outputs", "parameters": {"binary_data": False}}]}, False)]:
        response = api.post(f"/v2/models/{model_id}/infer", json=v2_infer(x, **extra))
        assert response.status_code == 200, response.text
        if not is_binary:
            np.testing.assert_array_equal(array(response.json()["outputs"][0]), expected)
            continue
        length = int(response.headers[HEADER])
        [output] = orjson.loads(response.content[:length])["outputs"]
        assert output["parameters"] == {"binary_data_size": expected.nbytes}
        np.testing.assert_array_equal(np.frombuffer(response.content[length:], np.float32).reshape(2, 3), expected)


def test_binary_inputs_without_a_content_type(api):
    model_id = create(api, MLP)["id"]
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    head = orjson.dumps({"inputs": [{"name": "inputs", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]})
    response = api.post(f"/v2/models/{model_id}/infer", content=head + x.tobytes(), headers={HEADER: str(len(head))})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(array(response.json()["outputs"][0]), forward(api, model_id, x))


def test_a_big_batch_is_encoded_off_the_event_loop_alike(api):
    model_id = create(api, MLP)["id"]
    x = RNG.standard_normal((30_000, 4)).astype(np.float32)  # 90k outputs: over OFFLOAD_ELEMENTS
    body, headers = binary_body({"binary_data_output": True}, {"inputs": x})
    expected = read_binary(api.post(f"/v1/models/{model_id}/forward", content=body, headers=headers))[1]["outputs"]
    head = orjson.dumps({"inputs": [{"name": "inputs", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}})
    response = api.post(f"/v2/models/{model_id}/infer", content=head + x.tobytes(), headers={HEADER: str(len(head))})
    length = int(response.headers[HEADER])
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], np.float32).reshape(30_000, 3), expected)


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    return body["error"]


def test_errors_are_the_protocols_with_the_statuses_of_v1(api):
    model_id = create(api, MLP)["id"]
    x = np.ones((2, 4), np.float32)
    url = f"/v2/models/{model_id}/infer"
    assert "no model" in error_of(api.get("/v2/models/no-such-model"), 404)
    assert "no model" in error_of(api.post("/v2/models/no-such-model/infer", json=v2_infer(x)), 404)
    assert error_of(api.get("/v2/models/no-such-model/ready"), 404)
    assert error_of(api.get("/v2/no-such-route"), 404)
    wrong_name = {"inputs": [{**v2_infer(x)["inputs"][0], "name": "x"}]}
    assert "body.inputs.0.name" in error_of(api.post(url, json=wrong_name), 422)
    assert "rank 2" in error_of(api.post(url, json=v2_infer(np.ones((2, 4, 1), np.float32))), 422)
    assert "features" in error_of(api.post(url, json=v2_infer(np.ones((2, 5), np.float32))), 422)
    wrong_datatype = {"inputs": [{**v2_infer(x)["inputs"][0], "datatype": "FP16"}]}
    assert "body.inputs.0.datatype" in error_of(api.post(url, json=wrong_datatype), 422)
    short = {"inputs": [{**v2_infer(x)["inputs"][0], "shape": [3, 4]}]}
    assert "shape [3, 4] needs 12" in error_of(api.post(url, json=short), 422)
    assert "body.outputs.0.name" in error_of(api.post(url, json=v2_infer(x, outputs=[{"name": "y"}])), 422)
    assert "inputs" in error_of(api.post(url, json={"inputs": []}), 422)
    assert "not valid JSON" in error_of(api.post(url, content=b"{", headers={"Content-Type": "application/json"}), 400)


def test_bad_binary_framing_is_422(api):
    model_id = create(api, MLP)["id"]
    url = f"/v2/models/{model_id}/infer"
    x = np.ones((2, 4), np.float32)
    head = orjson.dumps({"inputs": [{"name": "inputs", "shape": [2, 4], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]})
    for content, header, says in [(head + x.tobytes(), str(len(head) + 100), "but the body has"),
                                  (head + x.tobytes(), "twelve", "decimal integer"),
                                  (head + x.tobytes()[:-4], str(len(head)), "need more than"),
                                  (head + x.tobytes() + b"\0" * 4, str(len(head)), "its tensors declare")]:
        assert says in error_of(api.post(url, content=content, headers={HEADER: header}), 422)
    wrong_size = orjson.dumps({"inputs": [{"name": "inputs", "shape": [2, 4], "datatype": "FP64",
                                           "parameters": {"binary_data_size": x.nbytes}}]})
    assert "needs 64" in error_of(api.post(url, content=wrong_size + x.tobytes(),
                                           headers={HEADER: str(len(wrong_size))}), 422)
    body, headers = binary_body({}, {"inputs": x})  # /v1's binary framing, without the protocol's name
    assert "body.inputs" in error_of(api.post(url, content=body, headers=headers), 422)


def test_what_v2_does_not_do_is_refused_not_ignored(api):
    info = create(api, MLP)
    infer = {"inputs": [{"name": "inputs", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}
    classify = {**infer, "outputs": [{"name": "outputs", "parameters": {"classification": 1}}]}
    assert api.post(f"/v2/models/{info['id']}/infer", json=classify).status_code == 422
    loose = {**infer, "outputs": [{"name": "outputs", "parameters": {"binary_data": "true"}}]}
    assert api.post(f"/v2/models/{info['id']}/infer", json=loose).status_code == 422
    loose = {**infer, "parameters": {"binary_data_output": 1}}
    assert api.post(f"/v2/models/{info['id']}/infer", json=loose).status_code == 422
    gzipped = api.post(f"/v2/models/{info['id']}/infer", content=b"\x1f\x8b...", headers={"Content-Encoding": "gzip"})
    assert gzipped.status_code == 415 and "gzip" in gzipped.json()["error"]
    nested = functools.reduce(lambda inner, _: [inner], range(300), [0.0])  # 301 lists deep
    deep = {"inputs": [{"name": "inputs", "shape": [1], "datatype": "FP32", "data": nested}]}
    response = api.post(f"/v2/models/{info['id']}/infer", json=deep)
    assert response.status_code == 422 and "at most 32 axes" in response.json()["error"]
