"""uvicorn's httptools protocol, with a deadline on each request's head, a longer read-ahead of
request bodies, and large bodies read into one buffer.

uvicorn closes an idle keep-alive connection, but not one that opened and never sent a
complete request head (request line and headers), nor one that stops halfway through it: a
few hundred such connections hold a server's sockets forever. This protocol closes a
connection whose head is not complete `header_timeout` seconds after the connection opened,
or after the response before it.

uvicorn also stops reading a connection as soon as 64 KiB of its body wait for the app, and
reads on once the app takes them: a 25 MB body (a train_steps stream, a big binary tensor)
crosses in 400 pauses and resumes. Reading ahead up to BODY_READ_AHEAD halves the time such a
body takes over loopback (23.6 -> 11.6 ms for 25 MB here).

uvicorn copies a body four times on its way to the app (out of the event loop's read buffer as
bytes, out of those by the parser for each piece of body, into the cycle's bytearray, out of it
as bytes for each receive; and the app joins the pieces). A body of WHOLE_BYTES or more whose
Content-Length is declared, within the server's limit, is instead read into one buffer made to
its size, where the first byte after the JSON part of a binary message
(Inference-Header-Content-Length) is aligned as service/body.py aligns it: each receive hands
out a view of what arrived since, and the scope's `gradserve.body` extension is the whole
buffer, which service/body.py takes as the body without a copy. What the request head's read
brought of the body goes through the parser; the rest is read by a BodyReader straight from the
socket into the buffer (asyncio's buffered protocol: the kernel's copy is the only one), which
then hands the connection back to the HTTP protocol with a parser at the next request's start.

uvicorn writes a response's head (status line and headers) and its body in two writes: over
loopback each write is a trip through the kernel's TCP stack, the receiver's side included, and
wakes the client for a head without its body. A cycle's writes go through a HeldHead, which
holds the head and sends it in one write with the body's first piece (or on its own when no
body write follows: a HEAD request's answer, or a stream whose first piece takes longer than
the event loop's turn).
"""

import asyncio
import weakref

import httptools
import numpy as np
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.tensor_object import HEADER

BODY_READ_AHEAD = 1024 * 1024  # bytes of a request body buffered before the connection is paused
WHOLE_BYTES = 256 * 1024  # bodies this large are read into one buffer (see the module)
JOINED_BYTES = 64 * 1024  # a held head is joined to a body piece up to this size, written beside a larger one
ALIGN = 64  # bytes: any dtype's alignment, and a cache line
BODY_EXTENSION = "gradserve.body"
NO_BODY = memoryview(b"")  # a released cycle's body


def aligned_buffer(size: int, aligned_at: int) -> memoryview:
    """Gives a writable buffer of `size` bytes whose byte `aligned_at` is ALIGN-aligned."""
    buffer = np.empty(size + ALIGN, np.uint8)
    start = -(buffer.ctypes.data + aligned_at) % ALIGN
    return memoryview(buffer)[start:start + size]


class HeldHead:
    """A cycle's transport: the write after `hold()` (the response's head) is held and goes out
    with the next write (the body's first piece), or on its own: at the answer's end or the
    connection's close (a HEAD request's answer writes no body), or at the loop's next turn (a
    streamed answer whose first piece is not ready)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, cycle: RequestResponseCycle):
        # the cycle by a weak reference: one back to the cycle that holds this would make the two a
        # cycle for the garbage collector, and keep a large body's buffer until it runs (the next
        # such body then paged in afresh: a 29 MB upload 17 -> 80 ms)
        self.transport, self.loop, self.cycle = transport, loop, weakref.ref(cycle)
        self.holding, self.head = False, b""

    def __getattr__(self, name: str):
        return getattr(self.transport, name)

    def hold(self) -> None:
        self.holding = True

    def write(self, data: bytes) -> None:
        if self.holding:
            self.holding, self.head = False, data
            self.loop.call_soon(self.flush)
        elif self.head:
            head, self.head = self.head, b""
            if len(data) <= JOINED_BYTES:
                self.transport.write(head + data)
            else:
                self.transport.writelines((head, data))
        else:
            self.transport.write(data)

    def flush(self) -> None:
        self.holding = False
        if self.head:
            head, self.head = self.head, b""
            # as uvicorn's own writes: whenever the connection is not lost, even if it closes (what
            # the transport still takes, it sends: a body written after its head never goes alone)
            cycle = self.cycle()
            if cycle is not None and not cycle.disconnected:
                self.transport.write(head)

    def close(self) -> None:
        self.flush()  # the answer to a HEAD request closing its connection: a head and no body write
        self.transport.close()


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's request cycle, its transport a HeldHead: the head held for the body's first write."""

    transport: HeldHead

    async def send(self, message) -> None:  # type: ignore[override]
        if message["type"] == "http.response.start" and not self.response_started:
            self.transport.hold()
            try:
                await super().send(message)
            finally:
                self.transport.holding = False  # a head refused (a bad header) holds nothing
            return
        await super().send(message)
        self.transport.flush()  # a head still held (a HEAD request's: its body is not written) goes now


