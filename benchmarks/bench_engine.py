"""Times a full engine train step (forward, loss, backward, optimizer) against PyTorch CPU.

    python benchmarks/bench_engine.py [--repeats 50]

Prints median milliseconds and GFLOP/s (6 * batch * sum(in * out) / time) for each config,
with PyTorch side by side when torch is importable (it is optional, never required).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import Model  # noqa: E402

CONFIGS = [  # (name, layer sizes, batch, loss)
    ("784-256-10 b64", (784, 256, 10), 64, "softmax_cross_entropy"),
    ("784-256-10 b256", (784, 256, 10), 256, "softmax_cross_entropy"),
    ("784-1024-1024-10 b256", (784, 1024, 1024, 10), 256, "softmax_cross_entropy"),
    ("32-32-1 mse b32", (32, 32, 1), 32, "mse"),
]


def mlp_spec(sizes, loss):
    layers = []
    for d, m in zip(sizes[:-1], sizes[1:]):
        layers += [{"type": "linear", "in_features": d, "out_features": m}, {"type": "relu"}]
    return {"layers": layers[:-1], "loss": {"type": loss}, "optimizer": {"type": "adam", "lr": 1e-3}}


def data(sizes, batch, loss):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    if loss == "mse":
        return x, rng.standard_normal((batch, sizes[-1]), dtype=np.float32)
    return x, rng.integers(0, sizes[-1], batch)


def median_ms(step, repeats):
    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def gradserve_step(sizes, batch, loss):
    model = Model.from_spec(mlp_spec(sizes, loss))
    x, y = data(sizes, batch, loss)

    def step():
        model.forward_backward(x, y)
        model.step()
    return step


def torch_step(sizes, batch, loss):
    import torch

    torch.manual_seed(0)
    modules = []
    for d, m in zip(sizes[:-1], sizes[1:]):
        modules += [torch.nn.Linear(d, m), torch.nn.ReLU()]
    net = torch.nn.Sequential(*modules[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = (torch.from_numpy(a) for a in data(sizes, batch, loss))
    loss_fn = torch.nn.MSELoss() if loss == "mse" else torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    ours = {}
    for name, sizes, batch, loss in CONFIGS:
        ours[name] = median_ms(gradserve_step(sizes, batch, loss), args.repeats)
    # torch only after every gradserve measure: its OpenMP threads keep spinning after each
    # op and would slow whatever numpy runs next.
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
        theirs = {name: median_ms(torch_step(sizes, batch, loss), args.repeats) for name, sizes, batch, loss in CONFIGS}
    except ImportError:
        torch, theirs = None, {}
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores, numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch else ", torch not installed")
          + f"; median of {args.repeats} steps")
    print("| config | gradserve ms | GFLOP/s | torch ms | gradserve / torch |")
    print("|---|---|---|---|---|")
    for name, sizes, batch, loss in CONFIGS:
        flops = 6 * batch * sum(d * m for d, m in zip(sizes[:-1], sizes[1:]))
        row = f"| {name} | {ours[name]:.3f} | {flops / ours[name] / 1e6:.1f} |"
        row += f" {theirs[name]:.3f} | {ours[name] / theirs[name]:.2f} |" if theirs else " - | - |"
        print(row)


if __name__ == "__main__":
    main()
