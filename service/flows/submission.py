"""Getting queued tasks to DashScope within its quotas.

The ``Dispatcher`` admits tasks (``quota.Admission``) and hands each to the ``Submitter``. It runs
when something changes (a task queued, a slot given back by a completion event) and otherwise
sleeps until the next moment a quota frees on its own (the rate window slides, a lease expires),
blocked on the Redis wake-up list: no timer re-checks anything.

A task is sent by one submission attempt at a time: the attempt claims it in Redis before looking it
up or sending it, and renews that claim and the task's slot while it works, however long the create
call takes. A create whose answer was lost (timeout, connection reset, a process killed or frozen
mid-call) may still land until its deadline has passed; only then is the task looked for in DashScope's
task list for the minutes around the attempt (a task of that model that no wanhook task owns is taken
as this one's) and, if it is not there, sent again. An answer that comes after its task moved on is
adopted if the task still waits, or else left running and recorded; a DashScope task is canceled only
when its user canceled the wanhook task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..core.errors import DashScopeError, RequestRejected, Unreachable
from ..domain.models import MODELS
from ..domain.task import Status
from ..jobs import worker
from ..jobs.queue import sleep_until_woken
from ..observability import logs
from ..outbound.dashscope import DashScopeClient
from ..persistence import keys
from ..persistence.store import TaskStore
from .quota import Admission, ReadLimiter

log = logging.getLogger("wanhook.submission")

INPUT_PARAMETERS = ("audio_url", "img_url", "first_frame_url", "last_frame_url")

MAX_BACKOFF = 60.0
MAX_IDLE = 15.0  # a dispatcher's longest block; below the Redis socket timeout
# The task list's window (start_time, end_time: YYYYMMDDhhmmss) comes without a zone in the documentation
# (https://www.alibabacloud.com/help/en/model-studio/manage-asynchronous-tasks). DashScope writes its other
# times in China time (UTC+8); its servers may as well read the window in UTC. A lost create is looked for
# in both readings, China time first, each one paged to its end: under either, one of them holds it.
CHINA = timezone(timedelta(hours=8))
LIST_READINGS = (CHINA, UTC)
LIST_PAGE_SIZE = 100  # the most a page may hold
LIST_MAX_PAGES = 50  # per reading: a list that never ends (a misbehaving API) is not read for ever
LANDED_SLACK = 2.0  # seconds of clock difference allowed around an attempt
REDIS_BACK_PAUSE = 0.5  # seconds a model waits after Redis came back, so its processes do not rush in together


def dashscope_request(task: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The create call's ``input`` and ``parameters`` for a stored task."""
    task_input = {"prompt": task["prompt"]} if task.get("prompt") else {}  # optional for the image kinds
    if task.get("negative_prompt"):
        task_input["negative_prompt"] = task["negative_prompt"]
    parameters = json.loads(task.get("parameters") or "{}")
    # wanhook keeps audio_url and the images among the task's parameters; DashScope reads them from input.
    for name in INPUT_PARAMETERS:
        if name in parameters:
            task_input[name] = parameters.pop(name)
    return task_input, parameters


