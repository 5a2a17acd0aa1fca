"""Poison jobs end: every job kind counts its attempts, dead-letters a job at the cap, ends its task, and
a dead letter replays.

Each test runs the real worker loop of its kind (jobs.work for downloads and failure reads, the
Notifier's for callbacks) against a real Redis, with an unexpected exception injected into the job's
handler (a callback's into its transport), and short delays (claim idle 0.2 s) so that the cap comes in
a second or two.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from wanhook.service.config import Settings
from wanhook.service.flows import callbacks
from wanhook.service.flows.download import Downloader
from wanhook.service.flows.failures import FailureReader
from wanhook.service.flows.quota import RateLimiter, ReadLimiter
from wanhook.service.flows.sweeper import Sweeper
from wanhook.service.jobs import deadletters
from wanhook.service.jobs import queue as jobs
from wanhook.service.outbound.dashscope import DashScopeClient
from wanhook.service.persistence import keys
from wanhook.service.persistence.store import TaskStore, now_iso

CLAIM_IDLE = 0.2
CAP = 3
SECRET_URL = "https://videos.example/v.mp4?Expires=1&Signature=s3cr3t"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "condition") -> Any:
    """``check()`` once it is truthy, polled every 50 ms for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def seed(redis: Redis, task_id: str, status: str, **fields: str) -> None:
    """A task in ``status``, in its index, as the scripts keep it."""
    created = str(int(time.time() * 1000))
    await redis.hset(
        keys.TASK + task_id,
        mapping={
            "id": task_id,
            "status": status,
            "created_ms": created,
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "model": "wan2.2-t2v-plus",
            "owner": "",
            "prompt": "a fox",
            "ds_task_id": "ds-" + task_id,
            **fields,
        },
    )
    await redis.zadd(keys.TASKS_BY_STATUS + status, {f"{created}:{task_id}": 0})


def queue(redis: Redis, kind: jobs.Kind, consumer: str = "w1") -> jobs.JobQueue:
    return jobs.JobQueue(redis, kind.stream, kind.group, consumer, claim_idle=CLAIM_IDLE, max_attempts=CAP, kind=kind)


async def task_of(redis: Redis, task_id: str) -> dict[str, str]:
    raw = await redis.hgetall(keys.TASK + task_id)
    return {k.decode(): v.decode() for k, v in raw.items()}


async def counter(redis: Redis, name: str) -> int:
    return int(await redis.hget(keys.COUNTERS, name) or 0)


async def running(loop: Callable[[asyncio.Event], Awaitable[None]]) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(loop(stop))


