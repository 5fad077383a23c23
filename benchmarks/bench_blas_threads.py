"""BLAS threads under concurrency: what a long request costs, alone and beside others.

    .venv/bin/python benchmarks/bench_blas_threads.py

The server runs each request's compute on a worker thread, so two requests on two models are
two threads calling OpenBLAS at once. This measures, in one process as the server has it:
a gradient check (a 784-256-10 model, fixed work) and a stream of 784-256-10 batch-256 train
steps on another model, each alone and both at once, under each BLAS thread policy:
"default" (OpenBLAS's own: one thread per core), "1" (threadpoolctl limits it to one), and
"adaptive" (what service/blas.py does: all cores while one request computes, one thread
each while several do).
"""

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import Model, gradcheck  # noqa: E402
from service.blas import BlasPolicy  # noqa: E402

MNIST = {"layers": [{"type": "linear", "in_features": 784, "out_features": 256}, {"type": "relu"},
                    {"type": "linear", "in_features": 256, "out_features": 10}],
         "loss": {"type": "softmax_cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.001}, "seed": 0}


def run(policy: str, work: str, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 784)).astype(np.float32), rng.integers(0, 10, 256)
    checked, trained = Model.from_spec(MNIST), Model.from_spec(MNIST)
    adaptive = BlasPolicy() if policy == "adaptive" else None
    results: dict[str, float] = {}
    stop = threading.Event()

    def compute(fn):
        if adaptive is None:
            return fn()
        with adaptive.computing():
            return fn()

    def check():
        start = time.perf_counter()
        compute(lambda: gradcheck(checked, x[:64], y[:64], max_entries=150))
        results["gradcheck s"] = time.perf_counter() - start
        stop.set()

    def train():
        steps, start = 0, time.perf_counter()
        while not stop.is_set() and time.perf_counter() - start < seconds:
            compute(lambda: trained.forward_backward(x, y))
            compute(trained.step)
            steps += 1
        results["train steps/s"] = steps / (time.perf_counter() - start)

    threads = {"gradcheck": [check], "train": [train], "both": [check, train]}[work]
    if work == "train":
        threading.Timer(seconds, stop.set).start()
    limit = 1 if policy == "1" else None
    with threadpool_limits(limits=limit, user_api="blas"):
        running = [threading.Thread(target=fn) for fn in threads]
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0, help="how long the train stream runs alone")
    args = parser.parse_args()
    blas = [f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)" for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(f"BLAS: {', '.join(blas)}")
    print("| policy | gradcheck alone | train alone | gradcheck beside train | train beside gradcheck |")
    print("|---|---|---|---|---|")
    for policy in ("default", "1", "adaptive"):
        alone_check = run(policy, "gradcheck", args.seconds)["gradcheck s"]
        time.sleep(0.5)
        alone_train = run(policy, "train", args.seconds)["train steps/s"]
        time.sleep(0.5)
        both = run(policy, "both", args.seconds)
        time.sleep(0.5)
        print(f"| {policy} | {alone_check:.2f} s | {alone_train:.0f} steps/s | {both['gradcheck s']:.2f} s | "
              f"{both['train steps/s']:.0f} steps/s |")


if __name__ == "__main__":
    main()
