"""A video's GET: one HTTP/1.1 request on a socket of its own, whose body is read on a thread.

A video is the one large body wanhook receives, and it goes to one place: the part file, hashed on the
way (``partwriter.py``). Through httpx, each piece of it travels the event loop, httpcore and h11 (which
copies it twice) before the writer's threads see it; on a GiB over loopback that took about 1.2 CPU
seconds to receive, against 0.3-0.45 s for a thread that reads the socket straight into a few reused
buffers with ``readinto`` (http.client, the standard library's HTTP/1.1, which handles Content-Length,
chunked and close-delimited bodies). So the download opens its request here, on a thread, and the part
writer's receiving thread reads the body.

The connection is pinned as ``outbound.py``'s clients are: the host is resolved once, every address
it resolves to must be public (unless the host is named literally in ``WANHOOK_VIDEO_HOSTS``), and the
socket connects to the address that was checked; TLS runs against the URL's host (SNI and certificate
verification). No redirect is followed (http.client follows none) and no proxy is used.

Requests run on threads started for them, not on the loop's default executor: a host that answers
slowly holds its own thread for its timeouts, never the threads other work shares.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from . import outbound
from .errors import Interrupted

CONNECT_TIMEOUT = 10.0  # seconds to connect (and finish TLS) to one address
READ_TIMEOUT = 30.0  # seconds any read may wait for bytes: the response's head, or the body's next bytes

T = TypeVar("T")
Connect = Callable[[str, int, float], socket.socket]


class FetchFailed(Interrupted):
    """The video host could not be reached, or the request or its answer broke off: worth another attempt."""


class VideoResponse:
    """An answer's status and headers; its body is read with ``readinto`` (blocking: on a thread)."""

    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._connection = connection
        self._response = response
        self.status_code = response.status
        self.headers = response.headers  # case-insensitive ``get``

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with the body's next bytes (whole, unless the body ends); 0 at its end."""
        try:
            return self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchFailed(f"transfer broken: {_name(exc)}") from None

    def interrupt(self) -> None:
        """Make a read blocked on another thread return (short, or failing): the download was stopped."""
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more: nothing is blocked on it

    def close(self) -> None:
        self._response.close()
        self._connection.close()


class _PinnedConnection(http.client.HTTPConnection):
    """http.client's connection to ``host``, made to one of ``addresses`` (checked before), TLS when told."""

    def __init__(
        self,
        host: str,
        port: int,
        addresses: list[str],
        *,
        tls: ssl.SSLContext | None,
        connect: Connect,
    ) -> None:
        super().__init__(host, port, timeout=READ_TIMEOUT)
        self.default_port = 443 if tls is not None else 80  # the Host header carries any other port
        self.addresses = addresses
        self.tls = tls
        self._connect = connect

    def connect(self) -> None:
        failure: OSError | None = None
        for address in self.addresses:
            try:
                sock = self._connect(address, self.port, CONNECT_TIMEOUT)
            except OSError as exc:
                failure = exc
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:
                    sock = self.tls.wrap_socket(sock, server_hostname=self.host)
                sock.settimeout(READ_TIMEOUT)
            except BaseException:
                sock.close()
                raise
            self.sock = sock
            return
        assert failure is not None
        raise failure


def _connect(address: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((address, port), timeout)


async def open_video(
    url: str,
    headers: Mapping[str, str],
    *,
    explicit_hosts: Iterable[str] = (),
    allow_private: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    connect: Connect = _connect,
) -> VideoResponse:
    """Send a GET for ``url`` and read its answer's head. ``DestinationRefused`` when the host resolves
    somewhere wanhook must not go; ``FetchFailed`` when it cannot be reached or its answer is broken.
    ``connect`` makes the TCP connection to a checked address (tests route it to loopback)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    if allow_private or host.lower() in outbound.literal_hosts(explicit_hosts):
        addresses = [host]
    else:
        addresses = await outbound.public_addresses(host, port)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = (ssl_context or ssl.create_default_context()) if tls else None
    connection = _PinnedConnection(host, port, addresses, tls=context, connect=connect)

    def send() -> VideoResponse:
        try:
            connection.request("GET", target, headers=dict(headers))
            return VideoResponse(connection, connection.getresponse())
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise FetchFailed(f"no answer from the video host: {_name(exc)}") from None

    return await on_own_thread(send, VideoResponse.close)


async def on_own_thread(call: Callable[[], T], discard: Callable[[T], object]) -> T:
    """``call()`` on a thread started for it. Cancelled meanwhile, the caller goes at once and what the call
    returns later is given to ``discard`` (the thread cannot be stopped, but its result is not leaked)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            if error is None:
                discard(result)  # type: ignore[arg-type]
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            if outcome[1] is None:
                discard(outcome[0])  # type: ignore[arg-type]

    threading.Thread(target=run, name="wanhook-video-request", daemon=True).start()
    return await future


def _name(exc: BaseException) -> str:
    """What broke, for the task's error: the exception's kind and, for a certificate, why it was refused."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{type(exc).__name__} ({exc.verify_message or exc.reason})"
    if isinstance(exc, TimeoutError):
        return "TimeoutError (no bytes within the read timeout)"
    return type(exc).__name__
