"""The OpenAPI description: every route documented with a pasteable example, and fuzzed."""

import collections
import zlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from service.schemas import EXAMPLE_INPUTS, EXAMPLE_SPEC, EXAMPLE_TARGETS
from wire import MLP

ROUTES = [
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
    ("post", "/v1/models"), ("get", "/v1/models"), ("get", "/v1/models/{model_id}"),
    ("delete", "/v1/models/{model_id}"), ("get", "/v1/models/{model_id}/checkpoint"), ("post", "/v1/models/import"),
    ("post", "/v1/models/{model_id}/forward"), ("post", "/v1/models/{model_id}/backward"),
    ("post", "/v1/models/{model_id}/forward_backward"), ("post", "/v1/models/{model_id}/step"),
    ("post", "/v1/models/{model_id}/zero_grad"), ("post", "/v1/models/{model_id}/train_step"),
    ("post", "/v1/models/{model_id}/evaluate"), ("post", "/v1/models/{model_id}/train_steps"),
    ("post", "/v1/models/{model_id}/gradcheck"), ("get", "/v1/models/{model_id}/parameters"),
    ("put", "/v1/models/{model_id}/parameters"), ("get", "/v1/models/{model_id}/gradients"),
    ("get", "/v1/models/{model_id}/diagnostics"), ("get", "/v1/models/{model_id}/history"),
    ("get", "/v1/models/{model_id}/export"), ("get", "/v1/models/{model_id}/data"),
    ("post", "/v1/models/{model_id}/data/{name}"), ("delete", "/v1/models/{model_id}/data/{name}"),
    ("post", "/v1/models/{model_id}/data/{name}/train_steps"), ("post", "/v1/models/{model_id}/data/{name}/evaluate"),
    ("get", "/v2"), ("get", "/v2/health/live"), ("get", "/v2/health/ready"), ("get", "/v2/models/{model_id}"),
    ("get", "/v2/models/{model_id}/ready"), ("post", "/v2/models/{model_id}/infer"),
    ("get", "/v2/models/{model_id}/versions/{version}"), ("get", "/v2/models/{model_id}/versions/{version}/ready"),
    ("post", "/v2/models/{model_id}/versions/{version}/infer"),
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


def test_stateful_fuzzing_follows_the_links_past_the_404s(make_live):
    """Chains calls through the schema's links (a created model's id, a forward's tape_id), as
    Schemathesis's stateful testing does, and finds no server error on the way."""
    url = make_live(max_models=100_000, durability="none")
    # Only the schema's own links (no inferred ones), so that scenarios follow what it documents.
    config = schemathesis.config.SchemathesisConfig.from_dict({"phases": {"stateful": {"inference": {"algorithms": []}}}})
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    reached: collections.Counter = collections.Counter()

    class Machine(schema.as_state_machine()):
        def setup(self):
            # Every scenario starts on an empty server, so that a replay of it meets the same state.
            for model in httpx.get(f"{url}/v1/models").json()["models"]:
                httpx.delete(f"{url}/v1/models/{model['id']}")

        def before_call(self, case):
            # Random specs and tensors rarely fit a model. Models are made as a user would make
            # them (the stateless test above fuzzes creation); half of the forwards, backwards and
            # train steps get tensors that fit (chosen by the case itself, so a replay chooses alike).
            fit = zlib.crc32(repr(case.body).encode()) % 2
            if case.method == "POST" and case.path == "/v1/models":
                case.body = {**EXAMPLE_SPEC, "id": f"stateful-{zlib.crc32(repr(case.body).encode())}"}
            elif fit and case.path.endswith("/forward"):
                case.body = {"inputs": EXAMPLE_INPUTS, "keep_tape": True}
            elif fit and case.path.endswith(("/backward", "/train_step")) and isinstance(case.body, dict):
                kept = {key: value for key, value in case.body.items() if key in ("tape_id", "lr")}
                case.body = {**kept, "targets": EXAMPLE_TARGETS, **({} if "tape_id" in kept else {"inputs": EXAMPLE_INPUTS})}

        def after_call(self, response, case):
            reached[case.method, case.path, response.status_code] += 1

        def validate_response(self, response, case, **kwargs):
            case.validate_response(response, checks=[not_a_server_error])

    Machine.run(settings=settings(max_examples=60, stateful_step_count=6, deadline=None, derandomize=True,
                                  database=None, suppress_health_check=list(HealthCheck)))
    ok = {(method, path) for (method, path, status), _ in reached.items() if 200 <= status < 300}
    assert len({path for _, path in ok if "{model_id}" in path}) >= 8, sorted(reached.items())
    # Past the 404s to a computation on a model that exists. Which one the exploration reaches
    # moves with the schema and with what ran before in the session (derandomized, not fixed).
    computed = {path.rsplit("/", 1)[-1] for method, path in ok if method == "POST" and "{model_id}/" in path}
    assert computed & {"forward", "forward_backward", "train_step", "evaluate", "infer"}, sorted(reached.items())


def test_the_documented_links_lead_where_they_say(client, openapi):
    """Follows each link by hand: create's id into a model route, forward's tape_id into backward."""
    created = openapi["paths"]["/v1/models"]["post"]["responses"]["201"]["links"]
    by_id = {op["operationId"]: (path, method) for path, item in openapi["paths"].items() for method, op in item.items()}
    assert {by_id[link["operationId"]][0] for link in created.values()} == {
        path for path in openapi["paths"] if "{model_id}" in path}
    info = client.post("/v1/models", json={**EXAMPLE_SPEC, "id": "linked"}).json()
    assert created["get:/v1/models/{model_id}"]["parameters"] == {"model_id": "$response.body#/id"}
    assert client.get(f"/v1/models/{info['id']}").status_code == 200
    link = openapi["paths"]["/v1/models/{model_id}/forward"]["post"]["responses"]["200"]["links"]["backward"]
    assert by_id[link["operationId"]] == ("/v1/models/{model_id}/backward", "post")
    assert link["requestBody"] == {"tape_id": "$response.body#/tape_id"}
    forward = client.post("/v1/models/linked/forward", json={"inputs": EXAMPLE_INPUTS, "keep_tape": True}).json()
    backward = client.post("/v1/models/linked/backward", json={"tape_id": forward["tape_id"], "targets": EXAMPLE_TARGETS})
    assert backward.status_code == 200
