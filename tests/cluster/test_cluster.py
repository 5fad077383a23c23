"""The Ray backend as an operator sees it: placement, several front-ends, cluster-wide limits,
a model host killed mid-training, a front-end killed, memory for packed models, every Ray port
on 127.0.0.1."""

import os
import signal
import threading
import time
from contextlib import suppress
from pathlib import Path

import gradserve_client
import httpx
import numpy as np

from core import Model
from service.cluster import host_of
from service.main import create_app
from service.settings import Settings
from tests.live_server import BIN, Server, free_port, start, stop, uvicorn_in_thread
from tests.ray_cluster import command_of, descendants, import_ray, listening_off_loopback, wait_gone
from tests.service.wire import read_binary

SPEC = {"seed": 3, "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.01},
        "layers": [{"type": "linear", "in_features": 16, "out_features": 32}, {"type": "relu"},
                   {"type": "linear", "in_features": 32, "out_features": 4}]}


def batch(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {"inputs": rng.standard_normal((32, 16)).astype(np.float32).tolist(),
            "targets": rng.integers(0, 4, 32).tolist()}


def replay(steps: int) -> Model:
    """Gives the model the engine makes in-process from the same spec and batches."""
    model = Model.from_spec(SPEC)
    for i in range(steps):
        b = batch(i)
        model.train_step(np.array(b["inputs"], np.float32), np.array(b["targets"]))
    return model


def id_on(host: int, prefix: str, hosts: int = 2) -> str:
    """Gives a model id that lives on host `host` of `hosts`."""
    return next(f"{prefix}-{i}" for i in range(1000) if host_of(f"{prefix}-{i}", hosts) == host)


def create(url: str, model_id: str, spec: dict = SPEC) -> dict:
    response = httpx.post(f"{url}/v1/models", json={**spec, "id": model_id}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def parameters(url: str, model_id: str) -> dict[str, np.ndarray]:
    response = httpx.get(f"{url}/v1/models/{model_id}/parameters", params={"binary_data_output": "true"}, timeout=30)
    assert response.status_code == 200, response.text
    return read_binary(response)[1]


def host_pid(namespace: str, name: str) -> int:
    ray = import_ray()
    return ray.get(ray.get_actor(name, namespace=namespace).__ray_call__.remote(lambda self: os.getpid()))


def test_model_info_tells_the_actor_and_node_it_lives_on(ray_server, ray_cluster):
    url = ray_server()
    info = create(url, "placed")
    placement = info["placement"]
    namespace = httpx.get(f"{url}/v1/models/placed").json()["placement"]
    assert placement == namespace and placement["actor"] == f"host-{host_of('placed', 2)}"
    assert placement["node"] in ray_cluster.node_ids()
    ray = import_ray()
    assert ray.get(ray.get_actor(placement["actor"], namespace=ray_server.namespace).ping.remote()) == placement["node"]


def test_hosts_spread_over_the_nodes(ray_server, ray_cluster):
    url = ray_server(ray_hosts=4)  # asked for on the nodes in turn; Ray may move one (a soft affinity)
    nodes = {create(url, id_on(host, "spread", hosts=4))["placement"]["node"] for host in range(4)}
    assert nodes == set(ray_cluster.node_ids())


def test_two_front_ends_serve_the_same_models_at_once(ray_server):
    one, two = ray_server(), ray_server()
    create(one, "shared")
    stepped = httpx.post(f"{two}/v1/models/shared/train_step", json=batch(0), timeout=30)
    assert stepped.status_code == 200, stepped.text
    assert httpx.get(f"{one}/v1/models/shared").json()["step"] == 1
    for i in range(1, 3):
        httpx.post(f"{(one, two)[i % 2]}/v1/models/shared/train_step", json=batch(i), timeout=30).raise_for_status()
    expected = replay(3).parameters()
    for url in (one, two):
        got = parameters(url, "shared")
        assert all(np.array_equal(got[name], value) for name, value in expected.items())
    assert httpx.delete(f"{two}/v1/models/shared").status_code == 204
    assert httpx.get(f"{one}/v1/models/shared").status_code == 404
    create(one, "shared", {**SPEC, "seed": 4})  # the same id again: a front-end's cache does not keep the old one
    assert httpx.get(f"{two}/v1/models/shared").json()["spec"]["seed"] == 4


def test_the_model_limit_counts_every_model_of_the_cluster(ray_server):
    one, two = ray_server(max_models=3), ray_server(max_models=3)
    create(one, "a"), create(two, "b"), create(one, "c")
    refused = httpx.post(f"{two}/v1/models", json={**SPEC, "id": "d"})
    assert refused.status_code == 422 and refused.json()["code"] == "too_many_models"
    assert "the server holds 3 models" in refused.json()["detail"][0]["msg"]
    deadline = time.monotonic() + 10  # a front-end refreshes the cluster's count every second
    while httpx.get(f"{two}/readyz").json() != {"status": "ready", "models": 3}:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_owners_are_cluster_wide(ray_server):
    one, two = ray_server(api_keys=["key-a", "key-b"]), ray_server(api_keys=["key-a", "key-b"])
    alice, bob = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    assert httpx.post(f"{one}/v1/models", json={**SPEC, "id": "alices"}, headers=alice).status_code == 201
    assert httpx.get(f"{two}/v1/models/alices", headers=bob).status_code == 404
    assert httpx.get(f"{two}/v1/models/alices", headers=alice).status_code == 200
    assert [m["id"] for m in httpx.get(f"{two}/v1/models", headers=bob).json()["models"]] == []


def test_a_killed_host_answers_503_for_its_models_only_then_reloads_them(ray_server):
    url = ray_server()
    doomed, spared = id_on(0, "doomed"), id_on(1, "spared")
    create(url, doomed), create(url, spared)
    assert httpx.post(f"{url}/v1/models/{doomed}/data/d", json=batch(0), timeout=30).status_code == 200
    acknowledged: list[int] = []
    refusals: list[tuple] = []

    def train() -> None:  # stops at the first refusal, so what was acknowledged is known
        with httpx.Client(base_url=url, timeout=30) as client:
            while not refusals:
                response = client.post(f"/v1/models/{doomed}/train_step", json=batch(len(acknowledged)))
                if response.status_code == 200:
                    acknowledged.append(response.json()["step"])
                else:
                    refusals.append((response.status_code, response.json()["code"], "Retry-After" in response.headers))

    def wait_with_the_client() -> None:  # the Python client retries 503 on idempotent calls
        with gradserve_client.Client(url, max_retries=60) as client:
            waited.append(client.model(doomed).info.step)

    trainer, waited = threading.Thread(target=train), []
    trainer.start()
    while len(acknowledged) < 5:
        time.sleep(0.01)
    os.kill(host_pid(ray_server.namespace, "host-0"), signal.SIGKILL)
    trainer.join(60)
    assert refusals == [(503, "model_unavailable", True)]  # never a 500
    patient = threading.Thread(target=wait_with_the_client)
    patient.start()
    deadline = time.monotonic() + 60
    while (response := httpx.get(f"{url}/v1/models/{doomed}", timeout=30)).status_code != 200:
        assert response.status_code == 503 and response.json()["code"] == "model_unavailable", response.text
        assert time.monotonic() < deadline, "the host did not come back"
        assert httpx.post(f"{url}/v1/models/{spared}/forward", json={"inputs": batch(0)["inputs"]},
                          timeout=30).status_code == 200  # the other host's models answer all along
        time.sleep(0.05)
    patient.join(60)
    step = response.json()["step"]
    assert step >= acknowledged[-1] and waited and waited[0] >= acknowledged[-1]  # no acknowledged step lost
    expected = replay(step).parameters()
    got = parameters(url, doomed)
    assert all(np.array_equal(got[name], value) for name, value in expected.items())
    assert httpx.post(f"{url}/v1/models/{doomed}/train_step", json=batch(step), timeout=30).json()["step"] == step + 1
    # Its data sets lived in the host's memory: gone with it (the client's fit sends the rows again).
    assert httpx.get(f"{url}/v1/models/{doomed}/data", timeout=30).json()["data_sets"] == []
    # The history came back with the checkpoint: every step once, none beyond it.
    assert httpx.get(f"{url}/v1/models/{doomed}/history", timeout=30).json()["step"] == list(range(1, step + 2))


def test_a_front_end_killed_loses_nothing(ray_server, ray_cluster, tmp_path):
    url = ray_server()
    port = free_port()
    front = start([str(BIN / "gradserve"), "serve", "--port", str(port), "--ray", ray_cluster.address,
                   "--data-dir", str(tmp_path / "data")], f"http://127.0.0.1:{port}", tmp_path / "front.log",
                  GRADSERVE_RAY_NAMESPACE=ray_server.namespace, GRADSERVE_RAY_HOSTS="2")
    try:
        create(front.url, "survivor")
        for i in range(3):
            httpx.post(f"{front.url}/v1/models/survivor/train_step", json=batch(i), timeout=30).raise_for_status()
    finally:
        front.process.send_signal(signal.SIGKILL)
        front.process.wait(10)
    assert httpx.get(f"{url}/v1/models/survivor").json()["step"] == 3
    expected = replay(3).parameters()
    assert all(np.array_equal(parameters(url, "survivor")[n], v) for n, v in expected.items())


def test_every_ray_port_is_on_loopback(ray_server):
    ray_server()
    cluster = descendants(os.getpid())
    assert len(cluster) >= 5  # gcs, two raylets, a registry, two hosts...
    assert listening_off_loopback(cluster) == []


def pss_mib(pids: set[int]) -> float:
    """Gives the proportional set size of `pids` in MiB (shared pages counted once)."""
    total = 0
    for pid in pids:
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


def test_a_hundred_packed_models_cost_under_a_gigabyte(ray_server):
    mlp = {"layers": [{"type": "linear", "in_features": 784, "out_features": 256}, {"type": "relu"},
                      {"type": "linear", "out_features": 10}],
           "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam"}}
    rng = np.random.default_rng(0)
    step = {"inputs": rng.standard_normal((8, 784)).astype(np.float32).tolist(), "targets": [1] * 8}
    idle = pss_mib(descendants(os.getpid()))
    url = ray_server(ray_hosts=4, durability="none")
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(100):
            assert client.post("/v1/models", json={**mlp, "id": f"packed-{i}"}).status_code == 201
            assert client.post(f"/v1/models/packed-{i}/train_step", json=step).status_code == 200  # Adam's state too
        actors = {m["placement"]["actor"] for m in client.get("/v1/models").json()["models"]}
    assert actors == {f"host-{i}" for i in range(4)}  # packed: 100 models, 4 processes
    used = pss_mib(descendants(os.getpid())) - idle
    assert used < 1024, f"100 models of 784-256-10 with Adam cost {used:.0f} MiB above the idle cluster"


def test_the_whole_cluster_stopped_and_started_again_brings_every_model_back(tmp_path):
    """`gradserve serve --ray local`: a Ray instance of its own, on 127.0.0.1, stopped with the server."""

    def serve() -> Server:
        port = free_port()
        return start([str(BIN / "gradserve"), "serve", "--port", str(port), "--ray", "local", "--data-dir",
                      str(tmp_path / "data")], f"http://127.0.0.1:{port}", tmp_path / f"serve-{port}.log")

    first = serve()
    try:
        for model_id in ("kept-a", "kept-b"):
            create(first.url, model_id)
            for i in range(3):
                httpx.post(f"{first.url}/v1/models/{model_id}/train_step", json=batch(i), timeout=30).raise_for_status()
        ray_processes = descendants(first.process.pid)
        assert any("gcs_server" in command_of(pid) for pid in ray_processes)  # its own instance
        assert listening_off_loopback(ray_processes) == []
    finally:
        stop(first)
    wait_gone(ray_processes)
    second = serve()
    try:
        expected = replay(3).parameters()
        for model_id in ("kept-a", "kept-b"):
            assert httpx.get(f"{second.url}/v1/models/{model_id}").json()["step"] == 3
            assert all(np.array_equal(parameters(second.url, model_id)[n], v) for n, v in expected.items())
        ray_processes = descendants(second.process.pid)
    finally:
        stop(second)
    wait_gone(ray_processes)


def test_a_node_lost_moves_its_hosts_and_their_models_come_back(ray_server, ray_cluster):
    """A node holding hosts is removed (a third joined first, so two remain): Ray restarts its
    hosts on the others, and they reload their models."""
    cluster = ray_cluster.cluster
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    url = ray_server(ray_hosts=6)  # two a node, asked for on the nodes in turn
    placed = {host: create(url, id_on(host, "lost", 6))["placement"]["node"] for host in range(6)}
    doomed = next(node for node in cluster.worker_nodes if node.node_id in placed.values())
    lost = id_on(next(host for host, node in placed.items() if node == doomed.node_id), "lost", 6)
    for i in range(3):
        httpx.post(f"{url}/v1/models/{lost}/train_step", json=batch(i), timeout=30).raise_for_status()
    cluster.remove_node(doomed)
    with gradserve_client.Client(url, max_retries=60) as client:  # 503 model_unavailable, retried
        info = client.model(lost).info
    assert info.step == 3 and info.placement["node"] != doomed.node_id
    expected = replay(3).parameters()
    assert all(np.array_equal(parameters(url, lost)[n], v) for n, v in expected.items())


def test_a_front_ends_shutdown_writes_what_durability_none_kept_in_memory(ray_server, ray_cluster, tmp_path):
    url = ray_server(durability="none")
    create(url, "unwritten")
    for i in range(2):
        httpx.post(f"{url}/v1/models/unwritten/train_step", json=batch(i), timeout=30).raise_for_status()
    on_disk = Model.from_bytes((tmp_path / "data" / "models" / "unwritten.safetensors").read_bytes())
    assert on_disk.step_count == 0  # only the creation is written
    settings = Settings(data_dir=tmp_path / "data", ray_address=ray_cluster.address, durability="none",
                        ray_namespace=ray_server.namespace, ray_hosts=2)
    with uvicorn_in_thread(create_app(settings)):  # a second front-end of the cluster, stopped
        pass
    assert Model.from_bytes((tmp_path / "data" / "models" / "unwritten.safetensors").read_bytes()).step_count == 2


def test_durability_interval_writes_on_the_hosts(ray_server, tmp_path):
    url = ray_server(durability="interval", durability_interval_seconds=0.2)
    create(url, "flushed")
    for i in range(2):
        httpx.post(f"{url}/v1/models/flushed/train_step", json=batch(i), timeout=30).raise_for_status()
    checkpoint = tmp_path / "data" / "models" / "flushed.safetensors"
    deadline = time.monotonic() + 20
    while Model.from_bytes(checkpoint.read_bytes()).step_count != 2:
        assert time.monotonic() < deadline, "the host's interval flusher did not write the steps"
        time.sleep(0.1)


def open_files(pid: int | str) -> set[Path]:
    """Gives the files process `pid` has open."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            found.add(Path(os.readlink(fd)))
    return found


def test_the_host_that_holds_a_model_writes_its_history(ray_server, tmp_path):
    url = ray_server()
    model_id = id_on(1, "recorded")
    create(url, model_id)
    answers = [httpx.post(f"{url}/v1/models/{model_id}/train_step", json=batch(i), timeout=30).json()
               for i in range(3)]
    history = httpx.get(f"{url}/v1/models/{model_id}/history", timeout=30).json()
    assert history["step"] == [1, 2, 3] and history["loss"] == [a["loss"] for a in answers]
    database = (tmp_path / "data" / "history" / f"{model_id}.sqlite").resolve()
    assert database in open_files(host_pid(ray_server.namespace, "host-1"))
    assert database not in open_files(host_pid(ray_server.namespace, "host-0"))
    assert database not in open_files("self")  # the front-end (this process) never opens it
