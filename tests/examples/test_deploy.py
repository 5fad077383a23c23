"""The Dockerfile and docker-compose.yml, checked without a Docker engine: what the server
image copies is installed as its RUN does into a fresh venv, whose start command and health
check then run outside Docker; the compose file is validated by docker-compose itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from live_server import REPO, environment, free_port, start, stop


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Gives each stage of the Dockerfile as {name: [(INSTRUCTION, arguments), ...]}, in order."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):  # continued on the next line
            current = current[:-1] + " "
            continue
        keyword, _, arguments = current.strip().partition(" ")
        current = ""
        if not keyword:
            continue
        if keyword.upper() == "FROM":
            stages[arguments.split(" AS ")[-1].strip()] = []
        stages[list(stages)[-1]].append((keyword.upper(), " ".join(arguments.split())))
    return stages


def image() -> dict[str, str]:
    """Gives the instructions of the default image (the last stage), by keyword (last one wins)."""
    return {keyword: arguments for keyword, arguments in list(dockerfile_stages().values())[-1]}


def exec_form(arguments: str) -> list[str]:
    """Gives the argv of a JSON exec-form CMD, after any HEALTHCHECK options before `CMD`."""
    return json.loads(arguments[arguments.index("["):])


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    assert option in argv, f"{option} missing from {argv}"
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2:]]


def test_the_image_is_slim_non_root_and_keeps_state_in_a_volume() -> None:
    stages = dockerfile_stages()
    bases = [stage[0][1].split(" AS ")[0] for stage in stages.values()]
    assert all(base == "python:3.11-slim" or base in stages for base in bases), bases
    server = image()
    assert server["USER"] not in ("root", "0")
    assert server["VOLUME"] == "/data"
    assert "/healthz" in server["HEALTHCHECK"]
    installs = [arguments for keyword, arguments in list(stages.values())[-1] if "pip install" in arguments]
    assert installs and not any("[dev]" in line or "-e " in line for line in installs)
    assert exec_form(server["CMD"]) == ["gradserve", "serve", "--host", "0.0.0.0", "--port", "8000",
                                        "--data-dir", "/data"]


def test_what_the_image_copies_exists_and_is_not_docker_ignored() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"**/.venv", ".env", "data", ".git"} <= ignored
    for stage in dockerfile_stages().values():
        for keyword, arguments in stage:
            if keyword == "COPY":
                for source in arguments.split()[:-1]:
                    assert (REPO / source).exists(), source
                    assert source not in ignored, source


@pytest.fixture(scope="module")
def image_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gives the bin folder of a new venv holding what the server image installs: the stage's
    COPY sources laid out under a tmp root as in the image, then its `pip install` run there."""
    root = tmp_path_factory.mktemp("image")
    stage = list(dockerfile_stages().values())[-1]
    for keyword, arguments in stage:
        if keyword != "COPY":
            continue
        *sources, destination = arguments.split()
        target = root / destination.lstrip("/")
        for source in map(REPO.joinpath, sources):
            if source.is_dir():  # Docker copies a folder's contents into the destination
                shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True) if destination.endswith("/") else None
                shutil.copy(source, target / source.name if destination.endswith("/") else target)
    install = next(re.search(r"pip install (/\S+)", arguments) for keyword, arguments in stage
                   if keyword == "RUN" and "pip install" in arguments)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(root / install.group(1).lstrip("/"))],
                         capture_output=True, text=True, timeout=600, env=environment(venv / "bin"))
    assert pip.returncode == 0, pip.stderr[-3000:]
    return venv / "bin"


def test_the_image_holds_runtime_dependencies_only(image_bin: Path) -> None:
    for dev_tool in ("pytest", "hypothesis", "schemathesis"):
        assert subprocess.run([str(image_bin / "python"), "-c", f"import {dev_tool}"], capture_output=True).returncode != 0


def test_the_images_start_command_serves_and_passes_its_health_check(image_bin: Path, tmp_path: Path) -> None:
    """The image's CMD and HEALTHCHECK, with host, port and data dir changed to 127.0.0.1, a
    free port and a tmp folder."""
    server = image()
    port = str(free_port())
    command = with_option(with_option(with_option(exec_form(server["CMD"]), "--host", "127.0.0.1"),
                                      "--port", port), "--data-dir", str(tmp_path / "data"))
    url = f"http://127.0.0.1:{port}"
    running = start(command, url, tmp_path / "server.log", bin_dir=image_bin)
    try:
        assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        health = [part.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for part in exec_form(server["HEALTHCHECK"])]
        check = subprocess.run(health, env=environment(image_bin), capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        model = httpx.post(f"{url}/v1/models", timeout=10, json={
            "id": "kept", "layers": [{"type": "linear", "in_features": 2, "out_features": 1}]})
        assert model.status_code == 201, model.text
    finally:
        code = stop(running)
    # uvicorn shuts down cleanly on SIGTERM, then ends by that signal (Docker sees 143).
    assert code in (0, -15) and "Application shutdown complete" in running.log_tail(), running.log_tail()
    assert (tmp_path / "data" / "models" / "kept.safetensors").is_file()  # what the volume keeps


def docker_compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=environment())


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (.ci/run installs Debian's package)")
def test_docker_compose_file_is_valid() -> None:
    check = docker_compose("config", "-q")
    assert check.returncode == 0, check.stderr
    services = docker_compose("--profile", "demo", "config", "--services")
    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == {"gradserve", "trainer"}
