"""Hostile video hosts against a video's GET (service/outbound/videofetch.py), through real sockets on loopback: every
framing RFC 9112 §6 says a client must not trust is refused before a byte of its body is read, a drip of the
head gives the request back by its deadline, and URLs that cannot be requested fail at once. Each case names
its outcome: the body's declared length, or the error. The bodies (chunked ones broken every way, lengths
past the size cap and past 2**63, bodies shorter or longer than their length, endless extensions and
trailers) go through a real downloader, Redis and the part writer: each ends ``ready`` with exactly the
declared bytes, or ``failed`` naming the problem, within seconds."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wanhook.service.config import Settings
from wanhook.service.core.pace import MinimumRate
from wanhook.service.flows.download import Downloader
from wanhook.service.flows.quota import RateLimiter, ReadLimiter
from wanhook.service.jobs import queue as jobs
from wanhook.service.outbound.dashscope import DashScopeClient
from wanhook.service.outbound.videofetch import (
    MAX_FIELDS,
    MAX_LINE,
    BadFraming,
    FetchFailed,
    InvalidVideoURL,
    open_video,
    request_target,
)
from wanhook.service.persistence import keys
from wanhook.service.persistence.store import TaskStore

from .test_outbound import serve_once
from .test_poison_jobs import seed, task_of, until

OK = b"HTTP/1.1 200 OK\r\n"

# (case, the answer's head and body, the declared length or the error it must raise)
FRAMINGS: list[tuple[str, bytes, int | None | type[Exception]]] = [
    ("one Content-Length", OK + b"Content-Length: 5\r\n\r\nvideo", 5),
    ("chunked alone", OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nvideo\r\n0\r\n\r\n", None),
    ("close-delimited", OK + b"Connection: close\r\n\r\nvideo", None),
    ("the same length twice (RFC 9110 8.6)", OK + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nvideo", 5),
    ("the same length as a list", OK + b"Content-Length: 5, 5\r\n\r\nvideo", 5),
    ("two lengths that differ", OK + b"Content-Length: 5\r\nContent-Length: 1000\r\n\r\nvideo", BadFraming),
    ("a list of lengths that differ", OK + b"Content-Length: 1000, 5\r\n\r\nvideo", BadFraming),
    ("a length that is not a number", OK + b"Content-Length: 5x\r\n\r\nvideo", FetchFailed),
    ("a negative length", OK + b"Content-Length: -5\r\n\r\nvideo", FetchFailed),
    ("a length with a sign", OK + b"Content-Length: +5\r\n\r\nvideo", FetchFailed),
    (
        "Content-Length and chunked",
        OK + b"Content-Length: 1000\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        BadFraming,
    ),
    (
        "chunked and Content-Length",
        OK + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        BadFraming,
    ),
    ("gzip, not chunked", OK + b"Transfer-Encoding: gzip\r\n\r\nvideo", BadFraming),
    ("chunked not final", OK + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", BadFraming),
    ("chunked twice", OK + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BadFraming),
    ("an unknown coding", OK + b"Transfer-Encoding: identity\r\n\r\nvideo", BadFraming),
    ("101 as the answer", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", BadFraming),
    (
        "103 before the answer",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK + b"Content-Length: 5\r\n\r\nvideo",
        BadFraming,
    ),
    ("100 Continue, then the answer", b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"Content-Length: 5\r\n\r\nvideo", 5),
    ("a head that is not HTTP", b"SSH-2.0-OpenSSH_9.2\r\n\r\n", FetchFailed),
    ("too many header lines", OK + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", FetchFailed),
    ("a header line over 64 KiB", OK + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n", FetchFailed),
]


def connect_to(port: int):  # type: ignore[no-untyped-def]
    def connect(_address: str, _port: int, timeout: float) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout)

    return connect


@pytest.mark.parametrize(("case", "answer", "outcome"), FRAMINGS, ids=[case for case, _, _ in FRAMINGS])
async def test_each_framing_is_read_or_refused_as_rfc_9112_says(
    case: str, answer: bytes, outcome: int | None | type[Exception]
) -> None:
    server, _ = await serve_once(answer)
    port = int(server.sockets[0].getsockname()[1])
    async with server:
        call = open_video("http://127.0.0.1/v.mp4", {}, explicit_hosts=("127.0.0.1",), connect=connect_to(port))
        if isinstance(outcome, type):
            with pytest.raises(outcome):
                (await asyncio.wait_for(call, 10)).close()
        else:
            response = await asyncio.wait_for(call, 10)
            try:
                assert response.length == outcome
            finally:
                response.close()


async def test_a_head_that_drips_gives_the_request_back_by_its_deadline() -> None:
    """One byte a second: every read within the read timeout, the head never whole in time."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in OK + b"X-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    async with server:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match="had not arrived after 1s"):
            await open_video(
                "http://127.0.0.1/v.mp4", {}, explicit_hosts=("127.0.0.1",), connect=connect_to(port), head_deadline=1.0
            )
        assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://v.example/a/b.mp4?Expires=1&Signature=x%2B", "/a/b.mp4?Expires=1&Signature=x%2B"),
        ("https://v.example/视频/b.mp4", "/%E8%A7%86%E9%A2%91/b.mp4"),  # non-ASCII: UTF-8, percent-encoded
        ("https://v.example/b.mp4?name=é", "/b.mp4?name=%C3%A9"),
        ("https://v.example", "/"),
    ],
)
def test_a_url_becomes_its_request_target(url: str, target: str) -> None:
    assert request_target(url)[3] == target


