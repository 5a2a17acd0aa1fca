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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not TCP (a Unix socket): nothing to turn off
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def shutdown(self) -> None:
        cycle = self.cycle
        # getattr: these are uvicorn's own fields; should a release rename them, a stop waits as before.
        streaming = (cycle is not None and getattr(cycle, "response_started", False)
                     and not getattr(cycle, "response_complete", True) and getattr(cycle, "chunked_encoding", False)
                     and hasattr(cycle, "message_event"))
        if streaming:
            # A response of unknown length (an event stream) is still going: end its body well-formed,
            # drop whatever the app would still send, wake its wait for the client's disconnect, close.
            self.transport.write(b"0\r\n\r\n")
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.close()
            return
        super().shutdown()


def config(app: Any, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` with wanhook's HTTP protocol."""
    return uvicorn.Config(app, http=HttpProtocol, **options)


def run(app: Any, **options: Any) -> None:
    """``uvicorn.run`` with wanhook's HTTP protocol (``app`` may be an import string, for ``workers``)."""
    uvicorn.run(app, http=HttpProtocol, **options)
