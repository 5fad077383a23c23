"""The OpenAPI description: every route documented with a pasteable example, and fuzzed."""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from wire import MLP

ROUTES = [
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
    ("post", "/v1/models"), ("get", "/v1/models"), ("get", "/v1/models/{model_id}"),
    ("delete", "/v1/models/{model_id}"), ("get", "/v1/models/{model_id}/checkpoint"), ("post", "/v1/models/import"),
    ("post", "/v1/models/{model_id}/forward"), ("post", "/v1/models/{model_id}/backward"),
    ("post", "/v1/models/{model_id}/forward_backward"), ("post", "/v1/models/{model_id}/step"),
    ("post", "/v1/models/{model_id}/zero_grad"), ("post", "/v1/models/{model_id}/train_step"),
    ("post", "/v1/models/{model_id}/gradcheck"), ("get", "/v1/models/{model_id}/parameters"),
    ("put", "/v1/models/{model_id}/parameters"), ("get", "/v1/models/{model_id}/gradients"),
    ("get", "/v1/models/{model_id}/diagnostics"),
]


@pytest.fixture
def openapi(client) -> dict:
    return client.get("/openapi.json").json()


def test_every_route_of_the_contract_is_described(client, openapi):
    described = {(method, path) for path, item in openapi["paths"].items() for method in item}
    assert described == set(ROUTES)
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_every_json_body_has_an_example_that_works(client, openapi):
    """Paste each example, in the order a user of /docs would, and get a 2xx."""
    order = ["/v1/models", "/v1/models/{model_id}/forward", "/v1/models/{model_id}/forward_backward",
             "/v1/models/{model_id}/step", "/v1/models/{model_id}/train_step", "/v1/models/{model_id}/gradcheck",
             "/v1/models/{model_id}/parameters"]
    for path in order:
        operation = openapi["paths"][path]["put" if path.endswith("parameters") else "post"]
        media = operation["requestBody"]["content"]["application/json"]
        assert media["schema"]["$ref"].removeprefix("#/components/schemas/") in openapi["components"]["schemas"]
        url = path.replace("{model_id}", "xor-mlp")
        method = "PUT" if path.endswith("parameters") else "POST"
        response = client.request(method, url, json=media["example"])
        assert response.status_code in (200, 201), (path, response.text)
    backward = openapi["paths"]["/v1/models/{model_id}/backward"]["post"]["requestBody"]["content"]["application/json"]
    tape_id = client.post("/v1/models/xor-mlp/forward", json={**openapi["paths"]["/v1/models/{model_id}/forward"]["post"][
        "requestBody"]["content"]["application/json"]["example"], "keep_tape": True}).json()["tape_id"]
    example = {**backward["example"], "tape_id": tape_id}
    assert client.post("/v1/models/xor-mlp/backward", json=example).status_code == 200


def test_fuzzing_the_schema_finds_no_server_error(live_url):
    """Property-based requests for every operation of /openapi.json against a real uvicorn."""
    httpx.post(f"{live_url}/v1/models", json={**MLP, "id": "fuzzed"})  # 201, or 409 if it exists already
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(ROUTES)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case):
            if "model_id" in (case.path_parameters or {}) and case.method != "DELETE":
                case.path_parameters["model_id"] = "fuzzed"  # reach the routes' bodies, not only their 404
            case.call_and_validate(checks=[not_a_server_error])

        no_server_error()
