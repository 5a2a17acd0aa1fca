"""A job queue on a Redis stream with a consumer group, and the one work loop every job kind runs.

A job stays in the group's pending list until it is acknowledged, which happens only after its work
is durable. A worker that dies leaves its jobs pending; after ``claim_idle`` seconds without a sign of
life another worker takes them over (XAUTOCLAIM). A live worker on a long job keeps it by touching it
(``hold``), which fails once another worker has taken the job over.

No job is tried for ever. Redis counts each delivery of an entry (XPENDING's times-delivered: the
first read, then every takeover), and that count is the job's attempts: a handler that raises,
whatever the exception, leaves the job pending to be taken over again after ``claim_idle``, and a
worker that dies on it leaves it the same way. Once a job has had ``max_attempts`` deliveries and its
handler raises again (or it is delivered once more after a worker died on its last), it is
dead-lettered (``dead_letter``, one Lua step): written to its kind's dead-letter stream with the
cause, acknowledged, and its task ended ``failed`` with the error ``job_dead_lettered``. One log line
says so, with the cause. ``replay`` queues a dead letter again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..domain.task import Status
from ..observability import logs
from ..persistence import keys, scripts
from ..persistence.store import now_iso
from . import worker

log = logging.getLogger("wanhook.jobs")

DEFAULT_MAX_ATTEMPTS = 5
CAUSE_MAX = 500  # characters of an exception's text kept in a dead letter and a task's error


@dataclass(frozen=True)
class Kind:
    """A job stream: its consumer group, its dead letters, and the task state its jobs work on (a task
    still in it when its job is dead-lettered ends failed)."""

    name: str
    stream: str
    group: str
    dead: str
    works_on: str


DOWNLOAD = Kind("download", keys.DOWNLOAD_JOBS, keys.DOWNLOAD_GROUP, keys.DOWNLOAD_DEAD, Status.DOWNLOADING.value)
FAILURE = Kind("failure", keys.FAILURE_JOBS, keys.FAILURE_GROUP, keys.FAILURE_DEAD, Status.SUBMITTED.value)
# Callback deliveries are scheduled in a sorted set of their own (callbacks.py), not a stream; their dead
# letters share the format and the replay of the others.
CALLBACK = Kind("callback", keys.CALLBACKS_DUE, "", keys.CALLBACK_DEAD, "")
KINDS = {kind.name: kind for kind in (DOWNLOAD, FAILURE, CALLBACK)}


@dataclass(frozen=True)
class Job:
    id: str
    task_id: str
    deliveries: int = 1  # times Redis has handed the entry out, this time included (its attempts)


def cause(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line, bounded, without secrets (``logs.redact``)."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return logs.redact(text)[:CAUSE_MAX]


class JobQueue:
    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        claim_idle: float,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        kind: Kind | None = None,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle * 1000)
        self.max_attempts = max(1, max_attempts)
        self.kind = kind or next(
            (known for known in KINDS.values() if known.stream == stream),
            Kind(stream.rsplit(":", 1)[-1], stream, group, stream + ":dead", ""),
        )
        self._hold = redis.register_script(scripts.HOLD_JOB)
        self._dead_letter = redis.register_script(scripts.DEAD_LETTER_JOB)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def next(self, count: int, block: float) -> list[Job]:
        """Jobs abandoned by dead workers first, then new ones (waiting up to ``block`` seconds)."""
        _, claimed, *_ = await self.redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms, start_id="0-0", count=count
        )
        taken = [_job(entry_id, fields) for entry_id, fields in claimed if fields]
        if taken:
            jobs = []
            for job, delivered in zip(taken, await self._delivered(taken), strict=True):
                job = Job(job.id, job.task_id, delivered)
                if job.deliveries > self.max_attempts:
                    # Its last worker died on it (or stopped mid-job) as many times as it may be tried.
                    await self.dead_letter(job, f"delivered {job.deliveries} times without being finished")
                else:
                    jobs.append(job)
            return jobs
        # RESP2 (the protocol wanhook speaks) answers [[stream, [(id, fields), ...]]], or None when nothing came.
        reply = cast(
            list[Any] | None,
            await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=max(1, int(block * 1000))
            ),
        )
        return [_job(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    async def hold(self, job: Job) -> bool:
        """Reset the job's idle time; False when another worker has taken it over."""
        return bool(await self._hold(keys=[self.stream], args=[self.group, self.consumer, job.id]))

    async def _delivered(self, jobs: list[Job]) -> list[int]:
        """Each job's times-delivered, as the group's pending list counts it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.xpending_range(self.stream, self.group, min=job.id, max=job.id, count=1)
            replies = await pipe.execute()
        return [int(reply[0]["times_delivered"]) if reply else 1 for reply in replies]

    async def dead_letter(self, job: Job, why: str) -> str | None:
        """Give the job up: its dead letter written, the job acknowledged, its task ended (Lua, one step).
        Returns the dead letter's id (``<kind>:<entry id>``), or None when the job is no longer ours."""
        letter = await self._dead_letter(
            keys=scripts.job_streams_keys(self.stream, self.kind.dead),
            args=[
                self.group,
                self.consumer,
                job.id,
                self.kind.name,
                job.task_id,
                self.kind.works_on,
                job.deliveries,
                why,
                now_iso(),
            ],
        )
        if not letter:
            return None
        name = f"{self.kind.name}:{letter.decode() if isinstance(letter, bytes) else letter}"
        log.error(
            "%s job of task %s dead-lettered as %s after %d attempts: %s",
            self.kind.name,
            job.task_id,
            name,
            job.deliveries,
            why,
        )
        return name

    async def failed(self, job: Job, exc: BaseException, handler_log: logging.Logger) -> None:
        """A handler raised: one attempt spent. Within the attempts the job stays pending, taken over
        again after ``claim_idle``; at the last it is dead-lettered."""
        await self.redis.hincrby(keys.COUNTERS, f"job_failures|kind={self.kind.name}", 1)
        if job.deliveries >= self.max_attempts:
            await self.dead_letter(job, cause(exc))
            return
        handler_log.error(
            "%s job for task %s failed (attempt %d of %d); it is tried again after %.0f s",
            self.kind.name,
            job.task_id,
            job.deliveries,
            self.max_attempts,
            self.claim_idle_ms / 1000,
            exc_info=exc,
        )

    async def ack(self, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, job.id)
            pipe.xdel(self.stream, job.id)
            await pipe.execute()

    async def depth(self) -> int:
        return int(await self.redis.xlen(self.stream))


