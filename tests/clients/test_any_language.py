"""The curl script and the JS example train a model; their last printed loss is well below the first."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[2] / "clients"
LOSS = re.compile(r"\bloss (\S+)")


def losses(output: str) -> list[float]:
    return [float(value) for value in LOSS.findall(output)]


def run(command: list[str], tool: str, **env: str) -> str:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed; .ci/run installs it (apt-get install -y {tool})")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_curl_script_trains_xor(server):
    printed = losses(run(["bash", str(CLIENTS / "curl" / "train.sh"), server.url], "curl"))
    assert len(printed) >= 5
    assert printed[-1] < printed[0] / 5


def test_the_js_example_trains_a_sine(server):
    printed = losses(run(["node", str(CLIENTS / "js" / "example.mjs"), server.url], "node"))
    assert len(printed) >= 5
    assert printed[-1] < printed[0] / 5


def test_both_send_the_api_key(locked_server):
    key = locked_server.api_keys[0]
    curl = run(["bash", str(CLIENTS / "curl" / "train.sh"), locked_server.url, key], "curl", STEPS="2")
    js = run(["node", str(CLIENTS / "js" / "example.mjs"), locked_server.url], "node",
             STEPS="2", GRADSERVE_API_KEY=key)
    assert len(losses(curl)) == len(losses(js)) == 2
