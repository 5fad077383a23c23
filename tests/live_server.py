"""Runs a command that serves gradserve (on 127.0.0.1, a free port, state in a tmp folder) as a
subprocess, and stops it: the real server for the client, example and deployment tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.cli import listening_socket, uvicorn_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: gradserve, python
API_KEY = "example-key"


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    api_keys: tuple[str, ...] = ()  # what GRADSERVE_API_KEYS it was started with
    max_body_bytes: int | None = None  # and GRADSERVE_MAX_BODY_BYTES

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(bin_dir: Path = BIN, **settings: str) -> dict[str, str]:
    """Gives this process's environment without GRADSERVE_* variables, plus `settings`, with
    `bin_dir` first on PATH (so `gradserve` and `python` are the ones installed there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADSERVE_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **settings}


def start(command: Sequence[str], url: str, log: Path, bin_dir: Path = BIN, **settings: str) -> Server:
    """Runs `command` (found on PATH with `bin_dir` first) and gives the Server once
    `url`/readyz answers 200; fails the test after 30 s."""
    with log.open("wb") as out:
        process = subprocess.Popen(list(command), cwd=log.parent, env=environment(bin_dir, **settings),
                                   stdout=out, stderr=subprocess.STDOUT)
    keys = settings.get("GRADSERVE_API_KEYS", "")
    limit = settings.get("GRADSERVE_MAX_BODY_BYTES")
    server = Server(url, process, log, tuple(k for k in keys.split(",") if k), int(limit) if limit else None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{' '.join(command)} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(server)
    pytest.fail(f"{' '.join(command)} not ready after 30 s:\n{server.log_tail()}")


def stop(server: Server) -> int:
    """Stops the server (SIGTERM, then SIGKILL after 10 s) and gives its exit code."""
    server.process.terminate()
    try:
        return server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()


@contextmanager
def uvicorn_in_thread(app) -> Iterator[str]:
    """Serves `app` with a real uvicorn on 127.0.0.1 (a free port) and gives its base URL."""
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, app.state.settings))  # as `gradserve serve` runs it
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a Ray-backed app starts its cluster's actors first
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
