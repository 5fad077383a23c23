"""Importing core keeps a step's big temporaries in the process: freed and allocated again, they
are not paged in afresh (counted in page faults, in a fresh interpreter with glibc's defaults)."""

import os
import platform
import subprocess
import sys

import pytest

# Allocates and frees a 4 MiB array 20 times, touching every page, after one round to warm up;
# prints the minor page faults of the 20 rounds. Mapped anew each round, that is 20 x 1024.
ROUNDS = """
import resource
import numpy as np
import core
def touch():
    a = np.ones(1 << 20, np.float32)
    return float(a[::1024].sum())
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

PAGES_PER_ROUND = (4 << 20) // 4096


def page_faults() -> int:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run([sys.executable, "-c", ROUNDS], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap settings are glibc's")
def test_big_blocks_freed_and_allocated_again_are_not_paged_in_afresh():
    assert page_faults() < PAGES_PER_ROUND  # all 20 rounds together: less than one round's pages
