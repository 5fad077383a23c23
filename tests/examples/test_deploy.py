"""The Dockerfile and docker-compose.yml, checked without a Docker engine: what the server
image copies is installed as its RUN does into a fresh venv, whose start command and health
check then run outside Docker; the compose file is validated by docker-compose itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from tests.live_server import REPO, Server, environment, free_port, start, stop


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


def lineage(stage_name: str) -> list[tuple[str, str]]:
    """Gives the instructions that make a stage: its parent stage's (FROM <stage>), then its own."""
    stages = dockerfile_stages()
    own = stages[stage_name]
    parent = own[0][1].split(" AS ")[0].strip()
    return (lineage(parent) if parent in stages else []) + own


def image() -> dict[str, str]:
    """Gives the instructions of the default image (the last stage), by keyword (last one wins)."""
    return {keyword: arguments for keyword, arguments in lineage(list(dockerfile_stages())[-1])}


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
    for name in stages:
        made = dict(lineage(name))
        assert "CMD" not in made or made.get("USER", "root") not in ("root", "0"), f"stage {name} runs as root"
    server = image()
    assert server["VOLUME"] == "/data"
    assert "/healthz" in server["HEALTHCHECK"]
    installs = [arguments for keyword, arguments in list(stages.values())[-1] if "pip install" in arguments]
    assert installs and not any("[dev]" in line or "-e " in line for line in installs)
    assert exec_form(server["CMD"]) == ["gradserve", "serve", "--host", "0.0.0.0", "--port", "8000",
                                        "--data-dir", "/data"]


def test_the_cluster_stage_is_the_server_with_the_ray_extra() -> None:
    stages = dockerfile_stages()
    assert list(stages).index("cluster") < list(stages).index("server")  # `docker build .` stays embedded
    cluster, server = dict(lineage("cluster")), image()
    copies = [[arguments for keyword, arguments in stages[name] if keyword == "COPY"] for name in ("cluster", "server")]
    assert copies[0] == copies[1]
    assert "pip install '/src[ray]'" in cluster["RUN"] and cluster["VOLUME"] == server["VOLUME"]
    assert exec_form(cluster["CMD"]) == ["gradserve", "serve", "--host", "0.0.0.0", "--port", "8000",
                                         "--ray", "local", "--data-dir", "/data"]


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


@dataclass
class Image:
    """A stage of the Dockerfile laid out outside Docker: `root` stands for the image's /,
    `bin` is the bin folder of the venv its `pip install` went into."""

    root: Path
    bin: Path
    instructions: dict[str, str]

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")


def build(stage_name: str, root: Path) -> Image:
    """Gives the stage laid out under `root`: its COPY sources where the image has them, then
    its `pip install` of them run into a new venv (no Docker engine needed)."""
    stage = lineage(stage_name)
    image = Image(root, root / "venv" / "bin", {keyword: arguments for keyword, arguments in stage})
    for keyword, arguments in stage:
        if keyword != "COPY":
            continue
        *sources, destination = arguments.split()
        target = image.path(destination)
        for source in map(REPO.joinpath, sources):
            if source.is_dir():  # Docker copies a folder's contents into the destination
                shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            elif destination.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, target / source.name)
            else:
                shutil.copy(source, target)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    for keyword, arguments in stage:
        for path, extras in re.findall(r"pip install '?(/[^'\s\[]+)(\[[^\]]*\])?'?", arguments) if keyword == "RUN" else ():
            pip = subprocess.run([str(image.bin / "python"), "-m", "pip", "install", "-q", f"{image.path(path)}{extras}"],
                                 capture_output=True, text=True, timeout=600, env=environment(image.bin))
            assert pip.returncode == 0, pip.stderr[-3000:]
    return image


@pytest.fixture(scope="module")
def server_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The default image (the last stage), installed outside Docker."""
    return build(list(dockerfile_stages())[-1], tmp_path_factory.mktemp("server-image"))


@pytest.fixture(scope="module")
def cluster_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """The cluster stage (the server with Ray), installed outside Docker."""
    return build("cluster", tmp_path_factory.mktemp("cluster-image"))


@pytest.mark.parametrize("stage", ["server_image", "cluster_image"])
def test_the_image_holds_runtime_dependencies_only(stage: str, request: pytest.FixtureRequest) -> None:
    built: Image = request.getfixturevalue(stage)
    for dev_tool in ("pytest", "hypothesis", "schemathesis"):
        imported = subprocess.run([str(built.bin / "python"), "-c", f"import {dev_tool}"], capture_output=True)
        assert imported.returncode != 0, f"{dev_tool} is in the {stage}"


def test_the_cluster_image_has_the_ray_and_gradserve_commands(cluster_image: Image) -> None:
    for command in (["ray", "start", "--help"], ["gradserve", "serve", "--help"]):
        run = subprocess.run(command, env=environment(cluster_image.bin), capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr


def serve(image: Image, folder: Path, **settings: str) -> Server:
    """Starts the image's CMD with --host 127.0.0.1, a free --port and --data-dir `folder`/data."""
    command = exec_form(image.instructions["CMD"])
    port = str(free_port())
    for option, value in (("--host", "127.0.0.1"), ("--port", port), ("--data-dir", str(folder / "data"))):
        command = with_option(command, option, value)
    return start(command, f"http://127.0.0.1:{port}", folder / "server.log", bin_dir=image.bin, **settings)


