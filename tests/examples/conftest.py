"""Fixtures of the example tests: real `gradserve serve` processes, with and without API keys."""

from collections.abc import Iterator

import pytest
from tests.live_server import API_KEY, BIN, Server, free_port, start, stop


def serve(folder, **settings: str) -> Server:
    """Starts `gradserve serve` on 127.0.0.1 and a free port, its data in `folder`/data."""
    port = free_port()
    return start([str(BIN / "gradserve"), "serve", "--host", "127.0.0.1", "--port", str(port),
                  "--data-dir", str(folder / "data")],
                 f"http://127.0.0.1:{port}", folder / "server.log", **settings)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that wants the bearer key API_KEY."""
    started = serve(tmp_path_factory.mktemp("keyed"), GRADSERVE_API_KEYS=API_KEY)
    yield started
    stop(started)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default settings: no keys, durability "step"."""
    started = serve(tmp_path_factory.mktemp("open"))
    yield started
    stop(started)
