"""Outbound requests connect only to public addresses, and to the very address that was checked."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wanhook.service.core.errors import InvalidField
from wanhook.service.domain import addresses
from wanhook.service.domain.validation import check_callback
from wanhook.service.outbound import egress as outbound
from wanhook.service.web.responses import status_of


class Recording(httpcore.AsyncNetworkBackend):
    """Stands in for the network: records where it was asked to connect."""

    def __init__(self) -> None:
        self.connected: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
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
    ("64:ff9b::7f00:1", True),
    ("64:ff9b::a9fe:a9fe", True),
    ("64:ff9b::10.0.0.1", True),
    ("64:ff9b::808:808", False),
    # NAT64, the local-use prefix (RFC 8215): where the IPv4 address sits is the operator's choice; refused whole.
    ("64:ff9b:1::7f00:1", True),
    ("64:ff9b:1:808:8:800::", True),
    ("64:ff9b:1::808:808", True),
    # 6to4 (RFC 3056): bits 16 to 48.
    ("2002:7f00:1::1", True),
    ("2002:a9fe:a9fe::1", True),
    ("2002:c0a8:101::1", True),
    ("2002:808:808::1", False),
    # Teredo (RFC 4380): the server, and the client under its obfuscation (here 127.0.0.1 and 8.8.8.8).
    ("2001:0:808:808:0:0:80ff:fffe", True),
    ("2001:0:808:808:0:0:f7f7:f7f7", True),
    # IPv4-compatible (RFC 4291, section 2.5.5.1) and IPv4-translated (RFC 2765).
    ("::127.0.0.1", True),
    ("::169.254.169.254", True),
    ("::10.1.2.3", True),
    ("::8.8.8.8", False),
    ("::ffff:0:7f00:1", True),
    ("::ffff:0:808:808", False),
    # Mapped, and plain addresses, as before.
    ("::ffff:127.0.0.1", True),
    ("::ffff:8.8.8.8", False),
    ("::1", True),
    ("::", True),
    ("2606:4700:4700::1111", False),
    ("fe80::1%eth0", True),
    ("127.0.0.1", True),
    ("8.8.8.8", False),
    # IANA's special-purpose registries, beyond what Python's is_global knows: site-local (RFC 3879), the
    # 2024 documentation prefix (RFC 9637), SRv6 SIDs (RFC 9602), the 6to4 relay anycast (RFC 7526).
    ("fec0::1", True),
    ("feff:ffff::1", True),
    ("3fff::1", True),
    ("5f00::1", True),
    ("192.88.99.1", True),
    ("::ffff:192.88.99.1", True),
    # And what is_global already refuses, each range of the registries once.
    ("0.1.2.3", True),
    ("10.0.0.1", True),
    ("100.64.0.1", True),
    ("169.254.169.254", True),
    ("172.16.0.1", True),
    ("192.0.0.1", True),
    ("192.0.2.1", True),
    ("192.168.1.1", True),
    ("198.18.0.1", True),
    ("198.51.100.1", True),
    ("203.0.113.1", True),
    ("240.0.0.1", True),
    ("255.255.255.255", True),
    ("224.0.0.1", True),
    ("100::1", True),
    ("2001:2::1", True),
    ("2001:db8::1", True),
    ("2001:20::1", True),
    ("fc00::1", True),
    ("ff02::1", True),
    ("ff0e::1", True),
    ("2a00:1450:4001::1", False),
]


@pytest.mark.parametrize(("address", "refused"), EMBEDDED)
def test_ipv4_inside_ipv6_is_checked(address: str, refused: bool) -> None:
    assert addresses.not_public(address) is refused


def test_the_embedded_ipv4_addresses() -> None:
    def embedded(address: str) -> list[str]:
        return [str(ip) for ip in addresses.embedded_ipv4(ipaddress.IPv6Address(address))]

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


# PinnedTransport: httpx's transport interface over httpcore's pool and the pinned backend.


def certificate(directory: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context whose certificate, for ``name``, is signed by a CA of its own, and a client context
    trusting that CA alone."""
    now = datetime.now(UTC)

    Key = ec.EllipticCurvePrivateKey

    def issue(
        subject: x509.Name, issuer: x509.Name, key: Key, signer: Key, *extensions: tuple[x509.ExtensionType, bool]
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wanhook test CA")])
    ca = issue(ca_name, ca_name, ca_key, ca_key, (x509.BasicConstraints(ca=True, path_length=None), True))
    leaf = issue(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
        ca_name,
        key,
        ca_key,
        (x509.SubjectAlternativeName([x509.DNSName(name)]), False),
    )
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "leaf.pem", directory / "key.pem")
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


