"""Requests on one model are serialised; other models keep answering meanwhile (real uvicorn)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from core import Model
from wire import MLP, array, create, tensor

BIG = {"layers": [{"type": "linear", "in_features": 256, "out_features": 512}, {"type": "relu"},
                  {"type": "linear", "in_features": 512, "out_features": 10}],
       "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "sgd", "lr": 0.1}, "seed": 1}


def batch(i: int, features: int = 4, classes: int = 3, rows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + i)
    return rng.standard_normal((rows, features)).astype(np.float32), rng.integers(0, classes, rows)


def test_concurrent_forward_backward_on_one_model_sum_like_the_serial_run(live_url):
    with httpx.Client(base_url=live_url, timeout=30) as client:
        info = create(client)

    def send(i: int) -> None:
        x, y = batch(i)
        with httpx.Client(base_url=live_url, timeout=30) as own:
            response = own.post(f"/v1/models/{info['id']}/forward_backward", json={"inputs": tensor(x), "targets": tensor(y)})
            assert response.status_code == 200, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(32)))

    with httpx.Client(base_url=live_url, timeout=30) as client:
        assert client.get(f"/v1/models/{info['id']}").json()["accumulated"] == 32
        served = {n: array(t) for n, t in client.get(f"/v1/models/{info['id']}/gradients").json()["gradients"].items()}
    serial = Model.from_spec({**MLP, "id": info["id"]})
    for i in range(32):
        serial.forward_backward(*batch(i))
    for name, grad in serial.gradients().items():
        # Same terms, another order of summation: equal up to float32 rounding.
        np.testing.assert_allclose(served[name], grad, rtol=1e-5, atol=1e-6)


def test_other_models_answer_while_one_model_is_busy(live_url):
    with httpx.Client(base_url=live_url, timeout=120) as client:
        busy, small = create(client, BIG), create(client)
        x, y = batch(0, features=256, classes=10, rows=64)
        check = {"inputs": tensor(x), "targets": tensor(y)}
        took = {}
        for entries in (4, 4, 36):  # the first call also pays for what a first call costs
            start = time.perf_counter()
            assert client.post(f"/v1/models/{busy['id']}/gradcheck", json={**check, "max_entries": entries}
                               ).status_code == 200
            took[entries] = time.perf_counter() - start
        per_entry = max((took[36] - took[4]) / 32, took[36] / 36 / 4)  # without the request's own cost
    # A gradient check long enough (~1.5 s on any machine) to watch the server during it.
    check["max_entries"] = int(min(10_000, max(4, 1.5 / per_entry)))
    finished = threading.Event()
    busy_time = []

    def long_check() -> None:
        with httpx.Client(base_url=live_url, timeout=120) as own:
            start = time.perf_counter()
            assert own.post(f"/v1/models/{busy['id']}/gradcheck", json=check).status_code == 200
            busy_time.append(time.perf_counter() - start)
            finished.set()

    thread = threading.Thread(target=long_check)
    thread.start()
    latencies = []
    sx, _ = batch(1)
    with httpx.Client(base_url=live_url, timeout=60) as client:
        time.sleep(0.1)  # the check has started
        while not finished.is_set():
            start = time.perf_counter()
            assert client.post(f"/v1/models/{small['id']}/forward", json={"inputs": tensor(sx)}).status_code == 200
            assert client.get(f"/v1/models/{busy['id']}").status_code == 200  # reads do not wait either
            latencies.append(time.perf_counter() - start)
    thread.join()
    assert len(latencies) >= 3 and np.median(latencies) < busy_time[0] / 3, (busy_time, latencies)