def test_the_images_start_command_serves_and_passes_its_health_check(server_image: Image, tmp_path: Path) -> None:
    running = serve(server_image, tmp_path)
    try:
        assert httpx.get(f"{running.url}/healthz", timeout=5).json() == {"status": "ok"}
        health = [part.replace("http://127.0.0.1:8000", running.url)
                  for part in exec_form(server_image.instructions["HEALTHCHECK"])]
        check = subprocess.run(health, env=environment(server_image.bin), capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        model = httpx.post(f"{running.url}/v1/models", timeout=10, json={
            "id": "kept", "layers": [{"type": "linear", "in_features": 2, "out_features": 1}]})
        assert model.status_code == 201, model.text
    finally:
        code = stop(running)
    # uvicorn shuts down cleanly on SIGTERM, then ends by that signal (Docker sees 143).
    assert code in (0, -15) and "Application shutdown complete" in running.log_tail(), running.log_tail()
    assert (tmp_path / "data" / "models" / "kept.safetensors").is_file()  # what the volume keeps


def test_the_demo_trainer_image_trains_against_the_server_image(server_image: Image, tmp_path: Path) -> None:
    """docker-compose's demo, outside Docker: the trainer stage's CMD, from its WORKDIR and with
    only the client installed, against the server image's CMD with an API key."""
    trainer = build("trainer", tmp_path / "trainer")
    running = serve(server_image, tmp_path, GRADSERVE_API_KEYS="demo-key")
    try:
        run = subprocess.run(exec_form(trainer.instructions["CMD"]), cwd=trainer.path(trainer.instructions["WORKDIR"]),
                             env=environment(trainer.bin, GRADSERVE_URL=running.url, GRADSERVE_API_KEY="demo-key"),
                             capture_output=True, text=True, timeout=300)
    finally:
        stop(running)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert "gradcheck passed" in run.stdout and "torch is not installed" in run.stdout


def docker_compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=environment())


def compose_services() -> dict[str, dict]:
    """Gives every service of docker-compose.yml as docker-compose resolves it (anchors merged)."""
    config = docker_compose("--profile", "demo", "--profile", "cluster", "config")
    assert config.returncode == 0, config.stderr
    return yaml.safe_load(config.stdout)["services"]


def published(service: dict) -> set[str]:
    """Gives the ports a service publishes as host_ip:published:target (short or long syntax)."""
    return {port.removesuffix("/tcp") if isinstance(port, str) else
            f"{port.get('host_ip', '0.0.0.0')}:{port.get('published')}:{port['target']}"
            for port in service.get("ports", [])}


def mounts(service: dict) -> set[str]:
    """Gives a service's volumes as source:target (short or long syntax)."""
    return {":".join(volume.split(":")[:2]) if isinstance(volume, str) else f"{volume['source']}:{volume['target']}"
            for volume in service.get("volumes", [])}


needs_docker_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                          reason="docker-compose is not installed (.ci/run installs Debian's package)")


@needs_docker_compose
def test_docker_compose_file_is_valid() -> None:
    for profile in ((), ("--profile", "demo"), ("--profile", "cluster")):
        check = docker_compose(*profile, "config", "-q")
        assert check.returncode == 0, check.stderr
    by_profile: dict[tuple[str, ...], set[str]] = {}
    for name, service in compose_services().items():
        by_profile.setdefault(tuple(service.get("profiles", ())), set()).add(name)
    # `docker compose up` starts the services of no profile: the embedded server only.
    assert by_profile == {(): {"gradserve"}, ("demo",): {"trainer"},
                          ("cluster",): {"ray-head", "ray-worker", "gradserve-1", "gradserve-2"}}


@needs_docker_compose
def test_the_cluster_profile_is_a_ray_head_a_worker_and_two_front_ends_on_one_volume() -> None:
    services = compose_services()
    cluster = {name: service for name, service in services.items() if service.get("profiles") == ["cluster"]}
    assert {service["build"]["target"] for service in cluster.values()} == {"cluster"}
    # One volume at /data for the model hosts and the front-ends, not the embedded server's.
    assert [mounts(service) for service in cluster.values()] == [{"gradserve-cluster-data:/data"}] * 4
    assert mounts(services["gradserve"]) == {"gradserve-data:/data"}
    command = {name: " ".join(service["command"]) for name, service in cluster.items()}
    assert command["ray-head"].startswith("ray start --head --block --port=6379")
    assert command["ray-worker"].startswith("ray start --block --address=ray-head:6379")
    for front_end, port in (("gradserve-1", 8001), ("gradserve-2", 8002)):
        assert "exec gradserve serve --host 0.0.0.0 --port 8000 --ray ray-head:6379 --data-dir /data" in command[front_end]
        assert published(cluster[front_end]) == {f"127.0.0.1:{port}:8000"}
        assert cluster[front_end]["environment"] == services["gradserve"]["environment"]
    # No Ray port reaches the host: only the servers' 8000, on loopback.
    assert set().union(*map(published, services.values())) == {"127.0.0.1:8000:8000", "127.0.0.1:8001:8000",
                                                                "127.0.0.1:8002:8000"}
