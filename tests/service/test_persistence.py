"""Checkpoints on disk: atomic writes, restart, durability modes, bad files skipped."""

import logging
import os
import time

import numpy as np
import pytest

from service.persistence import Checkpoints, atomic_write
from wire import MLP, create, tensor

X = np.random.default_rng(5).standard_normal((4, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 1])


def train(client, model_id: str, steps: int) -> None:
    for _ in range(steps):
        assert client.post(f"/v1/models/{model_id}/train_step",
                           json={"inputs": tensor(X), "targets": tensor(Y)}).status_code == 200


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m.safetensors"
    atomic_write(path, b"old")
    atomic_write(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    atomic_write(path, b"good")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk on fire")))
    with pytest.raises(OSError):
        atomic_write(path, b"half")
    assert path.read_bytes() == b"good" and os.listdir(tmp_path) == ["m.safetensors"]


def test_models_come_back_after_a_restart(make_client, tmp_path):
    data = tmp_path / "restart"
    first = make_client(data_dir=data)
    info = create(first)
    train(first, info["id"], 3)
    params = first.get(f"/v1/models/{info['id']}/parameters").json()
    second = make_client(data_dir=data)
    assert second.get(f"/v1/models/{info['id']}").json()["step"] == 3
    assert second.get(f"/v1/models/{info['id']}/parameters").json() == params
    assert second.get("/readyz").json() == {"status": "ready", "models": 1}


def test_delete_removes_the_files(make_client, tmp_path):
    data = tmp_path / "deleted"
    client = make_client(data_dir=data)
    info = create(client)
    assert (data / "models" / f"{info['id']}.safetensors").exists()
    client.delete(f"/v1/models/{info['id']}")
    assert list((data / "models").iterdir()) == []
    assert make_client(data_dir=data).get("/v1/models").json()["models"] == []


def test_durability_step_writes_before_the_response(make_client, tmp_path):
    data = tmp_path / "step"
    client = make_client(data_dir=data, durability="step")
    info = create(client)
    train(client, info["id"], 2)
    loaded, skipped = Checkpoints(data).load_all()
    assert skipped == {} and [(m.id, m.model.step_count) for m in loaded] == [(info["id"], 2)]


def test_durability_none_writes_steps_only_at_shutdown(open_client, tmp_path):
    data = tmp_path / "none"
    with open_client(data_dir=data, durability="none") as client:
        info = create(client)
        train(client, info["id"], 2)
        assert Checkpoints(data).load_all()[0][0].model.step_count == 0  # only the creation is on disk
    assert Checkpoints(data).load_all()[0][0].model.step_count == 2


def test_durability_interval_flushes_in_the_background(make_client, tmp_path):
    data = tmp_path / "interval"
    client = make_client(data_dir=data, durability="interval", durability_interval_seconds=0.1)
    info = create(client)
    train(client, info["id"], 2)
    deadline = time.monotonic() + 5
    while Checkpoints(data).load_all()[0][0].model.step_count != 2:
        assert time.monotonic() < deadline, "the interval flush never happened"
        time.sleep(0.05)


def test_a_truncated_checkpoint_is_skipped_with_a_logged_reason_and_kept(make_client, tmp_path, caplog):
    data = tmp_path / "truncated"
    first = make_client(data_dir=data)
    good, bad = create(first), create(first)
    path = data / "models" / f"{bad['id']}.safetensors"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with caplog.at_level(logging.ERROR, logger="gradserve"):
        second = make_client(data_dir=data)
    assert f"skipping checkpoint {path}" in caplog.text and "truncated" in caplog.text
    assert second.get(f"/v1/models/{good['id']}").status_code == 200
    assert second.get(f"/v1/models/{bad['id']}").status_code == 404
    # The id stays reserved: nothing overwrites the damaged file.
    taken = second.post("/v1/models", json={**MLP, "id": bad["id"]})
    assert taken.status_code == 409 and "could not be read" in taken.json()["detail"]
    assert path.read_bytes() == content[: len(content) // 2]


def test_leftover_temporary_files_and_strange_names_are_ignored(make_client, tmp_path, caplog):
    data = tmp_path / "leftovers"
    (data / "models").mkdir(parents=True)
    (data / "models" / ".x.safetensors.1234.tmp").write_bytes(b"partial")
    (data / "models" / "bad name!.safetensors").write_bytes(b"whatever")
    with caplog.at_level(logging.WARNING, logger="gradserve"):
        client = make_client(data_dir=data)
    assert client.get("/v1/models").json()["models"] == []
    assert "never completed" in caplog.text and "not a valid model id" in caplog.text
    assert not (data / "models" / ".x.safetensors.1234.tmp").exists()
