"""Cluster benchmark: the embedded server against Ray-backed ones (DESIGN section 9), in one run.

    .venv/bin/python benchmarks/bench_cluster.py            # print the tables
    .venv/bin/python benchmarks/bench_cluster.py --quick    # fewer requests, shorter throughput windows

Everything on 127.0.0.1. Every server is a `gradserve serve` subprocess (the embedded one, and
Ray front-ends with `--ray ADDRESS` and GRADSERVE_RAY_NAMESPACE), so that the client threads of
this process do not share a GIL with a server; the Ray clusters are `ray.cluster_utils.Cluster`s
started by this process (loopback only, as tests/ray_cluster.py does) and shut down at the end.
durability=none everywhere: the figures are the transport and Ray's hops, not fsync. The
embedded server runs twice, with its adaptive BLAS policy and with GRADSERVE_BLAS_THREADS=1, which
is what Ray's model hosts get (Ray sets OMP_NUM_THREADS=1 in actors with num_cpus=0).

1. per-request cost (median, p90; one keep-alive httpx client, binary bodies) of a 32-32-1 mse b32
   and a 784-256-10 b256 train_step: embedded vs a Ray front-end on 1 node and on 2 nodes; and
   per step of training on a kept data set's rows (/data/{name}/train_steps);
2. the 2-node cluster's memory (PSS of every process below this one but the front-ends): idle,
   with a front-end and no model, and with 1, 10, 100 models of 784-256-10 (Adam, one step each);
3. aggregate train steps/s of 8 trainer threads on 8 models (784-256-10 b256): embedded, one
   Ray node, two front-ends on a 2-node cluster (trainers split over the two);
4. data parallel: 784-1024-1024-10 b2048 train_step with "workers": 1 and "workers": 2.
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tests.ray_cluster import LOOPBACK_ENV, descendants  # noqa: E402  (sets LOOPBACK_ENV before ray is imported)

os.environ.update(LOOPBACK_ENV)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402

from bench_service import MNIST, TINY, Process, binary_body, machine, ms  # noqa: E402

BIG = {"layers": [{"type": "linear", "in_features": 784, "out_features": 1024}, {"type": "relu"},
                  {"type": "linear", "in_features": 1024, "out_features": 1024}, {"type": "relu"},
                  {"type": "linear", "in_features": 1024, "out_features": 10}],
       "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.001}, "seed": 0}
PROBLEMS: list[str] = []  # what went wrong on the way, printed at the end


def bodies(seed: int = 0) -> dict[str, tuple[bytes, dict]]:
    rng = np.random.default_rng(seed)
    return {"tiny": binary_body(rng.standard_normal((32, 32)).astype(np.float32),
                                rng.standard_normal((32, 1)).astype(np.float32)),
            "mnist": binary_body(rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)),
            "big": binary_body(rng.standard_normal((2048, 784)).astype(np.float32), rng.integers(0, 10, 2048))}


# -- servers ----------------------------------------------------------------------------------


def serve(data_dir: Path, ray: str | None = None, namespace: str | None = None, **env: str) -> Process:
    """Starts `gradserve serve` on a free port and gives it once /readyz answers 200."""
    command = [sys.executable, "-m", "service.cli", "serve", "--port", "0", "--data-dir", str(data_dir),
               "--durability", "none"]
    if ray is not None:
        command += ["--ray", ray]
        env["GRADSERVE_RAY_NAMESPACE"] = namespace
    server = Process(command, r"listening on (http://[\d.]+:\d+)", env)
    deadline = time.monotonic() + 90  # a Ray front-end starts the registry and hosts first
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(Path(server.log.name).read_text()[-3000:])
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.process.kill()
    raise RuntimeError(f"not ready after 90 s:\n{Path(server.log.name).read_text()[-3000:]}")


def stop(server: Process) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    log = Path(server.log.name).read_text(errors="replace")
    if "Traceback" in log or " ERROR " in log:
        PROBLEMS.append(f"server {server.url} logged errors:\n" + log[-2500:])


class RayCluster:
    """A local Ray cluster of `nodes` nodes (2 CPUs each), every port on 127.0.0.1."""

    def __init__(self, nodes: int):
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        for _ in range(nodes - 1):
            self.cluster.add_node(num_cpus=2)
        self.cluster.wait_for_nodes()
        self.address = self.cluster.address
        self.session = Path(self.cluster.head_node.get_session_dir_path()).name

    def shutdown(self) -> None:
        self.cluster.shutdown()


def cluster_pss_mb(exclude: set[int]) -> tuple[float, int]:
    """Gives the sum of PSS (MB) of the processes below this one but `exclude` (the front-ends), and their count."""
    total, count = 0, 0
    for pid in descendants(os.getpid()) - exclude:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                count += 1
                break
    return total / 1024, count


def cpu_seconds(pids: list[int]) -> float:
    """Gives the user+system CPU seconds the processes `pids` have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# -- requests ---------------------------------------------------------------------------------


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.status_code} "
                           f"{response.text[:400]}")
    return response


