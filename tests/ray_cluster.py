"""One local Ray cluster of two nodes for the whole test session, every port on 127.0.0.1.

`ray.cluster_utils.Cluster` with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 binds every Ray port to
127.0.0.1 (without it some listen on 0.0.0.0 and on the machine's address), and
RAY_AUTH_MODE=disabled keeps drivers working when ~/.ray/auth_token exists. The session's
test process is the cluster's driver; servers started in it (uvicorn_in_thread) share it,
each in its own namespace, and `gradserve serve --ray ADDRESS` subprocesses join it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.live_server import REPO

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
INSTALL = "pip install 'gradserve[ray]'  (or: pip install -e '.[dev,ray]')"


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


def listening_off_loopback() -> list[str]:
    """Gives the TCP listeners of Ray processes on any address but 127.0.0.1."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if ("ray" in line or "gcs_server" in line) and "127.0.0.1:" not in line.split()[3]]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    os.environ.update(LOOPBACK_ENV)  # before Ray starts anything: the nodes read it
    ray = import_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    try:
        # The actors import this checkout's service/ and core/, whatever the venv has installed.
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        yield RayCluster(cluster, cluster.address)
    finally:
        ray.shutdown()
        cluster.shutdown()


def kill_namespace(namespace: str) -> None:
    """Kills every named actor of `namespace` (detached ones outlive their creator)."""
    ray = import_ray()
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == namespace:
            ray.kill(ray.get_actor(actor["name"], namespace=namespace))
