"""GET /ui/models/{id} in a real browser: the charts draw the server's history, live, flags
say what to try, and a model that is gone says so."""

import itertools

import httpx
from tests.ui.conftest import LAYERS_LINE, SPEC, TRAINED_STEPS, batch

from service.main import create_app
from service.settings import Settings
from tests.live_server import uvicorn_in_thread

# What each chart of the page draws: {chart: [(group, metric)] per series} (window.dashboard.charts).
CHARTS = ["loss", "lr", "norms", "ratios", "grads", "activations"]


def open_model(tab, url: str, model_id: str) -> dict:
    """Opens the model's page and gives window.dashboard once its first history is drawn."""
    tab.page.goto(f"{url}/ui/models/{model_id}")
    tab.page.wait_for_function("window.dashboard && (window.dashboard.loaded || document.querySelector('.status.error'))")
    assert tab.page.evaluate("window.dashboard.loaded"), tab.page.inner_text("#status")
    return chart_data(tab)


def chart_data(tab) -> dict:
    return tab.page.evaluate("""() => ({
        points: window.dashboard.points,
        series: Object.fromEntries(Object.entries(window.dashboard.charts).map(
            ([name, chart]) => [name, chart.uplot?.series.slice(1).map((s) => s.label) ?? null])),
        data: Object.fromEntries(Object.entries(window.dashboard.charts).map(
            ([name, chart]) => [name, chart.uplot?.data ?? null])),
    })""")


def plotted(values: list) -> list:
    """The server's values as the chart holds them: non-finite ones (strings) as gaps."""
    return [v if isinstance(v, (int, float)) else None for v in values]


def test_the_charts_draw_the_servers_history(tab, server, screenshot):
    shown = open_model(tab, server, "trained")
    history = httpx.get(f"{server}/v1/models/trained/history",
                        params={"points": shown["points"], "format": "json"}).json()
    assert history["downsampled"] and 0 < len(history["step"]) <= shown["points"] < TRAINED_STEPS
    assert set(shown["data"]) == set(CHARTS)
    for name in CHARTS:
        steps, *series = shown["data"][name]
        assert steps == history["step"], name
        assert series and all(len(values) == len(steps) for values in series), name
    assert shown["data"]["loss"][1] == plotted(history["loss"])
    assert shown["data"]["lr"][1] == plotted(history["lr"])
    assert shown["data"]["norms"][1] == plotted(history["grad_norm"])
    assert shown["series"]["ratios"] == list(history["parameters"])
    ratios = [plotted(metrics["update_to_param"]) for metrics in history["parameters"].values()]
    assert shown["data"]["ratios"][1:] == [[v if v and v > 0 else None for v in r] for r in ratios]
    assert len(shown["series"]["activations"]) == sum(len(m) for m in history["activations"].values())
    assert tab.page.inner_text("#layers") == LAYERS_LINE
    assert tab.page.inner_text("#step") == f"{TRAINED_STEPS:,}"
    assert "downsampled by the server" in tab.page.inner_text("#history-note")
    screenshot(tab.page, "model-trained")
    tab.assert_clean()


def test_new_steps_appear_without_a_reload(tab, server, training, screenshot):
    before = open_model(tab, server, "live")["data"]["loss"][0]
    tab.page.evaluate("window.notReloaded = true")
    first = int(tab.page.inner_text("#step").replace(",", ""))
    tab.page.wait_for_function(f"Number(document.querySelector('#step').textContent.replace(/,/g, '')) > {first}",
                               timeout=2000)
    tab.page.wait_for_function(f"window.dashboard.charts.loss.uplot.data[0].at(-1) > {before[-1] if before else 0}",
                               timeout=2000)
    after = chart_data(tab)["data"]
    assert tab.page.evaluate("window.notReloaded")
    steps = after["loss"][0]
    assert steps[: len(before)] == before and len(steps) > len(before)  # appended, not reloaded
    assert all(a < b for a, b in itertools.pairwise(steps))
    assert tab.page.inner_text("#live") == "● training"
    screenshot(tab.page, "model-live")
    tab.assert_clean()


def test_past_twice_the_points_the_page_loads_the_history_downsampled_again(tab, server, training):
    open_model(tab, server, "live")

    def loads() -> list[str]:
        return [url for url, _ in tab.requests if "/history?points=" in url]

    assert len(loads()) == 1
    tab.page.evaluate("window.dashboard.points = 2")  # as if the appended steps had passed 2 x the width
    tab.page.wait_for_function("window.dashboard.points > 2", timeout=2500)
    assert len(loads()) == 2 and loads()[-1].endswith(f"points={tab.page.evaluate('window.dashboard.points')}"
                                                      "&format=json")
    tab.assert_clean()


def test_flags_are_shown_with_what_to_try(tab, server, screenshot):
    open_model(tab, server, "troubled")
    flags = tab.page.inner_text("#flag-list")
    assert "Dead ReLUs in layer 3 (relu)" in flags and "leaky_relu" in flags and "He (Kaiming)" in flags
    assert "Saturated layer 1 (tanh)" in flags and "layernorm" in flags
    assert "Vanishing gradients in 0.weight, 2.weight" in flags and flags.count("residual connections") == 1
    screenshot(tab.page, "model-troubled")
    tab.assert_clean()


def test_a_model_that_is_gone_says_not_found(tab, server, screenshot):
    httpx.post(f"{server}/v1/models", json={"id": "doomed", "layers": [{"type": "linear", "in_features": 2,
                                                                         "out_features": 1}],
                                            "loss": {"type": "mse"}}).raise_for_status()
    httpx.post(f"{server}/v1/models/doomed/train_step", json={"inputs": [[1, 2]], "targets": [[1]]}).raise_for_status()
    open_model(tab, server, "doomed")
    assert httpx.delete(f"{server}/v1/models/doomed").status_code == 204
    tab.page.wait_for_selector("#status.error:has-text('not found')", timeout=3000)
    assert 'Model "doomed" not found' in tab.page.inner_text("#status")
    tab.page.goto(f"{server}/ui/models/never-was")
    tab.page.wait_for_selector("#status.error:has-text('not found')")
    assert tab.page.inner_text("#status").startswith('Model "never-was" not found')
    screenshot(tab.page, "model-not-found")
    assert not [e for e in tab.errors if e.startswith("uncaught")], tab.errors


def test_a_server_without_history_says_so(tab, tmp_path, screenshot):
    settings = Settings(data_dir=tmp_path / "data", durability="none", history=False)
    with uvicorn_in_thread(create_app(settings)) as url:
        httpx.post(f"{url}/v1/models", json={**SPEC, "id": "unrecorded"}).raise_for_status()
        x, y = batch()
        httpx.post(f"{url}/v1/models/unrecorded/train_step",
                   json={"inputs": x.tolist(), "targets": y.tolist()}).raise_for_status()
        open_model(tab, url, "unrecorded")
        assert "keeps no history (GRADSERVE_HISTORY=false)" in tab.page.inner_text("#history-note")
        assert tab.page.inner_text("#step") == "1" and tab.page.is_hidden("#charts") and tab.page.is_hidden("#status")
        screenshot(tab.page, "model-without-history")
    assert not [e for e in tab.errors if e.startswith("uncaught")], tab.errors
    assert len([f for f in tab.failures if "/history?" in f]) == 1  # asked once, not every second
