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
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_SECONDS = 10.0

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


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with wanhook's limits.

    What it does at the asyncio level (TCP_NODELAY, the cap on open connections, which it counts
    itself in ``open_connections``) needs nothing of uvicorn's. Two things need uvicorn's own protocol,
    for uvicorn offers no public hook for them: the header deadline (httptools' ``on_message_begin``
    and ``on_headers_complete`` callbacks) and the end of a stream at a stop (``shutdown`` and the
    response cycle's fields). The README ("uvicorn's internals") says why; ``test_server`` checks the
    uvicorn version against the range ``pyproject.toml`` allows and that these names are there.
    """

    def __init__(
        self,
        *args: Any,
        header_timeout: float | None = HEADER_TIMEOUT_SECONDS,
        max_connections: int | None = None,
        open_connections: set[asyncio.Protocol] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.open_connections = open_connections if open_connections is not None else set()
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP (a Unix socket): nothing to turn off
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self.open_connections.add(self)
        if self.max_connections is not None and len(self.open_connections) > self.max_connections:
            _refusals.note(self.max_connections)
            transport.close()
            return
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_connections.discard(self)
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Armed if not already: the first request's deadline runs from the connection's start, so
        # sending its first byte late does not buy more time.
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()

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
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

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


def protocol(header_timeout: float | None = HEADER_TIMEOUT_SECONDS, max_connections: int | None = None) -> Any:
    """wanhook's HTTP protocol with these limits, as uvicorn's ``http`` option (a partial: it pickles, for
    ``workers``, each worker process counting its own connections)."""
    return functools.partial(
        HttpProtocol, header_timeout=header_timeout, max_connections=max_connections, open_connections=set()
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
    **options: Any,
) -> None:
    """``uvicorn.run`` with wanhook's HTTP protocol (``app`` may be an import string, for ``workers``)."""
    uvicorn.run(app, http=protocol(header_timeout, max_connections), **options)


class EmbeddedServer(uvicorn.Server):
    """A server run inside a program that handles the signals itself (the demo owns Ctrl-C)."""

    def install_signal_handlers(self) -> None:
        pass
