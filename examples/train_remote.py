"""Trains a classifier on a gradserve server with the Python client, then checks it three ways.

    python examples/train_remote.py [--url http://127.0.0.1:8000] [--api-key KEY] [--epochs 15]

1. `fit` streams the batches to the server (the same steps as one train_step per batch; a
   tqdm bar when tqdm is installed) and reports the accuracy on held-out points;
2. `gradcheck` has the server compare its analytic gradients with finite differences;
3. the checkpoint is downloaded (safetensors, no optimizer state) and, when torch is
   installed, loaded strictly into the same torch.nn.Sequential, whose outputs must match
   the server's.

The data, three interleaved spirals in the plane, is made here: nothing is downloaded.
Exits non-zero if the gradient check fails or torch disagrees with the server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from gradserve_client import Client

HIDDEN = 64
SPEC = {
    "layers": [
        {"type": "linear", "in_features": 2, "out_features": HIDDEN},
        {"type": "relu"},
        {"type": "linear", "out_features": HIDDEN},
        {"type": "relu"},
        {"type": "linear", "out_features": 3},
    ],
    "loss": {"type": "softmax_cross_entropy"},
    "optimizer": {"type": "adam", "lr": 0.01},
    "seed": 0,
}


def spirals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns n points (n, 2) float32 on three noisy spiral arms, and their arm (n,) int64."""
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 3, size=n)
    radius = rng.uniform(0.1, 1.0, size=n)
    angle = 4.0 * radius + arm * (2 * np.pi / 3) + rng.normal(scale=0.5, size=n)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return points.astype(np.float32), arm.astype(np.int64)


def torch_outputs(checkpoint: Path, x: np.ndarray) -> np.ndarray | None:
    """Returns the outputs of SPEC's network as torch.nn.Sequential loaded from `checkpoint`,
    or None when torch is not installed."""
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError:
        return None
    net = torch.nn.Sequential(
        torch.nn.Linear(2, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 3),
    )
    # strict: every name and shape must match ("0.weight", "0.bias", "2.weight", ...).
    net.load_state_dict(load_file(checkpoint), strict=True)
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("GRADSERVE_URL") or os.environ.get("GRADSERVE_BASE_URL")
                        or "http://127.0.0.1:8000",
                        help="the server (default: $GRADSERVE_URL, $GRADSERVE_BASE_URL, http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=os.environ.get("GRADSERVE_API_KEY"),
                        help="one of the server's GRADSERVE_API_KEYS (default: $GRADSERVE_API_KEY)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--checkpoint", type=Path,
                        help="where to save the trained model (default: a temporary file)")
    parser.add_argument("--keep", action="store_true", help="leave the model on the server")
    args = parser.parse_args()

    x, y = spirals(1000, seed=1)
    x_test, y_test = spirals(500, seed=2)

    with Client(args.url, api_key=args.api_key) as client:
        model = client.create_model(SPEC)
        print(f"model {model.id} created on {args.url}: {model.info.num_parameters} parameters")
        try:
            model.fit(x, y, epochs=args.epochs, batch_size=64, validation_data=(x_test, y_test), seed=0)
            outputs = model.predict(x_test)
            accuracy = float((outputs.argmax(axis=1) == y_test).mean())
            print(f"test accuracy {accuracy:.3f} after {model.refresh().step} steps")

            report = model.gradcheck(x_test[:16], y_test[:16])
            worst = max(p["max_rel_error"] for p in report.parameters.values())
            print(f"gradcheck {'passed' if report.passed else 'FAILED'} (worst relative error {worst:.1e})")

            with tempfile.TemporaryDirectory() as tmp:
                path = args.checkpoint or Path(tmp) / f"{model.id}.safetensors"
                model.download_checkpoint(path, include_optimizer=False)
                print(f"checkpoint saved to {path} ({path.stat().st_size} bytes)")
                in_torch = torch_outputs(path, x_test)
        finally:
            if not args.keep:
                model.delete()

    if in_torch is None:
        print("torch is not installed: skipped loading the checkpoint into torch.nn.Sequential")
        return 0 if report.passed else 1
    difference = float(np.abs(in_torch - outputs).max())
    match = bool(np.allclose(in_torch, outputs, rtol=1e-4, atol=1e-5))
    print(f"torch.nn.Sequential outputs {'match' if match else 'DO NOT match'} the server's "
          f"(max abs difference {difference:.1e})")
    return 0 if report.passed and match else 1


if __name__ == "__main__":
    sys.exit(main())
