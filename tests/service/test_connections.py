"""Clients that misbehave at the connection level: gone mid-body, never finishing their request
head, or leaving while their work runs. None of it is a 500, and no socket or lock is held for them."""

import logging
import socket
import time

import httpx
import orjson
import numpy as np
import pytest

from wire import MLP, create, tensor


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Gives True if the server closes `sock` within `within` seconds (reading whatever it sends)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
        return True
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def requests_by_status(url: str, route: str) -> dict[str, float]:
    """Gives {status: count} of /metrics' request counter for `route`."""
    counts = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("gradserve_requests_total{") and f'route="{route}"' in line:
            status = line.split('status="')[1].split('"')[0]
            counts[status] = float(line.rsplit(" ", 1)[1])
    return counts


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_client_gone_mid_body_is_no_500_and_no_traceback(make_live, caplog):
    url = make_live()
    info = create(httpx.Client(base_url=url))
    route = "/v1/models/{model_id}/forward"
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            sock = raw_connection(url)
            sock.sendall(f"POST /v1/models/{info['id']}/forward HTTP/1.1\r\nHost: t\r\n"
                         "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode()
                         + b'{"inputs": [[0.5, 0.5, ')
            sock.close()
        assert wait_for(lambda: requests_by_status(url, route).get("499") == 3), requests_by_status(url, route)
    assert "500" not in requests_by_status(url, route)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert httpx.post(f"{url}/v1/models/{info['id']}/forward", json={"inputs": [[0, 0, 0, 0]]}).status_code == 200


@pytest.mark.parametrize("sent", [b"", b"POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Le"], ids=["nothing", "half a head"])
def test_a_connection_whose_request_head_never_completes_is_closed(make_live, sent):
    url = make_live(header_timeout_seconds=0.5)
    stalled = [raw_connection(url) for _ in range(8)]
    for sock in stalled:
        sock.sendall(sent)
    assert all(closed_by_server(sock, within=5) for sock in stalled)
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_keep_alive_connection_that_sends_whole_requests_is_not_dropped(make_live):
    url = make_live(header_timeout_seconds=0.5)
    with httpx.Client(base_url=url) as client:  # one pooled connection, reused
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.3)  # idle between requests, each head sent at once


BIG = {**MLP, "layers": [{"type": "linear", "in_features": 4, "out_features": 256}, {"type": "tanh"},
                         {"type": "linear", "out_features": 256}, {"type": "tanh"},
                         {"type": "linear", "out_features": 3}]}
X = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
Y = np.arange(64) % 3
SLOW_CHECK = {"inputs": tensor(X), "targets": tensor(Y), "max_entries": 10_000}  # ~70k loss evaluations


def test_long_work_past_the_time_budget_is_503_and_frees_the_model(make_live):
    url = make_live(request_timeout_seconds=0.3)
    with httpx.Client(base_url=url, timeout=30) as client:
        info = create(client, BIG)
        before = client.get(f"/v1/models/{info['id']}/parameters").json()
        response = client.post(f"/v1/models/{info['id']}/gradcheck", json=SLOW_CHECK)
        assert response.status_code == 503 and response.json()["code"] == "deadline_exceeded"
        assert "GRADSERVE_REQUEST_TIMEOUT_SECONDS" in response.json()["detail"]
        assert client.get(f"/v1/models/{info['id']}/parameters").json() == before
        quick = {"inputs": tensor(X[:4]), "targets": tensor(Y[:4]), "max_entries": 2}
        assert client.post(f"/v1/models/{info['id']}/gradcheck", json=quick).json()["passed"] in (True, False)


def test_long_work_stops_once_its_client_has_gone(make_live):
    url = make_live(request_timeout_seconds=120)  # the budget is not what stops it
    with httpx.Client(base_url=url, timeout=30) as client:
        info = create(client, BIG)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/models/{info['id']}/gradcheck", json=SLOW_CHECK, timeout=0.5)
    route = "/v1/models/{model_id}/gradcheck"
    assert wait_for(lambda: requests_by_status(url, route).get("499") == 1, seconds=20), requests_by_status(url, route)
    step = httpx.post(f"{url}/v1/models/{info['id']}/train_step", json={"inputs": tensor(X), "targets": tensor(Y)})
    assert step.status_code == 200 and step.json()["step"] == 1


def test_a_pipelined_request_is_not_cut_by_the_head_deadline(make_live):
    url = make_live(header_timeout_seconds=0.3)
    info = create(httpx.Client(base_url=url), BIG)
    check = orjson.dumps({"inputs": tensor(X), "targets": tensor(Y), "max_entries": 300})  # ~1 s of work
    second = (f"POST /v1/models/{info['id']}/gradcheck HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(check)}\r\n\r\n").encode() + check
    sock = raw_connection(url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + second)  # both heads at once
    sock.settimeout(30)
    received = b""
    while received.count(b"HTTP/1.1 200") < 2:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {received[-300:]!r}"
        received += chunk
    assert b'"passed"' in received
    sock.close()


def test_only_plain_batches_of_vectors_may_run_on_the_event_loop():
    from service.store import inline_rows

    assert inline_rows(np.zeros((32, 8), np.float32)) == 32
    assert inline_rows(np.zeros((32, 50, 8), np.float32)) is None  # a sequence: T times the work
    assert inline_rows(np.zeros((4, 1, 28, 28), np.float32)) is None  # an image
    assert inline_rows(np.zeros((4, 12), np.int64)) is None  # token indices
