"""GET /ui in a real browser: every model in a row, live, each linking to its page."""

import time

import httpx
import pytest
from tests.ui.conftest import LAYERS_LINE, SPEC, TRAINED_STEPS

from service.main import create_app
from service.settings import Settings
from tests.live_server import uvicorn_in_thread


def shown_step(tab, model_id: str) -> int:
    return int(tab.page.inner_text(f'tr[data-id="{model_id}"] td.step').lstrip("● ").replace(",", ""))


def test_the_list_shows_each_model_and_its_step_grows(tab, server, training, screenshot):
    tab.page.goto(f"{server}/ui")
    row = tab.page.locator('tr[data-id="live"]')
    row.wait_for()
    assert row.locator("td.layers").inner_text() == LAYERS_LINE
    assert row.locator("a").get_attribute("href") == "/ui/models/live"
    assert tab.page.locator('tr[data-id="trained"] td.step').inner_text() == f"{TRAINED_STEPS:,}"
    first = shown_step(tab, "live")
    tab.page.wait_for_function(f"""() => Number(document.querySelector('tr[data-id="live"] td.step')
                                       .textContent.replace(/[^0-9]/g, "")) > {first}""", timeout=2500)
    flags = tab.page.locator('tr[data-id="troubled"] td.flag-cell').inner_text()
    assert flags.split() == ["vanishing", "×4", "dead", "ReLU", "3", "saturated", "1"]
    assert tab.page.locator('tr[data-id="trained"] td.loss').inner_text() != "–"
    screenshot(tab.page, "models")
    tab.page.click('a[href="/ui/models/trained"]')
    tab.page.wait_for_url("**/ui/models/trained")
    tab.assert_clean()


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """A server with 100 models."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("crowded"), durability="none")
    with uvicorn_in_thread(create_app(settings)) as url:
        with httpx.Client(base_url=url) as client:
            for i in range(100):
                assert client.post("/v1/models", json={**SPEC, "id": f"m{i:03d}"}).status_code == 201
        yield url


def test_a_hundred_models_list_at_once_and_refresh_in_place(tab, crowded):
    started = time.monotonic()
    tab.page.goto(f"{crowded}/ui")
    tab.page.wait_for_function("document.querySelectorAll('#models tbody tr').length === 100")
    assert time.monotonic() - started < 3
    # A refresh updates the rows it has (no table rebuilt every second), and sees a step at once.
    tab.page.evaluate("document.querySelectorAll('#models tbody tr').forEach((row) => { row.kept = true; })")
    httpx.post(f"{crowded}/v1/models/m042/train_step", json={"inputs": [[0.0] * 8], "targets": [1]}).raise_for_status()
    tab.page.wait_for_function("""document.querySelector('tr[data-id="m042"] td.step').textContent.endsWith("1")""",
                               timeout=2500)
    kept = tab.page.evaluate("[...document.querySelectorAll('#models tbody tr')].filter((row) => row.kept).length")
    assert kept == 100
    tab.assert_clean()