@pytest.mark.parametrize(
    "url",
    [
        "https://v.example/a\nb.mp4",  # a newline would split the request line
        "https://v.example/a b.mp4",
        "https://v.example/a\x00.mp4",
        "https://v.example:99999/b.mp4",  # no such port
        "https://[::1/b.mp4",
        "ftp://v.example/b.mp4",
        "https:///b.mp4",
        "https://vidéo.example/b.mp4",
    ],
)
def test_a_url_that_cannot_be_requested_fails_at_once(url: str) -> None:
    with pytest.raises(InvalidVideoURL):
        request_target(url)


def test_the_minimum_rate_frees_a_slot_from_a_dripping_host() -> None:
    now = [0.0]
    pace = MinimumRate(1000, 10.0, clock=lambda: now[0])
    now[0] = 9.9
    assert pace.keeps_up(0)  # within the first window, any pace
    now[0] = 10.0
    assert pace.keeps_up(10_000)  # 1,000 bytes/s: kept up, a new window begins
    now[0] = 20.0
    assert not pace.keeps_up(10_000 + 9_999)  # one byte short over the window
    assert MinimumRate(0, 10.0, clock=lambda: 1e9).keeps_up(0)  # 0: off


# -- the body: a real downloader (jobs, Redis, the part writer) against a hostile host -------------------------

LIMIT = 1 << 20  # WANHOOK_MAX_VIDEO_BYTES of these downloads
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"
Stream = Callable[[asyncio.StreamWriter], Awaitable[None]]


def endless(prefix: bytes, line: bytes, count: int = 200_000) -> Stream:
    """``prefix``, then ``line`` again and again (``count`` times at most): until the client hangs up."""

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(prefix)
        for _ in range(count):
            writer.write(line)
            await writer.drain()

    return send