async def work(
    queue: JobQueue,
    handle: Callable[[Job], Awaitable[None]],
    stop: asyncio.Event,
    concurrency: int,
    log: logging.Logger,
) -> None:
    """Run ``handle`` on the queue's jobs, ``concurrency`` at a time, until ``stop`` is set.

    A job whose handler raises, whatever the exception, has spent an attempt (``JobQueue.failed``):
    it stays pending, to be taken over again after ``claim_idle``, or is dead-lettered at the last.
    Redis going away pauses the loop instead of ending it (``worker.run_forever``).
    """
    limit = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def guarded(job: Job) -> None:
        logs.task_id.set(job.task_id)  # this coroutine runs in its own task: the id stays with the job
        try:
            await handle(job)
        except Exception as exc:
            try:
                await queue.failed(job, exc, log)
            except RedisError as lost:
                # Counted all the same: Redis counts the next delivery, and the attempts stay bounded.
                log.error(
                    "job for task %s failed (%s) and Redis is unavailable (%s); it stays pending",
                    job.task_id,
                    cause(exc),
                    cause(lost),
                )
        finally:
            limit.release()

    ready = False

    async def step() -> None:
        nonlocal ready
        await limit.acquire()  # a free slot before taking a job
        try:
            if not ready:
                await queue.ensure_group()
                ready = True
            jobs = await queue.next(count=1, block=1.0)
        except BaseException:
            limit.release()
            raise
        if not jobs:
            limit.release()
            return
        task = asyncio.create_task(guarded(jobs[0]))
        running.add(task)
        task.add_done_callback(running.discard)

    await worker.run_forever(step, stop, log=log)
    await asyncio.gather(*running, return_exceptions=True)


async def sleep_until_woken(redis: Redis, wake_key: str, timeout: float, stopping: asyncio.Future[Any]) -> bool:
    """Block on a wake-up list for at most ``timeout`` seconds; False when ``stopping`` came first.

    A wait under a second is a quota freeing at a computed moment (the rate window sliding): it is
    slept here, because Redis times out a BLPOP only on its own tick (10 Hz by default), late by up
    to a tenth of a second each time."""
    if timeout < 1.0:
        await asyncio.wait({stopping}, timeout=max(timeout, 0.001))
        return not stopping.done()
    woken = asyncio.ensure_future(redis.blpop([wake_key], timeout=timeout))
    await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not woken.done():
        woken.cancel()  # redis-py drops the connection of a cancelled command
        return False
    woken.result()
    return True


def _job(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str], deliveries: int = 1) -> Job:
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    task = fields.get(b"task") or fields.get("task") or b""
    return Job(entry, task.decode() if isinstance(task, bytes) else task, deliveries)
