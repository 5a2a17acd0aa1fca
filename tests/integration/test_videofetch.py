"""A video's GET (service/outbound/videofetch.py) against real servers on loopback: pinned to the checked address, TLS
to the URL's host, its failures named, bodies of every framing read whole into the caller's buffer, and a read
blocked on a silent host woken by ``interrupt``."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from wanhook.service.outbound import egress as outbound
from wanhook.service.outbound import videofetch
from wanhook.service.outbound.videofetch import FetchFailed, open_video

from .test_outbound import certificate, serve_once, videos_example

MIB = 1 << 20


def to_loopback(port: int, connected: list[str]) -> videofetch.Connect:
    """Stands in for the route to a public address: records it, and connects to the loopback server instead."""

    def connect(address: str, _port: int, timeout: float) -> socket.socket:
        connected.append(address)
        return socket.create_connection(("127.0.0.1", port), timeout)

    return connect


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def read_all(response: videofetch.VideoResponse, size: int = MIB) -> tuple[bytes, list[int]]:
    """The whole body, and what each ``readinto`` returned."""

    def run() -> tuple[bytes, list[int]]:
        buffer = bytearray(size)
        received, counts = bytearray(), []
        while count := response.readinto(memoryview(buffer)):
            counts.append(count)
            received += buffer[:count]
        return bytes(received), counts

    try:
        return await asyncio.to_thread(run)
    finally:
        response.close()


async def test_https_goes_to_the_checked_address_and_verifies_the_urls_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, heads, trusted, names = await videos_example(tmp_path, monkeypatch)
    connected: list[str] = []
    async with server:
        response = await open_video(
            "https://videos.example/v.mp4?sig=1",
            {"Range": "bytes=0-"},
            ssl_context=trusted,
            connect=to_loopback(port_of(server), connected),
        )
        assert response.status_code == 200 and response.headers.get("Content-Length") == "5"
        assert await read_all(response) == (b"video", [5])
        # Connected to the address that was checked, speaking TLS to the URL's host, which the certificate names.
        assert connected == ["93.184.216.34"] and names == ["videos.example"]
        head = heads[0]
        assert head.startswith(b"GET /v.mp4?sig=1 HTTP/1.1\r\n") and b"\r\nHost: videos.example\r\n" in head
        assert b"\r\nRange: bytes=0-\r\n" in head and b"\r\nAccept-Encoding: identity\r\n" in head

        # A certificate for another name is refused.
        other, _ = certificate(tmp_path, "elsewhere.example")
        impostor, _ = await serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", other)
        async with impostor:
            with pytest.raises(FetchFailed, match="SSLCertVerificationError"):
                await open_video(
                    "https://videos.example/v.mp4", {}, ssl_context=trusted, connect=to_loopback(port_of(impostor), [])
                )


async def test_a_host_resolving_inwards_is_refused_before_any_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    connected: list[str] = []
    with pytest.raises(outbound.DestinationRefused, match="10.0.0.7"):
        await open_video("https://videos.example/v.mp4", {}, connect=to_loopback(1, connected))
    assert connected == []
    # A host named literally in WANHOOK_VIDEO_HOSTS is the operator's opt-in: it is not resolved here.
    server, _ = await serve_once(b"HTTP/1.1 204 No Content\r\n\r\n")
    async with server:
        response = await open_video(
            "http://videos.example/v.mp4",
            {},
            explicit_hosts=["videos.example"],
            connect=to_loopback(port_of(server), connected),
        )
        assert response.status_code == 204 and connected == ["videos.example"]
        response.close()


async def test_failures_to_reach_or_hear_from_the_host_are_fetch_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, not listening: refused
        with pytest.raises(FetchFailed, match="ConnectionRefusedError"):
            await open_video(f"http://127.0.0.1:{unused.getsockname()[1]}/", {}, allow_private=True)

    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # reads the request and never answers

    monkeypatch.setattr(videofetch, "READ_TIMEOUT", 0.2)
    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        with pytest.raises(FetchFailed, match="TimeoutError"):
            await open_video(f"http://127.0.0.1:{port_of(server)}/", {}, allow_private=True)
        garbage, _ = await serve_once(b"SPDY/9 nonsense\r\n\r\n")
        async with garbage:
            with pytest.raises(FetchFailed, match="BadStatusLine"):
                await open_video(f"http://127.0.0.1:{port_of(garbage)}/", {}, allow_private=True)
        for writer in writers:
            writer.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close"])
async def test_every_framing_of_a_body_fills_the_buffer_whole(framing: str) -> None:
    """A read returns a whole buffer however the body is cut on the wire (fewer trips through Python per GiB);
    the last one returns the rest, then 0."""
    body = bytes(range(256)) * 4096 * 5 + b"tail"  # 5 MiB and 4 bytes
    if framing == "content-length":
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        pieces = [body[i : i + 100_000] for i in range(0, len(body), 100_000)]
        answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        answer += b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    else:
        answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body
    server, _ = await serve_once(answer)
    async with server:
        response = await open_video(f"http://127.0.0.1:{port_of(server)}/", {}, allow_private=True)
        received, counts = await read_all(response)
    assert received == body
    assert counts == [MIB] * 5 + [4]


async def test_interrupt_wakes_a_read_blocked_on_a_silent_host() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nfirst bytes")
        writers.append(writer)  # and then nothing

    server = await asyncio.start_server(stalls, "127.0.0.1", 0)
    async with server:
        response = await open_video(f"http://127.0.0.1:{port_of(server)}/", {}, allow_private=True)
        buffer = bytearray(MIB)
        reading = asyncio.ensure_future(asyncio.to_thread(response.readinto, memoryview(buffer)))
        done, _ = await asyncio.wait([reading], timeout=0.3)
        assert not done  # blocked: the host sends nothing more (and READ_TIMEOUT is 30 s)
        response.interrupt()
        done, _ = await asyncio.wait([reading], timeout=10)
        assert done
        # It returns what it had (the body's end, as the connection is shut), or fails: never a whole buffer.
        error = reading.exception()
        assert isinstance(error, FetchFailed) if error is not None else reading.result() == len(b"first bytes")
        response.close()
        for writer in writers:
            writer.close()


async def test_a_cancelled_request_closes_its_connection_when_it_is_answered() -> None:
    """The thread cannot be stopped; its connection is closed once it returns instead of being leaked."""
    requested, answered, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        requested.set()
        await answered.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
        await writer.drain()
        if not await reader.read(1):  # the client closed its end
            closed.set()
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    async with server:
        opening = asyncio.create_task(open_video(f"http://127.0.0.1:{port_of(server)}/", {}, allow_private=True))
        await asyncio.wait_for(requested.wait(), 10)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        answered.set()
        await asyncio.wait_for(closed.wait(), 10)
