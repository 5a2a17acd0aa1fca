"""Many open event streams and half-open connections against real processes: the webhook, task creation
and the streams themselves keep working, within the caps."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from wanhook.service.cli import client as wanhook_client
from wanhook.service.core.errors import TooManyStreams
from wanhook.service.flows.feed import BLOCK_MS, ChangeFeed, Ended
from wanhook.service.web import server

from ..conftest import TOKEN, Stack
from ..support import ROOT, Process, free_port, wait_for, wanhook

TOKENS = ("stream-token-a", "stream-token-b", "stream-token-c")
MODEL_KEY = "apikey:v1:aigc:video-generation:video-synthesis:wan2.2-t2v-plus"


def event(ds_id: str, status: str = "SUCCEEDED") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "acs.dashscope",
        "type": "dashscope:System:AsyncTaskFinish",
        "data": {"task_id": ds_id, "task_status": status, "user_api_unique_key": MODEL_KEY},
    }


async def timed_push(http: httpx.AsyncClient, body: dict[str, Any]) -> float:
    """Push one event as EventBridge would; the seconds until wanhook answered it (200, or the test fails)."""
    started = time.monotonic()
    answer = await http.post("/v1/events/dashscope", json=body, headers={"x-eventbridge-signature-token": TOKEN})
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@dataclass
class Opened:
    """One raw HTTP stream request: its answer, then (when 200) the events read from it."""

    path: str
    status: int
    headers: dict[str, str]
    body: Any = None
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None


async def open_stream(port: int, path: str, token: str) -> Opened:
    """A GET on a raw socket (no HTTP client per stream: cheap enough for thousands)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    opened = Opened(path, int(lines[0].split(" ")[1]), headers, writer=writer)
    if opened.status != 200:
        opened.body = json.loads(await reader.readexactly(int(headers["content-length"])))
        writer.close()
        return opened
    asyncio.get_running_loop().create_task(_read_events(reader, opened))
    return opened


