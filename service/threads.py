"""Work off the event loop: one pool of worker threads for the whole service.

A hop through `loop.run_in_executor` costs ~25 us here, against ~80 us through anyio's
`to_thread`, and a small request does little else. Work handed to a thread is never abandoned
half-way: if the waiting task is cancelled, it still waits for the thread to finish (the
work may hold a model's lock's promise), then raises the cancellation.
"""

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Requests on different models compute in parallel, one thread each; BLAS threads are set by
# service/blas.py to match.
_POOL = ThreadPoolExecutor(max_workers=max(32, 4 * (os.cpu_count() or 1)), thread_name_prefix="gradserve")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Gives `fn(*args)`, run on a worker thread while the event loop serves others."""
    future = asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError:
            if future.done():
                raise
            cancelled = True  # the thread runs on: wait for it, then pass the cancellation on
    if cancelled:
        raise asyncio.CancelledError
    return result