# (case, the answer (bytes, or what streams it), the outcome: "ready" with the stored bytes, or the task's
# error code and words of its message)
BODIES: list[tuple[str, bytes | Stream, tuple[str, bytes] | tuple[str, str, str]]] = [
    ("a chunked body", CHUNKED + b"3\r\nvid\r\n2;ext=1\r\neo\r\n0\r\nX-Sum: 1\r\n\r\n", ("ready", b"video")),
    (
        "a trailer section at the head's limits",
        CHUNKED + b"5\r\nvideo\r\n0\r\n" + b"".join(b"X-%03d: 1\r\n" % i for i in range(MAX_FIELDS)) + b"\r\n",
        ("ready", b"video"),
    ),
    ("a body longer than its length", OK + b"Content-Length: 5\r\n\r\nvideo and more", ("ready", b"video")),
    (
        "a length past the size limit",
        OK + b"Content-Length: %d\r\n\r\nvideo" % (LIMIT + 1),
        ("failed", "VideoTooLarge", f"is {LIMIT + 1} bytes"),
    ),
    (
        "a length past 2**63",
        OK + b"Content-Length: %d\r\n\r\nvideo" % (2**63 + 5),
        ("failed", "VideoTooLarge", f"is {2**63 + 5} bytes"),
    ),
    (
        "a body shorter than its length",
        OK + b"Content-Length: 1000\r\n\r\nvideo",
        ("failed", "DownloadFailed", "transfer ended at 5 of 1000 bytes"),
    ),
    (
        "a chunk size that is not hex",
        CHUNKED + b"5g\r\nvideo\r\n0\r\n\r\n",
        ("failed", "DownloadFailed", "chunk-size line that is not hexadecimal digits and CRLF"),
    ),
    (
        "a chunk size with a sign",
        CHUNKED + b"+5\r\nvideo\r\n0\r\n\r\n",
        ("failed", "DownloadFailed", "chunk-size line that is not hexadecimal digits and CRLF"),
    ),
    (
        "a chunk size in spaces",
        CHUNKED + b" 5 \r\nvideo\r\n0\r\n\r\n",
        ("failed", "DownloadFailed", "chunk-size line that is not hexadecimal digits and CRLF"),
    ),
    (
        "a chunk size as Python writes hex",
        CHUNKED + b"0x5\r\nvideo\r\n0\r\n\r\n",
        ("failed", "DownloadFailed", "chunk-size line that is not hexadecimal digits and CRLF"),
    ),
    (
        "a chunk size line ended by a bare LF",
        CHUNKED + b"5\nvideo\r\n0\r\n\r\n",
        ("failed", "DownloadFailed", "chunk-size line that is not hexadecimal digits and CRLF"),
    ),
    (
        "a chunk without its CRLF",
        CHUNKED + b"5\r\nvideoXX0\r\n\r\n",
        ("failed", "DownloadFailed", "chunk not followed by CRLF"),
    ),
    (
        "a chunk longer than its size",
        CHUNKED + b"3\r\nvideo\r\n0\r\n\r\n",
        ("failed", "DownloadFailed", "chunk not followed by CRLF"),
    ),
    (
        "a chunked body cut inside a chunk",
        CHUNKED + b"100\r\nvideo",
        ("failed", "DownloadFailed", "ended inside a chunk"),
    ),
    (
        "a chunked body without its last chunk",
        CHUNKED + b"5\r\nvideo\r\n",
        ("failed", "DownloadFailed", "ended in a chunk size line"),
    ),
    (
        "a chunk extension that never ends",
        endless(CHUNKED + b"5;ext=", b"a" * 4096, count=1024),
        ("failed", "DownloadFailed", f"chunk size line over {MAX_LINE} bytes"),
    ),
    (
        "a trailer section that never ends",
        endless(CHUNKED + b"5\r\nvideo\r\n0\r\n", b"X-More: 1\r\n"),
        ("failed", "DownloadFailed", f"trailer section is over {MAX_FIELDS} fields"),
    ),
    (
        "a trailer section of few, large fields",
        endless(CHUNKED + b"5\r\nvideo\r\n0\r\n", b"X-Big: " + b"a" * 20_000 + b"\r\n", count=1024),
        ("failed", "DownloadFailed", f"or {MAX_LINE} bytes"),
    ),
    (
        "two lengths that differ",
        OK + b"Content-Length: 5\r\nContent-Length: 1000\r\n\r\nvideo",
        ("failed", "DownloadFailed", "Content-Length fields that differ"),
    ),
]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def hostile_host(answer: bytes | Stream) -> asyncio.Server:
    """A loopback video host answering each request with ``answer``, then hanging up."""
    if isinstance(answer, bytes):
        return (await serve_once(answer))[0]

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: what the case is about
        finally:
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0)


@pytest.mark.parametrize(("case", "answer", "outcome"), BODIES, ids=[case for case, _, _ in BODIES])
async def test_a_misframed_body_never_makes_a_task_ready_with_wrong_bytes(
    case: str,
    answer: bytes | Stream,
    outcome: tuple[str, bytes] | tuple[str, str, str],
    redis: Redis,
    tmp_path: Path,
) -> None:
    server = await hostile_host(answer)
    port = int(server.sockets[0].getsockname()[1])
    settings = Settings(
        data_dir=tmp_path,
        min_free_bytes=0,
        video_hosts=("127.0.0.1",),
        max_video_bytes=LIMIT,
        download_attempts=2,
        download_rate_window=10.0,
    )
    queue = jobs.JobQueue(redis, jobs.DOWNLOAD.stream, jobs.DOWNLOAD.group, "w1", claim_idle=5.0, kind=jobs.DOWNLOAD)
    client = DashScopeClient("sk-test", "http://127.0.0.1:9")  # never read: the task has its video URL
    worker = Downloader(TaskStore(redis), client, queue, ReadLimiter(RateLimiter(redis), 20), settings)
    await seed(redis, "t-body", "downloading", video_url=f"http://127.0.0.1:{port}/v.mp4")
    await redis.xadd(keys.DOWNLOAD_JOBS, {"task": "t-body"})
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run(stop))
    started = time.monotonic()
    async with server:
        try:
            task = await until(lambda: _ended(redis, "t-body"), timeout=20, what=f"{case}: the task to end")
        finally:
            stop.set()
            await asyncio.wait_for(loop, 10)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"{case}: {elapsed:.1f} s"  # a bound ended it, not the rate window
    if outcome[0] == "ready":
        assert task["status"] == "ready", task.get("error")
        assert (tmp_path / "videos" / "t-body.mp4").read_bytes() == outcome[1]
    else:
        assert task["status"] == "failed"
        error = json.loads(task["error"])
        assert error["code"] == outcome[1] and outcome[2] in error["message"], error
        assert not list((tmp_path / "videos").glob("t-body*"))  # neither a video nor a part file stays


async def _ended(redis: Redis, task_id: str) -> dict[str, str] | None:
    task = await task_of(redis, task_id)
    return task if task.get("status") in ("ready", "failed", "expired") else None
