"""Every error status the server gives maps to its exception (a real server, real errors)."""

import numpy as np
import pytest

import gradserve_client as gs
from gradserve_client._base import Call

X = np.zeros((4, 2), np.float32)
Y = np.array([0, 1, 2, 0])


def test_400_malformed_body(client):
    with pytest.raises(gs.BadRequestError) as caught:
        client._call(Call("POST", "/v1/models", content=b'{"layers": [}'))
    assert caught.value.status == 400


def test_401_missing_or_wrong_key(locked_server, classifier):
    for key in (None, "wrong-key"):
        with gs.Client(locked_server.url, api_key=key) as anonymous:
            anonymous.api_key = key  # no fallback to $GRADSERVE_API_KEY
            with pytest.raises(gs.AuthenticationError) as caught:
                anonymous.create_model(classifier)
            assert caught.value.status == 401


def test_404_unknown_model_tape_or_another_keys_model(client, locked_server, classifier):
    with pytest.raises(gs.NotFoundError):
        client.model("no-such-model")
    model = client.create_model(classifier)
    _, tape = model.forward(X, keep_tape=True)
    model.backward(tape, targets=Y)
    with pytest.raises(gs.NotFoundError):  # a tape is consumed once
        model.backward(tape, targets=Y)

    with gs.Client(locked_server.url, api_key=locked_server.api_keys[0]) as alice, \
            gs.Client(locked_server.url, api_key=locked_server.api_keys[1]) as bob:
        owned = alice.create_model(classifier)
        with pytest.raises(gs.NotFoundError):
            bob.model(owned.id)


def test_409_stale_tape_nothing_to_step_non_finite_gradient_id_taken(client, classifier):
    model = client.create_model(classifier)
    with pytest.raises(gs.NothingToStepError) as caught:
        model.step()
    assert caught.value.status == 409 and caught.value.code == "nothing_to_step"

    _, tape = model.forward(X, keep_tape=True)
    model.forward_backward(X, Y)
    model.step()
    with pytest.raises(gs.StaleTapeError):
        model.backward(tape, targets=Y)

    before = model.parameters()
    # Finite inputs and grad_output whose product overflows float32 in the weight gradients.
    model.forward_backward(np.full((4, 2), 1e3, np.float32), grad_output=np.full((4, 3), 3e38, np.float32))
    with pytest.raises(gs.NonFiniteGradientError):
        model.step()
    for name, value in model.parameters().items():  # refused: parameters untouched
        np.testing.assert_array_equal(value, before[name])

    with pytest.raises(gs.ConflictError) as caught:
        client.create_model(classifier, id=model.id)
    assert type(caught.value) is gs.ConflictError


def test_413_body_over_the_limit(locked_server, classifier):
    with gs.Client(locked_server.url, api_key=locked_server.api_keys[0]) as client:
        model = client.create_model(classifier)
        too_big = np.zeros((locked_server.max_body_bytes // 8 + 1, 2), np.float32)
        with pytest.raises(gs.PayloadTooLargeError) as caught:
            model.forward(too_big)
        assert caught.value.status == 413


def test_422_invalid_spec_and_invalid_tensor(client, classifier):
    with pytest.raises(gs.ValidationError) as caught:
        client.create_model(classifier, layers=[{"type": "linear", "in_features": 2, "out_features": -1}])
    assert caught.value.errors and all({"loc", "msg", "type"} <= set(e) for e in caught.value.errors)

    model = client.create_model(classifier)
    with pytest.raises(gs.ValidationError) as caught:
        model.forward(np.zeros((4, 3), np.float32))  # 3 features for a 2-feature model
    assert caught.value.status == 422 and caught.value.errors
    with pytest.raises(gs.ValidationError):
        model.forward(np.array([[np.nan, 0.0]], np.float32))


def test_connection_refused_is_an_api_connection_error():
    with gs.Client("http://127.0.0.1:9", max_retries=1) as client:
        client.initial_retry_delay = 0.0
        with pytest.raises(gs.APIConnectionError):
            client.list_models()
