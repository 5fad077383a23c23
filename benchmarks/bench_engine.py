"""Times a full engine train step (forward, loss, backward, optimizer) against PyTorch CPU.

    python benchmarks/bench_engine.py [--repeats 50]

Prints median milliseconds and GFLOP/s (6 x the multiply-adds of the linear and conv2d layers,
per time) for each config, with PyTorch side by side when torch is importable (it is optional,
never required). The configs are gradserve specs; the torch side is the matching nn.Sequential.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import Model  # noqa: E402
from core.layers import output_shape  # noqa: E402
from core.layers.options import as_pair  # noqa: E402

LENET = [  # LeCun's LeNet-5 shape on 28x28 inputs (valid convolutions, max pooling)
    {"type": "conv2d", "out_channels": 6, "kernel_size": 5}, {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
    {"type": "conv2d", "out_channels": 16, "kernel_size": 5}, {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"}, {"type": "linear", "out_features": 120}, {"type": "relu"},
    {"type": "linear", "out_features": 84}, {"type": "relu"}, {"type": "linear", "out_features": 10},
]


def mlp_spec(sizes, loss):
    layers = []
    for d, m in zip(sizes[:-1], sizes[1:]):
        layers += [{"type": "linear", "in_features": d, "out_features": m}, {"type": "relu"}]
    return {"layers": layers[:-1], "loss": {"type": loss}, "optimizer": {"type": "adam", "lr": 1e-3}}


CONFIGS = [  # (name, spec, input shape)
    ("784-256-10 b64", mlp_spec((784, 256, 10), "softmax_cross_entropy"), (64, 784)),
    ("784-256-10 b256", mlp_spec((784, 256, 10), "softmax_cross_entropy"), (256, 784)),
    ("784-1024-1024-10 b256", mlp_spec((784, 1024, 1024, 10), "softmax_cross_entropy"), (256, 784)),
    ("32-32-1 mse b32", mlp_spec((32, 32, 1), "mse"), (32, 32)),
    ("LeNet 1x28x28 b64", {"input_shape": [1, 28, 28], "layers": LENET, "loss": {"type": "softmax_cross_entropy"},
                           "optimizer": {"type": "adam", "lr": 1e-3}}, (64, 1, 28, 28)),
]


def data(model, input_shape):
    """Return (inputs, targets): class labels for softmax_cross_entropy, regression targets for mse."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(input_shape, dtype=np.float32)
    out_shape = model.output_shape(input_shape)
    if model.spec["loss"]["type"] == "mse":
        return x, rng.standard_normal(out_shape, dtype=np.float32)
    return x, rng.integers(0, out_shape[-1], input_shape[0])


def flops(model, input_shape):
    """Return 6 x the multiply-adds of the linear and conv2d layers (forward, and backward's two products)."""
    total, shape = 0, input_shape
    for spec in model.spec["layers"]:
        out = output_shape([spec], shape)
        if spec["type"] == "linear":
            total += math.prod(out) * spec["in_features"]
        elif spec["type"] == "conv2d":
            total += math.prod(out) * spec["in_channels"] * math.prod(as_pair(spec["kernel_size"]))
        shape = out
    return 6 * total


def median_ms(step, repeats):
    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def gradserve_step(spec, input_shape):
    model = Model.from_spec(spec)
    x, y = data(model, input_shape)

    def step():
        model.forward_backward(x, y)
        model.step()
    return step


def torch_module(spec):
    """Return the torch.nn.Sequential that a gradserve spec describes (the layer types benchmarked here)."""
    import torch

    nn = torch.nn
    model = Model.from_spec(spec)  # for the inferred sizes
    build = {
        "linear": lambda s: nn.Linear(s["in_features"], s["out_features"]),
        "relu": lambda s: nn.ReLU(),
        "flatten": lambda s: nn.Flatten(),
        "conv2d": lambda s: nn.Conv2d(s["in_channels"], s["out_channels"], s["kernel_size"], s["stride"],
                                      s["padding"], s["dilation"]),
        "maxpool2d": lambda s: nn.MaxPool2d(s["kernel_size"], s["stride"], s["padding"]),
    }
    return nn.Sequential(*(build[s["type"]](s) for s in model.spec["layers"]))


def torch_step(spec, input_shape):
    import torch

    torch.manual_seed(0)
    net = torch_module(spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = (torch.from_numpy(a) for a in data(Model.from_spec(spec), input_shape))
    loss_fn = torch.nn.MSELoss() if spec["loss"]["type"] == "mse" else torch.nn.CrossEntropyLoss()

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
    for name, spec, input_shape in CONFIGS:
        ours[name] = median_ms(gradserve_step(spec, input_shape), args.repeats)
    # torch only after every gradserve measure: its OpenMP threads keep spinning after each
    # op and would slow whatever numpy runs next.
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
        theirs = {name: median_ms(torch_step(spec, input_shape), args.repeats) for name, spec, input_shape in CONFIGS}
    except ImportError:
        torch, theirs = None, {}
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores, numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch else ", torch not installed")
          + f"; median of {args.repeats} steps")
    print("| config | gradserve ms | GFLOP/s | torch ms | gradserve / torch |")
    print("|---|---|---|---|---|")
    for name, spec, input_shape in CONFIGS:
        work = flops(Model.from_spec(spec), input_shape)
        row = f"| {name} | {ours[name]:.3f} | {work / ours[name] / 1e6:.1f} |"
        row += f" {theirs[name]:.3f} | {ours[name] / theirs[name]:.2f} |" if theirs else " - | - |"
        print(row)


if __name__ == "__main__":
    main()
