"""What the client puts on the wire (a MockTransport records each request)."""

import json

import httpx
import numpy as np
import pytest

import gradserve_client as gs
from gradserve_client._codec import JSON_LENGTH_HEADER

INFO = {"id": "m 1", "spec": {"dtype": "float64", "loss": {"type": "mse"}}, "parameter_shapes": {"0.weight": [1, 2]},
        "num_parameters": 2, "step": 0, "version": 0, "accumulated": 0}


def recording_client(answer: dict, **settings) -> tuple[gs.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answer)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return gs.Client(settings.pop("base_url", "http://gradserve.test/api/"), http_client=http, **settings), seen


def test_requests_carry_the_key_and_join_the_base_url_path():
    client, seen = recording_client(INFO, api_key="sk-1")
    model = client.model("m 1")
    assert str(seen[0].url) == "http://gradserve.test/api/v1/models/m%201"
    assert seen[0].headers["Authorization"] == "Bearer sk-1"
    assert seen[0].headers["User-Agent"].startswith("gradserve-client/")
    assert model.info.parameter_shapes == {"0.weight": (1, 2)}


def test_a_binary_post_sends_model_dtype_floats_and_int64_labels():
    client, seen = recording_client({"outputs": {"shape": [1, 1], "datatype": "FP64", "data": [0.5]}})
    model = gs.RemoteModel(client, gs.ModelInfo(**INFO))
    model.forward(np.float32([[1.0, 2.0]]))
    request = seen[-1]
    n = int(request.headers[JSON_LENGTH_HEADER])
    head = json.loads(request.content[:n])
    assert head["inputs"] == {"shape": [1, 2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}
    assert head["binary_data_output"] is True and head["train"] is False
    assert request.content[n:] == np.float64([1.0, 2.0]).tobytes()


@pytest.mark.parametrize("binary", [True, False])
def test_tensor_gets_ask_for_binary_answers_only_in_binary_mode(binary):
    client, seen = recording_client({"parameters": {}}, binary=binary)
    gs.RemoteModel(client, gs.ModelInfo(**INFO)).parameters()
    assert seen[-1].url.params.get("binary_data_output") == ("true" if binary else None)


def test_targets_or_grad_output_exactly_one():
    client, seen = recording_client({})
    model = gs.RemoteModel(client, gs.ModelInfo(**INFO))
    with pytest.raises(TypeError):
        model.forward_backward(np.zeros((1, 2)))
    with pytest.raises(TypeError):
        model.forward_backward(np.zeros((1, 2)), np.zeros((1, 1)), grad_output=np.zeros((1, 1)))
    with pytest.raises(ValueError):
        model.backward(gs.Tape("t", "another-model"), targets=np.zeros((1, 1)))
    assert seen == []
