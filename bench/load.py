"""Load generators: wrk for the highest rate a server sustains, and an open-loop paced generator for its
latency at a set rate (wrk cannot pace; a closed loop would hide queueing by slowing down with the server).

The paced generator speaks HTTP/1.1 over raw asyncio streams with keep-alive, so it costs far less CPU
than an HTTP client library; each request's latency is counted from the moment the schedule said it
was due, not from when it was sent, so a server that falls behind is charged for the wait.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .common import TOKEN, percentile

HERE = Path(__file__).resolve().parent
PATH = "/v1/events/dashscope"
T = TypeVar("T")


@dataclass
class Load:
    tool: str
    rate: float  # responses per second
    answered: int
    errors: int = 0  # non-2xx answers and broken connections
    latencies_ms: list[float] = field(default_factory=list)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process during the load (ingest.py)

    def __post_init__(self) -> None:
        if self.latencies_ms:
            self.p50_ms, self.p99_ms = percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)


def event_body(n: int, tasks: int, prefix: str = "bench") -> bytes:
    """The n-th completion CloudEvent: a fresh event id, for DashScope task ds-<n mod tasks> (as ingest.lua)."""
    return (
        f'{{"specversion":"1.0","id":"{prefix}-{n}","source":"acs.dashscope",'
        f'"type":"dashscope:System:AsyncTaskFinish","time":"2026-11-25T01:45:16.969Z",'
        f'"data":{{"task_id":"ds-{n % tasks}","task_status":"SUCCEEDED","contain_result":false,'
        f'"user_api_unique_key":"apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus"}}}}'
    ).encode()


def http_request(url: str, body: bytes) -> bytes:
    host = urlsplit(url).netloc
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"x-eventbridge-signature-token: {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(url: str, duration: float, connections: int, tasks: int) -> Load:
    """wrk -t2 with ingest.lua: as many requests as the server answers, each a distinct event."""
    args = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(HERE / "ingest.lua"),
        url,
    ]
    env = {**os.environ, "BENCH_TASKS": str(tasks), "BENCH_TOKEN": TOKEN}
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    rate = float(_find(r"Requests/sec:\s+([\d.]+)", out) or 0)
    errors = int(_find(r"Non-2xx or 3xx responses:\s+(\d+)", out) or 0)
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    load = Load("wrk", rate, int(_find(r"(\d+) requests in", out) or 0), errors)
    load.p50_ms = _ms(_find(r"\s50%\s+([\d.]+\w+)", out) or "0us")
    load.p99_ms = _ms(_find(r"\s99%\s+([\d.]+\w+)", out) or "0us")
    return load


def _find(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """Runs on uvloop when it is installed: the generator must not be the bottleneck."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(work)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request, read its whole response; returns the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(head[9:12])


async def _connect(url: str, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    return [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(count)]


async def paced(url: str, requests: Sequence[bytes], rate: float, connections: int = 32) -> Load:
    """Send ``requests`` at ``rate`` per second (open loop) over ``connections`` keep-alive connections."""
    streams = await _connect(url, connections)
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    sent = iter(requests)

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal errors
        while (at := await due.get()) is not None:
            try:
                status = await _exchange(reader, writer, next(sent))
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                return
            latencies.append((time.perf_counter() - at) * 1000)
            errors += status >= 300

    workers = [asyncio.create_task(worker(*pair)) for pair in streams]
    start = time.perf_counter()
    n = 0
    while n < len(requests):
        # Never early (a timer may fire up to a millisecond before its time); late is charged to latency.
        now = time.perf_counter()
        while n < len(requests) and start + n / rate <= now:
            due.put_nowait(start + n / rate)
            n += 1
        await asyncio.sleep(max(0.001, start + n / rate - now))
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    for _, writer in streams:
        writer.close()
    return Load("paced", len(latencies) / elapsed, len(latencies), errors, latencies)


async def saturate(url: str, requests: Sequence[bytes], duration: float, connections: int = 32) -> Load:
    """As many requests as the server answers in ``duration`` (closed loop): the fallback where wrk is missing."""
    streams = await _connect(url, connections)
    latencies: list[float] = []
    errors = 0
    sent = iter(requests)
    end = time.perf_counter() + duration

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < end:
            request = next(sent, None)
            if request is None:
                return
            try:
                status = await _exchange(reader, writer, request)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                return
            latencies.append((time.perf_counter() - now) * 1000)
            errors += status >= 300

    start = time.perf_counter()
    await asyncio.gather(*(worker(*pair) for pair in streams))
    elapsed = time.perf_counter() - start
    for _, writer in streams:
        writer.close()
    return Load("python", len(latencies) / elapsed, len(latencies), errors, latencies)


def highest_rate(url: str, duration: float, connections: int, tasks: int) -> Load:
    """wrk where installed, else the Python generator (which caps lower: it shares the CPU with the server)."""
    if have_wrk():
        return wrk(url, duration, connections, tasks)
    requests = [http_request(url, event_body(n, tasks, "sat")) for n in range(tasks)]
    return run_async(saturate(url, requests, duration, connections))


def at_rate(url: str, rate: float, duration: float, tasks: int, prefix: str) -> Load:
    requests = [http_request(url, event_body(n, tasks, prefix)) for n in range(int(rate * duration))]
    return run_async(paced(url, requests, rate))
