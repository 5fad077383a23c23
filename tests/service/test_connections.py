"""Clients that misbehave at the connection level: gone mid-body, never finishing their request
head, or leaving while their work runs. None of it is a 500, and no socket or lock is held for them."""

import logging
import socket
import time

import httpx
import orjson
import numpy as np
import pytest

from wire import HEADER, MLP, create, tensor


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


def test_a_client_gone_mid_body_read_into_one_buffer_is_no_500(make_live, caplog):
    """As above, for bodies that service/protocol.py reads into one buffer (a declared size of
    WHOLE_BYTES or more): the client gone after part of it, or before any of it."""
    from service.protocol import WHOLE_BYTES

    url = make_live()
    info = create(httpx.Client(base_url=url))
    route = "/v1/models/{model_id}/train_step"
    with caplog.at_level(logging.INFO):
        for sent in (b"", b"\0" * 300_000):
            sock = raw_connection(url)
            sock.sendall(f"POST /v1/models/{info['id']}/train_step HTTP/1.1\r\nHost: t\r\n"
                         f"Content-Type: application/octet-stream\r\n{HEADER}: 71\r\n"
                         f"Content-Length: {4 * WHOLE_BYTES}\r\n\r\n".encode() + sent)
            sock.close()
        assert wait_for(lambda: requests_by_status(url, route).get("499") == 2), requests_by_status(url, route)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    x = np.zeros((2, 4), np.float32)
    assert httpx.post(f"{url}/v1/models/{info['id']}/train_step", json={"inputs": tensor(x), "targets": [0, 1]}).status_code == 200


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


WIDE = {**MLP, "layers": [{"type": "linear", "in_features": 512, "out_features": 8}, {"type": "relu"},
                          {"type": "linear", "in_features": 8, "out_features": 3}]}


def answers_of(sock: socket.socket, count: int) -> list[tuple[int, dict]]:
    """Reads `count` HTTP answers (Content-Length bodies) off `sock`: [(status, JSON body)]."""
    received, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection: {received[-300:]!r}"
            received += chunk
        head, _, received = received.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(received) < length:
            received += sock.recv(65536)
        answers.append((int(head.split(b" ")[1]), orjson.loads(received[:length])))
        received = received[length:]
    return answers


