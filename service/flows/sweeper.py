"""The safety net for lost completion events.

EventBridge's default policy retries a push three times, and wanhook itself may be down while events
are pushed. A task still ``submitted`` past its deadline (``WANHOOK_SWEEP_AFTER_SECONDS``, well past
DashScope's usual render time) is read from DashScope once, and what the read says is applied as if
its event had come. One process at a time sweeps (a leader lease in Redis), on a slow schedule; a
task is never read again within its deadline, so while events flow the sweeper reads nothing. What
it recovers is counted (``sweeper_recovered``): it measures event loss.

It also looks at the tasks in ``downloading`` that no download job names any more (a job lost: nothing
else would ever end such a task). One found so on two rounds at least ``stuck_after`` seconds apart
gets its job queued again, at most ``max_requeues`` times; after that it ends ``failed`` (``job_lost``).
A job that is there, pending or not, is the job loop's to bound (``jobs.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging

from ..core.errors import DashScopeError
from ..core.redact import redact_url
from ..domain.events import SOURCE, TYPE, CompletionEvent
from ..domain.task import Outcome, Status
from ..jobs import worker
from ..outbound.dashscope import DashScopeClient, reported_text
from ..persistence.store import TaskStore
from .quota import ReadLimiter
from .removals import Removals
from .retention import Retention

log = logging.getLogger("wanhook.sweeper")

FINAL = ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
BATCH = 100
JOB_SCAN = 10_000  # download jobs read at most by one look for the downloading tasks without one


class Sweeper:
    def __init__(
        self,
        store: TaskStore,
        client: DashScopeClient,
        reads: ReadLimiter,
        consumer: str,
        *,
        after_seconds: float,
        interval_seconds: float,
        slot_lease_seconds: float,
        retention: Retention | None = None,
        removals: Removals | None = None,
        stuck_after_seconds: float = 30.0,
        max_requeues: int = 5,
    ) -> None:
        self.store = store
        self.client = client
        self.reads = reads
        self.consumer = consumer
        self.after_ms = int(after_seconds * 1000)
        self.interval = interval_seconds
        self.slot_lease_ms = int(slot_lease_seconds * 1000)
        self.retention = retention
        self.removals = removals
        self.stuck_after_ms = int(stuck_after_seconds * 1000)
        self.max_requeues = max_requeues
        self._downloading_from = 0  # where the next look at the downloading tasks starts (in turns)

    async def run(self, stop: asyncio.Event) -> None:
        await worker.run_forever(
            self._round, stop, log=log, retry_seconds=self.interval, interval=self.interval, then="sweeping later"
        )

    async def _round(self) -> None:
        if await self._lead():
            await self.sweep()
            await self.downloads_without_job()
            if self.retention and self.retention.enabled:
                await self.retention.apply()
            if self.removals:
                await self.removals.retry()  # objects a deletion could not remove from the store

    async def _lead(self) -> bool:
        return await self.store.lead_sweeper(self.consumer, int(self.interval * 3000))

    async def sweep(self) -> int:
        """Read every task past its deadline once; returns how many were recovered."""
        recovered = 0
        for task_id in await self.store.overdue(BATCH):
            if await self._check(task_id):
                recovered += 1
        return recovered

    async def downloads_without_job(self) -> dict[str, int]:
        """Up to ``BATCH`` downloading tasks a round, in turns, checked for a download job; what became of
        those without one (``scripts.JOB_MISSING``), counted by outcome."""
        members = await self.store.downloading(self._downloading_from, BATCH)
        self._downloading_from = self._downloading_from + BATCH if len(members) == BATCH else 0
        outcomes: dict[str, int] = {}
        if not members:
            return outcomes
        with_job = await self.store.download_job_tasks(JOB_SCAN)
        if with_job is None:
            return outcomes  # more jobs than one look reads: absence cannot be told, and jobs are flowing
        for task_id in members:
            if task_id in with_job:
                continue
            outcome = await self.store.job_missing(task_id, self.stuck_after_ms, self.max_requeues)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome in ("requeued", "failed"):
                log.warning("task %s: downloading with no download job; %s by the sweeper", task_id, outcome)
        return outcomes

    async def _check(self, task_id: str) -> bool:
        task = await self.store.raw(task_id)
        if not task or task["status"] != Status.SUBMITTED or not task.get("ds_task_id"):
            await self.store.unwatch(task_id)
            return False
        try:
            async with self.reads.request():
                output = await self.client.get_task(task["ds_task_id"])
        except DashScopeError as exc:
            log.warning("sweeper could not read task %s: %s", task_id, exc.code)
            return False
        finally:
            await self.store.count("dashscope_reads_sweeper")
        status = output.get("task_status")
        if status not in FINAL:
            # Still rendering: look again one deadline later, and keep its slot meanwhile.
            await self.store.watch_again(task_id, task["model"], self.after_ms, self.slot_lease_ms)
            return False
        video_url = output.get("video_url") if isinstance(output.get("video_url"), str) else None
        code, message = output.get("code"), output.get("message")
        if status == "FAILED" and not code:
            # This read was the task's one read: a FAILED answer without a reason queues no second one.
            code, message = "TaskFailed", message or "DashScope reported the task FAILED and gave no reason"
        event = CompletionEvent(
            source=SOURCE,
            id=f"sweeper-{task['ds_task_id']}-{status}",
            type=TYPE,
            task_id=task["ds_task_id"],
            task_status=str(status),
            model=task.get("model"),
            video_url=video_url,
            code=reported_text(code) or None,
            message=reported_text(message) or None,
        )
        record = dict(output, video_url=redact_url(video_url) if video_url else None, read_by="sweeper")
        outcome, _ = await self.store.ingest(event, json.dumps(record).encode())
        if outcome is Outcome.APPLIED:
            await self.store.count("sweeper_recovered")
            log.warning(
                "task %s: no completion event came; DashScope says %s (recovered by the sweeper)", task_id, status
            )
            return True
        return False
