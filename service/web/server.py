"""uvicorn as wanhook runs it: an answer leaves as soon as it is written, and a stop does not wait for
streams that could run for minutes.

uvicorn sends a response's head and its body in two writes. With Nagle's algorithm on, the body waits
for the peer's delayed ACK of the head: up to 40 ms on Linux. asyncio's own event loop turns Nagle off
only on sockets whose protocol number says TCP, and a listening socket made with ``socket.socket()``
(as the emulator and the demo make theirs, to learn their port before serving) says 0, as do the
connections it accepts. In the benchmarks that was a 40 ms tail on the emulator's DashScope reads
(p99 of push to first byte: 55 ms, 15 ms without it). Setting TCP_NODELAY on every accepted
connection, whatever the loop, takes it away.

A stopping uvicorn lets each response finish, and an event stream (``GET /v1/tasks/{id}/events``)
finishes only when its task ends: a server with a follower would not stop for minutes. A response of
unknown length still streaming when the stop comes is ended there (its body closed well-formed, the
app told its client has gone), and the client resumes with Last-Event-ID on another server.
Responses of known length (a video) are let finish.

A connection holds a file descriptor and some memory until it closes, and uvicorn waits for a request's
headers for ever: a peer that opens connections and sends half a header (or nothing) would keep them
all. Each connection therefore has a deadline for its request's headers (``WANHOOK_HEADER_TIMEOUT_SECONDS``,
counted from the connection's start, then from the first byte of each further request on it), and past
``WANHOOK_MAX_CONNECTIONS`` open connections a new one is closed as soon as it is accepted. uvicorn's
own ``limit_concurrency`` answers 503 only once a request's headers have arrived, so it cannot stop
connections that never send them. The cap is above the cap on event streams (``WANHOOK_MAX_STREAMS``),
so that streams alone cannot take every connection from the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_SECONDS = 10.0
# A request's head (its request line and header lines) at most: nginx's default buffers hold 32 KiB, and
# Apache's LimitRequestFields is 100. httptools has no limit of its own: it gathers a header of any size.
MAX_HEADER_BYTES = 32 << 10
MAX_HEADERS = 100
# A connection closed after an answer is dropped this long after its FIN at most (sooner when the peer closes
# too), and what the peer sends meanwhile is read and thrown away up to LINGER_DISCARD_BYTES.
LINGER_SECONDS = 1.0
LINGER_DISCARD_BYTES = 64 << 10

log = logging.getLogger("wanhook.server")


class _Refusals:
    """Connections refused past the cap, logged at most once a minute: a flood must not flood the log too."""

    def __init__(self) -> None:
        self.count = 0
        self.logged_at = float("-inf")

    def note(self, cap: int) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= 60:
            log.warning("%d connection(s) refused: %d are open (WANHOOK_MAX_CONNECTIONS)", self.count, cap)
            self.count, self.logged_at = 0, now


_refusals = _Refusals()


class _LingeringTransport:
    """The transport uvicorn is handed: every ``close()`` (uvicorn's after a ``Connection: close`` answer, a
    400, a keep-alive timeout; wanhook's after a refusal) becomes the protocol's lingering close.

    A socket closed with bytes the peer sent and nobody read is reset by the kernel at once, and the reset
    can reach the peer before it has read the answer, which it then never sees: a 408 or a 413 refused while
    the client still sends its body was lost that way. RFC 9112 §9.6 asks a server to close in stages for
    this reason: the answer's end marked by a FIN, the peer's further bytes read, the socket closed when the
    peer closes too or a moment later. Everything else is the asyncio transport's own."""

    def __init__(self, transport: asyncio.Transport, protocol: HttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.linger()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with wanhook's limits.

    What it does at the asyncio level (TCP_NODELAY, the cap on open connections, which it counts
    itself in ``open_connections``) needs nothing of uvicorn's. Three things need uvicorn's own protocol,
    for uvicorn offers no public hook for them: the header deadline (httptools' ``on_message_begin``
    and ``on_headers_complete`` callbacks), the end of a stream at a stop (``shutdown`` and the
    response cycle's fields), and ``Connection: close`` on an answer given before its body ended (the
    protocol's ``app``). docs/development.md ("uvicorn's internals") says why; ``test_server`` checks the
    uvicorn version against the range ``pyproject.toml`` allows and that these names are there.
    """

    def __init__(
        self,
        *args: Any,
        header_timeout: float | None = HEADER_TIMEOUT_SECONDS,
        max_connections: int | None = None,
        open_connections: set[asyncio.Protocol] | None = None,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._in_head = True  # bytes received now belong to a request's head
        self._refused = False  # answered before its request ended: what the peer sends is not parsed
        self.lingering = False  # closing in stages (linger): the answer's FIN sent, the drop armed
        self._discarded = 0
        self._drop: asyncio.TimerHandle | None = None
        self._socket_transport: asyncio.Transport  # the asyncio transport itself, set by connection_made
        self._head_bytes = 0
        self._head_lines = 0
        self._tail = b""  # the last bytes of the head so far: its end may straddle two reads
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.open_connections = open_connections if open_connections is not None else set()
        self.header_deadline: asyncio.TimerHandle | None = None
        self.app = self._closing_unread(self.app)

    def _closing_unread(self, app: Any) -> Any:
        """``app`` whose answers given while the request's body is still coming say ``Connection: close``: the
        connection is let go after them (``on_response_complete``), and a client told so does not send its
        next request on it. Every route inherits it, the push included."""

        async def closing_unread(scope: Any, receive: Any, send: Any) -> None:
            async def send_closing(message: Any) -> None:
                if message["type"] == "http.response.start" and not self._in_head and not self._refused:
                    headers = list(message.get("headers", ()))
                    if not any(name.lower() == b"connection" for name, _ in headers):
                        message = {**message, "headers": [*headers, (b"connection", b"close")]}
                await send(message)

            await app(scope, receive, send_closing)

        return closing_unread

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP (a Unix socket): nothing to turn off
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(cast(asyncio.Transport, _LingeringTransport(transport, self)))
        self._socket_transport = transport
        self.open_connections.add(self)
        if self.max_connections is not None and len(self.open_connections) > self.max_connections:
            _refusals.note(self.max_connections)
            transport.close()
            return
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_connections.discard(self)
        self._cancel_header_deadline()
        if self._drop is not None:
            self._drop.cancel()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Armed if not already: the first request's deadline runs from the connection's start, so
        # sending its first byte late does not buy more time.
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._head_lines, self._tail = True, 0, 0, b""  # the next request's
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Answered before the request's body ended (a route that reads none, a 413 or 408 refusal): the rest
        of the body would only be thrown away, and each byte of it would keep the connection alive for ever.
        So the connection is let go as a refused head's is: every route inherits it."""
        if not self._in_head and not self._refused:
            self._let_go()
            return
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        """Counts a head's bytes and lines before the parser sees them, so that no head past the limits is
        gathered: 431 and the connection closed, nothing more read. Every route inherits the bound."""
        if self._refused:
            # Answered: nothing after it reaches the parser. While lingering, some is read (so that the peer's
            # FIN is seen and the socket let go at once); past LINGER_DISCARD_BYTES reading stops, and the
            # drop comes at its time.
            self._discarded += len(data)
            if self._discarded > LINGER_DISCARD_BYTES:
                self._socket_transport.pause_reading()
            return
        if self._in_head:
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            head = window[len(self._tail) : (end + 4 if end >= 0 else len(window))]
            self._head_bytes += len(head)
            self._head_lines += head.count(b"\n")
            self._tail = window[-3:]
            if self._head_bytes > self.max_header_bytes or self._head_lines > self.max_headers + 2:
                self._refuse_head()
                return
        super().data_received(data)

    def _refuse_head(self) -> None:
        transport = self._socket_transport
        if transport.is_closing() or self.lingering:
            return
        limits = f"{self.max_header_bytes} bytes and {self.max_headers} header fields"
        body = (
            '{"error":{"code":"request_header_fields_too_large","message":"the request\'s head is over '
            + limits
            + '"}}'
        ).encode()
        transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self._let_go()

    def _let_go(self) -> None:
        """Answered before the request ended: nothing more is parsed, and the connection closes in stages."""
        self._in_head, self._refused = False, True
        self.linger()

    def linger(self) -> None:
        """Closes in stages (see _LingeringTransport): the answer's end marked by a FIN, the peer's bytes
        thrown away, the socket dropped when the peer closes its side (asyncio closes it on the EOF) or after
        LINGER_SECONDS, whichever comes first."""
        transport = self._socket_transport
        if self.lingering or transport.is_closing():
            return
        self.lingering, self._refused = True, True
        self._cancel_header_deadline()
        idle = self._in_head and not self._head_bytes  # between requests: nothing sent that was not read
        if idle or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._drop = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._drop_connection)

    def _drop_connection(self) -> None:
        transport = self._socket_transport
        # An answer still being sent (the peer reads slowly) is let finish, as a plain close would.
        if transport.get_write_buffer_size():
            transport.close()
        else:
            transport.abort()

    def _arm_header_deadline(self) -> None:
        if self.header_timeout is not None and self.header_deadline is None:
            self.header_deadline = asyncio.get_running_loop().call_later(
                self.header_timeout, self._header_deadline_passed
            )

    def _cancel_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _header_deadline_passed(self) -> None:
        self.header_deadline = None
        transport = self._socket_transport
        if not transport.is_closing():
            transport.close()  # nothing was answered: nothing to let the peer read first

    def shutdown(self) -> None:
        cycle = self.cycle
        # getattr: these are uvicorn's own fields; should a release rename them, a stop waits as before.
        streaming = (
            cycle is not None
            and getattr(cycle, "response_started", False)
            and not getattr(cycle, "response_complete", True)
            and getattr(cycle, "chunked_encoding", False)
            and hasattr(cycle, "message_event")
        )
        if streaming:
            # A response of unknown length (an event stream) is still going: end its body well-formed,
            # drop whatever the app would still send, wake its wait for the client's disconnect, close.
            self.transport.write(b"0\r\n\r\n")
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.close()
            return
        super().shutdown()


def raise_descriptor_limit(needed: int) -> None:
    """Let the process open ``needed`` files (within the hard limit): systemd's default soft limit, 1024,
    is below the connection cap, and accepting past it fails."""
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < needed:
        log.warning(
            "this process may open %d files, fewer than WANHOOK_MAX_CONNECTIONS needs (%d): raise its "
            "hard limit (LimitNOFILE= in systemd, ulimit -n)",
            target,
            needed,
        )


def protocol(
    header_timeout: float | None = HEADER_TIMEOUT_SECONDS,
    max_connections: int | None = None,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_headers: int = MAX_HEADERS,
) -> Any:
    """wanhook's HTTP protocol with these limits, as uvicorn's ``http`` option (a partial: it pickles, for
    ``workers``, each worker process counting its own connections)."""
    return functools.partial(
        HttpProtocol,
        header_timeout=header_timeout,
        max_connections=max_connections,
        open_connections=set(),
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
    )


def config(
    app: Any,
    *,
    header_timeout: float | None = HEADER_TIMEOUT_SECONDS,
    max_connections: int | None = None,
    **options: Any,
) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` with wanhook's HTTP protocol."""
    return uvicorn.Config(app, http=protocol(header_timeout, max_connections), **options)


def run(
    app: Any,
    *,
    header_timeout: float | None = HEADER_TIMEOUT_SECONDS,
    max_connections: int | None = None,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_headers: int = MAX_HEADERS,
    **options: Any,
) -> None:
    """``uvicorn.run`` with wanhook's HTTP protocol (``app`` may be an import string, for ``workers``)."""
    uvicorn.run(app, http=protocol(header_timeout, max_connections, max_header_bytes, max_headers), **options)


class EmbeddedServer(uvicorn.Server):
    """A server run inside a program that handles the signals itself (the demo owns Ctrl-C)."""

    def install_signal_handlers(self) -> None:
        pass
