"""Fixtures of the dashboard tests: one headless Chromium for the session, real uvicorn servers
(in this process, on 127.0.0.1) with models trained through the Python client, one of them
training in a background thread while the tests run, and browser tabs that record what went
wrong (console errors, uncaught exceptions, failed requests) and every request URL."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from service.main import create_app
from service.settings import Settings
from tests.live_server import REPO, uvicorn_in_thread

sys.path.insert(0, str(REPO / "clients" / "python"))  # this tree's client, whatever the venv installed
from gradserve_client import Client

KEY = "dashboard-key"
LAYERS = [{"type": "linear", "in_features": 8, "out_features": 32}, {"type": "relu"},
          {"type": "linear", "out_features": 32}, {"type": "tanh"}, {"type": "linear", "out_features": 3}]
LAYERS_LINE = "linear 8→32 · relu · linear 32→32 · tanh · linear 32→3"
SPEC = {"layers": LAYERS, "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.003},
        "seed": 0}
TRAINED_STEPS = 1500  # more than a chart is wide: the page loads them downsampled
TRAINING_STEPS = 2000  # at most, ~40 s: the background trainer stops at teardown, or here
SCREENSHOTS: list[Path] = []


def batch(seed: int = 0, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Gives (x, y) of a learnable 3-class problem: the class is where x's first features point."""
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype("float32")
    return x, (x[:, :3].argmax(axis=1)).astype("int64")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Debian's) for the whole session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install playwright (the dev extra has it)")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: apt-get install chromium (scripts/test.sh and .ci/run do)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[str]:
    """A real uvicorn with no API keys; its models: `trained` (TRAINED_STEPS, finished), `live`
    (training in a background thread for the whole session) and `troubled` (flagged)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("dashboard"), durability="none")
    with uvicorn_in_thread(create_app(settings)) as url:
        with Client(url) as client:
            trained = client.create_model(SPEC, id="trained")
            x, y = batch()
            trained.train_steps([(x, y)] * TRAINED_STEPS)
            make_troubled(client)
        yield url


def make_troubled(client: Client) -> None:
    """Creates `troubled`: tanh saturated (weights x30 before it), ReLUs dead (bias -50), one step."""
    layers = [{"type": "linear", "in_features": 8, "out_features": 32}, {"type": "tanh"},
              {"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "linear", "out_features": 3}]
    model = client.create_model(layers=layers, loss={"type": "softmax_cross_entropy"}, id="troubled", seed=0)
    parameters = {name: value.copy() for name, value in model.parameters().items()}
    parameters["0.weight"] *= 30
    parameters["2.bias"][:] = -50
    model.load_parameters(parameters)
    model.train_step(*batch())


@dataclass
class Trainer:
    model_id: str
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)


@pytest.fixture(scope="session")
def training(server) -> Iterator[Trainer]:
    """The model `live`, trained through the Python client in a background thread (a step
    every ~20 ms) until the session ends or TRAINING_STEPS."""
    trainer = Trainer("live")
    x, y = batch(1)
    with Client(server) as client:  # made, and a first step taken, before any test opens its page
        client.create_model(SPEC, id=trainer.model_id).train_step(x, y)

    def train() -> None:
        try:
            with Client(server) as client:
                model = client.model(trainer.model_id)
                for _ in range(TRAINING_STEPS):
                    if trainer.stop.wait(0.02):
                        break
                    model.train_step(x, y)
        except BaseException as error:  # noqa: BLE001 -- reported by the teardown
            trainer.errors.append(error)

    thread = threading.Thread(target=train, name="trainer", daemon=True)
    thread.start()
    yield trainer
    trainer.stop.set()
    thread.join(10)
    assert not trainer.errors, trainer.errors


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory) -> Iterator[str]:
    """A real uvicorn that wants the API key KEY, with one model of that key, `owned` (20 steps)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("dashboard-keyed"), durability="none", api_keys=[KEY])
    with uvicorn_in_thread(create_app(settings)) as url:
        with Client(url, api_key=KEY) as client:
            client.create_model(SPEC, id="owned").train_steps([batch()] * 20)
        yield url


@dataclass
class Tab:
    """A browser page and what it saw: console errors, uncaught exceptions, failed requests
    (no answer, or a status of 400 or more) and every request, with its headers."""

    page: object
    errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict]] = field(default_factory=list, repr=False)

    def assert_clean(self) -> None:
        """No console error, no failed request, and every request to gradserve itself (no CDN)."""
        assert self.errors == [], self.errors
        assert self.failures == [], self.failures
        assert {urlsplit(url).hostname for url, _ in self.requests} == {"127.0.0.1"}


@pytest.fixture
def tab(browser) -> Iterator[Tab]:
    """A fresh browser context (its own sessionStorage) and page, 1400 x 900, recording."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    seen = Tab(page)
    page.on("console", lambda message: message.type == "error" and seen.errors.append(message.text))
    page.on("pageerror", lambda error: seen.errors.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda request: seen.failures.append(f"{request.url}: {request.failure}"))
    page.on("response", lambda response: response.status >= 400
            and seen.failures.append(f"{response.url}: {response.status}"))
    page.on("request", lambda request: seen.requests.append((request.url, request.headers)))
    yield seen
    context.close()


@pytest.fixture(scope="session")
def screenshot(tmp_path_factory):
    """Gives shot(page, name): a full-page PNG in the session's tmp dir, listed at the end."""
    folder = tmp_path_factory.mktemp("screenshots")

    def shot(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        SCREENSHOTS.append(path)
        print(f"screenshot: {path}")
        return path

    return shot


def pytest_terminal_summary(terminalreporter) -> None:
    if SCREENSHOTS:
        terminalreporter.write_sep("-", "dashboard screenshots")
        for path in SCREENSHOTS:
            terminalreporter.write_line(str(path))
