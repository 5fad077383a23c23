"""Service benchmark: what HTTP adds to a train step, against the raw loopback floor.

    .venv/bin/python benchmarks/bench_service.py            # print the table
    .venv/bin/python benchmarks/bench_service.py --write    # and put it in benchmarks/RESULTS.md

Measures, in one run: a 784-256-10 (Adam, batch 256) train step in-process with core, over
HTTP in list form and in binary form (durability "none" and the default "step", which
fsyncs a checkpoint before answering); a 32-32-1 MSE train step's round trip (p50/p99); the
list-form decode of a (256, 784) tensor; and the loopback floor: the same request bytes
POSTed to a tiny app on the same uvicorn stack that only answers their length.
Servers run as separate processes (`python -m service.cli serve`), the client is httpx.
"""

import argparse
import datetime
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import Model  # noqa: E402
from service.body import parse_message  # noqa: E402
from service.schemas import TrainStepRequest  # noqa: E402
from service.tensors import HEADER, decode  # noqa: E402

MNIST = {"layers": [{"type": "linear", "in_features": 784, "out_features": 256}, {"type": "relu"},
                    {"type": "linear", "in_features": 256, "out_features": 10}],
         "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.001}, "seed": 0}
TINY = {"layers": [{"type": "linear", "in_features": 32, "out_features": 32}, {"type": "relu"},
                   {"type": "linear", "in_features": 32, "out_features": 1}],
        "loss": {"type": "mse"}, "optimizer": {"type": "sgd", "lr": 0.01}, "seed": 0}

ECHO_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def floor(request):
    return JSONResponse({"bytes": len(await request.body())})

async def empty(request):
    return JSONResponse({})

app = Starlette(routes=[Route("/floor", floor, methods=["POST"]), Route("/empty", empty)])
"""


def client(url: str) -> httpx.Client:
    """Gives an httpx client with TCP_NODELAY (the server side sets it too), as a tuned client would."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(base_url=url, timeout=60, transport=transport)


def timed(fn, n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(times: list[float], q: float = 0.5) -> float:
    return 1e3 * float(np.quantile(times, q))


def list_body(x: np.ndarray, y: np.ndarray) -> bytes:
    return orjson.dumps({"inputs": {"shape": list(x.shape), "datatype": "FP32", "data": x},
                         "targets": {"shape": list(y.shape), "datatype": y.dtype.name.upper().replace("FLOAT", "FP"),
                                     "data": y}}, option=orjson.OPT_SERIALIZE_NUMPY)


def binary_body(x: np.ndarray, y: np.ndarray) -> tuple[bytes, dict]:
    y_type = {"int64": "INT64", "float32": "FP32"}[y.dtype.name]
    head = orjson.dumps({"inputs": {"shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
                         "targets": {"shape": list(y.shape), "datatype": y_type, "parameters": {"binary_data_size": y.nbytes}}})
    return head + x.tobytes() + y.tobytes(), {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


class Process:
    """A server subprocess whose first log line with a URL says where it listens."""

    def __init__(self, command: list[str], pattern: str, env: dict | None = None):
        self.log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 30
        while not (found := re.search(pattern, Path(self.log.name).read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(Path(self.log.name).read_text())
            time.sleep(0.05)
        self.url = found.group(1)
        time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def gradserve(data_dir: str, durability: str) -> Process:
    return Process([sys.executable, "-m", "service.cli", "serve", "--port", "0", "--data-dir", data_dir,
                    "--durability", durability], r"listening on (http://[\d.]+:\d+)")


def echo_server(folder: str) -> Process:
    Path(folder, "echo_app.py").write_text(ECHO_APP)
    return Process([sys.executable, "-m", "uvicorn", "--app-dir", folder, "echo_app:app", "--port", "0",
                    "--log-level", "info", "--no-access-log"], r"running on (http://[\d.]+:\d+)")


def run(args) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    tx, ty = rng.standard_normal((32, 32)).astype(np.float32), rng.standard_normal((32, 1)).astype(np.float32)
    rows = []

    model = Model.from_spec(MNIST)
    in_process = timed(lambda: (model.forward_backward(x, y), model.step()), args.n)
    rows.append(("784-256-10 train step, in-process (core)", f"{ms(in_process):.2f} ms"))

    body = list_body(x, y)
    decode_times = timed(lambda: decode(parse_message(body, None, TrainStepRequest).inputs, ("inputs",),
                                        dtype=np.dtype("float32"), max_elements=16_000_000), args.n)
    rows.append(("list-form (256, 784) decode (orjson + np.asarray)", f"{ms(decode_times):.1f} ms"))

    bin_body, bin_headers = binary_body(x, y)
    tiny_model = Model.from_spec(TINY)
    tiny_in_process = timed(lambda: (tiny_model.forward_backward(tx, ty), tiny_model.step()), args.n * 5)

    with tempfile.TemporaryDirectory() as folder:
        echo = echo_server(folder)
        try:
            with client(echo.url) as http:
                floor_binary = timed(lambda: http.post("/floor", content=bin_body), args.n)
                floor_list = timed(lambda: http.post("/floor", content=body), args.n)
                floor_empty = timed(lambda: http.get("/empty"), args.n * 5)
                floor_tiny = timed(lambda: http.post("/floor", content=list_body(tx, ty)), args.n * 5)
        finally:
            echo.stop()
        for durability in ("none", "step"):
            server = gradserve(str(Path(folder, f"data-{durability}")), durability)
            try:
                with client(server.url) as http:
                    http.post("/v1/models", json={**MNIST, "id": "mnist"}).raise_for_status()
                    http.post("/v1/models", json={**TINY, "id": "tiny"}).raise_for_status()

                    def train(content, headers=None, model="mnist"):
                        response = http.post(f"/v1/models/{model}/train_step", content=content, headers=headers)
                        assert response.status_code == 200, response.text

                    listed = timed(lambda: train(body, {"Content-Type": "application/json"}), args.n)
                    binary = timed(lambda: train(bin_body, bin_headers), args.n)
                    tiny_body = list_body(tx, ty)
                    tiny = timed(lambda: train(tiny_body, {"Content-Type": "application/json"}, "tiny"), args.n * 10)
            finally:
                server.stop()
            rows.append((f"784-256-10 train step, HTTP list form, durability={durability}", f"{ms(listed):.2f} ms"))
            rows.append((f"784-256-10 train step, HTTP binary form, durability={durability}", f"{ms(binary):.2f} ms"))
            rows.append((f"32-32-1 train step round trip, durability={durability} (p50 / p99)",
                         f"{ms(tiny):.2f} / {ms(tiny, 0.99):.2f} ms"))
            if durability == "none":
                budget = ms(in_process) + 1.5 * ms(floor_binary)
                rows.append(("  goal: binary ≤ in-process + 1.5 × floor",
                             f"{ms(binary):.2f} ≤ {budget:.2f} ms: {'met' if ms(binary) <= budget else 'NOT met'}"))

    rows.append(("32-32-1 train step, in-process (core)", f"{ms(tiny_in_process):.3f} ms"))
    rows.append((f"loopback floor: POST of the binary request bytes ({len(bin_body) / 1e6:.2f} MB)",
                 f"{ms(floor_binary):.2f} ms"))
    rows.append((f"loopback floor: POST of the list request bytes ({len(body) / 1e6:.2f} MB)", f"{ms(floor_list):.2f} ms"))
    rows.append(("loopback floor: empty GET", f"{ms(floor_empty):.2f} ms"))
    rows.append(("loopback floor: POST of the 32-32-1 list request bytes", f"{ms(floor_tiny):.2f} ms"))
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")


def table(rows: list[tuple[str, str]], n: int) -> str:
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return "\n".join([
        f"### OPENBLAS_NUM_THREADS={blas}", "",
        f"`{'OPENBLAS_NUM_THREADS=' + blas + ' ' if blas != 'default' else ''}"
        f".venv/bin/python benchmarks/bench_service.py --write` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {machine()}; "
        f"load average {Path('/proc/loadavg').read_text().split()[0]} at the end.",
        f"Medians of {n} requests (tiny model: {n * 10}) after warm-up, one httpx client with keep-alive and "
        "TCP_NODELAY, servers in their own processes.", "",
        "| what | time |", "|---|---|", *[f"| {what} | {value} |" for what, value in rows], ""])


def write(table_text: str) -> None:
    """Puts `table_text` in the Service section of RESULTS.md, replacing the table of the same BLAS setting."""
    path = REPO / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = re.search(r"^## Service\n.*?(?=^## |\Z)", text, re.S | re.M)
    if section is None:
        body = SECTION_INTRO
        text = text.rstrip("\n") + "\n\n"
        start = end = len(text)
    else:
        body, start, end = section.group(0), section.start(), section.end()
    heading = table_text.splitlines()[0]
    own = re.compile(rf"^{re.escape(heading)}\n.*?(?=^### |\Z)", re.S | re.M)
    body = own.sub(lambda _: table_text + "\n", body) if own.search(body) else body.rstrip("\n") + "\n\n" + table_text + "\n"
    path.write_text(text[:start] + body + text[end:])


SECTION_INTRO = """## Service

What HTTP adds to a train step (`benchmarks/bench_service.py`). The goal (DESIGN section 8): a
binary-form HTTP `train_step` costs at most the in-process step plus 1.5x the loopback floor
for the same bytes. durability=step writes and fsyncs the checkpoint (parameters and Adam
state, ~2.4 MB for 784-256-10) before answering; durability=none shows the transport alone.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40, help="requests per measurement")
    parser.add_argument("--write", action="store_true", help="update the Service section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    section = table(run(args), args.n)
    print(section)
    if args.write:
        write(section)


if __name__ == "__main__":
    main()
