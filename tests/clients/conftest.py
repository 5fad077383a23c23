"""A real gradserve server (uvicorn on 127.0.0.1, free port, tmp data dir) for the client tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
API_KEYS = ("key-alice", "key-bob")
SMALL_BODY_LIMIT = 64 * 1024


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen
    log: Path
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(data_dir: Path, **env: str) -> Server:
    port = _free_port()
    log = data_dir.parent / f"{data_dir.name}.log"
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir)]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
    environment["GRADSERVE_DURABILITY"] = "none"  # per-step fsync is not what these tests are about
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env={**environment, **env}, stdout=out,
                                   stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gradserve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    _stop(server)
    pytest.fail(f"gradserve not ready after 30 s:\n{log.read_text()[-3000:]}")


def _stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with default settings."""
    started = _start(tmp_path_factory.mktemp("gradserve") / "data")
    yield started
    _stop(started)


@pytest.fixture(scope="session")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that wants an API key (one of API_KEYS) and takes bodies of at most 64 KiB."""
    started = _start(tmp_path_factory.mktemp("gradserve-locked") / "data",
                     GRADSERVE_API_KEYS=",".join(API_KEYS),
                     GRADSERVE_MAX_BODY_BYTES=str(SMALL_BODY_LIMIT))
    started.api_keys, started.max_body_bytes = API_KEYS, SMALL_BODY_LIMIT
    yield started
    _stop(started)


@pytest.fixture
def client(server: Server) -> Iterator["gradserve_client.Client"]:
    import gradserve_client

    with gradserve_client.Client(server.base_url) as c:
        yield c


def make_blobs(n: int, seed: int) -> tuple["np.ndarray", "np.ndarray"]:
    """Returns n points (n, 2) float32 around three centres, and their labels (n,) int64."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    labels = rng.integers(0, 3, size=n)
    points = centres[labels] + rng.normal(scale=0.6, size=(n, 2))
    return points.astype(np.float32), labels.astype(np.int64)


CLASSIFIER_SPEC = {
    "layers": [
        {"type": "linear", "in_features": 2, "out_features": 16},
        {"type": "relu"},
        {"type": "linear", "out_features": 3},
    ],
    "loss": {"type": "softmax_cross_entropy"},
    "optimizer": {"type": "adam", "lr": 0.02},
    "seed": 0,
}


@pytest.fixture
def blobs():
    """make_blobs(n, seed): a three-class task a small MLP learns to > 95 %."""
    return make_blobs


@pytest.fixture
def classifier() -> dict:
    """The spec of a 2-16-3 ReLU MLP with softmax cross-entropy and Adam."""
    import copy

    return copy.deepcopy(CLASSIFIER_SPEC)
