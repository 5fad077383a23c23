"""Data sets kept beside a model (service/datasets.py): rows added once, then trained on and
evaluated by row index, with the same results, bit for bit, as sending those rows; every
refusal a 4xx naming the problem that changes nothing; memory bounded per process."""

import time
from types import SimpleNamespace

import httpx
import numpy as np
import orjson
import pytest

from service.datasets import DataBudget, DataSets

from wire import MLP, binary_body, create, tensor

rng = np.random.default_rng(0)
X = rng.standard_normal((40, 4)).astype(np.float32)
Y = rng.integers(0, 3, 40)
NDJSON = {"Content-Type": "application/x-ndjson"}


def frames(batches) -> bytes:
    return b"".join(orjson.dumps({"inputs": tensor(X[rows]), "targets": tensor(Y[rows])}) + b"\n" for rows in batches)


def state(api, model_id: str) -> tuple:
    info = api.get(f"/v1/models/{model_id}").json()
    return info["step"], info["version"], api.get(f"/v1/models/{model_id}/parameters").json()


def test_training_on_rows_of_a_data_set_is_train_steps_on_those_rows(api):
    kept, sent = create(api)["id"], create(api)["id"]
    added = api.post(f"/v1/models/{kept}/data/train", json={"inputs": tensor(X[:25]), "targets": tensor(Y[:25])})
    assert added.status_code == 200, added.text
    body, headers = binary_body({}, {"inputs": X[25:], "targets": Y[25:]})  # rows added in binary form too
    assert api.post(f"/v1/models/{kept}/data/train", content=body, headers=headers).json()["rows"] == 40
    order = np.random.default_rng(1).permutation(40)
    batches = [order[i:i + 16] for i in range(0, 40, 16)]  # 16, 16, 8
    on_data = api.post(f"/v1/models/{kept}/data/train/train_steps",
                       json={"rows": order.tolist(), "batch_size": 16, "lr": 0.005})
    assert on_data.status_code == 200, on_data.text
    lr_first = frames(batches).replace(b'"targets"', b'"lr":0.005,"targets"', 1)
    streamed = api.post(f"/v1/models/{sent}/train_steps", content=lr_first, headers=NDJSON)
    assert on_data.json() == streamed.json() and len(on_data.json()["steps"]) == 3
    assert state(api, kept)[0] == 3 and state(api, kept)[2] == state(api, sent)[2]
    evaluated = api.post(f"/v1/models/{kept}/data/train/evaluate", json={"rows": order[:10].tolist()}).json()
    assert evaluated == api.post(f"/v1/models/{kept}/evaluate",
                                 json={"inputs": tensor(X[order[:10]]), "targets": tensor(Y[order[:10]])}).json()
    everything = api.post(f"/v1/models/{kept}/data/train/evaluate", json={}).json()
    assert everything == api.post(f"/v1/models/{kept}/evaluate", json={"inputs": tensor(X), "targets": tensor(Y)}).json()


def test_a_stream_keeps_the_batches_it_applies_in_order(api):
    model = create(api)["id"]
    batches = [np.arange(0, 16), np.arange(16, 32)]
    assert api.post(f"/v1/models/{model}/train_steps?keep=seen", content=frames(batches), headers=NDJSON).status_code == 200
    listing = api.get(f"/v1/models/{model}/data").json()
    assert [(s["name"], s["rows"], s["inputs"], s["targets"]) for s in listing["data_sets"]] == [
        ("seen", 32, {"shape": [32, 4], "datatype": "FP32"}, {"shape": [32], "datatype": "INT64"})]
    assert listing["data_sets"][0]["bytes"] == 32 * (4 * 4 + 8)
    y_bad = Y.copy()
    y_bad[40 - 1] = 7  # the third batch's label is out of range: refused, not kept
    bad = b"".join(orjson.dumps({"inputs": tensor(X[rows]), "targets": tensor(y_bad[rows])}) + b"\n"
                   for rows in (np.arange(32, 36), np.arange(36, 40)))
    refused = api.post(f"/v1/models/{model}/train_steps?keep=seen", content=bad, headers=NDJSON)
    assert refused.status_code == 422 and refused.json()["batch"] == 1
    assert api.get(f"/v1/models/{model}/data").json()["data_sets"][0]["rows"] == 36
    whole = api.post(f"/v1/models/{model}/data/seen/evaluate", json={}).json()
    assert whole == api.post(f"/v1/models/{model}/evaluate", json={"inputs": tensor(X[:36]),
                                                                    "targets": tensor(Y[:36])}).json()


