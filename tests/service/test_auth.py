"""API keys: 401 without a good one, other keys' models are 404, health stays open."""

import httpx
import pytest

from service.settings import Settings
from wire import MLP

ALICE, BOB = {"Authorization": "Bearer alice-key"}, {"Authorization": "Bearer bob-key"}


@pytest.fixture
def keyed(make_client):
    return make_client(api_keys=["alice-key", "bob-key"])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "alice-key"},
                                     {"Authorization": "Basic YWxpY2Uta2V5Og=="}])
def test_missing_or_wrong_key_is_401(keyed, headers):
    response = keyed.get("/v1/models", headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert keyed.post("/v1/models", json=MLP, headers=headers).status_code == 401


def test_health_metrics_and_the_dashboards_pages_need_no_key(keyed):
    for path in ("/healthz", "/readyz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready",
                 "/ui", "/ui/models/any-model", "/ui/static/model.js", "/ui/static/vendor/uPlot.iife.min.js"):
        assert keyed.get(path).status_code == 200


def test_a_model_is_invisible_to_other_keys(keyed):
    response = keyed.post("/v1/models", json=MLP, headers=ALICE)
    assert response.status_code == 201
    model_id = response.json()["id"]
    assert keyed.get(f"/v1/models/{model_id}", headers=ALICE).status_code == 200
    for method, path in [("GET", ""), ("DELETE", ""), ("POST", "/step"), ("GET", "/parameters"),
                         ("GET", "/checkpoint"), ("GET", "/export"), ("POST", "/forward")]:
        response = keyed.request(method, f"/v1/models/{model_id}{path}", headers=BOB, json={"inputs": [[0, 0, 0, 0]]})
        assert response.status_code == 404, (method, path)
    assert keyed.get("/v1/models", headers=BOB).json()["models"] == []
    assert [m["id"] for m in keyed.get("/v1/models", headers=ALICE).json()["models"]] == [model_id]


def test_ownership_survives_a_restart(make_client, tmp_path):
    settings = {"api_keys": ["alice-key", "bob-key"], "data_dir": tmp_path / "owned"}
    first = make_client(**settings)
    model_id = first.post("/v1/models", json=MLP, headers=ALICE).json()["id"]
    second = make_client(**settings)
    assert second.get(f"/v1/models/{model_id}", headers=BOB).status_code == 404
    assert second.get(f"/v1/models/{model_id}", headers=ALICE).status_code == 200
    assert b"alice-key" not in (tmp_path / "owned" / "models" / f"{model_id}.owner").read_bytes()


def test_keys_come_comma_separated_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRADSERVE_API_KEYS", "k1, k2,,k3")
    monkeypatch.setenv("GRADSERVE_MAX_TAPES", "4")
    settings = Settings()
    assert settings.api_keys == ["k1", "k2", "k3"] and settings.max_tapes == 4
    monkeypatch.delenv("GRADSERVE_API_KEYS")
    assert Settings().api_keys == []


def test_documented_defaults():
    s = Settings(_env_file=None)
    assert (s.max_body_bytes, s.max_tensor_elements, s.max_parameters, s.max_models, s.max_layers, s.max_tapes,
            s.tape_ttl_seconds, s.durability) == (64 * 2**20, 16_000_000, 50_000_000, 100, 256, 16, 300, "step")


def test_one_key_cannot_take_every_slot_of_a_shared_server(make_live):
    url = make_live(api_keys=["alice-key", "bob-key"], max_models_per_key=2, max_models=10)
    with httpx.Client(base_url=url) as live:
        for _ in range(2):
            assert live.post("/v1/models", json=MLP, headers=ALICE).status_code == 201
        refused = live.post("/v1/models", json=MLP, headers=ALICE)
        assert refused.status_code == 422 and refused.json()["code"] == "too_many_models"
        assert "GRADSERVE_MAX_MODELS_PER_KEY" in refused.json()["detail"][0]["msg"]
        checkpoint = live.get(f"/v1/models/{live.get('/v1/models', headers=ALICE).json()['models'][0]['id']}/checkpoint",
                              headers=ALICE).content
        assert live.post("/v1/models/import", content=checkpoint, headers=ALICE).status_code == 422  # import counts too
        assert live.post("/v1/models", json=MLP, headers=BOB).status_code == 201  # other keys keep their slots
        model_id = live.get("/v1/models", headers=ALICE).json()["models"][0]["id"]
        assert live.delete(f"/v1/models/{model_id}", headers=ALICE).status_code == 204
        assert live.post("/v1/models", json=MLP, headers=ALICE).status_code == 201  # a freed slot is usable again


def test_every_v1_and_v2_model_route_needs_a_key(keyed):
    """Whatever dependencies a route takes, none under /v1 or /v2/models answers without a key
    (401, not 404 or 422); /v2's server health and metadata stay open, as /healthz does."""
    paths = keyed.get("/openapi.json").json()["paths"]
    for path, item in paths.items():
        if path.startswith(("/v1", "/v2/models")):
            for method in item:
                response = keyed.request(method.upper(), path.replace("{model_id}", "some-model"), json={})
                assert response.status_code == 401, (method, path, response.status_code)
