"""One local Ray cluster of two nodes for the whole test session, every port on 127.0.0.1.

`ray.cluster_utils.Cluster` with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 binds every Ray port to
127.0.0.1 (without it some listen on 0.0.0.0 and on the machine's address), and
RAY_AUTH_MODE=disabled keeps drivers working when ~/.ray/auth_token exists. The session's
test process is the cluster's driver; servers started in it (uvicorn_in_thread) share it,
each in its own namespace, and `gradserve serve --ray ADDRESS` subprocesses join it.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import suppress
from pathlib import Path
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.live_server import REPO

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
INSTALL = "pip install 'gradserve[ray]'  (or: pip install -e '.[dev,ray]')"
os.environ.update(LOOPBACK_ENV)  # before any test module imports ray: it reads them on import


@dataclass
class RayCluster:
    cluster: object  # ray.cluster_utils.Cluster
    address: str

    def node_ids(self) -> list[str]:
        import ray

        return [node["NodeID"] for node in ray.nodes() if node["Alive"]]


def import_ray():
    """Gives the ray module, or fails the test with the command that installs it."""
    try:
        import ray
        from ray.cluster_utils import Cluster  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"these tests need Ray ({exc}); install it: {INSTALL}", pytrace=False)
    return ray


def descendants(pid: int) -> set[int]:
    """Gives the pids of every process below `pid` (a cluster's gcs, raylets and workers are
    below the test process that started it)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def listening_off_loopback(pids: set[int]) -> list[str]:
    """Gives the TCP listeners of processes `pids` on any address but 127.0.0.1."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        address = line.split()[3].rsplit(":", 1)[0].strip("[]")
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & pids and address not in ("127.0.0.1", "::ffff:127.0.0.1"):
            found.append(line)
    return found


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    ray = import_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False, **_this_checkout())
        yield RayCluster(cluster, cluster.address)
    finally:
        started = {pid for pid in descendants(os.getpid()) if "ray" in command_of(pid)}  # raylet, ray::...
        ray.shutdown()
        cluster.shutdown()
        wait_gone(started)  # no test leaves a Ray process running


def command_of(pid: int) -> str:
    with suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    return ""


def wait_gone(pids: set[int], seconds: float = 20) -> None:
    """Waits for every process of `pids` to have exited; fails naming those left running."""
    deadline = time.monotonic() + seconds
    while (left := {pid for pid in pids if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left running: {[command_of(pid)[:80] for pid in left]}"


def _running(pid: int) -> bool:
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    return False


def _this_checkout() -> dict:
    """Gives ray.init's options that make the actors import this checkout's service/ and core/
    when the venv has another one installed (a git worktree): a runtime env, which has a cost
    (soft node affinity no longer holds), so only then."""
    import service

    if Path(service.__file__).resolve().parents[1] == REPO:
        return {}
    return {"runtime_env": {"env_vars": {"PYTHONPATH": str(REPO)}}}


def kill_namespace(namespace: str) -> None:
    """Kills every named actor of `namespace` (detached ones outlive their creator)."""
    ray = import_ray()
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            ray.kill(ray.get_actor(actor["name"], namespace=namespace))
