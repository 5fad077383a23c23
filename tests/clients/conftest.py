"""A real gradserve server (uvicorn on 127.0.0.1, free port, tmp data dir) for the client tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import Server, free_port, start, stop

API_KEYS = ("key-alice", "key-bob")
SMALL_BODY_LIMIT = 64 * 1024


def _start(data_dir: Path, **settings: str) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(data_dir)]
    # Per-step fsync is not what these tests are about. Each server is shared by the session: it
    # takes more models than the default 100, so that no test's pass depends on those before it.
    return start(command, f"http://127.0.0.1:{port}", data_dir.parent / f"{data_dir.name}.log",
                 **{"GRADSERVE_DURABILITY": "none", "GRADSERVE_MAX_MODELS": "2000", **settings})


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with default settings."""
    started = _start(tmp_path_factory.mktemp("gradserve") / "data")
    yield started
    stop(started)


@pytest.fixture(scope="session")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that wants an API key (one of API_KEYS) and takes bodies of at most 64 KiB."""
    started = _start(tmp_path_factory.mktemp("gradserve-locked") / "data",
                     GRADSERVE_API_KEYS=",".join(API_KEYS),
                     GRADSERVE_MAX_BODY_BYTES=str(SMALL_BODY_LIMIT))
    yield started
    stop(started)


@pytest.fixture(scope="session")
def dataless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that keeps no data sets (GRADSERVE_MAX_DATA_BYTES=0): fit sends every epoch."""
    started = _start(tmp_path_factory.mktemp("gradserve-dataless") / "data", GRADSERVE_MAX_DATA_BYTES="0")
    yield started
    stop(started)


SMALL_DATA_BYTES = 20_000


@pytest.fixture(scope="session")
def small_data_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose data sets hold at most SMALL_DATA_BYTES together."""
    started = _start(tmp_path_factory.mktemp("gradserve-small-data") / "data",
                     GRADSERVE_MAX_DATA_BYTES=str(SMALL_DATA_BYTES))
    yield started
    stop(started)


@pytest.fixture
def client(server: Server) -> Iterator["gradserve_client.Client"]:
    import gradserve_client

    with gradserve_client.Client(server.url) as c:
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
