"""A model that starts with an embedding takes INT64 class indices through every route, in list
and binary form (DESIGN section 4a)."""

import numpy as np
import pytest

from core import Model
from wire import array, binary_body, create, read_binary, tensor

TOKENS = {"layers": [{"type": "embedding", "num_embeddings": 10, "embedding_dim": 8},
                     {"type": "positional", "max_len": 6, "embedding_dim": 8},
                     {"type": "attention", "embed_dim": 8, "num_heads": 2, "causal": True},
                     {"type": "linear", "out_features": 10}],
          "loss": {"type": "softmax_cross_entropy", "ignore_index": 0}, "optimizer": {"type": "adam", "lr": 0.01},
          "seed": 0}
X = np.random.default_rng(0).integers(0, 10, (3, 5))
Y = np.roll(X, -1, axis=1)


def url(info, route):
    return f"/v1/models/{info['id']}/{route}"


def test_bare_integer_lists_and_binary_int64_give_the_engines_outputs(api):
    info = create(api, TOKENS)
    expected, _ = Model.from_spec({**TOKENS, "id": info["id"]}).forward(X)
    listed = api.post(url(info, "forward"), json={"inputs": X.tolist()})
    assert listed.status_code == 200, listed.text
    assert np.array_equal(array(listed.json()["outputs"]), expected)
    body, headers = binary_body({"binary_data_output": True}, {"inputs": X.astype(np.int64)})
    _, arrays = read_binary(api.post(url(info, "forward"), content=body, headers=headers))
    assert np.array_equal(arrays["outputs"], expected)


def test_a_token_model_trains_and_evaluates_over_the_api(api):
    info = create(api, TOKENS)
    twin = Model.from_spec({**TOKENS, "id": info["id"]})
    for _ in range(3):
        step = api.post(url(info, "train_step"), json={"inputs": tensor(X), "targets": tensor(Y)})
        assert step.status_code == 200, step.text
        assert step.json()["loss"] == twin.forward_backward(X, Y)
        twin.step()
    evaluated = api.post(url(info, "evaluate"), json={"inputs": X.tolist(), "targets": Y.tolist()}).json()
    assert evaluated["count"] == int((Y != 0).sum())  # ignore_index 0 is left out
    report = api.post(url(info, "gradcheck"), json={"inputs": X.tolist(), "targets": Y.tolist()}).json()
    assert report["passed"] and report["inputs"] is None  # indices have no gradient: parameters only


@pytest.mark.parametrize("inputs, words", [([[1, 2, 30]], "[0, 10)"), ([[0.5, 1.0, 2.0]], "INT64")])
def test_indices_out_of_range_or_not_integers_are_422_naming_inputs(api, inputs, words):
    info = create(api, TOKENS)
    response = api.post(url(info, "forward"), json={"inputs": inputs})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][:2] == ["body", "inputs"]
    assert words in response.json()["detail"][0]["msg"], response.text