@pytest.mark.parametrize("body, status, loc, words", [
    ({"rows": [0, 40], "batch_size": 2}, 422, ["body", "rows"], "row 40 is not in the data set, which has 40 rows"),
    ({"rows": [0, -1], "batch_size": 2}, 422, ["body", "rows"], "row -1 is not in the data set"),
    ({"rows": [0.5, 1.0], "batch_size": 2}, 422, ["body", "rows"], "integer row indices"),
    ({"rows": [[0, 1]], "batch_size": 2}, 422, ["body", "rows"], "1-D"),
    ({"rows": [0, 1], "batch_size": 0}, 422, ["body", "batch_size"], "greater than or equal to 1"),
    ({"rows": [0, 1]}, 422, ["body", "batch_size"], "Field required"),
])
def test_bad_rows_are_refused_before_any_step(api, body, status, loc, words):
    model = create(api)["id"]
    api.post(f"/v1/models/{model}/data/train", json={"inputs": tensor(X), "targets": tensor(Y)})
    before = state(api, model)
    response = api.post(f"/v1/models/{model}/data/train/train_steps", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"][0]["loc"] == loc and words in response.json()["detail"][0]["msg"]
    assert state(api, model) == before
    evaluated = api.post(f"/v1/models/{model}/data/train/evaluate", json={"rows": [41]})
    assert evaluated.status_code == 422 and evaluated.json()["detail"][0]["loc"] == ["body", "rows"]


def test_rows_that_do_not_go_with_the_set_or_the_model_are_refused(api):
    model = create(api)["id"]
    url = f"/v1/models/{model}/data/train"
    assert api.post(url, json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200
    wide = api.post(url, json={"inputs": tensor(np.zeros((2, 5), np.float32)), "targets": tensor(Y[:2])})
    assert wide.status_code == 422 and wide.json()["code"] == "invalid_input"  # the model takes 4 features
    probabilities = api.post(url, json={"inputs": tensor(X[:2]),
                                        "targets": tensor(np.full((2, 3), 1 / 3, np.float32))})
    assert probabilities.status_code == 422 and "do not go with the data set's" in probabilities.json()["detail"][0]["msg"]
    assert api.get(f"/v1/models/{model}/data").json()["data_sets"][0]["rows"] == 40


def test_an_unknown_data_set_is_404_and_a_deleted_one_is_gone(api):
    model = create(api)["id"]
    for method, path, body in (("POST", "nope/train_steps", {"rows": [0], "batch_size": 1}),
                               ("POST", "nope/evaluate", {}), ("DELETE", "nope", None)):
        response = api.request(method, f"/v1/models/{model}/data/{path}", json=body)
        assert response.status_code == 404 and response.json()["code"] == "data_not_found", response.text
    api.post(f"/v1/models/{model}/data/d", json={"inputs": tensor(X), "targets": tensor(Y)})
    assert api.delete(f"/v1/models/{model}/data/d").status_code == 204
    assert api.get(f"/v1/models/{model}/data").json()["data_sets"] == []
    assert api.post(f"/v1/models/{model}/data/bad.name", json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 422


def test_the_data_sets_of_a_process_are_bounded_and_freed_with_their_model(make_client):
    client = make_client(max_data_bytes=1000)  # 41 rows of 4 FP32 and an INT64 label
    model, other = create(client)["id"], create(client)["id"]
    assert client.get(f"/v1/models/{model}/data").json()["free_bytes"] == 1000
    assert client.post(f"/v1/models/{model}/data/a", json={"inputs": tensor(X[:30]), "targets": tensor(Y[:30])}).status_code == 200
    over = client.post(f"/v1/models/{other}/data/b", json={"inputs": tensor(X[:20]), "targets": tensor(Y[:20])})
    assert over.status_code == 413 and over.json()["code"] == "data_too_large"
    assert "GRADSERVE_MAX_DATA_BYTES" in over.json()["detail"]
    kept = client.post(f"/v1/models/{other}/train_steps?keep=b", content=frames([np.arange(0, 8), np.arange(8, 16)]),
                       headers=NDJSON)
    assert kept.status_code == 413 and kept.json()["batch"] == 1 and len(kept.json()["completed"]) == 1
    assert client.get(f"/v1/models/{other}").json()["step"] == 1  # the batch that did not fit was not applied
    assert client.get(f"/v1/models/{other}/data").json()["free_bytes"] == 1000 - 30 * 24 - 8 * 24
    client.delete(f"/v1/models/{model}")
    assert client.get(f"/v1/models/{other}/data").json()["free_bytes"] == 1000 - 8 * 24


def test_data_sets_live_in_memory_a_restart_drops_them(open_client):
    with open_client() as client:
        model = create(client)["id"]
        client.post(f"/v1/models/{model}/data/d", json={"inputs": tensor(X), "targets": tensor(Y)})
    with open_client() as client:
        assert client.get(f"/v1/models/{model}").status_code == 200
        assert client.get(f"/v1/models/{model}/data").json()["data_sets"] == []
        gone = client.post(f"/v1/models/{model}/data/d/evaluate", json={})
        assert gone.status_code == 404 and "a restart drops them" in gone.json()["detail"]


def test_another_key_sees_no_data_set_of_my_model(make_client):
    client = make_client(api_keys=["mine", "theirs"])
    mine, theirs = {"Authorization": "Bearer mine"}, {"Authorization": "Bearer theirs"}
    model = client.post("/v1/models", json=MLP, headers=mine).json()["id"]
    client.post(f"/v1/models/{model}/data/d", json={"inputs": tensor(X), "targets": tensor(Y)}, headers=mine)
    for method, path in (("GET", ""), ("POST", "/d/evaluate"), ("DELETE", "/d")):
        response = client.request(method, f"/v1/models/{model}/data{path}", json={} if method == "POST" else None,
                                  headers=theirs)
        assert response.status_code == 404 and response.json()["code"] == "model_not_found"
    assert client.get(f"/v1/models/{model}/data", headers=mine).json()["data_sets"][0]["rows"] == 40


def test_rows_named_are_held_to_the_tensor_limit_as_rows_sent(make_client):
    client = make_client(max_tensor_elements=100)  # 25 rows of 4 features
    model = create(client)["id"]
    for start in (0, 20):
        assert client.post(f"/v1/models/{model}/data/d", json={"inputs": tensor(X[start:start + 20]),
                                                              "targets": tensor(Y[start:start + 20])}).status_code == 200
    before = state(client, model)
    for path, body in (("train_steps", {"rows": list(range(26)), "batch_size": 26}),
                       ("train_steps", {"rows": [0] * 30, "batch_size": 30}), ("evaluate", {}),
                       ("evaluate", {"rows": list(range(26))})):
        response = client.post(f"/v1/models/{model}/data/d/{path}", json=body)
        assert response.status_code == 413 and response.json()["code"] == "tensor_too_large", (path, response.text)
        assert "GRADSERVE_MAX_TENSOR_ELEMENTS" in response.json()["detail"]
    assert state(client, model) == before
    assert client.post(f"/v1/models/{model}/data/d/train_steps", json={"rows": list(range(40)), "batch_size": 25}).status_code == 200
    assert client.post(f"/v1/models/{model}/data/d/evaluate", json={"rows": list(range(25))}).status_code == 200


def test_a_kept_stream_whose_first_batch_fails_leaves_no_set(api):
    model = create(api)["id"]
    refused = frames([np.arange(0, 8)]).replace(b'"targets"', b'"lr":1e300,"targets"', 1)
    response = api.post(f"/v1/models/{model}/train_steps?keep=k", content=refused, headers=NDJSON)
    assert response.status_code == 409 and response.json()["code"] == "non_finite_update"
    assert api.get(f"/v1/models/{model}/data").json()["data_sets"] == []
    probabilities = {"inputs": tensor(X[:4]), "targets": tensor(np.full((4, 3), 1 / 3, np.float32))}
    kept = api.post(f"/v1/models/{model}/train_steps?keep=k", content=orjson.dumps(probabilities) + b"\n",
                    headers=NDJSON)
    assert kept.status_code == 200 and api.get(f"/v1/models/{model}/data").json()["data_sets"][0]["rows"] == 4


def test_more_batches_than_a_stream_may_carry_are_413_either_way(make_client):
    client = make_client(max_stream_batches=2)
    model = create(client)["id"]
    streamed = client.post(f"/v1/models/{model}/train_steps?keep=d", content=frames([[0], [1], [2]]), headers=NDJSON)
    assert streamed.status_code == 413 and streamed.json()["code"] == "stream_too_long"
    assert "the stream has more than 2 batches (GRADSERVE_MAX_STREAM_BATCHES)" in streamed.json()["detail"]
    before = state(client, model)
    named = client.post(f"/v1/models/{model}/data/d/train_steps", json={"rows": [0, 1], "batch_size": 1})
    assert named.status_code == 200
    too_many = client.post(f"/v1/models/{model}/data/d/train_steps", json={"rows": [0, 1, 0], "batch_size": 1})
    assert too_many.status_code == 413 and "the rows make more than 2 batches" in too_many.json()["detail"]
    assert state(client, model)[0] == before[0] + 2


def test_a_data_set_unused_for_its_time_to_live_is_dropped_with_its_bytes(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("service.datasets.time", SimpleNamespace(monotonic=lambda: now[0]))
    budget = DataBudget(10_000)
    sets = DataSets(budget, ttl_seconds=60)
    sets.add("old", X[:10], Y[:10])
    sets.add("used", X[:5], Y[:5])
    now[0] += 40
    sets.get("used")  # read: its time starts again
    sets.add("old", X[10:12], Y[10:12])  # added to: likewise
    now[0] += 40
    assert not sets.idle() and {d["name"] for d in sets.describe()} == {"old", "used"}
    now[0] += 30  # 70 s after "used" was read, 70 after "old" grew
    assert sets.idle()
    sets.expire()
    assert sets.describe() == [] and budget.used == 0
    with pytest.raises(Exception) as gone:
        sets.get("old")
    assert gone.value.status == 404 and "GRADSERVE_DATA_TTL_SECONDS" in gone.value.detail


def test_idle_data_sets_are_dropped_without_a_request_on_their_model(make_live):
    url = make_live(data_ttl_seconds=2.0, max_data_bytes=10_000)  # on Ray, one host: one budget for both models
    with httpx.Client(base_url=url, timeout=30) as live:
        idle, other = create(live)["id"], create(live)["id"]
        for model, name, rows in ((idle, "d", X), (other, "kept", X[:4])):
            added = live.post(f"/v1/models/{model}/data/{name}",
                              json={"inputs": tensor(rows), "targets": tensor(Y[:len(rows)])})
            assert added.status_code == 200, added.text
        added, deadline, free = time.monotonic(), time.monotonic() + 15, []
        while time.monotonic() < deadline:  # the expirer runs every half TTL; only `other` is asked
            assert live.post(f"/v1/models/{other}/data/kept/evaluate", json={}).status_code == 200  # in use
            free.append(live.get(f"/v1/models/{other}/data").json()["free_bytes"])
            if free[-1] == 10_000 - 4 * 24:
                break
            time.sleep(0.2)
        if time.monotonic() - added < 1.5 or len(free) > 1:  # the first look came before idle's time was up
            assert free[0] == 10_000 - 44 * 24, free
        assert free[-1] == 10_000 - 4 * 24, free  # idle's 40 rows freed, kept's 4 not
        gone = live.post(f"/v1/models/{idle}/data/d/evaluate", json={})
        assert gone.status_code == 404 and gone.json()["code"] == "data_not_found"
        assert [s["name"] for s in live.get(f"/v1/models/{other}/data").json()["data_sets"]] == ["kept"]


def test_a_kept_stream_failing_on_a_set_past_its_time_leaves_no_set(monkeypatch):
    from service.routes.training import _kept_train_step

    now = [1000.0]
    monkeypatch.setattr("service.datasets.time", SimpleNamespace(monotonic=lambda: now[0]))
    sets = DataSets(DataBudget(10_000), ttl_seconds=60)
    sets.add("d", X[:4], Y[:4])  # a kept stream's first batch
    now[0] += 61  # the client pauses past the set's time; no expirer ran yet

    class Failing:
        def validate_batch(self, inputs, targets, train=True):
            return inputs, targets, None

        def train_step(self, *args):
            raise FloatingPointError("non-finite gradients")

    with pytest.raises(FloatingPointError):
        _kept_train_step(Failing(), sets, "d", SimpleNamespace(inputs=X[4:7], targets=Y[4:7], lr=None))
    assert sets.sets == {} and sets.budget.used == 0


@pytest.mark.parametrize("rows, view", [
    ([3, 4, 5, 6], True), ([7], True), ([3, 5, 4], False), ([6, 5, 4], False), ([2, 2], False), ([], False),
], ids=["range", "one row", "shuffled", "descending", "repeated", "none"])
def test_consecutive_rows_are_read_only_views_of_the_set_others_copies(rows, view):
    sets = DataSets(DataBudget(1 << 20), ttl_seconds=60)
    sets.add("s", X[:20], Y[:20])
    sets.add("s", X[20:], Y[20:])  # two parts, joined by the first read
    inputs, targets = sets.get("s").take(np.array(rows, np.int64))
    assert inputs.tobytes() == X[rows].tobytes() and targets.tobytes() == Y[rows].tobytes()
    joined = sets.get("s").take(None)[0]
    assert np.shares_memory(inputs, joined) == view
    assert inputs.flags.writeable == (not view)  # a step that wrote its batch would change the set


def test_a_run_of_batches_stops_at_the_one_that_fails_as_a_stream_does(api):
    kept, sent = create(api)["id"], create(api)["id"]
    x = X.copy()
    x[20] = 3e38  # finite, but batch 2 of 8-row batches overflows its forward
    added = api.post(f"/v1/models/{kept}/data/train", json={"inputs": tensor(x), "targets": tensor(Y)})
    assert added.status_code == 200, added.text
    on_data = api.post(f"/v1/models/{kept}/data/train/train_steps", json={"rows": list(range(40)), "batch_size": 8})
    streamed = api.post(f"/v1/models/{sent}/train_steps", headers=NDJSON, content=b"".join(
        orjson.dumps({"inputs": tensor(x[i:i + 8]), "targets": tensor(Y[i:i + 8])}) + b"\n" for i in range(0, 40, 8)))
    assert on_data.status_code == streamed.status_code == 409, on_data.text
    assert on_data.json() == streamed.json() and on_data.json()["batch"] == 2
    assert state(api, kept)[0] == 2 and state(api, kept)[2] == state(api, sent)[2]
    assert api.get(f"/v1/models/{kept}/history").json()["step"] == [1, 2]  # one record a step of the run


def test_evaluations_asked_with_the_steps_are_those_of_evaluate_after_them(api):
    """An epoch and its evaluations in one request: the same steps, then each evaluation as
    /data/{name}/evaluate gives it after those steps (rows named, in list or binary form, or all)."""
    one, other = create(api)["id"], create(api)["id"]
    for model in (one, other):
        api.post(f"/v1/models/{model}/data/train", json={"inputs": tensor(X[:30]), "targets": tensor(Y[:30])})
        api.post(f"/v1/models/{model}/data/val", json={"inputs": tensor(X[30:]), "targets": tensor(Y[30:])})
    order = np.random.default_rng(2).permutation(30)
    asked = [{"data": "train", "rows": list(range(0, 16))}, {"data": "train", "rows": list(range(16, 30))},
             {"data": "val"}]
    together = api.post(f"/v1/models/{one}/data/train/train_steps",
                        json={"rows": order.tolist(), "batch_size": 8, "evaluate": asked})
    assert together.status_code == 200, together.text
    apart = api.post(f"/v1/models/{other}/data/train/train_steps", json={"rows": order.tolist(), "batch_size": 8})
    assert together.json()["steps"] == apart.json()["steps"] and len(apart.json()["steps"]) == 4
    after = [api.post(f"/v1/models/{other}/data/{a['data']}/evaluate", json={k: v for k, v in a.items() if k == "rows"}).json()
             for a in asked]
    assert together.json()["evaluations"] == after
    assert after[2]["count"] == 10 and after[0] != after[1]
    head = orjson.dumps({"rows": {"shape": [30], "datatype": "INT64", "parameters": {"binary_data_size": 240}},
                         "batch_size": 8, "evaluate": [{"data": "val", "rows": {
                             "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}}]})
    body = head + order.astype(np.int64).tobytes() + np.array([9, 0], np.int64).tobytes()  # in the order named
    headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    binary = api.post(f"/v1/models/{one}/data/train/train_steps", content=body, headers=headers)
    assert binary.status_code == 200, binary.text
    assert binary.json()["evaluations"] == [api.post(f"/v1/models/{one}/data/val/evaluate", json={"rows": [9, 0]}).json()]
    assert "evaluations" not in apart.json() or apart.json()["evaluations"] == []
    for model in (one, other):  # the live servers are shared by the session, and hold 100 models at most
        assert api.delete(f"/v1/models/{model}").status_code == 204


@pytest.mark.parametrize("evaluation, status, loc, words", [
    ({"data": "val", "rows": [10]}, 422, ["body", "evaluate", 0, "rows"], "row 10 is not in the data set, which has 10 rows"),
    ({"data": "val", "rows": [0.5]}, 422, ["body", "evaluate", 0, "rows"], "integer row indices"),
    ({"data": "nope"}, 404, None, "no data set 'nope'"),
    ({"data": "bad.name"}, 422, ["body", "evaluate", 0, "data"], "pattern"),
    ({"rows": [0]}, 422, ["body", "evaluate", 0, "data"], "Field required"),
])
def test_a_bad_evaluation_is_refused_before_any_step(api, evaluation, status, loc, words):
    model = create(api)["id"]
    api.post(f"/v1/models/{model}/data/train", json={"inputs": tensor(X[:30]), "targets": tensor(Y[:30])})
    api.post(f"/v1/models/{model}/data/val", json={"inputs": tensor(X[30:]), "targets": tensor(Y[30:])})
    before = state(api, model)
    response = api.post(f"/v1/models/{model}/data/train/train_steps",
                        json={"rows": list(range(30)), "batch_size": 8, "evaluate": [evaluation]})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if loc is None:
        assert words in detail and response.json()["code"] == "data_not_found"
    else:
        assert detail[0]["loc"] == loc and words in detail[0]["msg"], detail
    assert state(api, model) == before
    assert api.delete(f"/v1/models/{model}").status_code == 204


def test_no_evaluation_runs_after_a_batch_that_fails(api):
    model = create(api)["id"]
    x = X.copy()
    x[20] = 3e38  # finite, but batch 2 of 8-row batches overflows its forward
    api.post(f"/v1/models/{model}/data/train", json={"inputs": tensor(x), "targets": tensor(Y)})
    failed = api.post(f"/v1/models/{model}/data/train/train_steps",
                      json={"rows": list(range(40)), "batch_size": 8, "evaluate": [{"data": "train"}]})
    assert failed.status_code == 409 and failed.json()["batch"] == 2 and "evaluations" not in failed.json()
    assert api.delete(f"/v1/models/{model}").status_code == 204


def test_runs_of_any_length_apply_the_same_steps(client, monkeypatch):
    import service.routes.training as training
    from service.shelf import Shelf

    runs = []
    run = Shelf._run
    monkeypatch.setattr(Shelf, "_run", lambda self, held, r, args: runs.append(r) or run(self, held, r, args))
    answers = []
    for seconds in (10.0, 0.0):  # one run for every batch; a run a batch
        monkeypatch.setattr(training, "RUN_SECONDS", seconds)
        model = create(client)["id"]
        client.post(f"/v1/models/{model}/data/train", json={"inputs": tensor(X), "targets": tensor(Y)})
        order = np.random.default_rng(2).permutation(40).tolist()
        answers.append((client.post(f"/v1/models/{model}/data/train/train_steps",
                                    json={"rows": order, "batch_size": 8}).json(), state(client, model)[1:]))
        assert client.get(f"/v1/models/{model}/history").json()["step"] == [1, 2, 3, 4, 5]
    assert [(r.start, r.stop) for r in runs] == [(0, 5), (0, 5), (0, 4), (0, 3), (0, 2), (0, 1)]  # the rows left
    assert answers[0] == answers[1] and len(answers[0][0]["steps"]) == 5


def test_a_set_of_one_append_keeps_its_arrays_and_of_more_joins_them():
    sets = DataSets(DataBudget(1 << 20), ttl_seconds=60)
    inputs, targets = X.copy(), Y.copy()
    sets.add("one", inputs, targets)
    assert sets.get("one").take(None)[0] is inputs and sets.get("one").take(None)[1] is targets  # no copy
    sets.add("two", X[:25].copy(), Y[:25].copy())
    sets.add("two", X[25:].copy(), Y[25:].copy())
    joined = sets.get("two").take(None)
    assert joined[0].tobytes() == X.tobytes() and joined[1].tobytes() == Y.tobytes()
    sets.add("one", X[:3].copy(), Y[:3].copy())  # an append after a read joins again
    assert sets.get("one").take(None)[0].tobytes() == np.concatenate([X, X[:3]]).tobytes()


def test_a_set_of_one_append_does_not_keep_a_body_much_larger_than_its_rows():
    body = bytearray(64_000) + Y.tobytes()  # a request's body: inputs converted on the way (they own their memory)
    inputs, targets = X.astype(np.float64), np.frombuffer(body, np.int64, len(Y), 64_000)
    sets = DataSets(DataBudget(1 << 20), ttl_seconds=60)
    sets.add("s", inputs, targets)
    kept_inputs, kept_targets = sets.get("s").take(None)
    assert kept_inputs is inputs and not np.shares_memory(kept_targets, np.frombuffer(body, np.uint8))
    assert kept_targets.tobytes() == Y.tobytes()
