"""uvicorn's httptools protocol, with a deadline on each request's head.

uvicorn closes an idle keep-alive connection, but not one that opened and never sent a
complete request head (request line and headers), nor one that stops halfway through it: a
few hundred such connections hold a server's sockets forever. This protocol closes a
connection whose head is not complete `header_timeout` seconds after the connection opened,
or after the response before it.
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol dropping connections whose request head is late; see the module."""

    header_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

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
