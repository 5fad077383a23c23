"""uvicorn's httptools protocol, with a deadline on each request's head and a longer read-ahead
of request bodies.

uvicorn closes an idle keep-alive connection, but not one that opened and never sent a
complete request head (request line and headers), nor one that stops halfway through it: a
few hundred such connections hold a server's sockets forever. This protocol closes a
connection whose head is not complete `header_timeout` seconds after the connection opened,
or after the response before it.

uvicorn also stops reading a connection as soon as 64 KiB of its body wait for the app, and
reads on once the app takes them: a 25 MB body (a train_steps stream, a big binary tensor)
crosses in 400 pauses and resumes. Reading ahead up to BODY_READ_AHEAD halves the time such a
body takes over loopback (23.6 -> 11.6 ms for 25 MB here).
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

BODY_READ_AHEAD = 1024 * 1024  # bytes of a request body buffered before the connection is paused


class HeadTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol dropping connections whose request head is late, reading bodies further
    ahead; see the module."""

    header_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        # uvicorn's own on_body, with BODY_READ_AHEAD for its 64 KiB HIGH_WATER_LIMIT
        if (self.parser.should_upgrade() and self._should_upgrade()) or self.cycle.response_complete:
            return
        self.cycle.body += body
        if len(self.cycle.body) > BODY_READ_AHEAD:
            self.flow.pause_reading()
        self.cycle.message_event.set()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its head is in already: uvicorn starts it right away
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm_head_timer()  # for the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.logger.debug("closing a connection whose request head did not arrive in %g s", self.header_timeout)
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeadTimeoutProtocol]:
    """Gives the protocol class for uvicorn's `http=` option with this head deadline."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"header_timeout": seconds})
