"""Service benchmark: each ratio of DESIGN section 12, side by side in one run.

    .venv/bin/python benchmarks/bench_service.py            # print the table
    .venv/bin/python benchmarks/bench_service.py --write    # and put it in benchmarks/RESULTS.md

Measures, interleaved in rounds: a 784-256-10 (Adam, batch 256) train step in-process with core,
over HTTP in list form and in binary form (durability "none" and the default "step", which
fsyncs a checkpoint before answering); a 32-32-1 MSE train step's round trip (p50/p99) and an
empty GET /healthz on the same server (and the two, with the in-process step, in runs of 10
without pauses), and the same step through the Python client (binary form); the list-form decode
of a (256, 784) tensor; the same request bytes POSTed to a bare app on the same uvicorn stack
(uvloop, httptools) that only answers their length; the 784-256-10 fit's 25.8 MB of rows added
to a data set, POSTed to the bare app and sent through a plain loopback socket (what the bytes
cost without HTTP). Then the Python client's `fit` (2 epochs, with its evaluation passes;
784-256-10 also over 5) against the same work in-process: the client's fit keeps the first
epoch's rows on the server, so they cross the wire once. Servers run as separate processes
(`python -m service.cli serve`); the round trips use http.client on keep-alive connections
(but the one row named the Python client's), fit the gradserve client.
"""

import argparse
import datetime
import http.client
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import Model, evaluate  # noqa: E402
from gradserve_client import Client  # noqa: E402
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


# A plain loopback socket that reads a length-prefixed message into one buffer and answers one
# byte: what moving the bytes costs without any HTTP server's reading of them.
SOCKET_SINK = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
print(f"sink on {server.getsockname()[1]}", flush=True)
connection, _ = server.accept()
buffer = bytearray(64 << 20)
while head := connection.recv(8, socket.MSG_WAITALL):
    size, view, got = int.from_bytes(head, "little"), memoryview(buffer), 0
    while got < size:
        got += connection.recv_into(view[got:size])
    connection.sendall(b"k")
"""


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
                    "--loop", "uvloop", "--http", "httptools", "--log-level", "info", "--no-access-log"],
                   r"running on (http://[\d.]+:\d+)")


def socket_sink() -> tuple[Process, socket.socket]:
    sink = Process([sys.executable, "-c", SOCKET_SINK], r"sink on (\d+)")  # its "url" is the port
    connection = socket.create_connection(("127.0.0.1", int(sink.url)))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sink, connection


def through_socket(connection: socket.socket, body: bytes) -> None:
    connection.sendall(len(body).to_bytes(8, "little"))
    connection.sendall(body)
    assert connection.recv(1) == b"k"


def add_and_drop(connection: http.client.HTTPConnection, body: bytes, headers: dict) -> None:
    """Adds the rows in `body` to a data set of the model "mnist", then deletes the set."""
    call(connection, "POST", "/v1/models/mnist/data/rows", body, headers)
    call(connection, "DELETE", "/v1/models/mnist/data/rows")


STEADY = ("tiny in-process", "tiny none", "empty GET")  # the measures also timed back_to_back


def back_to_back(measures: dict[str, tuple[Callable[[], object], int]], cycles: int) -> dict[str, list[float]]:
    """Gives each measure's timings, each run `repeat` times in a row, in cycles, with no pause:
    as a training loop sends its steps. (interleaved() pauses before each measure. Calls
    alternating one by one are no fairer: on this host a step after other code runs up to 2x
    slower than in a run of steps, so alternation slowed the in-process step and the GET more
    than the round trip and flattered their ratio: see RESULTS.md.)"""
    for fn, _ in measures.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(cycles):
        for name, (fn, repeat) in measures.items():
            for _ in range(repeat):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def interleaved(measures: dict[str, tuple[Callable[[], object], int]], rounds: int,
                settle: float) -> dict[str, list[float]]:
    """Gives each measure's timings, taken in rounds (each round runs every measure `repeat`
    times), so that a change in the machine's load touches all of them alike. Each round
    starts one measure further down the list: a measure taken right after another is faster
    or slower for it, and a fixed order gives the same measures that edge every round (a fit
    on two servers differing only in their allocator settings came out 9-16% apart in three
    runs in a fixed order, and alike when the order rotated). `settle` seconds pass
    between measures: OpenBLAS threads spin a while after their work, and would otherwise take
    the cores from the next measure, in another process."""
    for fn, repeat in measures.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in measures}
    names = list(measures)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn, repeat = measures[name]
            time.sleep(settle)
            for _ in range(repeat):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def lean(url: str) -> http.client.HTTPConnection:
    """Gives a keep-alive http.client connection: the leanest Python client, for the floors."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def call(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
         headers: dict | None = None) -> bytes:
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    assert response.status < 300, data[:300]
    return data


