"""The dashboard on a Ray-backed server: the pages read the same routes, answered by the
model's host."""

import httpx
from tests.ui.conftest import LAYERS_LINE, SPEC, batch
from tests.ui.test_model_page import open_model

from service.main import create_app
from service.settings import Settings
from tests.live_server import uvicorn_in_thread
from tests.ray_cluster import kill_namespace


def test_both_pages_draw_a_model_that_lives_in_a_ray_actor(tab, ray_cluster, tmp_path, screenshot):
    settings = Settings(data_dir=tmp_path / "data", durability="none", ray_address=ray_cluster.address,
                        ray_namespace="dashboard", ray_hosts=1)
    try:
        with uvicorn_in_thread(create_app(settings)) as url:
            with httpx.Client(base_url=url, timeout=30) as client:
                assert client.post("/v1/models", json={**SPEC, "id": "on-ray"}).status_code == 201
                x, y = batch()
                for _ in range(30):
                    body = {"inputs": {"shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()},
                            "targets": {"shape": list(y.shape), "datatype": "INT64", "data": y.tolist()}}
                    assert client.post("/v1/models/on-ray/train_step", json=body).status_code == 200
                history = client.get("/v1/models/on-ray/history").json()
            tab.page.goto(f"{url}/ui")
            row = tab.page.locator('tr[data-id="on-ray"]')
            row.wait_for()
            assert row.locator("td.layers").inner_text() == LAYERS_LINE
            assert row.locator("td.step").inner_text() == "30"
            shown = open_model(tab, url, "on-ray")
            assert shown["data"]["loss"][0] == history["step"] == list(range(1, 31))
            assert shown["data"]["loss"][1] == history["loss"]
            screenshot(tab.page, "model-on-ray")
            tab.assert_clean()
    finally:
        kill_namespace("dashboard")
