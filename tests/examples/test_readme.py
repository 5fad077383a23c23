"""README.md says what is true: its examples run against a real server as written (but for
the URL), and its settings and endpoint tables match the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from tests.live_server import REPO, Server, environment, uvicorn_in_thread
from safetensors.numpy import load_file

from service.main import create_app
from service.settings import Settings

README = (REPO / "README.md").read_text()
QUICK_START_URL = "http://127.0.0.1:8000"


def example(kind: str) -> str:
    """Gives the code block that follows the `<!-- README example: kind ... -->` marker."""
    match = re.search(rf"<!-- README example: {kind}\b.*?-->\n```\w+\n(.*?)```", README, re.S)
    assert match, f"no README example marked {kind!r}"
    return match.group(1)


def test_python_example_trains_and_checks_gradients(open_server: Server, tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(example("python").replace(QUICK_START_URL, open_server.url))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment(),
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    accuracy = float(re.search(r"accuracy ([\d.]+)", run.stdout).group(1))
    assert accuracy > 0.9 and "gradcheck passed: True" in run.stdout
    assert set(load_file(tmp_path / "model.safetensors")) == {"0.weight", "0.bias", "2.weight", "2.bias"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (.ci/run installs it)")
def test_curl_example_trains_xor(open_server: Server, tmp_path: Path) -> None:
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", example("curl").replace(QUICK_START_URL, open_server.url)],
                         cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    created, last_step, forward = run.stdout.strip().splitlines()
    assert '"id":"xor"' in created
    assert '"step":200' in last_step
    assert float(re.search(r'"loss":([\d.e-]+)', last_step).group(1)) < 0.05
    logits = np.array(httpx.Response(200, content=forward).json()["outputs"]["data"])
    assert list(logits > 0) == [False, True, True, False]  # XOR learnt
    assert set(load_file(tmp_path / "xor.safetensors")) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert httpx.get(f"{open_server.url}/v1/models/xor").status_code == 404  # deleted at the end


def test_onnx_example_serves_the_export(open_server: Server, tmp_path: Path, monkeypatch, capsys) -> None:
    from gradserve_client import Client

    monkeypatch.chdir(tmp_path)
    layers = [{"type": "linear", "in_features": 2, "out_features": 32}, {"type": "relu"},
              {"type": "linear", "out_features": 2}]
    with Client(open_server.url) as client:
        model = client.create_model(layers=layers, loss={"type": "softmax_cross_entropy"})
        exec(example("onnx"), {"model": model})
        x = np.random.default_rng(1).normal(size=(5, 2)).astype("float32")
        assert capsys.readouterr().out.strip() == str(model.predict(x).argmax(axis=1))
        model.delete()
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_tritonclient_example_queries_v2(tmp_path: Path) -> None:
    # A server of this tree's code in this process: only the example runs apart, as a user's script.
    xor = {"id": "xor", "layers": [{"type": "linear", "in_features": 2, "out_features": 8}, {"type": "tanh"},
                                   {"type": "linear", "out_features": 1}], "seed": 0}
    with uvicorn_in_thread(create_app(Settings(data_dir=tmp_path / "data"))) as url:
        assert httpx.post(f"{url}/v1/models", json=xor).status_code == 201
        script = tmp_path / "triton.py"
        script.write_text(example("tritonclient").replace("127.0.0.1:8000", url.removeprefix("http://")))
        run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment(),
                             capture_output=True, text=True, timeout=120)
        forward = httpx.post(f"{url}/v1/models/xor/forward", json={"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]]})
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    metadata, printed = run.stdout.split("\n", 1)
    assert "'versions': ['0']" in metadata and "'shape': [-1, 2]" in metadata
    outputs = np.array([float(value) for value in re.findall(r"-?\d+\.\d*(?:e-?\d+)?", printed)], np.float32)
    np.testing.assert_array_equal(outputs, np.array(forward.json()["outputs"]["data"], np.float32))


def test_docs_link_answers(open_server: Server) -> None:
    assert "http://127.0.0.1:8000/docs" in README
    assert httpx.get(f"{open_server.url}/docs").status_code == 200


def documented_default(variable: str) -> str:
    row = re.search(rf"^\| `{variable}` \| (.*?) \|", README, re.M)
    assert row, f"{variable} is not in the README's settings table"
    return row.group(1)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(name: str) -> None:
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    shown = documented_default(f"GRADSERVE_{name.upper()}")
    if default == []:
        assert shown.startswith("empty")
    elif default is None:
        assert shown.startswith("unset")
    elif isinstance(default, bool):
        assert shown.startswith(f"`{str(default).lower()}`")
    elif isinstance(default, (int, float)) and not isinstance(default, bool):
        assert float(re.search(r"`([\d.]+)`", shown).group(1)) == default
    else:
        assert shown.startswith(f"`{default}`")


def test_every_route_is_in_the_endpoint_table() -> None:
    app = create_app(Settings(data_dir=Path("unused")))
    routes = {f"{method.upper()} {path}" for path, methods in app.openapi()["paths"].items() for method in methods}
    # The dashboard's HTML pages are routes too, left out of the OpenAPI description only.
    routes |= {f"{method} {route.path}" for route in iter_route_contexts(app.routes)
               if isinstance(route.original_route, APIRoute) and not route.include_in_schema for method in route.methods}
    routes = {route.replace("{model_id}", "{id}") for route in routes}
    table = set(re.findall(r"^\| `((?:GET|POST|PUT|DELETE) [^`]+)` \|", README, re.M))
    assert routes == table


def test_quick_start_is_two_commands_that_exist() -> None:
    quick_start = re.search(r"## Quick start\n.*?```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines()]
    assert commands == ["scripts/serve.sh", "scripts/test.sh"]
    for command in commands:
        assert (REPO / command).stat().st_mode & 0o111, f"{command} is not executable"
