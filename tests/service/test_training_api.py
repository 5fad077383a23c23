"""Forward, backward, accumulation and steps over the API, checked against the engine itself."""

import numpy as np
import orjson
import pytest

from core import Model
from wire import MLP, array, binary_body, create, read_binary, tensor

RNG = np.random.default_rng(7)
X = RNG.standard_normal((6, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 2, 1, 0])


def url(info: dict, route: str) -> str:
    return f"/v1/models/{info['id']}/{route}"


def gradients(api, info) -> dict[str, np.ndarray]:
    return {name: array(t) for name, t in api.get(url(info, "gradients")).json()["gradients"].items()}


def parameters(api, info) -> dict[str, np.ndarray]:
    return {name: array(t) for name, t in api.get(url(info, "parameters")).json()["parameters"].items()}


def test_forward_gives_the_engines_outputs(api):
    info = create(api)
    response = api.post(url(info, "forward"), json={"inputs": tensor(X)})
    assert response.status_code == 200 and response.json()["tape_id"] is None
    expected, _ = Model.from_spec({**MLP, "id": info["id"]}).forward(X)
    assert np.array_equal(array(response.json()["outputs"]), expected)


def test_forward_then_backward_equals_forward_backward(api):
    a, b = create(api), create(api)
    tape = api.post(url(a, "forward"), json={"inputs": tensor(X), "keep_tape": True}).json()["tape_id"]
    split = api.post(url(a, "backward"), json={"tape_id": tape, "targets": tensor(Y)}).json()
    joined = api.post(url(b, "forward_backward"), json={"inputs": tensor(X), "targets": tensor(Y)}).json()
    assert split == joined
    assert split["accumulated"] == 1
    for name, grad in gradients(api, a).items():
        assert np.array_equal(grad, gradients(api, b)[name])


def test_forward_backward_matches_the_engine_and_returns_outputs_and_input_grad(api):
    info = create(api)
    body = api.post(url(info, "forward_backward"), json={
        "inputs": tensor(X), "targets": tensor(Y), "return_outputs": True, "return_input_grad": True}).json()
    model = Model.from_spec({**MLP, "id": info["id"]})
    outputs, tape = model.forward(X, train=True)
    loss, grad_outputs = model.loss(outputs, Y)
    input_grad = model.backward(tape, grad_outputs)
    assert body["loss"] == loss and body["grad_norm"] == model.grad_norm()
    assert np.array_equal(array(body["outputs"]), outputs)
    assert np.array_equal(array(body["input_grad"]), input_grad)
    for name, grad in gradients(api, info).items():
        assert np.array_equal(grad, model.gradients()[name])


def test_grad_output_instead_of_targets(api):
    info = create(api)
    g = RNG.standard_normal((6, 3)).astype(np.float32)
    body = api.post(url(info, "forward_backward"), json={"inputs": tensor(X), "grad_output": tensor(g)}).json()
    assert body["loss"] is None
    model = Model.from_spec({**MLP, "id": info["id"]})
    model.forward_backward(X, grad_output=g)
    for name, grad in gradients(api, info).items():
        assert np.array_equal(grad, model.gradients()[name])


def test_accumulated_gradients_are_the_sum_of_their_parts(api):
    whole, first, second = create(api), create(api), create(api)
    for info, rows in ((first, slice(0, 3)), (second, slice(3, 6)), (whole, slice(0, 3)), (whole, slice(3, 6))):
        api.post(url(info, "forward_backward"), json={"inputs": tensor(X[rows]), "targets": tensor(Y[rows])})
    assert api.get(f"/v1/models/{whole['id']}").json()["accumulated"] == 2
    parts = [gradients(api, first), gradients(api, second)]
    for name, grad in gradients(api, whole).items():
        np.testing.assert_allclose(grad, parts[0][name] + parts[1][name], rtol=1e-6, atol=1e-7)


