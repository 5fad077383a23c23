"""/metrics in Prometheus text: requests by route template and status, latency, steps, models, tapes."""

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from wire import create, tensor


def samples(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_metrics_count_requests_steps_models_and_tapes(client):
    info = create(client)
    x, y = tensor(np.zeros((2, 4), np.float32)), tensor(np.array([0, 1]))
    client.post(f"/v1/models/{info['id']}/train_step", json={"inputs": x, "targets": y})
    client.post(f"/v1/models/{info['id']}/step", json={})
    client.post(f"/v1/models/{info['id']}/forward", json={"inputs": x, "keep_tape": True})
    client.get("/v1/models/nope")
    seen = samples(client)
    route = "/v1/models/{model_id}/train_step"
    assert seen[("gradserve_requests_total", (("method", "POST"), ("route", route), ("status", "200")))] == 1
    assert seen[("gradserve_requests_total", (("method", "GET"), ("route", "/v1/models/{model_id}"),
                                              ("status", "404")))] == 1
    assert seen[("gradserve_request_duration_seconds_count", (("method", "POST"), ("route", route)))] == 1
    assert seen[("gradserve_steps_total", ())] == 1
    assert seen[("gradserve_refused_steps_total", (("reason", "nothing_to_step"),))] == 1
    assert seen[("gradserve_models", ())] == 1
    assert seen[("gradserve_pending_tapes", ())] == 1


def test_unmatched_paths_share_one_label(client):
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    seen = samples(client)
    assert seen[("gradserve_requests_total", (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))] == 2
