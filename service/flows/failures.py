"""Failure reasons: DashScope's own code and message for a task it reported FAILED.

The completion event says only ``task_status: FAILED``. The reason is in the task itself: a read of
``GET /api/v1/tasks/{task_id}`` answers a failed task with ``output.code`` and ``output.message``
(https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks; the Chinese page,
https://help.aliyun.com/zh/model-studio/manage-asynchronous-tasks, says that output carries the code
and message of the failure). So a FAILED event without them leaves the task ``submitted``, marked
``awaiting_reason``, and queues a job here (``await_reason`` of ``lua/common.lua``). A worker reads the task
once, within the account's query quota, and only then moves it to ``failed`` with DashScope's code and
message: the callback, the event stream and every page show the real reason from the start.

The job is acknowledged only after the task is recorded failed; a worker that dies leaves it to be
taken over. Reads are counted on the task (``reason_reads``) across takeovers and bounded by
``WANHOOK_DOWNLOAD_ATTEMPTS``, like the read after a SUCCEEDED event: a read that fails for good
(DashScope unreachable every time, the task unknown) still ends the task failed, with an error that
says its reason could not be read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from ..core.errors import DashScopeError
from ..domain.task import Status
from ..jobs.queue import Job, JobQueue, work
from ..outbound.dashscope import DashScopeClient, reported_text
from ..persistence import keys
from ..persistence.store import TaskStore
from .quota import ReadLimiter

log = logging.getLogger("wanhook.failures")

NO_REASON = "TaskFailed"
UNREAD = "DashScope reported the task FAILED; its reason could not be read"
# DashScope's answer while it still reports a task it has announced as ended: a read lagging behind the
# event, read again (within the attempts) rather than believed.
LAGGING = ("PENDING", "RUNNING", "SUSPENDED")


class FailureReader:
    def __init__(
        self, store: TaskStore, client: DashScopeClient, queue: JobQueue, reads: ReadLimiter, *, attempts: int
    ) -> None:
        self.store = store
        self.client = client
        self.queue = queue
        self.reads = reads
        self.attempts = max(1, attempts)

    async def run(self, stop: asyncio.Event, concurrency: int = 4) -> None:
        await work(self.queue, self.process, stop, concurrency, log)

    async def process(self, job: Job) -> None:
        task = await self.store.raw(job.task_id)
        if task and task["status"] == Status.SUBMITTED and task.get("awaiting_reason"):
            lost = asyncio.Event()
            keeper = asyncio.create_task(self._keep(job, lost))
            try:
                error = await self.reason(task, lost)
            finally:
                keeper.cancel()
            if error is None:
                log.info("task %s: another worker took the failure read over", job.task_id)
                return
            if await self.store.transition(job.task_id, Status.FAILED, error=error):
                await self.store.count("failures_recorded")
                log.info("task %s failed at DashScope: %s: %s", job.task_id, error["code"], error["message"])
        # Anything else: recorded already (a worker that died after the transition), or the task is gone.
        await self.queue.ack(job)

    async def _keep(self, job: Job, lost: asyncio.Event) -> None:
        """Keep the job ours while its reads last (a read may wait for the quota, then for DashScope's
        timeout, longer than the idle time after which another worker may take the job over)."""
        while True:
            await asyncio.sleep(self.queue.claim_idle_ms / 3000)
            try:
                if not await self.queue.hold(job):
                    lost.set()
                    return
            except RedisError as exc:  # Redis away for a moment: the job's idle time allows a few misses
                log.warning("task %s: could not keep its failure read (%s)", job.task_id, type(exc).__name__)

    async def reason(self, task: dict[str, str], lost: asyncio.Event) -> dict[str, str] | None:
        """DashScope's code and message for the task, or an error saying why they could not be read; None
        when another worker has taken the job over meanwhile (it goes on from the reads spent here)."""
        task_id = task["id"]
        while True:
            if lost.is_set():
                return None
            # Counted before the read: a worker that dies mid-read has spent it all the same.
            read = await self.store.add_to_field(task_id, "reason_reads")
            if read > self.attempts:
                return _unread(f"no read left after {self.attempts} attempts")
            try:
                async with self.reads.request():
                    output = await self.client.get_task(task["ds_task_id"])
            except DashScopeError as exc:
                why = (
                    f"{exc.code}: {exc.message}"
                    if exc.status_code is None
                    else f"HTTP {exc.status_code} {exc.code}: {exc.message}"
                )
                if exc.retryable and read < self.attempts:
                    await self._pause(task_id, read, why)
                    continue
                return _unread(why if not exc.retryable else f"gave up after {read} attempts: {why}")
            finally:
                await self.store.count("dashscope_reads_failure")
            status = output.get("task_status")
            if status == "FAILED":
                return _reported(output)
            if status in LAGGING and read < self.attempts:
                await self._pause(task_id, read, f"DashScope still reports the task {status}")
                continue
            return _unread(f"DashScope now reports the task {status}")

    async def _pause(self, task_id: str, read: int, why: str) -> None:
        await self.store.count("failure_read_retries")
        log.info("task %s: reading its failure reason: %s; trying again (attempt %d)", task_id, why, read + 1)
        await asyncio.sleep(min(0.2 * 2**read, 30.0))


def _reported(output: dict[str, Any]) -> dict[str, str]:
    code = reported_text(output.get("code"), keys.EVENT_CODE_MAX)
    message = reported_text(output.get("message"), keys.EVENT_MESSAGE_MAX)
    if not code:
        return {"code": NO_REASON, "message": message or "DashScope reported the task FAILED and gave no reason"}
    return {"code": code, "message": message or "DashScope reported the task FAILED"}


def _unread(why: str) -> dict[str, str]:
    return {"code": NO_REASON, "message": f"{UNREAD} ({why})"}