async def stopped(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


def downloader(redis: Redis, tmp_path: Path) -> Downloader:
    store = TaskStore(redis)
    settings = Settings(data_dir=tmp_path, min_free_bytes=0, claim_idle_seconds=CLAIM_IDLE)
    client = DashScopeClient("sk-test", "http://127.0.0.1:9")
    return Downloader(store, client, queue(redis, jobs.DOWNLOAD), ReadLimiter(RateLimiter(redis), 20), settings)


async def test_a_download_that_raises_is_dead_lettered_at_the_cap_and_replays(redis: Redis, tmp_path: Path) -> None:
    await seed(redis, "t-dl", "downloading")
    await redis.xadd(keys.DOWNLOAD_JOBS, {"task": "t-dl"})
    worker = downloader(redis, tmp_path)
    calls: list[float] = []

    async def poison(task: dict[str, str], lost: asyncio.Event) -> dict[str, Any]:
        calls.append(time.monotonic())
        raise UnicodeEncodeError("ascii", f"GET {SECRET_URL}", 4, 5, "ordinal not in range(128)")

    worker._download = poison  # type: ignore[method-assign]
    stop, loop = await running(worker.run)
    try:
        task = await until(lambda: _status(redis, "t-dl", "failed"), what="the poisoned download's task to end failed")
    finally:
        await stopped(stop, loop)
    assert len(calls) == CAP  # one handler run per delivery, none after the cap
    error = json.loads(task["error"])
    assert error["code"] == "job_dead_lettered" and error["attempts"] == CAP
    assert "UnicodeEncodeError" in error["message"] and "s3cr3t" not in error["message"]
    assert await counter(redis, "job_failures|kind=download") == CAP
    assert await counter(redis, "jobs_dead_lettered|kind=download") == 1
    assert await redis.xlen(keys.DOWNLOAD_JOBS) == 0  # acknowledged and gone: nothing retries it
    (letter,) = await deadletters.listing(redis, "download")
    assert letter["id"] == error["dead_letter"] and letter["task_id"] == "t-dl" and letter["attempts"] == CAP
    assert letter["cause"].startswith("UnicodeEncodeError: ") and "s3cr3t" not in letter["cause"]
    # A late retry cannot move the ended task on (forward-only), nor back.
    assert not await worker.store.transition(
        "t-dl", "ready", video={"path": "x", "bytes": 1, "sha256": "0", "url": "/"}
    )

    answer = await deadletters.replay(redis, letter["id"])
    assert answer["result"] == "replayed"
    reopened = await task_of(redis, "t-dl")
    assert reopened["status"] == "downloading" and "error" not in reopened
    assert await redis.zscore(keys.TASKS_ENDED, "t-dl") is None
    assert await deadletters.listing(redis, "download") == []
    assert (await deadletters.replay(redis, letter["id"]))["result"] == "missing"

    # The replayed job runs again, and this time its download succeeds.
    async def fine(task: dict[str, str], lost: asyncio.Event) -> dict[str, Any]:
        return {
            "path": str(tmp_path / "videos" / "t-dl.mp4"),
            "bytes": 3,
            "sha256": "ab" * 32,
            "url": "/v1/tasks/t-dl/video",
        }

    worker._download = fine  # type: ignore[method-assign]
    stop, loop = await running(worker.run)
    try:
        await until(lambda: _status(redis, "t-dl", "ready"), what="the replayed download to finish")
    finally:
        await stopped(stop, loop)
    assert await redis.xlen(keys.DOWNLOAD_JOBS) == 0


async def test_a_worker_that_dies_on_a_job_every_time_ends_it_too(redis: Redis) -> None:
    """No exception at all: each delivery is taken and never finished (the worker dies); the delivery after
    the cap dead-letters it without running it."""
    await seed(redis, "t-die", "downloading")
    await redis.xadd(keys.DOWNLOAD_JOBS, {"task": "t-die"})
    dying = queue(redis, jobs.DOWNLOAD)
    await dying.ensure_group()
    taken = 0
    deadline = time.monotonic() + 15
    while taken < CAP:  # each worker takes the job and dies
        assert time.monotonic() < deadline, "the job was not handed out again"
        got = await queue(redis, jobs.DOWNLOAD, consumer=f"dying-{taken}").next(count=1, block=0.1)
        if got:
            taken += 1
            assert got[0].deliveries == taken  # Redis' own count, not a guess
        else:
            await asyncio.sleep(0.05)
    survivor = queue(redis, jobs.DOWNLOAD, consumer="survivor")
    await until(lambda: _none_left(survivor), what="the job to be dead-lettered on its next delivery")
    task = await task_of(redis, "t-die")
    assert task["status"] == "failed" and json.loads(task["error"])["code"] == "job_dead_lettered"
    (letter,) = await deadletters.listing(redis, "download")
    assert letter["attempts"] == CAP + 1 and "without being finished" in letter["cause"]


async def _none_left(q: jobs.JobQueue) -> bool:
    await q.next(count=1, block=0.05)
    return await q.depth() == 0


async def _status(redis: Redis, task_id: str, status: str) -> dict[str, str] | None:
    task = await task_of(redis, task_id)
    return task if task.get("status") == status else None


async def test_a_failure_read_that_raises_is_dead_lettered_and_replays(redis: Redis) -> None:
    await seed(redis, "t-fr", "submitted", awaiting_reason=now_iso(), ds_status="FAILED")
    await redis.xadd(keys.FAILURE_JOBS, {"task": "t-fr"})
    store = TaskStore(redis)
    reader = FailureReader(
        store,
        DashScopeClient("sk-test", "http://127.0.0.1:9"),
        queue(redis, jobs.FAILURE),
        ReadLimiter(RateLimiter(redis), 20),
        attempts=3,
    )

    async def poison(task: dict[str, str], lost: asyncio.Event) -> dict[str, str] | None:
        raise KeyError("output")

    reader.reason = poison  # type: ignore[method-assign]
    stop, loop = await running(reader.run)
    try:
        task = await until(lambda: _status(redis, "t-fr", "failed"), what="the failure read's task to end failed")
    finally:
        await stopped(stop, loop)
    error = json.loads(task["error"])
    assert error["code"] == "job_dead_lettered" and "KeyError: 'output'" in error["message"]
    assert await counter(redis, "job_failures|kind=failure") == CAP
    (letter,) = await deadletters.listing(redis, "failure")
    assert (await deadletters.replay(redis, letter["id"]))["result"] == "replayed"
    reopened = await task_of(redis, "t-fr")
    assert reopened["status"] == "submitted" and reopened.get("awaiting_reason")

    async def reads(task: dict[str, str], lost: asyncio.Event) -> dict[str, str] | None:
        return {"code": "DataInspectionFailed", "message": "the prompt was refused"}

    reader.reason = reads  # type: ignore[method-assign]
    stop, loop = await running(reader.run)
    try:
        task = await until(lambda: _status(redis, "t-fr", "failed"), what="the replayed read to record the reason")
    finally:
        await stopped(stop, loop)
    assert json.loads(task["error"])["code"] == "DataInspectionFailed"


class Exploding(httpx.AsyncBaseTransport):
    """An unexpected exception out of the send itself (as a URL httpx cannot put on a request line raises)."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise ValueError(f"cannot send to {SECRET_URL}")


async def test_a_callback_that_raises_counts_its_attempts_and_ends_dead(redis: Redis) -> None:
    callback = json.dumps({"url": "http://127.0.0.1:9/hook", "events": ["task.ready"]})
    await seed(redis, "t-cb", "ready", callback=callback)
    webhook_id = "msg_t-cb_ready"
    delivery = {"event": "task.ready", "status": "pending", "attempts": 0, "created_at": now_iso()}
    await redis.hset(keys.DELIVERIES + "t-cb", webhook_id, json.dumps(delivery))
    await redis.zadd(keys.CALLBACKS_DUE, {webhook_id: 0})
    transport = Exploding()
    secret = await callbacks.secret(redis, None)
    notifier = callbacks.Notifier(
        TaskStore(redis), secret, (0.0,) + (0.05,) * 9, allow_private=True, transport=transport, max_errors=CAP
    )

    async def dead() -> dict[str, Any] | None:
        (shown,) = await callbacks.deliveries(redis, "t-cb")
        return shown if shown["status"] == "dead" else None

    stop, loop = await running(notifier.run)
    try:
        shown = await until(dead, what="the raising delivery to be dead")
    finally:
        await stopped(stop, loop)
        await notifier.aclose()
    assert transport.calls == CAP and shown["attempts"] == CAP and shown["errors"] == CAP
    assert shown["last_outcome"].startswith("error: ValueError") and "s3cr3t" not in shown["last_outcome"]
    assert await redis.zscore(keys.CALLBACKS_DUE, webhook_id) is None  # nothing retries it
    (letter,) = await deadletters.listing(redis, "callback")
    assert letter["job"] == webhook_id and letter["attempts"] == CAP and "ValueError" in letter["cause"]

    assert (await deadletters.replay(redis, letter["id"]))["result"] == "replayed"
    (again,) = await callbacks.deliveries(redis, "t-cb")
    assert again["status"] == "pending" and again["attempts"] == 0 and "errors" not in again
    assert await redis.zscore(keys.CALLBACKS_DUE, webhook_id) is not None
    assert await deadletters.listing(redis, "callback") == []


async def test_the_sweeper_requeues_a_download_without_a_job_then_gives_it_up(redis: Redis) -> None:
    await seed(redis, "t-lost", "downloading")
    store = TaskStore(redis)
    sweeper = Sweeper(
        store,
        DashScopeClient("sk-test", "http://127.0.0.1:9"),
        ReadLimiter(RateLimiter(redis), 20),
        "sweeper",
        after_seconds=900,
        interval_seconds=60,
        slot_lease_seconds=60,
        stuck_after_seconds=0,
        max_requeues=1,
    )
    assert await sweeper.downloads_without_job() == {"marked": 1}
    assert await sweeper.downloads_without_job() == {"requeued": 1}
    ((_, fields),) = await redis.xrange(keys.DOWNLOAD_JOBS)
    assert fields[b"task"] == b"t-lost"
    assert await sweeper.downloads_without_job() == {}  # it has a job now: the job loop bounds it
    await redis.delete(keys.DOWNLOAD_JOBS)  # lost again
    assert await sweeper.downloads_without_job() == {"marked": 1}
    assert await sweeper.downloads_without_job() == {"failed": 1}
    task = await task_of(redis, "t-lost")
    assert task["status"] == "failed" and json.loads(task["error"])["code"] == "job_lost"
