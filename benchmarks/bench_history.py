"""What recording the history costs a train step (DESIGN section 10: at most 5%), in-process
and over HTTP, and how fast a long history reads.

    .venv/bin/python benchmarks/bench_history.py [--rounds 30] [--steps 20] [--records 100000]

A 784-256-10 batch-256 Adam train_step run as the server runs it, through a Shelf
(service/shelf.py: the work, then the step's record, then the checkpoint as the durability
says), with the history on and off (GRADSERVE_HISTORY), under durability "none" (records
written 256 at a time: a round is 256 steps, so that each holds one such write) and "step"
(record and checkpoint fsynced before the answer). Rounds alternate on and off so that load
from elsewhere touches both alike; means per step over the rounds.

Then the same train step over HTTP, binary form, against two real servers (`gradserve
serve`, history on and off) under each durability, requests alternating between them.

With --fleet, a real server holding 100 such models with 100,000 records each (the dashboard's
worst case the issue names) answers the model list, the dashboard's page, a model's history
downsampled to 1,000 points and a poll for new steps.

Last, a history of `--records` steps of that model (real records, written as training writes
them) is read as the dashboard reads it: downsampled to 1,000 points and encoded as JSON (the
first load of a chart), and the records after the last one shown (each poll).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_service import Process, binary_body, call, interleaved, lean, ms  # noqa: E402

from core import Model  # noqa: E402
from service.persistence import Checkpoints  # noqa: E402
from service.history import History, to_json  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.shelf import Held, Shelf  # noqa: E402

MNIST = {"layers": [{"type": "linear", "in_features": 784, "out_features": 256}, {"type": "relu"},
                    {"type": "linear", "in_features": 256, "out_features": 10}],
         "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.001}, "seed": 0}


def shelf_with_a_model(folder: Path, history: bool, durability: str) -> tuple[Shelf, Held]:
    settings = Settings(data_dir=folder, history=history, durability=durability)
    shelf = Shelf(settings, Checkpoints(folder))
    held = Held("mnist", Model.from_spec(MNIST), None)
    shelf.add(held)
    return shelf, held


def train_step(model: Model, x, y):
    return model.train_step(x, y)


def per_step(shelf: Shelf, held: Held, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        shelf.work(held, train_step, (x, y), "step")
    return (time.perf_counter() - start) / steps


def timed(fn, repeats: int = 5) -> float:
    """Gives the median seconds of `fn()`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def long_history(records: int) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    model = Model.from_spec(MNIST)
    model.train_step(x, y)
    record = model.step_record()
    with tempfile.TemporaryDirectory() as folder:
        history = History(Path(folder) / "long.sqlite", 0)
        start = time.perf_counter()
        for step in range(1, records + 1):
            history.append({**record, "step": step, "loss": float(rng.random())})
        history.flush()
        written = time.perf_counter() - start
        size = sum(p.stat().st_size for p in Path(folder).iterdir()) / 2**20
        first = timed(lambda: to_json(history.snapshot().read(points=1000)))
        poll = timed(lambda: to_json(history.snapshot().read(since=records - 1)))
        history.close()
    print(f"\n{records:,} records of 784-256-10 ({len(history.columns)} columns): written in {written:.1f} s "
          f"({1e6 * written / records:.0f} us each), {size:.0f} MiB on disk")
    print(f"read downsampled to 1,000 points and encoded: {first * 1e3:.0f} ms; "
          f"the records after the last one shown: {poll * 1e3:.2f} ms")


def over_http(rounds: int) -> None:
    rng = np.random.default_rng(0)
    body, headers = binary_body(rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256))
    spec = orjson.dumps({**MNIST, "id": "mnist"})
    print("\n784-256-10 b256 train_step over HTTP (binary form, http.client), median of "
          f"{rounds} rounds of 10 requests each")
    print("| durability | history off ms | history on ms | cost |")
    print("|---|---|---|---|")
    for durability in ("none", "step"):
        with tempfile.TemporaryDirectory() as folder:
            servers = {history: Process([sys.executable, "-m", "service.cli", "serve", "--port", "0", "--data-dir",
                                         f"{folder}/{history}", "--durability", durability],
                                        r"listening on (http://[\d.]+:\d+)", {"GRADSERVE_HISTORY": history})
                       for history in ("false", "true")}
            try:
                connections = {history: lean(server.url) for history, server in servers.items()}
                for connection in connections.values():
                    call(connection, "POST", "/v1/models", spec, {"Content-Type": "application/json"})
                times = interleaved({history: (lambda c=c: call(c, "POST", "/v1/models/mnist/train_step", body,
                                                                 headers), 10)
                                     for history, c in connections.items()}, rounds, settle=0.0)
            finally:
                for server in servers.values():
                    server.stop()
        off_ms, on_ms = ms(times["false"]), ms(times["true"])
        print(f"| {durability} | {off_ms:.3f} | {on_ms:.3f} | {100 * (on_ms / off_ms - 1):+.1f}% |")


