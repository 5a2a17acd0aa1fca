"""Outbound requests connect only to public addresses, and to the very address that was checked."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpcore
import pytest

from service import outbound


class Recording(httpcore.AsyncNetworkBackend):
    """Stands in for the network: records where it was asked to connect."""

    def __init__(self) -> None:
        self.connected: list[str] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        return httpcore.AsyncMockStream([])

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    # A rebinding DNS server: a public address first, an inward one to whoever asks next.
    answers = iter(["93.184.216.34", "127.0.0.1"])
    lookups: list[str] = []

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    network = Recording()
    backend = outbound.PinnedBackend(backend=network)
    await backend.connect_tcp("videos.example", 443)
    assert network.connected == ["93.184.216.34"] and lookups == ["videos.example"]
    with pytest.raises(outbound.DestinationRefused, match="non-public"):
        await backend.connect_tcp("videos.example", 443)  # the next lookup answers inwards: refused
    assert network.connected == ["93.184.216.34"]


async def test_a_name_resolving_inwards_is_refused_as_it_connects() -> None:
    accepted: list[object] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(65536)
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with outbound.client(timeout=10) as client:
            with pytest.raises(outbound.DestinationRefused, match="non-public"):
                await client.get(f"http://localhost:{port}/")
        assert accepted == []  # refused before any connection was made
        async with outbound.client(explicit_hosts=["localhost"], timeout=10) as client:
            assert (await client.get(f"http://localhost:{port}/")).status_code == 204  # named literally: allowed
        async with outbound.client(explicit_hosts=["local*"], timeout=10) as client:
            with pytest.raises(outbound.DestinationRefused):  # a pattern is no opt-in
                await client.get(f"http://localhost:{port}/")
        async with outbound.client(allow_private=True, timeout=10) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 204
    assert len(accepted) == 2
