"""Submitter: turns a queued task into a DashScope task.

This is the seam where admission control sits: a job here is a task allowed to go to DashScope now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

from .dashscope import DashScopeClient, DashScopeError
from .jobs import Job, JobQueue, work
from .store import TaskStore

log = logging.getLogger("wanhook.submission")

MAX_BACKOFF = 60.0


def dashscope_request(task: dict[str, str]) -> tuple[dict, dict]:
    """The create call's ``input`` and ``parameters`` for a stored task."""
    task_input = {"prompt": task["prompt"]}
    if task.get("negative_prompt"):
        task_input["negative_prompt"] = task["negative_prompt"]
    return task_input, json.loads(task.get("parameters") or "{}")


class Submitter:
    def __init__(self, store: TaskStore, client: DashScopeClient, queue: JobQueue) -> None:
        self.store = store
        self.client = client
        self.queue = queue

    async def run(self, stop: asyncio.Event, concurrency: int = 2) -> None:
        await work(self.queue, self.submit, stop, concurrency, log)

    async def submit(self, job: Job) -> None:
        task = await self.store.raw(job.task_id)
        if not task or task["status"] != "queued":
            await self.queue.ack(job)
            return
        task_input, parameters = dashscope_request(task)
        delay = 1.0
        while True:
            try:
                created = await self.client.create_task(task["model"], task_input, parameters)
                break
            except DashScopeError as exc:
                if not exc.retryable:
                    await self.store.transition(job.task_id, "failed", error={"code": exc.code, "message": exc.message})
                    await self.queue.ack(job)
                    log.info("task %s refused by DashScope: %s", job.task_id, exc.code)
                    return
                log.warning("create for task %s: %s; retrying in %.1fs", job.task_id, exc.code, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, MAX_BACKOFF)
                if not await self.queue.hold(job):
                    return  # another worker took the job over
        if not await self.store.mark_submitted(job.task_id, created.task_id, created.task_status, created.request_id):
            # Canceled while the create call was in flight: cancel it at DashScope too.
            try:
                await self.client.cancel_task(created.task_id)
            except DashScopeError as exc:
                log.warning("could not cancel DashScope task of canceled task %s: %s", job.task_id, exc.code)
        await self.queue.ack(job)