async def _read_events(reader: asyncio.StreamReader, opened: Opened) -> None:
    """Chunked transfer encoding, then Server-Sent Events, until the body's last chunk."""
    text = ""
    try:
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                break
            text += (await reader.readexactly(size + 2))[:-2].decode()
            while "\n\n" in text:
                block, text = text.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
                if "event" in fields:
                    opened.events.append((time.monotonic(), fields["event"], json.loads(fields["data"])))
    except (OSError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        opened.ended.set()


async def open_many(port: int, requests: list[tuple[str, str]]) -> list[Opened]:
    return list(await asyncio.gather(*(open_stream(port, path, token) for path, token in requests)))


def blocked_readers(stack: Stack) -> int:
    """Redis clients waiting in an XREAD (the change feed's readers; the download workers use XREADGROUP)."""
    return sum(1 for client in stack.redis.client_list() if client.get("cmd") == "xread")


@pytest.fixture
def capped(tmp_path: Path, redis_url: str, processes: list[Process]) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(
        {
            "WANHOOK_API_TOKENS": ",".join(TOKENS),
            "WANHOOK_MAX_STREAMS": "1200",
            "WANHOOK_MAX_STREAMS_PER_TOKEN": "500",
            "WANHOOK_RATE_LIMIT": "100000",
            "WANHOOK_REDIS_MAX_CONNECTIONS": "40",
            "WANHOOK_LOG_LEVEL": "WARNING",
            "WANHOOK_LIMITS": "wan2.2-t2v-plus=50/100",
        }
    )  # all of its tasks submitted at once
    stack.start()
    # The tasks wait as "submitted" until this test's pushes.
    stack.emulator.configure(drop_events=True, enforce_limits=False)
    return stack


def test_1500_streams_within_the_caps_leave_the_webhook_and_creates_alone(capped: Stack) -> None:
    stack = capped
    clients = {
        token: httpx.Client(base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {token}"})
        for token in TOKENS
    }
    tasks: dict[str, list[str]] = {}
    for token, client in clients.items():
        tasks[token] = [
            client.post("/v1/tasks", json={"prompt": f"stream {n}", "size": "832*480"}).json()["id"] for n in range(8)
        ]
    ds_ids: dict[str, str] = {}
    for token, ids in tasks.items():
        for task_id in ids:
            ds_ids[task_id] = wait_for(
                lambda t=task_id, c=clients[token]: (
                    (task := c.get(f"/v1/tasks/{t}").json())["status"] == "submitted" and task["dashscope"]["task_id"]
                ),
                30,
                interval=0.1,
                what=f"task {task_id} submitted",
            )

    def requests(token: str, count: int) -> list[tuple[str, str]]:
        ids = tasks[token]
        # Half follow one task each, half a pair of them through the dashboard's stream.
        return [
            (
                f"/v1/tasks/{ids[n % len(ids)]}/events"
                if n % 2
                else f"/v1/stream?tasks={ids[n % len(ids)]},{ids[(n + 1) % len(ids)]}",
                token,
            )
            for n in range(count)
        ]

    async def scenario() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:

            async def push(body: dict[str, Any]) -> float:
                return await timed_push(http, body)

            for _ in range(20):  # the first requests load the scripts and warm the pool
                await push(event(uuid.uuid4().hex))
            quiet = [await push(event(uuid.uuid4().hex)) for _ in range(100)]

            started = time.monotonic()
            # Two tokens over their cap of 500, then a third past the process's cap of 1200.
            opened = await open_many(stack.port, requests(TOKENS[0], 600) + requests(TOKENS[1], 600))
            opened += await open_many(stack.port, requests(TOKENS[2], 300))
            opening = time.monotonic() - started
            statuses = [item.status for item in opened]
            assert statuses.count(200) == 1200
            assert [item.status for item in opened[:1200]].count(429) == 200
            assert statuses[1200:].count(503) == 100
            for item in opened:
                if item.status != 200:
                    assert int(item.headers["retry-after"]) > 0
                    assert item.body["error"]["code"] == "too_many_streams", item.body
            streams = [item for item in opened if item.status == 200]
            # Each stream has had its first event (the current state) before the load starts.
            deadline = time.monotonic() + 30
            while not all(item.events for item in streams):
                assert time.monotonic() < deadline, "not every stream got its first event"
                await asyncio.sleep(0.05)

            # With the streams open: events (for tasks wanhook does not know, that change no stream) and
            # task creation, side by side.
            loaded = [await push(event(uuid.uuid4().hex)) for _ in range(200)]
            creates = []
            for n in range(10):
                begun = time.monotonic()
                answer = await http.post(
                    "/v1/tasks",
                    json={"prompt": f"while streaming {n}", "size": "832*480"},
                    headers={"Authorization": f"Bearer {TOKENS[0]}"},
                )
                assert answer.status_code == 202, answer.text
                creates.append(time.monotonic() - begun)
            clients_open = stack.redis.info("clients")["connected_clients"]
            readers = blocked_readers(stack)

            # Every task completes: each change reaches every stream that follows it.
            applied_at: dict[str, float] = {}
            for token_tasks in tasks.values():
                for task_id in token_tasks:
                    applied_at[task_id] = time.monotonic()
                    await push(event(ds_ids[task_id]))
            await asyncio.wait_for(asyncio.gather(*(item.ended.wait() for item in streams)), 120)
            return {
                "quiet": quiet,
                "loaded": loaded,
                "creates": creates,
                "opening": opening,
                "streams": streams,
                "clients": clients_open,
                "readers": readers,
                "applied_at": applied_at,
            }

    result = asyncio.run(scenario())
    fan_out = []
    for item in result["streams"]:
        followed = {data["id"] for _, name, data in item.events[:2] if name.startswith("task.")}
        ready = {data["id"] for _, name, data in item.events if name == "task.ready"}
        assert ready >= followed and ready, item.events
        assert item.events[-1][1] == ("end" if item.path.startswith("/v1/stream") else "task.ready")
        fan_out += [
            at - result["applied_at"][data["id"]] for at, name, data in item.events if name == "task.downloading"
        ]
    held = len(result["streams"])
    print(
        f"\nasked for 1,500 streams, {held:,} held, in {result['opening']:.1f}s; webhook p99 before them "
        f"{p99(result['quiet']) * 1000:.0f} ms, with them open "
        f"{p99(result['loaded']) * 1000:.0f} ms "
        f"(max {max(result['loaded']) * 1000:.0f} ms); create max {max(result['creates']) * 1000:.0f} ms; "
        f"Redis clients {result['clients']}, readers blocked in XREAD {result['readers']}; "
        f"event to stream p50 {sorted(fan_out)[len(fan_out) // 2] * 1000:.0f} ms, p99 {p99(fan_out) * 1000:.0f} ms "
        f"over {len(fan_out)} deliveries"
    )
    assert max(result["loaded"]) < 2.0 and max(result["creates"]) < 2.0
    # The shared pool (40 here), the feed's one reader, this test's client: not one per stream.
    assert result["clients"] < 60
    assert result["readers"] == 1
    metrics = stack.http.get("/metrics").text
    assert '\nwanhook_streams_refused_total{cap="token"} 200.0\n' in metrics
    assert '\nwanhook_streams_refused_total{cap="process"} 100.0\n' in metrics
    assert p99(fan_out) < 5.0
    for client in clients.values():
        client.close()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]  # the writer kept: one collected closes its socket


async def _half_open(port: int, count: int) -> list[Connection]:
    async def one() -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Never-Finished: ")
        return reader, writer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _closed_within(connections: list[Connection], seconds: float) -> list[bool]:
    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), seconds) == b""
        except TimeoutError:
            return False
        except OSError:
            return True

    return list(await asyncio.gather(*(closed(reader) for reader, _ in connections)))


