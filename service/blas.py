"""The BLAS thread policy: every core for a request that computes alone, one thread each when
several compute at once.

OpenBLAS splits each matrix product over one thread per core. Two requests computing at once
are then four threads on two cores, and OpenBLAS's threads spin while they wait for each other:
a gradient check ran 8x slower beside a train step than alone. One thread per request while
others compute keeps the cores busy with useful work; a request alone keeps the speed of all
cores. benchmarks/bench_blas_threads.py measures the three policies side by side.
"""

import os
import threading

import numpy  # noqa: F401 (loads the BLAS: a controller made before it finds none, and would never limit it)
from threadpoolctl import ThreadpoolController


class BlasPolicy:
    """Counts the requests computing now and sets OpenBLAS's threads to match (see the module).

    BLAS threads are per process, so the service keeps one policy, `POLICY`, for all its apps.
    `fix(n)` pins the count instead (GRADSERVE_BLAS_THREADS), e.g. 1 on a machine whose cores
    other work shares: spinning BLAS threads that lose their core to another process stall.
    """

    def __init__(self) -> None:
        self._controller = ThreadpoolController()
        self._full = max((lib.num_threads for lib in self._controller.select(user_api="blas").lib_controllers),
                         default=1)
        self._lock = threading.Lock()
        self._computing = 0
        self._fixed = False

    def fix(self, threads: int | None) -> None:
        """Pins BLAS to `threads` threads for the whole process, or (None) goes back to adapting."""
        with self._lock:
            self._fixed = threads is not None
            self._controller.select(user_api="blas").limit(limits=threads or self._full)

    def describe(self) -> str:
        """Gives the BLAS the products run on, for the start-up log: library, version, kernels,
        threads, and the environment variable that chose the kernels if one did.

        OPENBLAS_CORETYPE pins OpenBLAS's kernels whatever the CPU: on an AVX-512 machine
        pinned to Haswell's, products ran 1.3-1.8x slower than on the kernels OpenBLAS picks
        (benchmarks/RESULTS.md), a cost worth seeing where the service starts."""
        found = [f"{lib.internal_api} {lib.version} ({getattr(lib, 'architecture', None) or 'its'} kernels, "
                 f"{lib.num_threads} threads)" for lib in self._controller.select(user_api="blas").lib_controllers]
        described = ", ".join(found) or "none found"
        coretype = os.environ.get("OPENBLAS_CORETYPE")
        if coretype and any(lib.internal_api == "openblas" for lib in self._controller.lib_controllers):
            described += f"; the kernels set by OPENBLAS_CORETYPE={coretype} (unset, OpenBLAS picks this CPU's)"
        return described

    def computing(self) -> "BlasPolicy":
        """Gives a context that runs its block as one computing request (the policy itself:
        a generator's context cost 2.2 us a request, the policy's own methods 0.9)."""
        return self

    def __enter__(self) -> None:
        self._change(+1)

    def __exit__(self, *exc: object) -> None:
        self._change(-1)

    def _change(self, delta: int) -> None:
        with self._lock:
            before = self._computing
            self._computing += delta
            # Set only on the transitions between one request and several.
            if (before <= 1) != (self._computing <= 1) and self._full > 1 and not self._fixed:
                threads = self._full if self._computing <= 1 else 1
                self._controller.select(user_api="blas").limit(limits=threads)


POLICY = BlasPolicy()