def test_list_and_binary_forms_give_identical_numbers(api):
    by_list, by_binary = create(api), create(api)
    listed = api.post(url(by_list, "forward_backward"), json={
        "inputs": tensor(X), "targets": tensor(Y), "return_outputs": True, "return_input_grad": True}).json()
    body, headers = binary_body({"return_outputs": True, "return_input_grad": True, "binary_data_output": True},
                                {"inputs": X, "targets": Y})
    head, arrays = read_binary(api.post(url(by_binary, "forward_backward"), content=body, headers=headers))
    assert head["loss"] == listed["loss"] and head["grad_norm"] == listed["grad_norm"]
    assert np.array_equal(arrays["outputs"], array(listed["outputs"]))
    assert np.array_equal(arrays["input_grad"], array(listed["input_grad"]))
    _, served = read_binary(api.get(url(by_binary, "gradients") + "?binary_data_output=true"))
    assert served.keys() == gradients(api, by_list).keys()
    for name, grad in gradients(api, by_list).items():
        assert np.array_equal(served[name], grad)


def test_step_applies_the_optimizer_like_the_engine(api):
    info = create(api)
    api.post(url(info, "forward_backward"), json={"inputs": tensor(X), "targets": tensor(Y)})
    response = api.post(url(info, "step"), json={})
    model = Model.from_spec({**MLP, "id": info["id"]})
    model.forward_backward(X, Y)
    result = model.step()
    assert response.json() == {"step": 1, "lr": result.lr, "grad_norm": result.grad_norm,
                                "update_norm": result.update_norm}
    assert api.get(f"/v1/models/{info['id']}").json()["accumulated"] == 0
    for name, value in parameters(api, info).items():
        assert np.array_equal(value, model.parameters()[name])


def test_train_step_is_forward_backward_then_step(api):
    a, b = create(api), create(api)
    api.post(url(a, "forward_backward"), json={"inputs": tensor(X), "targets": tensor(Y)})
    stepped = api.post(url(a, "step"), json={"lr": 0.05}).json()
    trained = api.post(url(b, "train_step"), json={"inputs": tensor(X), "targets": tensor(Y), "lr": 0.05}).json()
    assert trained["step"] == stepped["step"] == 1 and trained["lr"] == 0.05
    assert trained["grad_norm"] == stepped["grad_norm"] and trained["update_norm"] == stepped["update_norm"]
    assert parameters(api, a).keys() == parameters(api, b).keys()
    for name, value in parameters(api, a).items():
        assert np.array_equal(value, parameters(api, b)[name])


def test_zero_grad_clears_the_accumulation(api):
    info = create(api)
    api.post(url(info, "forward_backward"), json={"inputs": tensor(X), "targets": tensor(Y)})
    assert api.post(url(info, "zero_grad")).json()["accumulated"] == 0
    assert all(not grad.any() for grad in gradients(api, info).values())


def test_a_step_with_nothing_accumulated_is_409(api):
    info = create(api)
    response = api.post(url(info, "step"), json={})
    assert response.status_code == 409 and response.json()["code"] == "nothing_to_step"


def test_a_tape_made_before_a_step_is_stale_409(api):
    info = create(api)
    tape = api.post(url(info, "forward"), json={"inputs": tensor(X), "keep_tape": True}).json()["tape_id"]
    api.post(url(info, "train_step"), json={"inputs": tensor(X), "targets": tensor(Y)})
    response = api.post(url(info, "backward"), json={"tape_id": tape, "targets": tensor(Y)})
    assert response.status_code == 409 and response.json()["code"] == "stale_tape"
    again = api.post(url(info, "backward"), json={"tape_id": tape, "targets": tensor(Y)})
    assert again.status_code == 404 and again.json()["code"] == "tape_not_found"


