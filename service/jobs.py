"""A job queue on a Redis stream with a consumer group.

A job stays in the group's pending list until it is acknowledged, which happens only after its work
is durable. A worker that dies leaves its jobs pending; after ``claim_idle`` seconds without a sign of
life another worker takes them over (XAUTOCLAIM). A live worker on a long job keeps it by touching it
(``hold``), which fails once another worker has taken the job over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from . import logs, scripts, worker


@dataclass(frozen=True)
class Job:
    id: str
    task_id: str
    deliveries: int = 1


class JobQueue:
    def __init__(self, redis: Redis, stream: str, group: str, consumer: str, *, claim_idle: float) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle * 1000)
        self._hold = redis.register_script(scripts.HOLD_JOB)

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
        jobs = [_job(entry_id, fields, deliveries=2) for entry_id, fields in claimed if fields]
        if jobs:
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

    A job whose handler raises stays pending, to be taken over again after ``claim_idle``. Redis
    going away pauses the loop instead of ending it (``worker.run_forever``).
    """
    limit = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def guarded(job: Job) -> None:
        logs.task_id.set(job.task_id)  # this coroutine runs in its own task: the id stays with the job
        try:
            await handle(job)
        except Exception:
            log.exception("job for task %s failed; it stays pending and will be retried", job.task_id)
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