class Reservation:
    """One submission attempt's hold on an admitted task: its in-flight marker and slot, renewed every
    ``every`` seconds while the attempt lasts, so that no call is too slow for its reservation."""

    def __init__(self, admission: Admission, task_id: str, attempt: str, every: float) -> None:
        self.admission = admission
        self.task_id = task_id
        self.attempt = attempt
        self.every = every
        self.sent = False  # the create call went out
        self.deadline: float | None = None  # monotonic; until then a create sent may still answer or land
        self._renewing: asyncio.Task[None] | None = None

    def deadline_ms(self) -> int:
        return 0 if self.deadline is None else max(0, int((self.deadline - time.monotonic()) * 1000))

    async def sending(self, attempt_at: float, deadline: float) -> bool:
        """Whether the attempt still holds the task; if so the create may go, and its marker lasts at least
        until ``deadline`` whatever becomes of this process."""
        self.deadline = deadline
        if await self.admission.hold(self.task_id, self.attempt, self.deadline_ms(), f"{attempt_at:.3f}"):
            return True
        self.deadline = None  # nothing goes out
        return False

    def answered(self) -> None:
        """The create answered: nothing of it is in flight any more."""
        self.deadline = None

    async def until_deadline(self, stopping: asyncio.Event | None) -> bool:
        """Wait (the reservation renewed meanwhile) until a create sent can no longer land; False when the
        process stops first (its marker then lasts until the deadline by itself, and the task is looked
        for by whichever process admits it next)."""
        if stopping is None:
            await asyncio.sleep(self.deadline_ms() / 1000)
            return True
        try:
            await asyncio.wait_for(stopping.wait(), self.deadline_ms() / 1000)
        except TimeoutError:
            return True
        return False

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                if not await self.admission.hold(self.task_id, self.attempt, self.deadline_ms()):
                    if self.sent and self.deadline is not None:
                        # Frozen past the lease and the deadline; the answer, if it comes, is adopted or
                        # recorded as an orphan.
                        log.warning("task %s: lost its reservation while its create was in flight", self.task_id)
                    return
            except RedisError as exc:
                # The lease outlasts two more tries; a create in flight holds its marker until its deadline.
                log.warning("task %s: could not renew its reservation (%s)", self.task_id, type(exc).__name__)

    async def __aenter__(self) -> Reservation:
        self._renewing = asyncio.create_task(self._renew())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._renewing is not None
        self._renewing.cancel()
        await asyncio.gather(self._renewing, return_exceptions=True)
        try:
            await self.admission.release(self.task_id, self.attempt, self.deadline_ms())
        except RedisError:
            pass  # the marker ends by itself: at its lease, or at the create's deadline


