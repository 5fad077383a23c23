"""Fixtures every test folder may use: the session's Ray cluster (tests/ray_cluster.py)."""

from tests.ray_cluster import ray_cluster  # noqa: F401
