"""Getting queued tasks to DashScope within its quotas.

The ``Dispatcher`` admits tasks (``quota.Admission``) and hands each to the ``Submitter``. It runs
when something changes (a task queued, a slot given back by a completion event) and otherwise
sleeps until the next moment a quota frees on its own (the rate window slides, a lease expires),
blocked on the Redis wake-up list: no timer re-checks anything.

A create call whose answer was lost (timeout, connection reset, a process killed mid-call) may still
have landed. Before such a task is submitted again, DashScope's task list for the minutes around the
attempt is read, and a task of that model that no wanhook task owns is taken as this one's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import datetime, timedelta, timezone

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import constants as keys
from . import logs
from .dashscope import DashScopeClient, DashScopeError, RequestRejected, Unreachable
from .jobs import sleep_until_woken
from .models import MODELS
from .quota import Admission, ReadLimiter
from .store import TaskStore

log = logging.getLogger("wanhook.submission")

MAX_BACKOFF = 60.0
MAX_IDLE = 15.0  # a dispatcher's longest block; below the Redis socket timeout
CHINA = timezone(timedelta(hours=8))  # the list API's times are Beijing time
LANDED_SLACK = 2.0  # seconds of clock difference allowed around an attempt
REDIS_BACK_PAUSE = 0.5  # seconds a model waits after Redis came back, so its processes do not rush in together


def dashscope_request(task: dict[str, str]) -> tuple[dict, dict]:
    """The create call's ``input`` and ``parameters`` for a stored task."""
    task_input = {"prompt": task["prompt"]}
    if task.get("negative_prompt"):
        task_input["negative_prompt"] = task["negative_prompt"]
    return task_input, json.loads(task.get("parameters") or "{}")


class Submitter:
    def __init__(self, store: TaskStore, client: DashScopeClient, admission: Admission, reads: ReadLimiter,
                 *, slot_lease_seconds: float, sweep_after_seconds: float) -> None:
        self.store = store
        self.client = client
        self.admission = admission
        self.reads = reads
        self.slot_lease_ms = int(slot_lease_seconds * 1000)
        self.sweep_after_ms = int(sweep_after_seconds * 1000)
        self.backoff: dict[str, float] = {}

    async def submit(self, task_id: str) -> None:
        """Create the admitted task at DashScope; it holds a slot reservation meanwhile."""
        task = await self.store.raw(task_id)
        if not task or task["status"] != "queued":
            return
        if task.get("submit_attempt_at") and await self._adopt_landed(task):
            return
        # On the task in hand too: a lost answer is looked for around this attempt (not a former one, nor
        # none at all: the first attempt's task had no such field, and looking raised KeyError).
        task["submit_attempt_at"] = f"{time.time():.3f}"
        await self.store.set_fields(task_id, submit_attempt_at=task["submit_attempt_at"])
        task_input, parameters = dashscope_request(task)
        try:
            async with self.admission.sending(task["model"], task_id):
                created = await self.client.create_task(task["model"], task_input, parameters)
        except RequestRejected as exc:
            await self.store.transition(task_id, "failed", error={"code": exc.code, "message": exc.message})
            log.info("task %s refused by DashScope: %s", task_id, exc.code)
            return
        except DashScopeError as exc:
            if isinstance(exc, Unreachable) and await self._adopt_landed(task):
                return
            await self._retry_later(task, exc)
            return
        self.backoff.pop(task["model"], None)
        await self._record(task_id, created.task_id, created.task_status, created.request_id, adopt=False)

    async def _record(self, task_id: str, ds_task_id: str, ds_status: str, request_id: str | None,
                      adopt: bool) -> bool:
        delay = 0.25
        while True:
            try:
                result = await self.store.mark_submitted(task_id, ds_task_id, ds_status, request_id,
                                                         slot_lease_ms=self.slot_lease_ms,
                                                         sweep_after_ms=self.sweep_after_ms, adopt=adopt)
                break
            except RedisError as exc:
                # DashScope has the task and only this process knows its id: keep trying while Redis is
                # away rather than leave it to the slower listing after the reservation expires.
                if delay > 30:
                    raise
                log.warning("recording DashScope task %s: Redis unavailable (%s); retrying", ds_task_id,
                            type(exc).__name__)
                await asyncio.sleep(delay)
                delay *= 2
        if result == "stale":
            # Canceled while the create call was in flight: cancel it at DashScope too.
            try:
                async with self.reads.request():
                    await self.client.cancel_task(ds_task_id)
            except DashScopeError as exc:
                log.warning("could not cancel DashScope task of canceled task %s: %s", task_id, exc.code)
        return result != "taken"

    async def _retry_later(self, task: dict[str, str], exc: DashScopeError) -> None:
        model = task["model"]
        delay = min(self.backoff.get(model, 0.5) * 2, MAX_BACKOFF)
        self.backoff[model] = delay
        pause = delay * random.uniform(0.5, 1.0)  # jitter: processes sharing the account do not retry in step
        log.warning("create for task %s: %s %s; back in the queue, %s pauses %.1fs", task["id"], exc.code,
                    exc.message, model, pause)
        await self.store.count("submissions_retried")
        await self.admission.requeue(task["id"], pause)

    async def _adopt_landed(self, task: dict[str, str]) -> bool:
        """Whether an earlier create call of this task landed after all (and it is now recorded)."""
        attempt = float(task["submit_attempt_at"])
        # A create that landed was created while its call could still answer: between the attempt and
        # the client's timeout.
        earliest, latest = attempt - LANDED_SLACK, attempt + self.client.timeout + LANDED_SLACK
        try:
            async with self.reads.request():
                listing = await self.client.list_tasks(
                    start_time=datetime.fromtimestamp(earliest - 1, CHINA).strftime("%Y%m%d%H%M%S"),
                    end_time=datetime.fromtimestamp(latest + 1, CHINA).strftime("%Y%m%d%H%M%S"),
                    model_name=task["model"], page_no=1, page_size=100)
        except DashScopeError as exc:
            log.warning("task %s: cannot tell whether its create landed (%s); not submitting it yet", task["id"],
                        exc.code)
            await self._retry_later(task, exc)
            return True
        created = [(float(item.get("gmt_create") or 0) / 1000, item) for item in listing.get("data") or []]
        candidates = [item for at, item in sorted(created, key=lambda pair: abs(pair[0] - attempt))
                      if earliest <= at <= latest]
        for item in candidates:
            ds_id = item.get("task_id")
            if ds_id and await self._record(task["id"], ds_id, str(item.get("status") or "PENDING"),
                                            item.get("request_id"), adopt=True):
                log.info("task %s: its earlier create had landed as DashScope task %s", task["id"], ds_id)
                await self.store.count("submissions_adopted")
                return True
        return False