class Submitter:
    def __init__(
        self,
        store: TaskStore,
        client: DashScopeClient,
        admission: Admission,
        reads: ReadLimiter,
        *,
        slot_lease_seconds: float,
        sweep_after_seconds: float,
    ) -> None:
        self.store = store
        self.client = client
        self.admission = admission
        self.reads = reads
        self.slot_lease_ms = int(slot_lease_seconds * 1000)
        self.sweep_after_ms = int(sweep_after_seconds * 1000)
        # Three renewals per lease: one lost to a Redis hiccup leaves the reservation standing.
        self.renew_every = max(admission.reserve_ms / 3000, 0.01)
        self.backoff: dict[str, float] = {}
        self.stopping: asyncio.Event | None = None  # the dispatcher's stop: no waiting out deadlines then

    async def submit(self, task_id: str) -> None:
        """Create the admitted task at DashScope; it holds a slot reservation meanwhile."""
        attempt = uuid.uuid4().hex
        reservation = Reservation(self.admission, task_id, attempt, self.renew_every)
        try:
            claimed = await self.admission.claim(task_id, attempt)
            if claimed == "busy":
                log.info("task %s: an earlier create of it may still answer; it is not sent again meanwhile", task_id)
            if claimed != "ok":
                return
            async with reservation:
                await self._submit(task_id, reservation)
        except RedisError as exc:
            log.warning("submission of task %s: Redis unavailable (%s)", task_id, type(exc).__name__)
            await self._give_back(task_id, "" if reservation.sent else attempt)

    async def _submit(self, task_id: str, reservation: Reservation) -> None:
        task = await self.store.raw(task_id)
        if not task or task["status"] != Status.QUEUED:
            return
        if task.get("submit_attempt_at") and await self._adopt_landed(task, reservation.attempt):
            return
        attempt_at = time.time()
        # Until the call's deadline has passed, and DashScope's slack to land it, its create may still land.
        # The deadline counts from here: a process frozen before its request left cannot send it later.
        call_deadline = asyncio.get_running_loop().time() + self.client.timeout
        if not await reservation.sending(attempt_at, time.monotonic() + self.client.timeout + LANDED_SLACK):
            log.info(
                "task %s: no longer held by this submission (moved on, or its reservation ended); not sent", task_id
            )
            return
        # On the task in hand too: a lost answer is looked for around this attempt (not a former one, nor
        # none at all: the first attempt's task had no such field, and looking raised KeyError).
        task["submit_attempt_at"] = f"{attempt_at:.3f}"
        task_input, parameters = dashscope_request(task)
        reservation.sent = True
        try:
            async with self.admission.sending(task["model"], task_id):
                try:
                    # One deadline for the whole call (the client's timeout is per read): after it, this
                    # attempt can no longer be answered.
                    async with asyncio.timeout_at(call_deadline):
                        created = await self.client.create_task(
                            task["model"], task_input, parameters, path=MODELS[task["model"]].endpoint
                        )
                except TimeoutError:
                    raise Unreachable("Timeout", f"create did not answer within {self.client.timeout:g}s") from None
        except RequestRejected as exc:
            reservation.answered()
            await self.store.transition(task_id, Status.FAILED, error={"code": exc.code, "message": exc.message})
            log.info("task %s refused by DashScope: %s", task_id, exc.code)
            return
        except DashScopeError as exc:
            if isinstance(exc, Unreachable):
                # It may have landed, or still land: look for it once it no longer can.
                if not await reservation.until_deadline(self.stopping):
                    return
                if await self._adopt_landed(task, reservation.attempt):
                    return
            reservation.answered()
            await self._retry_later(task, exc, reservation.attempt)
            return
        reservation.answered()
        self.backoff.pop(task["model"], None)
        await self._record(
            task_id, created.task_id, created.task_status, created.request_id, adopt=False, attempt=reservation.attempt
        )

    async def _record(
        self, task_id: str, ds_task_id: str, ds_status: str, request_id: str | None, adopt: bool, attempt: str
    ) -> str:
        delay = 0.25
        while True:
            try:
                result = await self.store.mark_submitted(
                    task_id,
                    ds_task_id,
                    ds_status,
                    request_id,
                    slot_lease_ms=self.slot_lease_ms,
                    sweep_after_ms=self.sweep_after_ms,
                    adopt=adopt,
                    attempt=attempt,
                )
                break
            except RedisError as exc:
                # DashScope has the task and only this process knows its id: keep trying while Redis is
                # away rather than leave it to the slower listing after the reservation expires.
                if delay > 30:
                    raise
                log.warning(
                    "recording DashScope task %s: Redis unavailable (%s); retrying", ds_task_id, type(exc).__name__
                )
                await asyncio.sleep(delay)
                delay *= 2
        if result == "canceled":
            # Its user canceled it while the create call was in flight: cancel it at DashScope too.
            try:
                async with self.reads.request():
                    await self.client.cancel_task(ds_task_id)
                log.info(
                    "task %s: canceled by its user while its create was in flight; DashScope task %s canceled",
                    task_id,
                    ds_task_id,
                )
            except DashScopeError as exc:
                log.warning("could not cancel DashScope task of canceled task %s: %s", task_id, exc.code)
        elif result == "same":
            log.info("task %s: its create answered after its DashScope task %s had been found", task_id, ds_task_id)
        elif result == "orphan":
            log.warning(
                "task %s had moved on when its create answered: DashScope task %s is left running, "
                "recorded as an orphan",
                task_id,
                ds_task_id,
            )
        elif result == "missing":
            log.warning("task %s no longer exists: DashScope task %s is left running", task_id, ds_task_id)
        return result

    async def _retry_later(self, task: dict[str, str], exc: DashScopeError, attempt: str) -> None:
        model = task["model"]
        delay = min(self.backoff.get(model, 0.5) * 2, MAX_BACKOFF)
        self.backoff[model] = delay
        pause = delay * random.uniform(0.5, 1.0)  # jitter: processes sharing the account do not retry in step
        log.warning(
            "create for task %s: %s %s; back in the queue, %s pauses %.1fs",
            task["id"],
            exc.code,
            exc.message,
            model,
            pause,
        )
        await self.store.count("submissions_retried")
        await self.admission.requeue(task["id"], pause, attempt)

    async def _adopt_landed(self, task: dict[str, str], attempt: str) -> bool:
        """Whether an earlier create call of this task landed after all (and it is now recorded), or the task
        needs nothing more from this attempt. Called only once that create can no longer land."""
        attempt_at = float(task["submit_attempt_at"])
        # A create that landed was created while its call could still answer: between the attempt and
        # the client's timeout. The match is on gmt_create (epoch ms), whatever zone the window was read in.
        earliest, latest = attempt_at - LANDED_SLACK, attempt_at + self.client.timeout + LANDED_SLACK
        tried: set[str] = set()
        for zone in LIST_READINGS:
            try:
                listed = await self._list(task["model"], earliest - 1, latest + 1, zone)
            except DashScopeError as exc:
                log.warning(
                    "task %s: cannot tell whether its create landed (%s); not submitting it yet", task["id"], exc.code
                )
                await self._retry_later(task, exc, attempt)
                return True
            created = [(float(item.get("gmt_create") or 0) / 1000, item) for item in listed]
            candidates = [
                item
                for at, item in sorted(created, key=lambda pair: abs(pair[0] - attempt_at))
                if earliest <= at <= latest
            ]
            for item in candidates:
                ds_id = item.get("task_id")
                if not ds_id or not isinstance(ds_id, str) or ds_id in tried:
                    continue
                tried.add(ds_id)
                result = await self._record(
                    task["id"],
                    ds_id,
                    str(item.get("status") or "PENDING"),
                    item.get("request_id"),
                    adopt=True,
                    attempt=attempt,
                )
                if result == "ok":
                    log.info("task %s: its earlier create had landed as DashScope task %s", task["id"], ds_id)
                    await self.store.count("submissions_adopted")
                elif result != "taken":
                    log.info("task %s: moved on meanwhile (%s); nothing to adopt", task["id"], result)
                if result != "taken":
                    return True
        return False

    async def _list(self, model: str, start: float, end: float, zone: timezone) -> list[dict[str, Any]]:
        """Every task of the model that the list gives for the window written in ``zone``, page after page,
        each page within the account's query quota."""
        found: list[dict[str, Any]] = []
        for page_no in range(1, LIST_MAX_PAGES + 1):
            async with self.reads.request():
                listing = await self.client.list_tasks(
                    start_time=datetime.fromtimestamp(start, zone).strftime("%Y%m%d%H%M%S"),
                    end_time=datetime.fromtimestamp(end, zone).strftime("%Y%m%d%H%M%S"),
                    model_name=model,
                    page_no=page_no,
                    page_size=LIST_PAGE_SIZE,
                )
            await self.store.count("dashscope_lists_lost_create")
            page = [item for item in listing.get("data") or [] if isinstance(item, dict)]
            found += page
            pages = listing.get("total_page")
            # The last page: as the answer counts them, or (no count given) the first one short of full.
            if (
                not page
                or (isinstance(pages, int) and page_no >= pages)
                or (not isinstance(pages, int) and len(page) < LIST_PAGE_SIZE)
            ):
                break
        else:
            log.warning(
                "the task list of %s for a lost create goes on past %d pages; the rest is not read",
                model,
                LIST_MAX_PAGES,
            )
        return found

    async def _give_back(self, task_id: str, attempt: str) -> None:
        """Back to the head of its queue as soon as Redis answers, not when its reservation expires.

        Safe whatever the submission got to: a task already recorded as submitted is left alone, and
        one whose create may have been sent (``attempt`` left out) waits on its slot until that create
        can no longer answer, then is looked for at DashScope before it is sent again.
        """
        delay = 0.25
        while delay <= 16:
            await asyncio.sleep(delay)
            try:
                await self.admission.requeue(task_id, REDIS_BACK_PAUSE, attempt)
                return
            except RedisError:
                delay *= 2


class Dispatcher:
    def __init__(self, redis: Redis, admission: Admission, submitter: Submitter) -> None:
        self.redis = redis
        self.admission = admission
        self.submitter = submitter

    async def run(self, stop: asyncio.Event) -> None:
        self.submitter.stopping = stop
        running: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())

        async def step() -> None:
            wait = await self._admit_all(running)
            await sleep_until_woken(self.redis, keys.WAKE, min(wait, MAX_IDLE), stopping)  # or until the stop

        try:
            await worker.run_forever(step, stop, log=log)
        finally:
            stopping.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _admit_all(self, running: set[asyncio.Task[None]]) -> float:
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
            await self.submitter.submit(task_id)  # gives the task back itself when Redis broke it off
        except Exception:
            # The reservation expires and the task goes back to the head of its queue (once a create it
            # may have sent can no longer answer).
            log.exception("submission of task %s failed", task_id)
