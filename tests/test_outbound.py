"""Outbound requests connect only to public addresses, and to the very address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpcore
import pytest

from wanhook.service import outbound
from wanhook.service.errors import InvalidField
from wanhook.service.validation import check_callback
from wanhook.service.web.responses import status_of


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


# IPv6 forms that carry an IPv4 address: each reaches that address, so an inward one is refused. A public
# one passes where the IPv6 address is itself global (Teredo's 2001::/32 never is).
EMBEDDED = [
    # NAT64, the well-known prefix (RFC 6052): the last 32 bits.
    ("64:ff9b::7f00:1", True), ("64:ff9b::a9fe:a9fe", True), ("64:ff9b::10.0.0.1", True),
    ("64:ff9b::808:808", False),
    # NAT64, the local-use prefix (RFC 8215): where the IPv4 address sits is the operator's choice; refused whole.
    ("64:ff9b:1::7f00:1", True), ("64:ff9b:1:808:8:800::", True), ("64:ff9b:1::808:808", True),
    # 6to4 (RFC 3056): bits 16 to 48.
    ("2002:7f00:1::1", True), ("2002:a9fe:a9fe::1", True), ("2002:c0a8:101::1", True), ("2002:808:808::1", False),
    # Teredo (RFC 4380): the server, and the client under its obfuscation (here 127.0.0.1 and 8.8.8.8).
    ("2001:0:808:808:0:0:80ff:fffe", True), ("2001:0:808:808:0:0:f7f7:f7f7", True),
    # IPv4-compatible (RFC 4291, section 2.5.5.1) and IPv4-translated (RFC 2765).
    ("::127.0.0.1", True), ("::169.254.169.254", True), ("::10.1.2.3", True), ("::8.8.8.8", False),
    ("::ffff:0:7f00:1", True), ("::ffff:0:808:808", False),
    # Mapped, and plain addresses, as before.
    ("::ffff:127.0.0.1", True), ("::ffff:8.8.8.8", False), ("::1", True), ("::", True),
    ("2606:4700:4700::1111", False), ("fe80::1%eth0", True), ("127.0.0.1", True), ("8.8.8.8", False),
]


@pytest.mark.parametrize(("address", "refused"), EMBEDDED)
def test_ipv4_inside_ipv6_is_checked(address: str, refused: bool) -> None:
    assert outbound.not_public(address) is refused


def test_the_embedded_ipv4_addresses() -> None:
    def embedded(address: str) -> list[str]:
        return [str(ip) for ip in outbound.embedded_ipv4(ipaddress.IPv6Address(address))]

    assert embedded("64:ff9b::7f00:1") == ["127.0.0.1"]
    assert embedded("2002:a9fe:a9fe::1") == ["169.254.169.254"]
    assert embedded("2001:0:808:808:0:0:80ff:fffe") == ["8.8.8.8", "127.0.0.1"]
    assert embedded("::10.1.2.3") == ["10.1.2.3"]
    assert embedded("::ffff:10.1.2.3") == ["10.1.2.3"]
    assert embedded("2606:4700:4700::1111") == []


async def test_a_name_resolving_to_a_nat64_form_of_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::7f00:1", port, 0, 0))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    network = Recording()
    with pytest.raises(outbound.DestinationRefused, match="64:ff9b::7f00:1"):
        await outbound.PinnedBackend(backend=network).connect_tcp("videos.example", 443)
    assert network.connected == []


@pytest.mark.parametrize("host", ["[64:ff9b::7f00:1]", "[2002:a9fe:a9fe::1]", "[::127.0.0.1]", "[64:ff9b:1::808:808]"])
def test_a_callback_url_naming_an_inward_ipv4_in_ipv6_is_refused(host: str) -> None:
    with pytest.raises(InvalidField) as refused:
        check_callback({"url": f"https://{host}/hook"}, allow_private=False)
    assert status_of(refused.value) == 422 and refused.value.field == "callback.url"
    assert check_callback({"url": "https://[64:ff9b::808:808]/hook"}, allow_private=False)
