"""How long a request's work may run, and whether its client is still there to read the answer.

Long work (a gradient check) asks `Budget.expired` between its evaluations and stops when the
time is up or the client has disconnected, so a model's lock is never held for nobody.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Request

from service.errors import ServiceError


class Budget:
    """A deadline `seconds` from now, and a flag set when the client goes away."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.client_gone = False

    def expired(self) -> bool:
        return self.client_gone or time.monotonic() > self.deadline

    def refusal(self, what: str) -> ServiceError:
        """Gives the error for `what` (the work, or how far it got) stopped by this budget."""
        if self.client_gone:
            return ServiceError(499, "client_disconnected", f"{what}: the client closed the connection")
        return ServiceError(503, "deadline_exceeded",
                            f"{what}: over the server's time budget of {self.seconds:g} s "
                            f"(GRADSERVE_REQUEST_TIMEOUT_SECONDS); ask for less work and try again")


@asynccontextmanager
async def watched(request: Request, seconds: float) -> AsyncIterator[Budget]:
    """Gives a Budget whose `client_gone` turns True if the client disconnects meanwhile.

    Only for a request whose body has been read: what `receive` gives then is the disconnect.
    """
    budget = Budget(seconds)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        budget.client_gone = True

    watcher = asyncio.create_task(watch())
    try:
        yield budget
    finally:
        watcher.cancel()
