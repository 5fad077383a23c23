"""Servers for the service tests: in-process (httpx's ASGI transport) and a real uvicorn.

`make_client(**settings)` gives a synchronous client on a fresh in-process app with its own
data directory; `live_url` is a real uvicorn on 127.0.0.1 (free port, tmp data dir) shared by
the session; `api` runs a test once against each.
"""

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import anyio.from_thread
import httpx
import pytest

from service.main import create_app
from service.settings import Settings
from tests.live_server import uvicorn_in_thread
from tests.ray_cluster import kill_namespace


class PortalClient:
    """A synchronous client on httpx.AsyncClient + ASGITransport, driven through an anyio portal."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: httpx.AsyncClient, app):
        self._portal, self._client, self.app = portal, client, app

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        return self._portal.call(partial(self._client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: str, **kwargs) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@asynccontextmanager
async def _in_process(app) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
            yield client


@contextmanager
def asgi_client(settings: Settings, app=None) -> Iterator[PortalClient]:
    """Gives a client on a new app for `settings` (or on `app`), its lifespan running until the block ends."""
    app = app or create_app(settings)
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(_in_process(app)) as client:
            yield PortalClient(portal, client, app)


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., PortalClient]]:
    """Gives a factory of in-process clients; `data_dir` defaults to a tmp folder."""
    with ExitStack() as stack:
        def make(**settings) -> PortalClient:
            settings.setdefault("data_dir", tmp_path / "data")
            return stack.enter_context(asgi_client(Settings(**settings)))
        yield make


@pytest.fixture
def open_client(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[PortalClient]]:
    """Gives `asgi_client` for settings, as a context manager the test closes itself."""
    return lambda **settings: asgi_client(Settings(**{"data_dir": tmp_path / "data", **settings}))


@pytest.fixture
def client(make_client) -> PortalClient:
    return make_client()


# The session's shared servers take more models than the default 100: every test that uses one
# adds its models, and whether a test passed must not depend on how many ran before it.
SHARED_MAX_MODELS = 2000


@pytest.fixture(scope="session")
def live_url(tmp_path_factory) -> Iterator[str]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("live-data"), max_models=SHARED_MAX_MODELS))
    with uvicorn_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def module_live(request, tmp_path_factory) -> Iterator[str]:
    """A real uvicorn for one test module, with the settings of its LIVE_SETTINGS (a dict)."""
    settings = {"data_dir": tmp_path_factory.mktemp("module-live"), **getattr(request.module, "LIVE_SETTINGS", {})}
    with uvicorn_in_thread(create_app(Settings(**settings))) as url:
        yield url


@pytest.fixture(params=["embedded", "ray"])
def make_live(request, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Gives a factory of real uvicorn servers on 127.0.0.1 for settings; gives each one's URL.
    Every test using it runs on both backends: embedded, then on the session's Ray cluster."""
    with ExitStack() as stack:
        ray = {}
        if request.param == "ray":
            namespace = f"live-{abs(hash(request.node.nodeid)) % 10**8}"
            ray = {"ray_address": request.getfixturevalue("ray_cluster").address, "ray_namespace": namespace,
                   "ray_hosts": 1}
            stack.callback(kill_namespace, namespace)

        def make(**settings) -> str:
            settings.setdefault("data_dir", tmp_path / f"live-{len(stack._exit_callbacks)}")
            return stack.enter_context(uvicorn_in_thread(create_app(Settings(**ray, **settings))))
        yield make


@pytest.fixture(scope="session")
def ray_url(ray_cluster, tmp_path_factory) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 whose store is the session's Ray cluster (namespace "e2e")."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("ray-data"), ray_address=ray_cluster.address,
                        ray_namespace="e2e", ray_hosts=2, max_models=SHARED_MAX_MODELS)
    with uvicorn_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(params=["asgi", "live", "ray"])
def api(request) -> Iterator[PortalClient | httpx.Client]:
    """Gives an in-process client, then a client of the real uvicorn, then one of a real
    uvicorn on the Ray backend: every test using it runs on both backends."""
    if request.param == "asgi":
        yield request.getfixturevalue("client")
    else:
        url = request.getfixturevalue("live_url" if request.param == "live" else "ray_url")
        with httpx.Client(base_url=url, timeout=30) as live:
            yield live
