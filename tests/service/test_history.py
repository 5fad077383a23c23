"""The training history over the API: one record per applied step, paged, downsampled, CSV."""

import asyncio
import csv
import errno
import io
import math
import time

import numpy as np
import pytest

from core import Model
from service.history import downsample
from service.persistence import Checkpoints
from service.settings import Settings
from service.shelf import Held, Shelf
from wire import MLP, array, create, tensor

X = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 1, 0, 2])
TOP = ("lr", "loss", "grad_norm", "update_norm")


def train(api, model_id: str, steps: int) -> list[dict]:
    answers = []
    for i in range(steps):
        response = api.post(f"/v1/models/{model_id}/train_step", json={"inputs": tensor(X + i), "targets": tensor(Y)})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def history(api, model_id: str, **query) -> dict:
    response = api.get(f"/v1/models/{model_id}/history", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def test_each_record_holds_what_its_step_answered(api):
    model_id = create(api)["id"]
    started = time.time()
    answers = train(api, model_id, 3)
    # Two batches accumulated, then one step: its loss is their mean.
    losses = [api.post(f"/v1/models/{model_id}/forward_backward", json={"inputs": tensor(X * k), "targets": tensor(Y)})
              .json()["loss"] for k in (1, 2)]
    stepped = api.post(f"/v1/models/{model_id}/step", json={"lr": 0.001}).json()
    answers.append({**stepped, "loss": (losses[0] + losses[1]) / 2})
    # Only a grad_output: the step has no loss.
    assert api.post(f"/v1/models/{model_id}/forward_backward", json={
        "inputs": tensor(X), "grad_output": tensor(np.ones((6, 3), np.float32))}).status_code == 200
    answers.append({**api.post(f"/v1/models/{model_id}/step", json={}).json(), "loss": None})

    record = history(api, model_id)
    assert record["step"] == [1, 2, 3, 4, 5] and record["total"] == 5 and not record["downsampled"]
    for name in TOP:
        assert record[name] == [answer[name] for answer in answers], name
    assert record["lr"][3:] == [0.001, 0.001]
    assert started <= record["time"][0] <= record["time"][-1] <= time.time()
    served = api.get(f"/v1/models/{model_id}/parameters").json()["parameters"]
    parameters = {name: array(t) for name, t in served.items()}
    assert set(record["parameters"]) == set(parameters) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name, value in parameters.items():
        stats = record["parameters"][name]
        assert stats["param_norm"][-1] == pytest.approx(float(np.linalg.norm(value.astype(np.float64))), rel=1e-6)
        assert all(g > 0 for g in stats["grad_norm"]) and all(r > 0 for r in stats["update_to_param"])
        if name.endswith("weight"):  # biases start at zero: their first update is all of them
            assert all(r < 0.1 for r in stats["update_to_param"])
    grads = [math.sqrt(sum(record["parameters"][n]["grad_norm"][i] ** 2 for n in parameters)) for i in range(5)]
    assert grads == pytest.approx(record["grad_norm"], rel=1e-9)
    dead = record["activations"]["1"]["dead_fraction"]
    assert len(dead) == 5 and all(0 <= d <= 1 for d in dead)
    assert record["flags"] == [[]] * 5

    info = api.get(f"/v1/models/{model_id}").json()
    assert info["last_loss"] is None and info["flags"] == []
    train(api, model_id, 1)
    info = api.get(f"/v1/models/{model_id}").json()
    assert info["last_loss"] == history(api, model_id, since=5)["loss"][0]


def test_flags_are_recorded_with_the_step_that_raised_them(api):
    spec = {"layers": [{"type": "linear", "in_features": 4, "out_features": 8}, {"type": "relu"},
                       {"type": "linear", "in_features": 8, "out_features": 3}],
            "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "sgd", "lr": 50.0}, "seed": 0}
    model_id = create(api, spec)["id"]
    train(api, model_id, 2)
    flags = history(api, model_id)["flags"]
    assert "exploding_gradients" in flags[0]  # an update of 50x the gradient moves the weights by far more than 0.1
    assert api.get(f"/v1/models/{model_id}").json()["flags"] == flags[-1]


def test_since_and_limit_page_through_the_records(api):
    model_id = create(api)["id"]
    answers = train(api, model_id, 12)
    page = history(api, model_id, since=4, limit=5)
    assert page["step"] == [5, 6, 7, 8, 9] and page["total"] == 8
    assert page["loss"] == [a["loss"] for a in answers[4:9]]
    rest = history(api, model_id, since=9)
    assert rest["step"] == [10, 11, 12] and rest["total"] == 3
    assert history(api, model_id, since=12)["step"] == []


def test_points_downsample_keeping_every_columns_extremes(api):
    model_id = create(api)["id"]
    train(api, model_id, 41)
    whole, few = history(api, model_id), history(api, model_id, points=10)
    assert few["downsampled"] and len(few["step"]) <= 10 and few["total"] == 41
    assert few["step"][0] == 1 and few["step"][-1] == 41 and few["step"] == sorted(few["step"])
    for name in (*TOP, "time"):
        assert (min(few[name]), max(few[name])) == (min(whole[name]), max(whole[name])), name
    for name, stats in whole["parameters"].items():
        for statistic, values in stats.items():
            kept = few["parameters"][name][statistic]
            assert (min(kept), max(kept)) == (min(values), max(values)), (name, statistic)
    assert history(api, model_id, points=100)["step"] == whole["step"]  # fewer records than points: all


def test_a_bucket_gives_its_minimum_and_maximum_in_the_order_they_came():
    steps = np.arange(1, 9)
    columns = np.array([[3, 1, 4, 1, 5, 9, 2, 6], [1, 2, np.nan, 4, np.nan, np.nan, np.nan, np.nan]], float)
    flagged = {1: "a", 5: "b", 6: "a"}  # by record index: the records with flags
    out_steps, out, out_flags = downsample(steps, columns, flagged, 4)
    assert out_steps.tolist() == [1, 4, 5, 8]
    assert out[0].tolist() == [1, 4, 9, 2]  # bucket 1..4: min first; bucket 5..8: max first
    assert out[1, :2].tolist() == [1, 4] and np.isnan(out[1, 2:]).all()  # NaN ignored; all NaN stays NaN
    assert out_flags == [["a"], ["a"], ["a", "b"], ["a", "b"]]


def test_csv_holds_the_same_records_as_json(api):
    model_id = create(api)["id"]
    train(api, model_id, 4)
    as_json = history(api, model_id)
    response = api.get(f"/v1/models/{model_id}/history", params={"format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(row["step"]) for row in rows] == as_json["step"]
    for name in ("time", *TOP):
        assert [float(row[name]) for row in rows] == as_json[name], name
    for name, stats in as_json["parameters"].items():
        for statistic, values in stats.items():
            assert [float(row[f"parameters.{name}.{statistic}"]) for row in rows] == values
    assert [float(row["activations.1.dead_fraction"]) for row in rows] == as_json["activations"]["1"]["dead_fraction"]
    assert [row["flags"].split() for row in rows] == as_json["flags"]


def test_bad_queries_are_422_naming_the_parameter(api):
    model_id = create(api)["id"]
    for query, field in (({"points": 1}, "points"), ({"since": -1}, "since"), ({"limit": 0}, "limit"),
                         ({"format": "xml"}, "format")):
        response = api.get(f"/v1/models/{model_id}/history", params=query)
        assert response.status_code == 422 and field in response.text, query
    assert api.get("/v1/models/no-such-model/history").status_code == 404


def test_delete_and_import_start_an_empty_history(api):
    info = create(api)
    model_id = info["id"]
    train(api, model_id, 3)
    checkpoint = api.get(f"/v1/models/{model_id}/checkpoint").content
    assert api.delete(f"/v1/models/{model_id}").status_code == 204
    assert api.post("/v1/models", json={**info["spec"], "id": model_id}).status_code == 201
    assert history(api, model_id)["step"] == []
    imported = api.post(f"/v1/models/import?id={model_id}-copy", content=checkpoint,
                        headers={"Content-Type": "application/octet-stream"}).json()
    assert imported["step"] == 3 and imported["last_loss"] is None
    assert history(api, imported["id"])["total"] == 0
    train(api, imported["id"], 1)
    assert history(api, imported["id"])["step"] == [4]


def test_another_key_sees_no_history(make_client):
    keyed = make_client(api_keys=["alice-key", "bob-key"])
    alice, bob = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}
    model_id = create(_Keyed(keyed, alice))["id"]
    train(_Keyed(keyed, alice), model_id, 2)
    assert keyed.get(f"/v1/models/{model_id}/history", headers=alice).json()["step"] == [1, 2]
    assert keyed.get(f"/v1/models/{model_id}/history", headers=bob).status_code == 404
    assert keyed.get(f"/v1/models/{model_id}/history").status_code == 401


class _Keyed:
    """A client that sends one key with every request."""

    def __init__(self, client, headers: dict):
        self.client, self.headers = client, headers

    def post(self, url, **kwargs):
        return self.client.post(url, headers=self.headers, **kwargs)


def test_history_can_be_turned_off(make_client):
    client = make_client(history=False)
    model_id = create(client)["id"]
    answers = train(client, model_id, 2)
    response = client.get(f"/v1/models/{model_id}/history")
    assert response.status_code == 404 and response.json()["code"] == "history_off"
    info = client.get(f"/v1/models/{model_id}").json()
    assert (info["step"], info["last_loss"], info["flags"]) == (2, answers[-1]["loss"], [])


def test_csv_without_a_limit_streams_every_record_page_by_page(api, monkeypatch):
    # Pages of 4 records: every server of this test runs in this process.
    monkeypatch.setattr("service.routes.inspection.PAGE", 4)
    model_id = create(api)["id"]
    train(api, model_id, 10)
    rows = list(csv.DictReader(io.StringIO(api.get(f"/v1/models/{model_id}/history?format=csv").text)))
    assert [int(row["step"]) for row in rows] == list(range(1, 11))
    page = history(api, model_id)  # JSON without a limit: one page, and how many there are
    assert page["step"] == [1, 2, 3, 4] and page["total"] == 10


def test_a_since_past_any_step_is_422_not_a_server_error(api):
    model_id = create(api)["id"]
    response = api.get(f"/v1/models/{model_id}/history", params={"since": 2**63})
    assert response.status_code == 422 and "since" in response.text


def test_an_unreadable_history_file_is_set_aside_and_the_model_still_served(open_client, tmp_path):
    with open_client() as first:
        model_id = create(first)["id"]
        train(first, model_id, 2)
    folder = tmp_path / "data" / "history"
    (folder / f"{model_id}.sqlite").write_bytes(b"not a database" * 100)
    with open_client() as second:
        assert second.get(f"/v1/models/{model_id}").json()["step"] == 2
        assert history(second, model_id)["step"] == []
        train(second, model_id, 1)
        assert history(second, model_id)["step"] == [3]
    assert len(list(folder.glob(f"{model_id}.sqlite.unreadable-*"))) == 1


def test_a_checkpoint_write_that_fails_loses_no_record(tmp_path, monkeypatch):
    shelf = Shelf(Settings(data_dir=tmp_path, durability="step"), Checkpoints(tmp_path))
    held = Held("m", Model.from_spec(MLP), None)
    shelf.add(held)

    def step(model):
        return model.train_step(X, Y)

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("service.persistence.os.write", disk_full)
        with pytest.raises(OSError):
            shelf.work(held, step, (), "step")
    for _ in range(2):
        shelf.work(held, step, (), "step")
    assert shelf.snapshot(held).read()["step"].tolist() == [1, 2, 3]
    shelf.close()


def _small_store_step(tmp_path, check_between):
    """Runs one inline train_step through a ModelStore on its own loop; `check_between(entry)`
    is called right after the step's answer is in hand, before the loop runs anything else."""
    from service.routes.training import _train_step
    from service.schemas import TrainStepRequest
    from service.store import ModelStore

    async def scenario():
        store = ModelStore(Settings(data_dir=tmp_path / "data", durability="none"))
        await store.open()
        try:
            await store.create({**MLP, "id": "small"}, None)
            entry = await store.get("small", None)
            body = TrainStepRequest.model_construct(inputs=X, targets=Y, lr=None)
            answer = await store.run(entry, _train_step, body, save="step", rows=len(X))
            between = check_between(entry)
            read = await store.history(entry, None, None, None)  # takes the model's lock
            return answer, between, read, entry
        finally:
            await store.close()

    return asyncio.run(scenario())


def test_a_small_steps_record_is_made_after_its_answer_and_before_the_model_is_free(tmp_path):
    answer, between, read, entry = _small_store_step(
        tmp_path, lambda entry: (entry.history.buffered, entry.lock.locked()))
    # The answer came first, with the model still held for its record ...
    assert between == (0, True)
    # ... which the next holder of the lock finds made, and which holds what the step answered.
    columns = read["columns"]
    assert list(read["step"]) == [1] and list(columns["loss"]) == [answer["loss"]]
    assert list(columns["grad_norm"]) == [answer["grad_norm"]]
    assert not entry.lock.locked()


def test_a_record_that_fails_after_the_answer_is_logged_and_frees_the_model(tmp_path, monkeypatch, caplog):
    from service.history import History

    def broken(self, record):
        raise OSError("the disk went away")

    monkeypatch.setattr(History, "append", broken)
    with caplog.at_level("ERROR", logger="gradserve"):
        answer, _, read, entry = _small_store_step(tmp_path, lambda entry: None)
    assert answer["step"] == 1 and read["total"] == 0  # the step stands; its record is lost, and said so
    assert "recording a step in the history failed" in caplog.text and "the disk went away" in caplog.text
    assert not entry.lock.locked()
