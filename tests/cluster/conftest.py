"""Ray-backed servers on the session's cluster (tests/ray_cluster.py), each in a namespace of
its own (its own registry, hosts and data directory), its actors killed when the test ends."""

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from service.main import create_app
from service.settings import Settings
from tests.live_server import uvicorn_in_thread
from tests.ray_cluster import kill_namespace


@pytest.fixture
def ray_server(ray_cluster, tmp_path: Path, request) -> Iterator[Callable[..., str]]:
    """Gives `make(**settings) -> URL`: a real uvicorn on 127.0.0.1 whose store is the cluster.

    Every server of one test shares the test's namespace (`make.namespace`) and data
    directory unless told otherwise, as front-ends of one deployment do."""
    namespace = f"t-{abs(hash(request.node.nodeid)) % 10**8}"
    with ExitStack() as stack:
        stack.callback(kill_namespace, namespace)

        def make(**settings) -> str:
            settings = {"data_dir": tmp_path / "data", "ray_address": ray_cluster.address,
                        "ray_namespace": namespace, "ray_hosts": 2, **settings}
            return stack.enter_context(uvicorn_in_thread(create_app(Settings(**settings))))
        make.namespace = namespace
        yield make