def test_large_bodies_read_into_one_buffer_give_what_the_same_requests_give_small(make_live):
    """Bodies of service/protocol.py's WHOLE_BYTES or more are read into one buffer: a binary
    train_step whose tensors start at an odd offset, sent in uneven writes with pauses, then two
    such requests pipelined in one write, then a train_steps stream of large frames, each answers
    as the same steps do on a model given them in list form (small bodies)."""
    from core import Model
    from service.protocol import WHOLE_BYTES

    url = make_live()
    rng = np.random.default_rng(7)
    batches = [(rng.standard_normal((160, 512)).astype(np.float32), rng.integers(0, 3, 160)) for _ in range(6)]
    info = create(httpx.Client(base_url=url), WIDE)
    reference = Model.from_spec(WIDE)
    expected = [reference.train_step(x, y).loss for x, y in batches]

    def request(x, y, extra: bytes = b"") -> bytes:
        head = orjson.dumps({"inputs": {"shape": list(x.shape), "datatype": "FP32",
                                        "parameters": {"binary_data_size": x.nbytes}},
                             "targets": {"shape": list(y.shape), "datatype": "INT64",
                                         "parameters": {"binary_data_size": y.nbytes}}}) + extra
        body = head + x.tobytes() + y.astype(np.int64).tobytes()
        assert len(body) >= WHOLE_BYTES
        return (f"POST /v1/models/{info['id']}/train_step HTTP/1.1\r\nHost: t\r\n"
                f"Content-Type: application/octet-stream\r\n{HEADER}: {len(head)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    sock = raw_connection(url)
    sock.settimeout(30)
    first = request(*batches[0], extra=b" " * 3)  # the tensors' bytes start at an odd offset
    for start in range(0, len(first), 70_001):  # uneven writes, the server reading each as it comes
        sock.sendall(first[start:start + 70_001])
        time.sleep(0.002)
    sock.sendall(request(*batches[1]) + request(*batches[2], extra=b" "))  # pipelined, in one write
    losses = [body["loss"] for status, body in answers_of(sock, 3) if status == 200]
    sock.close()

    frames = b""
    for x, y in batches[3:]:
        line = orjson.dumps({"inputs": {"shape": list(x.shape), "datatype": "FP32",
                                        "parameters": {"binary_data_size": x.nbytes}},
                             "targets": {"shape": list(y.shape), "datatype": "INT64",
                                         "parameters": {"binary_data_size": y.nbytes}}})
        frames += line + b"\n" + x.tobytes() + y.astype(np.int64).tobytes()
    assert len(frames) >= WHOLE_BYTES
    streamed = httpx.post(f"{url}/v1/models/{info['id']}/train_steps", content=frames,
                          headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert streamed.status_code == 200, streamed.text
    losses += [step["loss"] for step in streamed.json()["steps"]]
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    assert len(losses) == 6


def binary_train_step(model_id: str, x: np.ndarray, y: np.ndarray,
                      expect_continue: bool = False) -> tuple[bytes, bytes]:
    """Gives (the request head, its body) of a binary train_step of (x, y)."""
    json_part = orjson.dumps({"inputs": {"shape": list(x.shape), "datatype": "FP32",
                                         "parameters": {"binary_data_size": x.nbytes}},
                              "targets": {"shape": list(y.shape), "datatype": "INT64",
                                          "parameters": {"binary_data_size": y.nbytes}}})
    body = json_part + x.tobytes() + y.astype(np.int64).tobytes()
    head = (f"POST /v1/models/{model_id}/train_step HTTP/1.1\r\nHost: t\r\n"
            f"Content-Type: application/octet-stream\r\n{HEADER}: {len(json_part)}\r\n"
            + ("Expect: 100-continue\r\n" if expect_continue else "")
            + f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head, body


def test_a_large_body_past_its_first_read_goes_from_the_socket_straight_into_its_buffer(make_live, monkeypatch):
    """What the read of the request head brings of a large body goes through the HTTP parser; the
    rest is read by service/protocol.py's BodyReader into the body's buffer (no copy of it in
    Python), and the connection is the HTTP protocol's again for the next request."""
    from service.protocol import BodyReader

    read = []
    buffer_updated = BodyReader.buffer_updated
    monkeypatch.setattr(BodyReader, "buffer_updated", lambda self, n: read.append(n) or buffer_updated(self, n))
    url = make_live()
    info = create(httpx.Client(base_url=url), WIDE)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((600, 512)).astype(np.float32), rng.integers(0, 3, 600)  # 1.2 MB
    head, body = binary_train_step(info["id"], x, y)
    sock = raw_connection(url)
    sock.settimeout(30)
    sock.sendall(head + body[:1000])
    time.sleep(0.05)  # the head and the body's first bytes read before the rest is sent
    for start in range(1000, len(body), 300_000):
        sock.sendall(body[start:start + 300_000])
        time.sleep(0.01)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    (status, answer), (health, _) = answers_of(sock, 2)
    sock.close()
    assert status == 200 and health == 200
    assert sum(read) >= len(body) - 1000 and sum(read) <= len(body)  # never past the body's end
    from core import Model
    assert answer["loss"] == pytest.approx(Model.from_spec(WIDE).train_step(x, y).loss, rel=1e-6)


def test_a_large_body_answered_before_it_arrived_leaves_the_connection_in_step(make_live):
    """An answer given before its body is in (no such model: 404) does not end the body's read:
    the rest of it is read and dropped, and the next request on the connection is answered."""
    url = make_live()
    x, y = np.ones((600, 512), np.float32), np.zeros(600)
    head, body = binary_train_step("no-such-model", x, y)
    sock = raw_connection(url)
    sock.settimeout(30)
    sock.sendall(head + body[:1000])
    (status, answer), = answers_of(sock, 1)
    assert status == 404, answer
    sock.sendall(body[1000:] + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answers_of(sock, 1)[0][0] == 200
    sock.close()


def test_a_large_body_sent_after_100_continue_is_read_whole(make_live):
    url = make_live()
    info = create(httpx.Client(base_url=url), WIDE)
    x, y = np.full((600, 512), 0.01, np.float32), np.arange(600) % 3
    head, body = binary_train_step(info["id"], x, y, expect_continue=True)
    sock = raw_connection(url)
    sock.settimeout(30)
    sock.sendall(head)
    assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(body)
    (status, answer), = answers_of(sock, 1)
    sock.close()
    assert status == 200 and answer["step"] == 1


class RecordedTransport:
    """A transport that notes the bytes of each write (write or writelines) it passes on."""

    def __init__(self, transport, writes: list[bytes]):
        self.transport, self.writes = transport, writes

    def __getattr__(self, name):
        return getattr(self.transport, name)

    def write(self, data):
        self.writes.append(bytes(data))
        self.transport.write(data)

    def writelines(self, pieces):
        pieces = list(pieces)
        self.writes.append(b"".join(pieces))
        self.transport.writelines(pieces)


def chunked_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """Reads one chunked HTTP answer off `sock`: (head, the body's chunks as they came, framing included)."""
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {received[-300:]!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def test_an_answer_leaves_in_one_write_its_head_with_its_body(make_live, monkeypatch):
    """service/protocol.py holds an answer's head for its body's first write: one write for a small
    answer, one (two pieces) for a large one; a streamed answer whose first piece comes later
    (the history's CSV, read off the loop) has its head written on its own, then its pieces."""
    from service.protocol import JOINED_BYTES, HeldHead

    writes: list[bytes] = []
    made = HeldHead.__init__
    monkeypatch.setattr(HeldHead, "__init__", lambda self, transport, loop, cycle: made(
        self, RecordedTransport(transport, writes), loop, cycle))
    url = make_live()
    wide = {**MLP, "layers": [{"type": "linear", "in_features": 512, "out_features": 64}, {"type": "relu"},
                              {"type": "linear", "in_features": 64, "out_features": 3}]}
    info = create(httpx.Client(base_url=url), wide)
    sock = raw_connection(url)
    step = orjson.dumps({"inputs": tensor(np.ones((2, 512))), "targets": tensor(np.array([0, 1]))})
    for request in (f"POST /v1/models/{info['id']}/train_step HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(step)}\r\n\r\n".encode() + step,
                    f"GET /v1/models/{info['id']}/parameters HTTP/1.1\r\nHost: t\r\n\r\n".encode()):
        writes.clear()
        sock.sendall(request)
        (status, answer), = answers_of(sock, 1)
        assert status == 200, answer
        assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK\r\n"), [w[:100] for w in writes]
        assert orjson.loads(writes[0].partition(b"\r\n\r\n")[2]) == answer
    assert len(writes[0]) > JOINED_BYTES  # the parameters: a large answer, written beside its head

    writes.clear()
    sock.sendall(f"GET /v1/models/{info['id']}/history?format=csv HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head, body = chunked_answer(sock)
    sock.close()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head.lower()
    assert writes[0] == head + b"\r\n\r\n" and b"".join(writes[1:]) == body  # its head first, on its own
    assert b"\n1," in body  # step 1's row


def test_an_answer_whose_head_is_held_arrives_when_no_body_write_follows(make_live):
    """A HEAD request's answer writes its head and no body: the held head goes at the answer's end,
    before the connection closes (Connection: close) or the next answer on it."""
    url = make_live()
    sock = raw_connection(url)
    sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    sock.close()
    assert received.startswith(b"HTTP/1.1 405 ") and received.endswith(b"\r\n\r\n"), received  # GET only

    sock = raw_connection(url)
    sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    received = b""
    while received.count(b"HTTP/1.1 ") < 2 or not received.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    sock.close()
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and rest.startswith(b"HTTP/1.1 200 OK\r\n"), received


def test_a_held_head_goes_out_whenever_its_body_does_even_on_a_closing_connection():
    """A connection closed (a client's FIN) while an earlier answer is still buffered takes writes
    until that buffer drains: a head held then, and its body written after, both go out, in order."""
    import asyncio

    import uvloop

    from service.protocol import HeldHead

    class Cycle:  # what HeldHead reads of its request cycle
        disconnected = False

    async def main() -> bytes:
        loop = asyncio.get_running_loop()

        class Answering(asyncio.Protocol):
            def connection_made(self, transport):
                transport.write(b"A" * 8_000_000)  # an answer the client has not read yet
                self.cycle = Cycle()
                held = HeldHead(transport, loop, self.cycle)
                held.hold()
                held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
                transport.close()
                loop.call_later(0.01, held.write, b"BODY")  # after the held head's own turn has passed

        server = await loop.create_server(Answering, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def read_all() -> bytes:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            time.sleep(0.3)
            received = b""
            while chunk := sock.recv(1 << 20):
                received += chunk
            sock.close()
            return received

        try:
            return await loop.run_in_executor(None, read_all)
        finally:
            server.close()

    received = uvloop.run(main())
    assert received == b"A" * 8_000_000 + b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nBODY", received[8_000_000:]


def test_a_request_cycle_is_freed_with_its_last_reference_not_by_the_garbage_collector(make_live):
    """A cycle and its HeldHead are no reference cycle: with the collector off, the cycles of
    answered requests (and a large body's buffer, which one holds) are gone at once."""
    import gc

    from service.protocol import OneWriteCycle

    url = make_live()
    info = create(httpx.Client(base_url=url), WIDE)
    x, y = np.ones((600, 512), np.float32), np.zeros(600)  # 1.2 MB: read into one buffer
    head, body = binary_train_step(info["id"], x, y)
    gc.collect()
    gc.disable()
    try:
        sock = raw_connection(url)
        for _ in range(5):
            sock.sendall(head + body)
            assert answers_of(sock, 1)[0][0] == 200
        sock.close()
        # type(o), not isinstance: that would ask lazy modules' __getattr__ for __class__ (torch warns)
        assert wait_for(lambda: sum(issubclass(type(o), OneWriteCycle) for o in gc.get_objects()) == 0, 5)
    finally:
        gc.enable()


def test_a_large_bodys_buffer_is_freed_once_its_answer_is_sent(make_live, monkeypatch):
    """A large body's buffer lives as long as its request, not until the connection's next
    request: after the answer, with the keep-alive connection idle, nothing holds it (it held a
    29 MB upload's pages until the next such body, which then paged in fresh memory)."""
    import weakref

    import service.protocol

    buffers = []
    aligned_buffer = service.protocol.aligned_buffer

    def recorded(size: int, aligned_at: int) -> memoryview:
        whole = aligned_buffer(size, aligned_at)
        buffers.append(weakref.ref(whole.obj))  # the numpy array every view of the body keeps
        return whole

    monkeypatch.setattr(service.protocol, "aligned_buffer", recorded)
    url = make_live()
    info = create(httpx.Client(base_url=url), WIDE)
    x, y = np.ones((600, 512), np.float32), np.zeros(600)  # 1.2 MB: read into one buffer
    head, body = binary_train_step(info["id"], x, y)
    sock = raw_connection(url)
    sock.settimeout(30)
    for _ in range(2):
        sock.sendall(head + body)
        assert answers_of(sock, 1)[0][0] == 200
        # well within uvicorn's 5 s keep-alive: its close would free the buffer too
        assert wait_for(lambda: buffers[-1]() is None, 2), "the answered request's body is still held"
    head, body = binary_train_step("no-such-model", x, y)  # answered (404) before its body is in
    sock.sendall(head + body[:1000])
    assert answers_of(sock, 1)[0][0] == 404
    sock.sendall(body[1000:])  # read into the buffer to its end, then released
    assert wait_for(lambda: buffers[-1]() is None, 2), "the early-answered request's body is still held"
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answers_of(sock, 1)[0][0] == 200  # the connection goes on
    sock.close()
    assert len(buffers) == 3