class Dispatcher:
    def __init__(self, redis: Redis, admission: Admission, submitter: Submitter) -> None:
        self.redis = redis
        self.admission = admission
        self.submitter = submitter

    async def run(self, stop: asyncio.Event) -> None:
        running: set[asyncio.Task] = set()
        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            try:
                wait = await self._admit_all(running)
                if not await sleep_until_woken(self.redis, keys.WAKE, min(wait, MAX_IDLE), stopping):
                    break
            except RedisError as exc:
                log.warning("Redis unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
        stopping.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _admit_all(self, running: set[asyncio.Task]) -> float:
        """Submit every task the quotas allow now; returns the seconds until a quota frees by itself."""
        wait = MAX_IDLE
        for model in MODELS:
            while True:
                task_id, wait_ms = await self.admission.admit(model)
                if task_id is None:
                    if wait_ms >= 0:
                        wait = min(wait, wait_ms / 1000)
                    break
                job = asyncio.create_task(self._submit(task_id))
                running.add(job)
                job.add_done_callback(running.discard)
        return max(wait, 0.001)

    async def _submit(self, task_id: str) -> None:
        logs.task_id.set(task_id)
        try:
            await self.submitter.submit(task_id)
        except RedisError as exc:
            log.warning("submission of task %s: Redis unavailable (%s)", task_id, type(exc).__name__)
            await self._give_back(task_id)
        except Exception:
            # The reservation expires and the task goes back to the head of its queue.
            log.exception("submission of task %s failed", task_id)

    async def _give_back(self, task_id: str) -> None:
        """Back to the head of its queue as soon as Redis answers, not when its reservation expires.

        Safe whatever the submission got to: a task already recorded as submitted is left alone, and
        one whose create may have been sent is looked for at DashScope before it is sent again.
        """
        delay = 0.25
        while delay <= 16:
            await asyncio.sleep(delay)
            try:
                await self.admission.requeue(task_id, REDIS_BACK_PAUSE)
                return
            except RedisError:
                delay *= 2

