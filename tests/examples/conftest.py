"""Fixtures of the example tests: a real `gradserve serve` that wants an API key."""

from collections.abc import Iterator

import pytest
from live_server import API_KEY, BIN, Server, free_port, start, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`gradserve serve` on 127.0.0.1, wanting the bearer key API_KEY."""
    folder = tmp_path_factory.mktemp("examples")
    port = free_port()
    started = start([str(BIN / "gradserve"), "serve", "--host", "127.0.0.1", "--port", str(port),
                     "--data-dir", str(folder / "data")],
                    f"http://127.0.0.1:{port}", folder / "server.log", GRADSERVE_API_KEYS=API_KEY)
    yield started
    stop(started)
