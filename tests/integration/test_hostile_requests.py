"""Hostile request senders against a real serve on loopback: a head past its limits is answered 431 and its
connection closed without reading more, whatever the route, and serve's memory stays where it was."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path

import httpx

from ..conftest import Stack

FLOOD_MIB = 64  # small header lines sent, if serve read them all


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


async def flood(port: int, line: bytes, mib: int) -> tuple[bytes, int]:
    """Send a request line and then up to ``mib`` MiB of ``line``s, reading meanwhile; what serve answered and
    how many bytes were sent before it did."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /eventbridge HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    answer = asyncio.ensure_future(reader.read())  # to the end: serve closes after its answer
    sent = 0
    chunk = line * ((64 << 10) // len(line))
    try:
        while sent < mib << 20 and not answer.done():
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 0.5)
            sent += len(chunk)
    except (ConnectionError, TimeoutError):
        pass  # serve reads no more: its buffers are full, or it is gone
    try:
        return await asyncio.wait_for(answer, 5), sent
    finally:
        writer.close()


def test_a_header_flood_gets_431_and_leaves_serve_as_it_was(stack: Stack) -> None:
    guarded = stack.serve(None, "--no-workers", env={"WANHOOK_HEADER_TIMEOUT_SECONDS": "30"})
    assert guarded.proc is not None
    pid = guarded.proc.pid
    before = peak_rss_kib(pid)

    async def scenario() -> list[tuple[bytes, int]]:
        return [
            *await asyncio.gather(*(flood(guarded.port, b"X-A: b\r\n", FLOOD_MIB) for _ in range(3))),
            await flood(guarded.port, b"a" * 1000, FLOOD_MIB),  # one header without end
        ]

    started = time.monotonic()
    for answer, sent in asyncio.run(scenario()):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431"), head[:80]
        assert json.loads(body)["error"]["code"] == "request_header_fields_too_large"
        assert sent < 16 << 20, sent  # refused early, not after reading the flood
    after = peak_rss_kib(pid)
    print(f"\nserve's peak RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after 4 header floods")
    assert after - before < 20 << 10, (before, after)
    assert time.monotonic() - started < 30
    # Too many small fields, well under the byte limit: 431 too. And serve answers the polite at once.
    many = {f"x-{i}": "1" for i in range(150)}
    assert httpx.get(f"{guarded.url}/healthz", headers=many, timeout=5).status_code == 431
    assert httpx.get(f"{guarded.url}/healthz", headers={"x-ok": "a" * 8000}, timeout=5).status_code == 200


def test_heads_split_across_reads_are_counted_once(stack: Stack) -> None:
    """A head under the limits sent a byte at a time, then keep-alive requests on the same connection: each
    answered, none mistaken for a flood (each request's head is counted afresh)."""
    guarded = stack.serve(None, "--no-workers", env={"WANHOOK_MAX_HEADER_BYTES": "2048"})
    # 60 fields (under the 100 allowed), their line ends each in a read of its own.
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(60))
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines + b"X-Pad: " + b"p" * 1000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in request[: 40 + len(lines)]:
            sock.sendall(bytes([byte]))
        sock.sendall(request[40 + len(lines) :])
        received = b""
        for _ in range(5):
            # One whole answer (head and body, by its Content-Length), however the reads split it.
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head, _, received = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:60]
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(received) < length:
                received += sock.recv(65536)
            received = received[length:]
            sock.sendall(request)


def test_no_web_page_can_push_an_event(stack: Stack) -> None:
    """A page's cross-origin POST carries Origin (and Sec-Fetch-Site): the webhook refuses it before its token,
    so a page cannot forge an event even where the local set-up leaves the token open. Nothing is recorded;
    the same push without a browser's headers is."""
    from wanhook.service.persistence import keys

    from .test_deletion import event

    def push(content_type: str = "application/json", **headers: str) -> httpx.Response:
        return stack.http.post(
            "/v1/events/dashscope",
            content=json.dumps(event("ds-forged", "FAILED", event_id=f"forged-{len(headers)}")),
            headers={**headers, "content-type": content_type, "x-eventbridge-signature-token": "eb-token-for-tests"},
        )

    recorded = stack.redis.xlen(keys.EVENT_LOG)
    for headers in ({"origin": "https://evil.example"}, {"sec-fetch-site": "cross-site"}, {"origin": "null"}):
        for content_type in ("text/plain", "application/json"):
            response = push(content_type, **headers)
            assert response.status_code == 403, response.text
            assert response.json()["error"]["code"] == "cross_site_request"
    assert push("text/plain").status_code == 415  # a type a page may send anywhere is not read as an event
    assert stack.redis.xlen(keys.EVENT_LOG) == recorded
    assert push().status_code == 200  # a program's push, the same otherwise
    assert stack.redis.xlen(keys.EVENT_LOG) == recorded + 1


def test_a_body_a_route_never_reads_does_not_hold_the_connection(stack: Stack) -> None:
    """A route that answers without reading the body (a cancel; a 413 by Content-Length) lets the connection
    go after its answer: bytes of the body dripped after it do not keep the connection alive."""
    guarded = stack.serve(None, "--no-workers")
    for head in (
        b"POST /v1/tasks/nosuchtask/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n",
        b"POST /v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", guarded.port), timeout=5) as sock:
            sock.sendall(head + b"{")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(65536)
            assert answer.startswith((b"HTTP/1.1 404", b"HTTP/1.1 413")), answer[:80]
            deadline = time.monotonic() + 10
            closed = False
            while time.monotonic() < deadline and not closed:
                try:
                    sock.sendall(b"x")
                    sock.settimeout(0.2)
                    closed = sock.recv(65536) == b""
                except TimeoutError:
                    continue
                except OSError:  # reset: serve dropped it
                    closed = True
            assert closed, "the connection stayed open while the body dripped"
