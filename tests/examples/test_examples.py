"""examples/train_remote.py, run as a user runs it, against a real server."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import httpx
from safetensors.numpy import load_file

from tests.live_server import API_KEY, REPO, Server, environment

EXAMPLE = REPO / "examples" / "train_remote.py"
HAS_TORCH = importlib.util.find_spec("torch") is not None


def run_example(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=environment(**env), cwd=REPO,
                          capture_output=True, text=True, timeout=240)


def test_train_remote_learns_checks_and_exports(server: Server, tmp_path: Path) -> None:
    checkpoint = tmp_path / "spirals.safetensors"
    run = run_example("--api-key", API_KEY, "--checkpoint", str(checkpoint), GRADSERVE_URL=server.url)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- server ---\n{server.log_tail()}"

    assert float(re.search(r"test accuracy ([\d.]+)", run.stdout).group(1)) > 0.85
    assert "gradcheck passed" in run.stdout
    assert "Epoch 15/15" in run.stderr  # fit's progress, bar or line, goes to stderr
    if HAS_TORCH:
        assert "torch.nn.Sequential outputs match the server's" in run.stdout
    else:
        assert "torch is not installed" in run.stdout

    # The checkpoint is a plain state_dict, names and layouts as torch.nn.Sequential's.
    state = load_file(checkpoint)
    assert {name: value.shape for name, value in state.items()} == {
        "0.weight": (64, 2), "0.bias": (64,), "2.weight": (64, 64), "2.bias": (64,),
        "4.weight": (3, 64), "4.bias": (3,),
    }
    # and the example cleaned up after itself.
    models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert models["models"] == []


def test_train_remote_with_a_wrong_key_fails_with_the_servers_reason(server: Server) -> None:
    run = run_example("--url", server.url, "--api-key", "not-the-key")
    assert run.returncode != 0
    assert "AuthenticationError" in run.stderr
    assert "missing or wrong API key" in run.stderr