def test_a_tape_is_used_once_and_survives_a_bad_request(api):
    info = create(api)
    tape = api.post(url(info, "forward"), json={"inputs": tensor(X), "keep_tape": True}).json()["tape_id"]
    bad = api.post(url(info, "backward"), json={"tape_id": tape, "targets": tensor(Y[:2])})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "targets"]
    ragged = api.post(url(info, "backward"), json={"tape_id": tape, "targets": [[0], [1, 2]]})
    assert ragged.status_code == 422 and ragged.json()["detail"][0]["loc"] == ["body", "targets", "data"]
    assert api.post(url(info, "backward"), json={"tape_id": tape, "targets": tensor(Y)}).status_code == 200
    assert api.post(url(info, "backward"), json={"tape_id": tape, "targets": tensor(Y)}).status_code == 404


def test_a_non_finite_gradient_step_is_409_and_leaves_parameters_bit_identical(api):
    info = create(api, {**MLP, "loss": {"type": "mse"},
                        "layers": [{"type": "linear", "in_features": 4, "out_features": 3}]})
    before = parameters(api, info)
    # Finite inputs and targets whose loss and gradients overflow float32.
    x, far = np.full((6, 4), 1e3, np.float32), np.full((6, 3), 3e38, np.float32)
    fb = api.post(url(info, "forward_backward"), json={"inputs": tensor(x), "targets": tensor(far)})
    assert fb.status_code == 200 and fb.json()["loss"] == "Infinity"
    response = api.post(url(info, "step"), json={})
    assert response.status_code == 409 and response.json()["code"] == "non_finite_gradient"
    after = parameters(api, info)
    for name, value in before.items():
        assert value.tobytes() == after[name].tobytes()
    assert api.get(f"/v1/models/{info['id']}").json()["accumulated"] == 0
    metrics = api.get("/metrics").text
    assert 'gradserve_refused_steps_total{reason="non_finite_gradient"}' in metrics


def test_either_targets_or_grad_output_not_both(api):
    info = create(api)
    g = np.zeros((6, 3), np.float32)
    response = api.post(url(info, "forward_backward"), json={"inputs": tensor(X), "targets": tensor(Y),
                                                             "grad_output": tensor(g)})
    assert response.status_code == 422 and "exactly one" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("inputs, words", [
    (np.full((2, 4), np.nan, np.float32), "non-finite"),
    (np.zeros((2, 5), np.float32), "features"),
    (np.zeros((2, 2, 4), np.float32), "rank"),
])
def test_bad_inputs_are_422_naming_inputs(api, inputs, words):
    info = create(api)
    payload = tensor(inputs)
    if np.isnan(inputs).any():
        payload["data"] = ["NaN"] * inputs.size
    response = api.post(url(info, "forward"), json={"inputs": payload})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "inputs"] and words in response.json()["detail"][0]["msg"]


def model_state(api, info) -> tuple:
    """What a refused step must leave unchanged: parameters (bytes), step, version, lr."""
    params = {name: value.tobytes() for name, value in parameters(api, info).items()}
    described = api.get(f"/v1/models/{info['id']}").json()
    return params, described["step"], described["version"], described["spec"]["optimizer"]["lr"]