class WholeBodyCycle(OneWriteCycle):
    """uvicorn's request cycle for a body read into one buffer: `whole`, `filled` bytes of it
    so far, `given` of them handed to the app."""

    whole: memoryview
    filled = given = 0

    async def send(self, message) -> None:  # type: ignore[override]
        await super().send(message)
        if self.response_complete and self.filled == len(self.whole):
            self.release()

    def release(self) -> None:
        """Drops the cycle's references to its body, once its answer is sent and its body is in:
        the app's views of the body keep what they still use, and the protocol, which keeps its
        last cycle until the connection's next request, keeps nothing of it (a 29 MB upload's
        pages held until the next such body, which then paged in fresh memory: 17 -> 90 ms)."""
        self.whole = NO_BODY
        self.scope.get("extensions", {}).pop(BODY_EXTENSION, None)

    async def receive(self):  # type: ignore[override]
        # uvicorn's own receive, the body a view of the buffer instead of a copy of a bytearray
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.given = self.whole[self.given:self.filled], self.filled
        return {"type": "http.request", "body": body, "more_body": self.more_body}


class BodyReader(asyncio.BufferedProtocol):
    """The connection's protocol while the rest of a WholeBodyCycle's body arrives: the socket
    is read straight into the buffer, and no further than the body's end; the transport's other
    calls go to the HTTP protocol, which gets the connection back once the body is in."""

    def __init__(self, http: "HeadTimeoutProtocol", cycle: WholeBodyCycle):
        self.http, self.cycle = http, cycle

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.cycle.whole[self.cycle.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        cycle = self.cycle
        cycle.filled += nbytes
        cycle.message_event.set()
        if cycle.filled == len(cycle.whole):
            self.http.body_read()

    def eof_received(self) -> bool | None:
        return self.http.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()


class HeadTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol dropping connections whose request head is late, reading bodies further
    ahead and large ones into one buffer; see the module."""

    header_timeout: float = 10.0
    max_body_bytes: int = 64 * 1024 * 1024
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()
        size, aligned_at = self._body_size()
        made = self.cycle is not None and self.cycle.scope is self.scope  # not an upgrade's
        if not made:
            return
        whole = size is not None and WHOLE_BYTES <= size <= self.max_body_bytes
        # its task is made already, but not started: it runs on the same object, of its new class
        self.cycle.__class__ = WholeBodyCycle if whole else OneWriteCycle
        self.cycle.transport = HeldHead(self.transport, self.loop, self.cycle)
        if whole:
            self.cycle.whole = aligned_buffer(size, aligned_at if aligned_at is not None and aligned_at <= size else 0)
            self.scope.setdefault("extensions", {})[BODY_EXTENSION] = self.cycle.whole

    def _body_size(self) -> tuple[int | None, int | None]:
        """Gives the request's Content-Length and Inference-Header-Content-Length (None if absent
        or not a byte count)."""
        found: dict[bytes, int | None] = {b"content-length": None, HEADER.lower().encode(): None}
        for name, value in self.headers:
            if name in found:
                found[name] = int(value) if value.isdigit() and len(value) <= 18 else None
        size, aligned_at = found.values()
        return size, aligned_at

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if isinstance(cycle, WholeBodyCycle) and cycle.filled < len(cycle.whole) and not self.transport.is_closing():
            self.transport.set_protocol(BodyReader(self, cycle))  # the rest of the body, see the module

    def body_read(self) -> None:
        """Takes the connection back from the BodyReader once the body is in: a new parser (the
        old one still counts the body's bytes it did not see) starts at the next request."""
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn sets it
        self.transport.set_protocol(self)
        self.on_message_complete()
        if self.cycle.response_complete:  # answered before its body was in (a 404, say)
            self.cycle.release()

    def on_body(self, body: bytes) -> None:
        # uvicorn's own on_body, with BODY_READ_AHEAD for its 64 KiB HIGH_WATER_LIMIT
        if (self.parser.should_upgrade() and self._should_upgrade()) or self.cycle.response_complete:
            return
        cycle = self.cycle
        if isinstance(cycle, WholeBodyCycle):
            end = cycle.filled + len(body)  # httptools stops at Content-Length: it fits
            cycle.whole[cycle.filled:end] = body
            cycle.filled = end
            buffered = end - cycle.given
        else:
            cycle.body += body
            buffered = len(cycle.body)
        if buffered > BODY_READ_AHEAD:
            self.flow.pause_reading()
        cycle.message_event.set()

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


def with_header_timeout(seconds: float,
                        max_body_bytes: int = HeadTimeoutProtocol.max_body_bytes) -> type[HeadTimeoutProtocol]:
    """Gives the protocol class for uvicorn's `http=` option with this head deadline, reading
    bodies up to `max_body_bytes` (GRADSERVE_MAX_BODY_BYTES) into one buffer."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"header_timeout": seconds,
                                                                "max_body_bytes": max_body_bytes})
