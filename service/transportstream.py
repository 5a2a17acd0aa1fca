"""httpcore's network backend on asyncio's own transports, for the video downloads (``outbound``).

httpcore's default backend reads through anyio's socket stream, which resumes the transport's reading
before each read and pauses it after (two ``epoll_ctl`` calls for each 256 KiB a read returns), so a
GiB costs thousands of system calls and loop turns that receive nothing. Here the transport keeps
reading into a buffer bounded by ``HIGH_WATER`` (reading pauses above it: the sender is held back by
TCP, and memory stays flat), and a read hands over what has arrived, up to ``read_size``, in one piece.
TLS is asyncio's (``loop.start_tls``), with the context and server name httpcore gives, as before.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httpcore

HIGH_WATER = 2 << 20  # bytes received and not yet read before the transport stops reading
LOW_WATER = 512 << 10  # ... and below which it reads again


class _Receiver(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False  # reading paused: HIGH_WATER reached
        self.ended = False  # EOF or the connection lost
        self.error: BaseException | None = None
        self.readable: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None  # set while writing is paused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport's subclasses, but have its methods).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered >= HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake_reader()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def _wake_reader(self) -> None:
        if self.readable is not None and not self.readable.done():
            self.readable.set_result(None)


class TransportStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, receiver: _Receiver, read_size: int) -> None:
        self.transport = transport
        self.receiver = receiver
        self.read_size = read_size

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        receiver = self.receiver
        if not receiver.chunks and not receiver.ended:
            receiver.readable = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await receiver.readable
            except TimeoutError:
                raise httpcore.ReadTimeout("no data within the read timeout") from None
            finally:
                receiver.readable = None
        if not receiver.chunks:
            if receiver.error is not None:
                raise httpcore.ReadError(str(receiver.error) or type(receiver.error).__name__)
            return b""  # the end of the stream
        limit = max(max_bytes, self.read_size)
        data = receiver.chunks.popleft()
        if len(receiver.chunks) and len(data) < limit:
            # What else has arrived goes along, in one piece (one copy, instead of a turn each through h11).
            parts = [data]
            size = len(data)
            while receiver.chunks and size + len(receiver.chunks[0]) <= limit:
                part = receiver.chunks.popleft()
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
        if len(data) > limit:
            data, rest = data[:limit], data[limit:]
            receiver.chunks.appendleft(rest)
        receiver.buffered -= len(data)
        if receiver.paused and receiver.buffered <= LOW_WATER and not self.transport.is_closing():
            receiver.paused = False
            self.transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self.transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self.transport.write(buffer)
        writable = self.receiver.writable
        if writable is not None:
            try:
                async with asyncio.timeout(timeout):
                    await writable
            except TimeoutError:
                raise httpcore.WriteTimeout("the request could not be sent within the write timeout") from None
        if self.receiver.error is not None:
            raise httpcore.WriteError(str(self.receiver.error) or type(self.receiver.error).__name__)

    async def aclose(self) -> None:
        self.transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self.transport, self.receiver, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self.transport.abort()
            raise httpcore.ConnectTimeout("the TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:
            self.transport.abort()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        assert transport is not None
        self.receiver.transport = transport  # start_tls does not call connection_made again
        return TransportStream(transport, self.receiver, self.read_size)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self.transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self.transport.get_extra_info("sockname")
        if info == "server_addr":
            return self.transport.get_extra_info("peername")
        if info == "socket":
            return self.transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle connection with something to read (or closed) is not reused: httpcore drops it.
            return bool(self.receiver.chunks) or self.receiver.ended
        return None


class TransportBackend(httpcore.AsyncNetworkBackend):
    """Connections on asyncio's transports, each read handing over up to ``read_size`` bytes."""

    def __init__(self, read_size: int) -> None:
        self.read_size = read_size

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, receiver = await loop.create_connection(
                    _Receiver, host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return TransportStream(transport, receiver, self.read_size)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