# (name, spec, rows, batch, features, classes, epochs): the goals' fits (2 epochs), and one of 5
# epochs to show what keeping the data on the server gives as epochs add up.
FITS = [("784-256-10 b256", MNIST, 8192, 256, 784, 10, 2), ("32-32-1 b32", TINY, 16384, 32, 32, None, 2),
        ("784-256-10 b256", MNIST, 8192, 256, 784, 10, 5)]


def fit_work(spec: dict, rows: int, batch: int, features: int, classes: int | None, seed: int = 0):
    """Gives (x, y, validation) for a fit benchmark: `rows` examples, 1024 held out."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows + 1024, features)).astype(np.float32)
    y = rng.integers(0, classes, rows + 1024) if classes else rng.standard_normal((rows + 1024, 1)).astype(np.float32)
    return x[:rows], y[:rows], (x[rows:], y[rows:])


def fit_in_process(spec: dict, x, y, validation, *, epochs: int, batch: int) -> float:
    """Gives the seconds the same work as `fit` takes in-process: its train steps, then per epoch
    the evaluation of the training data (classifiers) and of the validation data."""
    model, rng = Model.from_spec(spec), np.random.default_rng(0)
    classifier = spec["loss"]["type"] in ("softmax_cross_entropy", "bce_with_logits")
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            index = order[i:i + batch]
            model.train_step(x[index], y[index])
        if classifier:
            evaluate(model, x, y)
        evaluate(model, *validation)
    return time.perf_counter() - start


def fit_over_http(url: str, spec: dict, x, y, validation, *, epochs: int, batch: int) -> float:
    with Client(url) as client:
        model = client.create_model(spec)
        start = time.perf_counter()
        model.fit(x, y, epochs=epochs, batch_size=batch, validation_data=validation, seed=0, verbose=0)
        elapsed = time.perf_counter() - start
        model.delete()
    return elapsed


def run(args) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    tx, ty = rng.standard_normal((32, 32)).astype(np.float32), rng.standard_normal((32, 1)).astype(np.float32)
    body, tiny_body = list_body(x, y), list_body(tx, ty)
    bin_body, bin_headers = binary_body(x, y)
    model, tiny_model = Model.from_spec(MNIST), Model.from_spec(TINY)
    json_headers = {"Content-Type": "application/json"}

    measures = {
        "in-process": (lambda: model.train_step(x, y), 1),
        "tiny in-process": (lambda: tiny_model.train_step(tx, ty), 10),
        "decode": (lambda: decode(parse_message(body, None, TrainStepRequest).inputs, ("inputs",),
                                  dtype=np.dtype("float32"), max_elements=16_000_000), 1),
    }
    fits = {}
    # the 784-256-10 fit's rows, as it adds them to a data set (one binary request)
    rows_body, rows_headers = binary_body(*fit_work(MNIST, 8192, 256, 784, 10)[:2])
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        echo = echo_server(folder)
        stack.callback(echo.stop)
        sink, sink_connection = socket_sink()
        stack.callback(sink.stop)
        floor = lean(echo.url)
        measures.update({
            "floor rows": (lambda: call(floor, "POST", "/floor", rows_body, rows_headers), 1),
            "socket rows": (partial(through_socket, sink_connection, rows_body), 1),
            "floor binary": (lambda: call(floor, "POST", "/floor", bin_body, bin_headers), 1),
            "floor list": (lambda: call(floor, "POST", "/floor", body, json_headers), 1),
            "floor tiny": (lambda: call(floor, "POST", "/floor", tiny_body, json_headers), 10),
        })
        servers = {}
        for durability in ("none", "step"):
            server = servers[durability] = gradserve(str(Path(folder, f"data-{durability}")), durability)
            stack.callback(server.stop)
            http_ = lean(server.url)
            for spec, name in ((MNIST, "mnist"), (TINY, "tiny")):
                call(http_, "POST", "/v1/models", orjson.dumps({**spec, "id": name}), json_headers)
            measures.update({
                f"list {durability}": (partial(call, http_, "POST", "/v1/models/mnist/train_step", body, json_headers), 1),
                f"binary {durability}": (partial(call, http_, "POST", "/v1/models/mnist/train_step", bin_body,
                                                 bin_headers), 1),
                f"tiny {durability}": (partial(call, http_, "POST", "/v1/models/tiny/train_step", tiny_body,
                                               json_headers), 10),
            })
            if durability == "none":
                measures["empty GET"] = (partial(call, http_, "GET", "/healthz"), 10)
                client = stack.enter_context(Client(server.url)).model("tiny")
                measures["tiny client"] = (partial(client.train_step, tx, ty), 10)
                measures["add rows"] = (partial(add_and_drop, http_, rows_body, rows_headers), 1)
        t = interleaved(measures, args.n, args.settle)
        steady = back_to_back({name: measures[name] for name in STEADY}, cycles=200)
        for name, spec, rows, batch, features, classes, epochs in FITS:
            data = fit_work(spec, rows, batch, features, classes)
            # one fit of each side first, not measured, as interleaved() warms up every other measure:
            # a fresh process's first fit of a config pages in its buffers
            fit_in_process(spec, *data, epochs=epochs, batch=batch)
            fit_over_http(servers["none"].url, spec, *data, epochs=epochs, batch=batch)
            local, remote = [], []
            for round_ in range(args.fit_rounds):  # which goes first alternates, as in interleaved()
                for side in ((local, remote) if round_ % 2 == 0 else (remote, local)):
                    time.sleep(args.settle)
                    if side is local:
                        local.append(fit_in_process(spec, *data, epochs=epochs, batch=batch))
                    else:
                        remote.append(fit_over_http(servers["none"].url, spec, *data, epochs=epochs, batch=batch))
            fits[name, epochs] = (float(np.median(local)), float(np.median(remote)))

    step, tiny, get = ms(t["in-process"]), ms(t["tiny in-process"]), ms(t["empty GET"])
    rows = [("784-256-10 train step, in-process (core)", f"{step:.2f} ms"),
            ("32-32-1 train step, in-process (core)", f"{tiny:.3f} ms"),
            ("empty GET /healthz round trip (http.client)", f"{get:.3f} ms"),
            ("list-form (256, 784) decode (body to array, service/listform.py)", f"{ms(t['decode']):.1f} ms")]
    for durability in ("none", "step"):
        rows.append((f"784-256-10 train step, HTTP binary form, durability={durability}",
                     f"{ms(t[f'binary {durability}']):.2f} ms"))
        rows.append((f"784-256-10 train step, HTTP list form, durability={durability}",
                     f"{ms(t[f'list {durability}']):.2f} ms"))
        rows.append((f"32-32-1 train step round trip, list form, durability={durability} (p50 / p99)",
                     f"{ms(t[f'tiny {durability}']):.3f} / {ms(t[f'tiny {durability}'], 0.99):.3f} ms"))
    rows.append(("32-32-1 train step round trip, the Python client (binary form), durability=none",
                 f"{ms(t['tiny client']):.3f} ms"))
    b_step, b_rt, b_get = (ms(steady[name]) for name in STEADY)
    rows.append(("32-32-1 without pauses, in runs of 10 (200 cycles): in-process step, round trip, empty GET, "
                 "and (round trip − step) / GET",
                 f"{b_step:.3f} / {b_rt:.3f} / {b_get:.3f} ms ({(b_rt - b_step) / b_get:.2f})"))
    rows.append((f"bare uvicorn: POST of the binary request bytes ({len(bin_body) / 1e6:.2f} MB)",
                 f"{ms(t['floor binary']):.2f} ms"))
    rows.append((f"bare uvicorn: POST of the list request bytes ({len(body) / 1e6:.2f} MB)",
                 f"{ms(t['floor list']):.2f} ms"))
    rows.append(("bare uvicorn: POST of the 32-32-1 list request bytes", f"{ms(t['floor tiny']):.3f} ms"))
    rows.append((f"784-256-10 fit's rows ({len(rows_body) / 1e6:.1f} MB, binary): added to a data set and deleted "
                 "/ bare uvicorn POST / plain loopback socket",
                 f"{ms(t['add rows']):.1f} / {ms(t['floor rows']):.1f} / {ms(t['socket rows']):.1f} ms"))
    for (name, epochs), (local, remote) in fits.items():
        rows.append((f"fit {name}, {epochs} epochs with evaluation: in-process / over HTTP (rate)",
                     f"{local:.2f} / {remote:.2f} s ({local / remote:.2f}x)"))

    def goal(what: str, value: float, target: float, unit: str = "") -> tuple[str, str]:
        met = value <= target if unit != "x" else value >= target
        digits = 2 if round(value, 2) != round(target, 2) else 3  # a value at the line shows which side it is on
        return what, (f"{value:.{digits}f}{unit} {'≤' if unit != 'x' else '≥'} {target:.{digits}f}{unit}: "
                      f"{'met' if met else 'NOT met'}")

    rows.append(goal("goal: 32-32-1 list train_step round trip (ms) ≤ in-process + 1.5 × empty GET",
                     ms(t["tiny none"]), tiny + 1.5 * get))
    rows.append(goal("goal: 784-256-10 binary train_step (ms) ≤ in-process + 1.2 × bare POST of its bytes",
                     ms(t["binary none"]), step + 1.2 * ms(t["floor binary"])))
    for name, target in (("784-256-10 b256", 0.85), ("32-32-1 b32", 0.40)):
        local, remote = fits[name, 2]
        rows.append(goal(f"goal: fit {name} rate, over HTTP / in-process", local / remote, target, "x"))
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}")


def table(rows: list[tuple[str, str]], n: int, fit_rounds: int) -> str:
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return "\n".join([
        f"### OPENBLAS_NUM_THREADS={blas}", "",
        f"`{'OPENBLAS_NUM_THREADS=' + blas + ' ' if blas != 'default' else ''}"
        f".venv/bin/python benchmarks/bench_service.py --write` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; {machine()}; "
        f"load average {Path('/proc/loadavg').read_text().split()[0]} at the end.",
        f"Medians over {n} rounds, every measure once per round (the 32-32-1 round trips and the empty GET: 10 times), so "
        "that load from elsewhere touches them alike; http.client on keep-alive connections with "
        f"TCP_NODELAY, each server in its own process; fit: medians of {fit_rounds} runs.", "",
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

The dev machine is shared with other work (see the load average of each run), so the
measures are interleaved round by round. With OpenBLAS's default two threads, a 784-256-10
step on this loaded 2-core box is bimodal: ~5 ms, or ~90 ms when the second BLAS thread has no
core (in-process and in the server alike; the engine's own optimizer pool adds threads too).
Which mode a measure lands in is luck, so the single-threaded table is the clean view of
what the service adds; the default one is kept to show that effect.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=40, help="requests per measurement")
    parser.add_argument("--settle", type=float, default=0.2, help="seconds between measures")
    parser.add_argument("--fit-rounds", type=int, default=9, help="runs of each fit comparison (median kept)")
    parser.add_argument("--write", action="store_true", help="update the Service section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    section = table(run(args), args.n, args.fit_rounds)
    print(section)
    if args.write:
        write(section)


if __name__ == "__main__":
    main()
