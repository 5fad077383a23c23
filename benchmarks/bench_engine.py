"""Times a full engine train step (forward, loss, backward, optimizer) against PyTorch CPU.

    python benchmarks/bench_engine.py [--repeats 50] [--rounds 1] [--match lstm]

Prints median milliseconds and GFLOP/s (6 x the multiply-adds of the linear, conv2d, rnn, lstm,
gru and attention layers, per time) for each config, with PyTorch side by side when torch is
importable (it is optional, never required). The configs are gradserve specs; the torch side is
the matching nn.Sequential. Each side measures in a process of its own (--one-process: both here).
"""

from __future__ import annotations

import argparse
import math
from contextlib import contextmanager
import multiprocessing
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
from service.blas import POLICY  # noqa: E402

LENET = [  # LeCun's LeNet-5 shape on 28x28 inputs (valid convolutions, max pooling)
    {"type": "conv2d", "out_channels": 6, "kernel_size": 5}, {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
    {"type": "conv2d", "out_channels": 16, "kernel_size": 5}, {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"}, {"type": "linear", "out_features": 120}, {"type": "relu"},
    {"type": "linear", "out_features": 84}, {"type": "relu"}, {"type": "linear", "out_features": 10},
]


ADAM = {"type": "adam", "lr": 1e-3}
CROSS_ENTROPY = {"type": "softmax_cross_entropy"}


def recurrent_spec(kind, d=32, h=128, classes=10):
    """An rnn, lstm or gru over (N, T, D), a linear layer to the classes on its last step."""
    return {"layers": [{"type": kind, "input_size": d, "hidden_size": h}, {"type": "linear", "out_features": classes}],
            "loss": CROSS_ENTROPY, "optimizer": ADAM}


def transformer_spec(vocab=128, e=64, heads=4, t=64, blocks=2):
    """A causal pre-norm transformer over (N, T) tokens: per-position logits over the vocabulary."""
    block = [{"type": "residual", "layers": [{"type": "layernorm"},
                                             {"type": "attention", "num_heads": heads, "causal": True}]},
             {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "linear", "out_features": 4 * e},
                                             {"type": "gelu"}, {"type": "linear", "out_features": e}]}]
    return {"input_shape": [t],
            "layers": [{"type": "embedding", "num_embeddings": vocab, "embedding_dim": e},
                       {"type": "positional", "max_len": t}, *block * blocks,
                       {"type": "layernorm"}, {"type": "linear", "out_features": vocab}],
            "loss": CROSS_ENTROPY, "optimizer": ADAM}


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
    ("lstm D32-H128 T50 b32", recurrent_spec("lstm"), (32, 50, 32)),
    ("gru D32-H128 T50 b32", recurrent_spec("gru"), (32, 50, 32)),
    ("rnn D32-H128 T50 b32", recurrent_spec("rnn"), (32, 50, 32)),
    ("transformer E64 h4 T64 V128 b16", transformer_spec(), (16, 64)),
]


def data(model, input_shape):
    """Return (inputs, targets): class labels (per position for (N, T, C) outputs) for
    softmax_cross_entropy, regression targets for mse; tokens as inputs of an embedding model."""
    rng = np.random.default_rng(0)
    classes = model.input_rule.classes
    x = rng.standard_normal(input_shape, dtype=np.float32) if classes is None else rng.integers(0, classes, input_shape)
    out_shape = model.output_shape(input_shape)
    if model.spec["loss"]["type"] == "mse":
        return x, rng.standard_normal(out_shape, dtype=np.float32)
    return x, rng.integers(0, out_shape[-1], out_shape[:-1])


def flops(model, input_shape):
    """Return 6 x the multiply-adds of the linear, conv2d, rnn, lstm, gru and attention layers (forward,
    and backward's two products)."""
    return 6 * multiply_adds(model.spec["layers"], input_shape)


GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def multiply_adds(layers, shape):
    total = 0
    for spec in layers:
        out = output_shape([spec], shape)
        if spec["type"] == "linear":
            total += math.prod(out) * spec["in_features"]
        elif spec["type"] == "conv2d":
            total += math.prod(out) * spec["in_channels"] * math.prod(as_pair(spec["kernel_size"]))
        elif spec["type"] in GATES:
            n, t, d = shape
            h = spec["hidden_size"]
            total += n * t * GATES[spec["type"]] * h * (d + h)
        elif spec["type"] == "attention":
            n, t, e = shape
            total += n * t * 4 * e * e + 2 * n * t * t * e  # projections, then scores and their weighted sum
        elif spec["type"] == "residual":
            total += multiply_adds(spec["layers"], shape)
        shape = out
    return total


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

    def recurrent(s):
        class Recurrent({"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[s["type"]]):  # every step's output, or the last
            def forward(self, x):
                y = super().forward(x)[0]
                return y if s["return_sequences"] else y[:, -1]
        return Recurrent(s["input_size"], s["hidden_size"], batch_first=True)

    class SelfAttention(nn.MultiheadAttention):  # x as query, key and value
        def __init__(self, s):
            super().__init__(s["embed_dim"], s["num_heads"], batch_first=True)
            self.causal = s["causal"]

        def forward(self, x):
            mask = torch.triu(torch.ones(x.shape[1], x.shape[1]), 1).bool() if self.causal else None
            return super().forward(x, x, x, need_weights=False, attn_mask=mask)[0]

    class Positional(nn.Module):  # x + P[:T], P learned
        def __init__(self, s):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(s["max_len"], s["embedding_dim"]) * 0.02)

        def forward(self, x):
            return x + self.weight[:x.shape[1]]

    class Residual(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.block = nn.Sequential(*(build[inner["type"]](inner) for inner in s["layers"]))

        def forward(self, x):
            return x + self.block(x)

    build = {
        "linear": lambda s: nn.Linear(s["in_features"], s["out_features"]),
        "relu": lambda s: nn.ReLU(),
        "flatten": lambda s: nn.Flatten(),
        "conv2d": lambda s: nn.Conv2d(s["in_channels"], s["out_channels"], s["kernel_size"], s["stride"],
                                      s["padding"], s["dilation"]),
        "maxpool2d": lambda s: nn.MaxPool2d(s["kernel_size"], s["stride"], s["padding"]),
        "lstm": recurrent,
        "gru": recurrent,
        "rnn": recurrent,
        "embedding": lambda s: nn.Embedding(s["num_embeddings"], s["embedding_dim"]),
        "positional": Positional,
        "attention": SelfAttention,
        "layernorm": lambda s: nn.LayerNorm(s["num_features"], s["eps"]),
        "gelu": lambda s: nn.GELU(approximate="tanh"),
        "residual": Residual,
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
        outputs = net(x)
        if outputs.ndim == 3:  # per-position logits (N, T, C): cross-entropy over the N*T positions
            outputs, targets = outputs.flatten(0, 1), y.flatten()
        else:
            targets = y
        loss_fn(outputs, targets).backward()
        opt.step()
    return step


# glibc maps a big block for itself and unmaps it when freed, under a threshold that adapts to
# what was freed before, and trims the heap's top: so whether a step's arrays page-fault their
# memory in anew depends on what the process did earlier. torch's LSTM step took 3.0-3.5 ms or
# 5.5-6.5 ms by that alone (its "fast mode"). Fixed thresholds give torch's side its steady state,
# run after run. gradserve's side runs with the settings core makes as it is imported
# (core/memory.py), which are what the service runs with: the bench measures what users get.
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def side(kind: str, spec: dict, shape: tuple, connection) -> None:
    """A worker measuring one side, gradserve or torch, of one config, in a process of its own:
    asked for a number of repeats, it answers the median ms of the config's step."""
    if kind == "torch":
        import torch

        torch.set_num_threads(os.cpu_count())
    step = (torch_step if kind == "torch" else gradserve_step)(spec, shape)
    connection.send("ready")
    while (repeats := connection.recv()) is not None:
        connection.send(median_ms(step, repeats))


@contextmanager
def sides(kinds: list[str], spec: dict, shape: tuple, args):
    """Gives measure(kind) -> median ms of the config (spec, input shape) on that side. Each side runs in a fresh
    process for each config (--one-process: all in this one, as before). In one process, a
    transformer step took 7.5 ms before torch ran the other configs and 13-14 ms after, and
    torch's own transformer 9-11 ms fresh against 16-19 ms after its other configs (the allocator
    and thread state a model leaves behind); the service never loads torch."""
    if args.one_process:
        steps = {kind: (torch_step if kind == "torch" else gradserve_step)(spec, shape) for kind in kinds}
        yield lambda kind: median_ms(steps[kind], args.repeats)
        return
    context, connections = multiprocessing.get_context("spawn"), {}
    for kind in kinds:
        ours, theirs = context.Pipe()
        fixed = kind == "torch" and not args.glibc_default
        with _environment(FIXED_MALLOC if fixed else {}):  # read by the process as it starts
            context.Process(target=side, args=(kind, spec, shape, theirs), daemon=True).start()
        connections[kind] = ours
    for connection in connections.values():  # both built (torch's import is seconds of CPU) before any measure
        connection.recv()

    def measure(kind: str) -> float:
        connections[kind].send(args.repeats)
        return connections[kind].recv()
    try:
        yield measure
    finally:
        for connection in connections.values():
            connection.send(None)


@contextmanager
def _environment(values: dict):
    """These environment variables set (those already set are kept) for the duration."""
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            del os.environ[name]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every config this many times over and give each median and range")
    parser.add_argument("--match", default="", help="run only the configs whose name contains this")
    parser.add_argument("--one-process", action="store_true",
                        help="measure both sides of every config in this process, as before")
    parser.add_argument("--glibc-default", action="store_true",
                        help="leave torch's malloc thresholds to glibc (see FIXED_MALLOC)")
    args = parser.parse_args()
    configs = [config for config in CONFIGS if args.match in config[0]]
    try:
        import torch
    except ImportError:
        torch = None
    kinds = ["gradserve", *(["torch"] if torch else [])]
    ours, theirs = {name: [] for name, _, _ in configs}, {name: [] for name, _, _ in configs}
    if args.one_process and torch:
        torch.set_num_threads(os.cpu_count())
    # Each config's two measures side by side, so that a ratio compares the same spell of the
    # host (its speed moves by the minute); after each a pause, for OpenBLAS's and torch's
    # OpenMP threads keep spinning a while after their last op and would slow whatever runs next.
    for name, spec, input_shape in configs:
        with sides(kinds, spec, input_shape, args) as measure:
            for _ in range(args.rounds):
                ours[name].append(measure("gradserve"))
                time.sleep(0.3)
                if torch:
                    theirs[name].append(measure("torch"))
                    time.sleep(0.5)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {os.cpu_count()} cores, numpy {np.__version__} "
          + f"on {POLICY.describe()}"
          + (f", torch {torch.__version__}" if torch else ", torch not installed")
          + f"; median of {args.repeats} steps, {args.rounds} round(s), "
          + ("both sides in one process" if args.one_process else "each side of each config in a fresh process")
          + "; gradserve with core's malloc settings, torch with "
          + ("glibc's" if args.glibc_default or args.one_process else "fixed thresholds (FIXED_MALLOC)")
          + f"; load average {os.getloadavg()[0]:.2f}")
    print("| config | gradserve ms | GFLOP/s | torch ms | gradserve / torch |")
    print("|---|---|---|---|---|")
    for name, spec, input_shape in configs:
        work = flops(Model.from_spec(spec), input_shape)
        mine = statistics.median(ours[name])
        row = f"| {name} | {_spread(ours[name])} | {work / mine / 1e6:.1f} |"
        if torch:
            ratios = [a / b for a, b in zip(ours[name], theirs[name])]
            row += f" {_spread(theirs[name])} | {_spread(ratios, '.2f')} |"
        else:
            row += " - | - |"
        print(row)


def _spread(values, spec=".3f"):
    """Return one value, or the median of several (one per round) and their range."""
    if len(values) == 1:
        return f"{values[0]:{spec}}"
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


if __name__ == "__main__":
    main()