def fleet(models: int, records: int) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        checkpoints = Checkpoints(Path(folder))
        (Path(folder) / "history").mkdir()
        for i in range(models):
            model_id = f"m{i:03d}"
            model = Model.from_spec({**MNIST, "id": model_id, "seed": i})
            model.train_step(x, y)
            record = model.step_record()
            model.step_count = records  # the checkpoint of a model that took them all
            checkpoints.save_owner(model_id, None)
            checkpoints.save(model_id, model.to_bytes())
            history = History(Path(folder) / "history" / f"{model_id}.sqlite", 0)
            for step in range(1, records + 1):
                history.append({**record, "step": step, "loss": float(rng.random())})
            history.flush()
            history.close()
        made = time.perf_counter() - start
        start = time.perf_counter()
        server = Process([sys.executable, "-m", "service.cli", "serve", "--port", "0", "--data-dir", folder],
                         r"listening on (http://[\d.]+:\d+)")
        try:
            while True:  # refused, then 503, until every model is loaded
                try:
                    connection = lean(server.url)
                    call(connection, "GET", "/readyz")
                    break
                except (ConnectionError, AssertionError):
                    time.sleep(0.05)
            ready = time.perf_counter() - start
            probe = f"m{models // 2:03d}"
            times = interleaved({
                "list": (lambda: call(connection, "GET", "/v1/models"), 1),
                "page": (lambda: call(connection, "GET", "/ui"), 1),
                "chart": (lambda: call(connection, "GET", f"/v1/models/{probe}/history?points=1000"), 1),
                "poll": (lambda: call(connection, "GET", f"/v1/models/{probe}/history?since={records - 1}"), 1),
            }, 10, settle=0.0)
        finally:
            server.stop()
    print(f"\n{models} models of 784-256-10 with {records:,} records each (made in {made:.0f} s); "
          f"the server ready {ready:.1f} s after its start. Medians of 10:")
    print(f"GET /v1/models {ms(times['list']):.1f} ms; GET /ui {ms(times['page']):.2f} ms; one model's history "
          f"at 1,000 points {ms(times['chart']):.0f} ms; a poll for new steps {ms(times['poll']):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=256, help="steps per round (durability step: a tenth)")
    parser.add_argument("--records", type=int, default=100_000, help="records of the long history read")
    parser.add_argument("--fleet", action="store_true", help="also 100 models of --records records each "
                        "behind a real server (takes minutes)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    print(f"784-256-10 b256 train_step through a Shelf; mean of {args.rounds} alternating rounds")
    print("| durability | history off ms | history on ms | cost |")
    print("|---|---|---|---|")
    for durability, steps in (("none", args.steps), ("step", max(1, args.steps // 10))):
        with tempfile.TemporaryDirectory() as off_dir, tempfile.TemporaryDirectory() as on_dir:
            off = shelf_with_a_model(Path(off_dir), False, durability)
            on = shelf_with_a_model(Path(on_dir), True, durability)
            times: dict[str, list[float]] = {"off": [], "on": []}
            for name, (shelf, held) in (("off", off), ("on", on)):
                per_step(shelf, held, x, y, steps)  # warm-up
            for _ in range(args.rounds):
                for name, (shelf, held) in (("off", off), ("on", on)):
                    times[name].append(per_step(shelf, held, x, y, steps))
            on[0].close()
        off_ms, on_ms = (statistics.mean(times[k]) * 1e3 for k in ("off", "on"))
        print(f"| {durability} | {off_ms:.3f} | {on_ms:.3f} | {100 * (on_ms / off_ms - 1):+.1f}% |")
    over_http(args.rounds)
    long_history(args.records)
    if args.fleet:
        fleet(100, args.records)


if __name__ == "__main__":
    main()