def test_serve_refuses_a_connection_cap_streams_alone_could_fill(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "WANHOOK_MAX_STREAMS": "500",
        "WANHOOK_MAX_CONNECTIONS": "500",
        "WANHOOK_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        wanhook("serve", "--port", str(free_port())), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "WANHOOK_MAX_CONNECTIONS (500) must be above WANHOOK_MAX_STREAMS (500)" in done.stderr


def test_half_sent_headers_are_closed_at_the_deadline_and_the_cap_refuses_more(stack: Stack) -> None:
    deadline = 3.0
    guarded = stack.serve(
        None,
        "--no-workers",
        env={
            "WANHOOK_HEADER_TIMEOUT_SECONDS": str(deadline),
            "WANHOOK_MAX_CONNECTIONS": "300",
            "WANHOOK_MAX_STREAMS": "100",
        },
    )

    async def scenario() -> None:
        started = time.monotonic()
        held = await _half_open(guarded.port, 249)
        # The deadline applies to every request on a connection, not only its first.
        reader, writer = await asyncio.open_connection("127.0.0.1", guarded.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(
            next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        held.append((reader, writer))
        # Below the cap, serve still answers while the half-sent headers wait.
        async with httpx.AsyncClient(base_url=guarded.url, timeout=5) as http:
            for _ in range(5):
                assert (await http.get("/healthz")).status_code == 200
        # Past the cap (300), new connections are closed as they come, long before the deadline.
        extra = await _half_open(guarded.port, 100)
        refused = await _closed_within(extra, 0.5)
        assert 45 <= sum(refused) <= 55, sum(refused)
        assert time.monotonic() - started < deadline - 0.5, "too slow a machine to tell the deadline from the cap"
        assert not any(await _closed_within(held, 0.01))
        # At the deadline every half-sent header is closed, and serve answers again.
        assert all(await _closed_within(held + extra, deadline + 3.0))
        took = time.monotonic() - started
        assert deadline - 0.5 < took < deadline + 3.0, took
        async with httpx.AsyncClient(base_url=guarded.url, timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200
        print(
            f"\n250 half-sent headers closed {took:.1f}s after they began (deadline {deadline}s); "
            f"{sum(refused)} connections past the cap refused at once"
        )

    asyncio.run(scenario())


async def _feed(url: str, **options: Any) -> tuple[ChangeFeed, redis.asyncio.Redis]:
    shared = redis.asyncio.Redis.from_url(url)
    return ChangeFeed(lambda: _client(url), shared, uuid.uuid4().hex, **options), shared


async def _stop(feed: ChangeFeed) -> None:
    started = time.monotonic()
    await feed.aclose()
    assert time.monotonic() - started < BLOCK_MS / 2000, "the stop waited for a blocked read"
    assert not feed.running


async def _client(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, socket_timeout=30.0)  # as connection.connect makes the feed's


def test_feed_orders_late_joiners_and_drops_a_subscriber_that_lags(redis_url: str) -> None:
    async def scenario() -> None:
        feed, shared = await _feed(redis_url, max_streams=3, max_streams_per_token=2, capacity=5)
        key = "{wanhook}:changes:t1"
        first_id = (await shared.xadd(key, {"status": "queued"})).decode()
        first = feed.subscribe("a")
        await first.follow({"t1": first_id})
        second_id = (await shared.xadd(key, {"status": "submitted"})).decode()
        got = await first.next(5)
        assert [change.entry_id for change in got] == [second_id]
        # A late follower from the stream's start gets the whole history, in order; the first one no
        # entry twice.
        late = feed.subscribe("a")
        await late.follow({"t1": "0-0"})
        third_id = (await shared.xadd(key, {"status": "downloading"})).decode()
        received: list[str] = []
        while len(received) < 3:
            received += [change.entry_id for change in await late.next(5)]
        assert received == [first_id, second_id, third_id]
        assert [change.entry_id for change in await first.next(5)] == [third_id]
        # Followed from where the blocked read already reads: no wake-up needed, and nothing missed.
        reader = feed.readers["t1"]
        deadline = time.monotonic() + 5
        while not reader.reading:
            assert time.monotonic() < deadline, "the reader did not block again"
            await asyncio.sleep(0.01)
        wakes = await shared.xrange(reader.wake_key)
        twin = feed.subscribe("b")
        await twin.follow({"t1": third_id})
        fourth_id = (await shared.xadd(key, {"status": "downloading"})).decode()
        assert [change.entry_id for change in await twin.next(5)] == [fourth_id]
        assert await shared.xrange(reader.wake_key) == wakes
        twin.close()

        with pytest.raises(TooManyStreams) as full:
            feed.subscribe("a")
        assert full.value.per_token
        third = feed.subscribe("b")
        with pytest.raises(TooManyStreams) as full:
            feed.subscribe("c")
        assert not full.value.per_token
        # A subscriber that does not take its changes is dropped past its capacity, and its slot freed.
        first.close()
        for n in range(8):
            await shared.xadd(key, {"status": "downloading", "bytes": n})
        deadline = time.monotonic() + 5
        while not late.dropped:
            assert time.monotonic() < deadline, "the lagging subscriber was not dropped"
            await asyncio.sleep(0.02)
        with pytest.raises(Ended):
            await late.next(1)
        others = [feed.subscribe("c"), feed.subscribe("c")]  # the process's cap is 3: both slots are free again
        for subscription in [*others, third]:
            subscription.close()
        assert not feed.followers and feed.connections == 1
        await _stop(feed)
        await shared.aclose()

    asyncio.run(scenario())


def test_feed_spreads_many_tasks_over_a_few_readers(redis_url: str) -> None:
    async def scenario() -> None:
        feed, shared = await _feed(redis_url, max_streams=100, max_streams_per_token=None, keys_per_reader=10)
        subscriptions = [feed.subscribe("") for _ in range(5)]
        for n, subscription in enumerate(subscriptions):
            await subscription.follow({f"task-{n * 5 + k}": "0-0" for k in range(5)})
        assert feed.connections == 3
        started = time.monotonic()
        await shared.xadd("{wanhook}:changes:task-23", {"status": "ready"})
        got = await subscriptions[4].next(5)
        assert [change.task_id for change in got] == ["task-23"]
        assert time.monotonic() - started < BLOCK_MS / 2000  # woken by the change, not the read's timeout
        for subscription in subscriptions[2:]:
            subscription.close()
        assert feed.connections == 1
        await _stop(feed)
        await shared.aclose()

    asyncio.run(scenario())


def test_the_client_waits_out_a_refused_stream() -> None:
    """``wanhook submit --wait`` follows the task's stream: a stream refused at the cap is retried as
    Retry-After says, not given up."""
    asked: list[float] = []

    async def events(request: Request) -> Response:
        asked.append(time.monotonic())
        if len(asked) == 1:
            return JSONResponse(
                {"error": {"code": "too_many_streams", "message": "full"}},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return PlainTextResponse(
            'id: 1-0\nevent: task.ready\ndata: {"id": "t", "status": "ready"}\n\n', media_type="text/event-stream"
        )

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/v1/tasks/{task_id}/events", events)])
    instance = uvicorn.Server(server.config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: instance.started, 10, what="the server")
        states = [task["status"] for task in wanhook_client.follow(f"http://127.0.0.1:{sock.getsockname()[1]}", "t")]
    finally:
        instance.should_exit = True
        thread.join(10)
    assert states == ["ready"]
    assert len(asked) == 2 and asked[1] - asked[0] >= 1.0