@pytest.mark.parametrize("form", ["list", "binary"])
def test_an_update_that_would_overflow_is_409_and_changes_nothing(api, form):
    info = create(api)
    assert api.post(url(info, "train_step"), json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200
    before = model_state(api, info)
    if form == "list":
        response = api.post(url(info, "train_step"), json={"inputs": tensor(X), "targets": tensor(Y), "lr": 1e300})
    else:
        body, headers = binary_body({"lr": 1e300}, {"inputs": X, "targets": Y})
        response = api.post(url(info, "train_step"), content=body, headers=headers)
    assert response.status_code == 409 and response.json()["code"] == "non_finite_update"
    assert "1e+300" in response.json()["detail"]
    assert model_state(api, info) == before
    assert api.post(url(info, "forward_backward"), json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200
    refused = api.post(url(info, "step"), json={"lr": 1e300})
    assert refused.status_code == 409 and refused.json()["code"] == "non_finite_update"
    assert model_state(api, info) == before
    assert api.get(f"/v1/models/{info['id']}").json()["accumulated"] == 0  # the gradients were cleared
    later = api.post(url(info, "train_step"), json={"inputs": tensor(X), "targets": tensor(Y)}).json()
    assert later["step"] == before[1] + 1 and later["lr"] == before[3]  # the old lr, not 1e300
    assert 'gradserve_refused_steps_total{reason="non_finite_update"}' in api.get("/metrics").text


def old_client_validation_loss(loss_spec: dict, outputs: np.ndarray, targets: np.ndarray) -> float:
    """The loss formulas the Python client computed itself before /evaluate (DESIGN section 4), kept as an oracle."""
    o, t = outputs.astype(np.float64), np.asarray(targets)
    kind = loss_spec["type"]
    if kind == "softmax_cross_entropy":
        shifted = o - o.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-log_probs[np.arange(len(t)), t].mean()) if t.ndim == 1 else float(-(t * log_probs).sum(axis=1).mean())
    t = t.astype(np.float64).reshape(o.shape)
    if kind == "mse":
        return float(((o - t) ** 2).mean())
    if kind == "bce_with_logits":
        return float((np.maximum(o, 0) - o * t + np.log1p(np.exp(-np.abs(o)))).mean())
    d = np.abs(o - t)
    return float(np.where(d < loss_spec["delta"], 0.5 * d**2, loss_spec["delta"] * (d - 0.5 * loss_spec["delta"])).mean())


@pytest.mark.parametrize("loss, targets", [
    ({"type": "softmax_cross_entropy"}, Y), ({"type": "softmax_cross_entropy"}, np.eye(3, dtype=np.float32)[Y]),
    ({"type": "mse"}, RNG.standard_normal((6, 3)).astype(np.float32)),
    ({"type": "bce_with_logits"}, (RNG.random((6, 3)) > 0.5).astype(np.float32)),
    ({"type": "huber", "delta": 0.5}, RNG.standard_normal((6, 3)).astype(np.float32)),
], ids=["labels", "probabilities", "mse", "bce", "huber"])
def test_evaluate_gives_the_training_loss_and_the_clients_old_numbers(api, loss, targets):
    info = create(api, {**MLP, "loss": loss})
    before = api.get(f"/v1/models/{info['id']}").json(), parameters(api, info)
    evaluated = api.post(url(info, "evaluate"), json={"inputs": tensor(X), "targets": tensor(targets)}).json()
    assert api.get(f"/v1/models/{info['id']}").json() == before[0]  # no gradients, no step, no version
    assert {k: v.tobytes() for k, v in parameters(api, info).items()} == {k: v.tobytes() for k, v in before[1].items()}
    outputs = array(api.post(url(info, "forward"), json={"inputs": tensor(X)}).json()["outputs"])
    assert evaluated["loss"] == pytest.approx(old_client_validation_loss(loss, outputs, targets), rel=1e-5)
    trained = api.post(url(info, "forward_backward"), json={"inputs": tensor(X), "targets": tensor(targets)}).json()
    assert evaluated["loss"] == trained["loss"]  # no dropout or batchnorm: eval and train forwards agree
    if loss["type"] == "softmax_cross_entropy":
        labels = targets if targets.ndim == 1 else targets.argmax(axis=1)
        assert evaluated["accuracy"] == float((outputs.argmax(axis=1) == labels).mean()) and evaluated["count"] == 6
    elif loss["type"] == "bce_with_logits":
        assert evaluated["accuracy"] == float(((outputs > 0) == (targets > 0.5)).mean()) and evaluated["count"] == 18
    else:
        assert evaluated["accuracy"] is None and evaluated["count"] == 18


def test_evaluate_runs_batchnorm_and_dropout_in_eval_mode(api):
    spec = {**MLP, "layers": [{"type": "linear", "in_features": 4, "out_features": 8}, {"type": "batchnorm"},
                              {"type": "dropout", "p": 0.5}, {"type": "linear", "out_features": 3}]}
    info = create(api, spec)
    assert api.post(url(info, "train_step"), json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200
    first = api.post(url(info, "evaluate"), json={"inputs": tensor(X), "targets": tensor(Y)}).json()
    again = api.post(url(info, "evaluate"), json={"inputs": tensor(X), "targets": tensor(Y)}).json()
    assert first == again  # no dropout mask drawn, no running statistics moved
    bad = api.post(url(info, "evaluate"), json={"inputs": tensor(X), "targets": tensor(Y[:2])})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "targets"]


def frames(batches: list[tuple[np.ndarray, np.ndarray]], binary: bool) -> bytes:
    """Gives a train_steps body: one line per batch, binary tensors' bytes after their line."""
    out = []
    for x, y in batches:
        if binary:
            body, headers = binary_body({}, {"inputs": x, "targets": y})
            n = int(headers["Inference-Header-Content-Length"])
            out.append(body[:n] + b"\n" + body[n:])
        else:
            out.append(orjson.dumps({"inputs": tensor(x), "targets": tensor(y)}) + b"\n")
    return b"".join(out)


BATCHES = [(X + i, np.roll(Y, i)) for i in range(6)]


@pytest.mark.parametrize("binary", [False, True], ids=["list", "binary"])
def test_train_steps_are_the_train_steps_sent_one_by_one(api, binary):
    streamed, sequential = create(api), create(api)
    response = api.post(url(streamed, "train_steps"), content=frames(BATCHES, binary),
                        headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    one_by_one = [api.post(url(sequential, "train_step"), json={"inputs": tensor(x), "targets": tensor(y)}).json()
                  for x, y in BATCHES]
    assert response.json()["steps"] == one_by_one
    assert {k: v.tobytes() for k, v in parameters(api, streamed).items()} == \
           {k: v.tobytes() for k, v in parameters(api, sequential).items()}


def test_a_failing_batch_stops_the_stream_and_keeps_what_came_before(api):
    info = create(api)
    bad = BATCHES[:3] + [(X[:, :3], Y)] + BATCHES[4:]
    response = api.post(url(info, "train_steps"), content=frames(bad, binary=True))
    assert response.status_code == 422 and response.json()["code"] == "invalid_input"
    assert response.json()["batch"] == 3 and [s["step"] for s in response.json()["completed"]] == [1, 2, 3]
    assert response.json()["detail"][0]["loc"] == ["body", "inputs"]
    assert api.get(f"/v1/models/{info['id']}").json()["step"] == 3  # nothing after the bad batch
    cut = api.post(url(info, "train_steps"), content=frames(BATCHES[:2], binary=True)[:-7])
    assert cut.status_code == 422 and cut.json()["batch"] == 1 and "ends inside a frame" in cut.json()["detail"][0]["msg"]
    assert api.get(f"/v1/models/{info['id']}").json()["step"] == 4
    empty = api.post(url(info, "train_steps"), content=b"")
    assert empty.status_code == 200 and empty.json() == {"steps": []}


def test_each_frame_is_held_to_the_body_limit(make_client):
    client = make_client(max_body_bytes=4096)
    info = create(client)
    small = frames(BATCHES * 4, binary=True)  # 24 frames, each well under the limit, all of them over it
    assert len(small) > 4096 and client.post(url(info, "train_steps"), content=small).status_code == 200
    big = frames([(np.zeros((400, 4), np.float32), np.zeros(400, np.int64))], binary=True)
    response = client.post(url(info, "train_steps"), content=big)
    assert response.status_code == 413 and "GRADSERVE_MAX_BODY_BYTES" in response.json()["detail"]


def test_blank_lines_between_frames_are_no_batches(api):
    info = create(api)
    body = frames(BATCHES[:2], binary=False).replace(b"\n", b"\n\n") + b"\n"
    response = api.post(url(info, "train_steps"), content=body)
    assert response.status_code == 200 and [s["step"] for s in response.json()["steps"]] == [1, 2]
