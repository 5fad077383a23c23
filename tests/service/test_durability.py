"""A real `gradserve serve` process killed with SIGKILL mid-training loses no acknowledged step."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from core import Model
from wire import binary_body, read_binary

REPO = Path(__file__).resolve().parents[2]
SPEC = {"id": "durable", "seed": 3, "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.01},
        "layers": [{"type": "linear", "in_features": 16, "out_features": 32}, {"type": "relu"},
                   {"type": "linear", "in_features": 32, "out_features": 4}]}


def batch(i: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    return rng.standard_normal((32, 16)).astype(np.float32), rng.integers(0, 4, 32)


def replay(steps: int) -> Model:
    """Gives the model the engine makes in-process from the same spec and batches."""
    model = Model.from_spec(SPEC)
    for i in range(steps):
        model.forward_backward(*batch(i))
        model.step()
    return model


class Server:
    """`python -m service.cli serve` on a free port, its log in a file."""

    def __init__(self, data_dir: Path, log: Path, *options: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--data-dir", str(data_dir), *options], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (found := re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        self.url = found.group(1)
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def servers(tmp_path):
    started: list[Server] = []

    def start(name: str, *options: str) -> Server:
        started.append(Server(tmp_path / "data", tmp_path / f"{name}.log", *options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def train_until_killed(url: str, answers: list[dict], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.is_set():
            body, headers = binary_body({}, dict(zip(("inputs", "targets"), batch(i))))
            try:
                response = client.post("/v1/models/durable/train_step", content=body, headers=headers)
            except httpx.TransportError:
                return
            assert response.status_code == 200, response.text
            answers.append(response.json())
            i += 1


def kill_while_training(server: Server, steps: int) -> list[dict]:
    """Gives the answers of the train steps acknowledged before `server` was SIGKILLed, at
    least `steps` of them."""
    answers: list[dict] = []
    stop = threading.Event()
    trainer = threading.Thread(target=train_until_killed, args=(server.url, answers, stop))
    trainer.start()
    deadline = time.monotonic() + 60
    while len(answers) < steps:
        assert trainer.is_alive() and time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    stop.set()
    trainer.join(10)
    return answers


def test_sigkill_mid_training_loses_no_acknowledged_step(servers):
    first = servers("first")
    assert "data in" in first.log.read_text() and "0 models loaded" in first.log.read_text()
    assert httpx.post(f"{first.url}/v1/models", json=SPEC).status_code == 201

    acknowledged = [answer["step"] for answer in kill_while_training(first, 25)]  # mid-request, most likely
    last_ack = acknowledged[-1]
    assert acknowledged == list(range(1, last_ack + 1))

    second = servers("second")
    assert "1 models loaded" in second.log.read_text()
    with httpx.Client(base_url=second.url, timeout=10) as client:
        restored = client.get("/v1/models/durable").json()["step"]
        # A step written but killed before its answer left may be there too; none may be missing.
        assert restored in (last_ack, last_ack + 1)
        _, served = read_binary(client.get("/v1/models/durable/parameters?binary_data_output=true"))
        expected = replay(restored)
        for name, value in expected.parameters().items():
            assert served[name].tobytes() == value.tobytes(), name
        # The optimizer state came back too: the next step matches the replay's.
        body, headers = binary_body({}, dict(zip(("inputs", "targets"), batch(restored))))
        assert client.post("/v1/models/durable/train_step", content=body, headers=headers).status_code == 200
        _, served = read_binary(client.get("/v1/models/durable/parameters?binary_data_output=true"))
    expected = replay(restored + 1)
    for name, value in expected.parameters().items():
        assert served[name].tobytes() == value.tobytes(), name


def test_sigkill_leaves_history_and_checkpoint_consistent(servers):
    first = servers("first")
    assert httpx.post(f"{first.url}/v1/models", json=SPEC).status_code == 201
    answers = kill_while_training(first, 25)

    second = servers("second")
    with httpx.Client(base_url=second.url, timeout=10) as client:
        restored = client.get("/v1/models/durable").json()["step"]
        record = client.get("/v1/models/durable/history").json()
    # Every acknowledged step is there with what it answered, and nothing beyond the checkpoint.
    assert record["step"] == list(range(1, restored + 1))
    for name in ("loss", "lr", "grad_norm", "update_norm"):
        assert record[name][:len(answers)] == [answer[name] for answer in answers], name


def test_a_crash_leaves_no_record_beyond_the_checkpoint(servers):
    """Under durability "none" the records reach the disk before the checkpoint does (every 256
    steps); after a crash the history is cut back to the checkpoint's step."""
    first = servers("first", "--durability", "none")
    assert httpx.post(f"{first.url}/v1/models", json=SPEC).status_code == 201
    kill_while_training(first, 300)
    on_disk = sqlite3.connect(first.log.parent / "data" / "history" / "durable.sqlite")
    assert on_disk.execute("SELECT count(*) FROM steps").fetchone()[0] >= 256
    on_disk.close()

    second = servers("second", "--durability", "none")
    with httpx.Client(base_url=second.url, timeout=10) as client:
        assert client.get("/v1/models/durable").json()["step"] == 0
        assert client.get("/v1/models/durable/history").json()["total"] == 0