def create(client: httpx.Client, spec: dict, model_id: str) -> dict:
    return check(client.post("/v1/models", content=orjson.dumps({**spec, "id": model_id}),
                             headers={"Content-Type": "application/json"})).json()


def step(client: httpx.Client, model_id: str, body: tuple[bytes, dict]) -> None:
    check(client.post(f"/v1/models/{model_id}/train_step", content=body[0], headers=body[1]))


def client_for(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=120)


def per_request(url: str, data: dict, n_tiny: int, n_mnist: int, tag: str) -> dict[str, tuple[float, float]]:
    """Gives {what: (median ms, p90 ms)} of train_step round trips, interleaved in rounds."""
    with client_for(url) as client:
        create(client, TINY, f"tiny-{tag}")
        create(client, MNIST, f"mnist-{tag}")
        for _ in range(5):
            step(client, f"tiny-{tag}", data["tiny"])
            step(client, f"mnist-{tag}", data["mnist"])
        times = {"tiny": [], "mnist": []}
        rounds = 5
        for _ in range(rounds):
            for name, repeat in (("tiny", n_tiny // rounds), ("mnist", n_mnist // rounds)):
                time.sleep(0.1)
                for _ in range(repeat):
                    start = time.perf_counter()
                    step(client, f"{name}-{tag}", data[name])
                    times[name].append(time.perf_counter() - start)
        for name in ("tiny", "mnist"):
            check(client.delete(f"/v1/models/{name}-{tag}"))
    return {name: (ms(t), ms(t, 0.9)) for name, t in times.items()}


# (name, spec, rows, batch, features, classes): a data set's rows trained on by index, as fit's epochs are.
KEPT = [("tiny", TINY, 4096, 32, 32, None), ("mnist", MNIST, 2048, 256, 784, 10)]


def kept_steps(url: str, tag: str, epochs: int = 5) -> dict[str, float]:
    """Gives {name: median ms a step} of /data/{name}/train_steps over a kept set, an epoch a request."""
    out = {}
    with client_for(url) as client:
        for name, spec, rows, batch, features, classes in KEPT:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((rows, features)).astype(np.float32)
            y = rng.integers(0, classes, rows) if classes else rng.standard_normal((rows, 1)).astype(np.float32)
            model = f"{name}-kept-{tag}"
            create(client, spec, model)
            body, headers = binary_body(x, y)
            check(client.post(f"/v1/models/{model}/data/k", content=body, headers=headers))
            times = []
            for epoch in range(epochs + 1):  # the first warms up
                order = orjson.dumps({"rows": rng.permutation(rows).tolist(), "batch_size": batch})
                start = time.perf_counter()
                check(client.post(f"/v1/models/{model}/data/k/train_steps", content=order,
                                  headers={"Content-Type": "application/json"}))
                times.append((time.perf_counter() - start) / (rows // batch))
            out[name] = ms(times[1:])
            check(client.delete(f"/v1/models/{model}"))
    return out


def throughput(urls: list[str], data: dict, trainers: int, seconds: float, tag: str,
               servers: list[int]) -> tuple[float, float]:
    """Gives the train steps/s of `trainers` threads, each its own client and 784-256-10 model,
    spread over `urls` in turn, all running for the same `seconds`, and the CPU ms the
    `servers` (pids: the front-ends, or the embedded server) used per step."""
    clients = [client_for(urls[i % len(urls)]) for i in range(trainers)]
    ids = [f"tp-{tag}-{i}" for i in range(trainers)]
    for client, model_id in zip(clients, ids):
        create(client, MNIST, model_id)
        step(client, model_id, data["mnist"])
    counts = [0] * trainers
    errors: list[str] = []
    barrier = threading.Barrier(trainers + 1)
    stop_at = [0.0]

    def train(i: int) -> None:
        barrier.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                step(clients[i], ids[i], data["mnist"])
                counts[i] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc)[:300])

    threads = [threading.Thread(target=train, args=(i,)) for i in range(trainers)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    cpu, start = cpu_seconds(servers), time.perf_counter()
    stop_at[0] = start + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(servers) - cpu
    for client, model_id in zip(clients, ids):
        check(client.delete(f"/v1/models/{model_id}"))
        client.close()
    if errors:
        PROBLEMS.append(f"throughput {tag}: {errors[:3]}")
    return sum(counts) / elapsed, 1e3 * cpu / max(sum(counts), 1)


def data_parallel(url: str, data: dict, repeat: int) -> dict[int, str]:
    """Gives {workers: 'median ms' or why not} for a 784-1024-1024-10 b2048 train_step."""
    out = {}
    with client_for(url) as client:
        for workers in (1, 2):
            missing = workers > 1 and not (REPO / "service" / "shards.py").exists()
            model_id = f"dp-{workers}"
            response = client.post("/v1/models", content=orjson.dumps({**BIG, "id": model_id, "workers": workers}),
                                   headers={"Content-Type": "application/json"})
            if response.status_code >= 300 or missing:
                out[workers] = (f"not available yet ({'no service/shards.py; ' if missing else ''}"
                                f"create answers {response.status_code} {response.text[:200]})")
                if response.status_code < 300:
                    client.delete(f"/v1/models/{model_id}")
                continue
            try:
                step(client, model_id, data["big"])
                times = []
                for _ in range(repeat):
                    time.sleep(0.1)
                    start = time.perf_counter()
                    step(client, model_id, data["big"])
                    times.append(time.perf_counter() - start)
                out[workers] = f"{ms(times):.0f} ms (p90 {ms(times, 0.9):.0f})"
            except RuntimeError as exc:
                out[workers] = f"not available yet (train_step: {str(exc)[:160]})"
            client.delete(f"/v1/models/{model_id}")
    return out


# -- the run ----------------------------------------------------------------------------------


def run(args) -> dict:
    data = bodies()
    res: dict = {"latency": {}, "kept": {}, "memory": [], "throughput": {}, "dp": {}}
    folder = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    sessions: list[str] = []
    with ExitStack() as stack:
        def measure(server: Process, latency: str, rate: str, tag: str) -> None:
            """Per-request cost, then 8 trainers' rate, of one server (its processes stopped after)."""
            stack.callback(stop, server)
            res["latency"][latency] = per_request(server.url, data, args.tiny, args.mnist, tag)
            res["kept"][latency] = kept_steps(server.url, tag)
            time.sleep(args.settle)
            res["throughput"][rate] = throughput([server.url], data, 8, args.seconds, tag, [server.process.pid])
            stack.pop_all().close()

        print("embedded server ...", flush=True)
        measure(serve(folder / "embedded"), "embedded (in-process)", "embedded (one process)", "e")
        # the same with one BLAS thread, as Ray's actors get (Ray sets OMP_NUM_THREADS=1 in num_cpus=0 actors)
        measure(serve(folder / "embedded1", GRADSERVE_BLAS_THREADS="1"), "embedded, GRADSERVE_BLAS_THREADS=1",
                "embedded, GRADSERVE_BLAS_THREADS=1", "e1")

        print("1-node Ray cluster ...", flush=True)
        one = RayCluster(1)
        sessions.append(one.session)
        stack.callback(one.shutdown)
        measure(serve(folder / "ray1", one.address, "bench1"), "Ray, 1 node", "Ray, 1 node, 1 front-end", "r1")

        # two Ray nodes
        print("2-node Ray cluster ...", flush=True)
        two = RayCluster(2)
        sessions.append(two.session)
        stack.callback(two.shutdown)
        time.sleep(3)
        idle, count = cluster_pss_mb(set())
        res["memory"].append(("idle cluster (no gradserve)", idle, count))
        a = serve(folder / "ray2", two.address, "bench2")
        stack.callback(stop, a)
        fronts = {a.process.pid}
        time.sleep(3)
        res["memory"].append(("front-end connected, 0 models", *cluster_pss_mb(fronts)))
        with client_for(a.url) as client:
            made, creates = 0, []
            for target in (1, 10, 100):
                for i in range(made, target):
                    start = time.perf_counter()
                    create(client, MNIST, f"m{i}")
                    creates.append(time.perf_counter() - start)
                    step(client, f"m{i}", data["mnist"])
                made = target
                time.sleep(2)
                res["memory"].append((f"{target} x 784-256-10 Adam", *cluster_pss_mb(fronts)))
            placements = {check(client.get(f"/v1/models/m{i}")).json().get("placement", {}).get("actor")
                          for i in range(made)}
            res["placements"] = sorted(p for p in placements if p)
            res["create"] = (ms(creates), ms(creates, 0.9))
            for i in range(made):
                check(client.delete(f"/v1/models/m{i}"))
        time.sleep(args.settle)
        res["latency"]["Ray, 2 nodes"] = per_request(a.url, data, args.tiny, args.mnist, "r2")
        b = serve(folder / "ray2", two.address, "bench2")
        stack.callback(stop, b)
        fronts.add(b.process.pid)
        time.sleep(args.settle)
        res["throughput"]["Ray, 2 nodes, 2 front-ends"] = throughput([a.url, b.url], data, 8, args.seconds, "r2",
                                                                    [a.process.pid, b.process.pid])
        time.sleep(args.settle)
        res["dp"] = data_parallel(a.url, data, args.dp)
        stack.pop_all().close()

    # nothing of ours left running
    time.sleep(1)
    left = descendants(os.getpid())
    raylets = subprocess.run(["pgrep", "-af", "raylet"], capture_output=True, text=True).stdout.splitlines()
    ours = [line[:160] for s in sessions  # any process whose command line names one of our sessions
            for line in subprocess.run(["pgrep", "-af", s], capture_output=True, text=True).stdout.splitlines()]
    if left or ours:
        PROBLEMS.append(f"left running: descendants {sorted(left)}, raylets of our sessions {ours}")
    res["leftover"] = (sorted(left), ours, len(raylets))
    return res


def report(res: dict, args) -> str:
    lines = [f"`.venv/bin/python benchmarks/bench_cluster.py{' --quick' if args.quick else ''}` on "
             f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {machine()}; load average "
             f"{Path('/proc/loadavg').read_text().split()[0]} at the end.", "",
             f"Per request (httpx, keep-alive, binary bodies, durability=none; {args.tiny} tiny / {args.mnist} "
             "784-256-10 requests per server, in 5 interleaved rounds):", "",
             "| server | 32-32-1 b32 median / p90 | 784-256-10 b256 median / p90 |", "|---|---|---|"]
    for name, t in res["latency"].items():
        lines.append(f"| {name} | {t['tiny'][0]:.2f} / {t['tiny'][1]:.2f} ms | {t['mnist'][0]:.2f} / {t['mnist'][1]:.2f} ms |")
    lines += ["", "A kept data set's rows trained on by index (`/data/{name}/train_steps`, an epoch a request: "
              "4,096 rows of 32-32-1 b32, 2,048 of 784-256-10 b256), median ms a step over 5 epochs:", "",
              "| server | 32-32-1 b32 | 784-256-10 b256 |", "|---|---|---|"]
    for name, t in res["kept"].items():
        lines.append(f"| {name} | {t['tiny']:.3f} ms | {t['mnist']:.2f} ms |")
    idle = res["memory"][0][1]
    lines += ["", "Memory of the 2-node cluster (sum of PSS of its processes, front-ends excluded; ray_hosts=4):", "",
              "| state | processes | PSS | above idle |", "|---|---|---|---|"]
    for name, mb, count in res["memory"]:
        lines.append(f"| {name} | {count} | {mb:.0f} MB | {mb - idle:+.0f} MB |")
    lines += ["", f"Models' actors: {', '.join(res.get('placements', []))}; POST /v1/models (through the registry "
              f"actor) median / p90 {res['create'][0]:.1f} / {res['create'][1]:.1f} ms.", "",
              f"Aggregate throughput, 8 trainer threads on 8 models, 784-256-10 b256, {args.seconds:.0f} s each:", "",
              "| setup | train steps/s | server-process CPU per step (front-ends; embedded: all its work) |",
              "|---|---|---|"]
    for name, (rate, cpu) in res["throughput"].items():
        lines.append(f"| {name} | {rate:.0f} | {cpu:.1f} ms |")
    lines += ["", f"Data parallel, 784-1024-1024-10 (Adam) b2048 train_step on the 2-node cluster, median of {args.dp}:", "",
              "| workers | train_step |", "|---|---|"]
    for workers, value in res["dp"].items():
        lines.append(f"| {workers} | {value} |")
    left, ours, others = res["leftover"]
    lines += ["", f"After shutdown: {len(left)} descendants, {len(ours)} processes of this run's Ray sessions "
                  f"({others} raylets of other sessions on the machine)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter windows")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between measures")
    args = parser.parse_args()
    args.tiny, args.mnist, args.seconds, args.dp = (100, 50, 4.0, 5) if args.quick else (300, 100, 8.0, 10)
    start = time.perf_counter()
    text = report(run(args), args)
    print(text)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    for problem in PROBLEMS:
        print("\nPROBLEM:", problem)


if __name__ == "__main__":
    main()
