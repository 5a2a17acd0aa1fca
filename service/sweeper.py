"""The safety net for lost completion events.

EventBridge's default policy retries a push three times, and wanhook itself may be down while events
are pushed. A task still ``submitted`` past its deadline (``WANHOOK_SWEEP_AFTER_SECONDS``, well past
DashScope's usual render time) is read from DashScope once, and what the read says is applied as if
its event had come. One process at a time sweeps (a leader lease in Redis), on a slow schedule; a
task is never read again within its deadline, so while events flow the sweeper reads nothing. What
it recovers is counted (``sweeper_recovered``): it measures event loss.
"""

from __future__ import annotations

import asyncio
import json
import logging

from . import worker
from .dashscope import DashScopeClient, reported_text
from .errors import DashScopeError
from .ingress.events import SOURCE, TYPE, CompletionEvent
from .quota import ReadLimiter
from .redact import redact_url
from .removals import Removals
from .retention import Retention
from .store import TaskStore
from .task import Outcome, Status

log = logging.getLogger("wanhook.sweeper")

FINAL = ("SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN")
BATCH = 100


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

    async def run(self, stop: asyncio.Event) -> None:
        await worker.run_forever(
            self._round, stop, log=log, retry_seconds=self.interval, interval=self.interval, then="sweeping later"
        )

    async def _round(self) -> None:
        if await self._lead():
            await self.sweep()
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