class ToLoopback(httpcore.AsyncNetworkBackend):
    """Stands in for the route to a public address: records it, and connects to the loopback server instead."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected: list[str] = []
        self.real = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        return await self.real.connect_tcp("127.0.0.1", self.port, timeout)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def serve_once(answer: bytes, context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, list[bytes]]:
    """A loopback server answering every request with ``answer``; the list gets each request's head."""
    heads: list[bytes] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the client gave up (a certificate it refused)
        finally:
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=context), heads


async def videos_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Server, list[bytes], ssl.SSLContext, list[str | None]]:
    """A TLS server for videos.example on loopback, answering "video"; the name resolves to a public address
    (93.184.216.34). Returns the server, the request heads it got, a client context trusting it, and the
    server names (SNI) clients asked for."""

    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    server_context, trusted = certificate(tmp_path, "videos.example")
    names: list[str | None] = []
    server_context.sni_callback = lambda _socket, name, _context: names.append(name)  # type: ignore[assignment]
    server, heads = await serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nvideo", server_context)
    return server, heads, trusted, names


async def test_https_through_the_pinned_transport_verifies_the_urls_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, heads, trusted, names = await videos_example(tmp_path, monkeypatch)
    network = ToLoopback(server.sockets[0].getsockname()[1])
    async with server:
        transport = outbound.PinnedTransport(ssl_context=trusted, backend=network)
        async with outbound.client(transport=transport, timeout=10) as client:
            answer = await client.get("https://videos.example/v.mp4?sig=1")
        assert answer.status_code == 200 and answer.text == "video"
        # Connected to the address that was checked, speaking TLS to the URL's host, which the certificate names.
        assert network.connected == ["93.184.216.34"] and names == ["videos.example"]
        assert heads[0].startswith(b"GET /v.mp4?sig=1 HTTP/1.1\r\n") and b"\r\nHost: videos.example\r\n" in heads[0]

        # A certificate for another name is refused, as httpx's own transport refuses it.
        other, _ = certificate(tmp_path, "elsewhere.example")
        impostor, _ = await serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", other)
        async with impostor:
            transport = outbound.PinnedTransport(
                ssl_context=trusted, backend=ToLoopback(impostor.sockets[0].getsockname()[1])
            )
            async with outbound.client(transport=transport, timeout=10) as client:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.get("https://videos.example/v.mp4")


async def test_the_pinned_transport_raises_httpx_errors() -> None:
    def make(**options: Any) -> httpx.AsyncClient:
        return outbound.client(transport=outbound.PinnedTransport(allow_private=True), **options)

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: refused
        async with make(timeout=10) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")

    silent_writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent_writers.append(writer)  # reads the request and never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        async with make(timeout=httpx.Timeout(10, read=0.2)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
        for writer in silent_writers:
            writer.close()


async def test_a_client_with_a_mock_transport_still_follows_no_redirect() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/"})

    async with outbound.client(transport=httpx.MockTransport(handler), timeout=10) as client:
        assert (await client.get("https://videos.example/v.mp4")).status_code == 302
    assert seen == ["https://videos.example/v.mp4"]
