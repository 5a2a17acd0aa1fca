"""Telling the submitter: signed callbacks, delivered from the outbox with retries.

A delivery is written by the same Lua step as the state change it reports (``outbox`` of ``lua/common.lua``). The
``Notifier`` sends due deliveries, signed per Standard Webhooks with ``WANHOOK_CALLBACK_SECRET``,
and retries non-2xx answers, timeouts and connection errors on a schedule like Svix's, honouring
``Retry-After``. A 410 stops the delivery. After the last attempt it is dead-lettered: visible in
the task, and replayable. The body is frozen at the first attempt, so every retry carries the same
``webhook-id`` and the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from standardwebhooks.webhooks import Webhook

from ..config import DEFAULT_SCHEDULE
from ..core.redact import redact_url
from ..domain.task import as_text
from ..jobs import queue, worker
from ..outbound import egress
from ..persistence import keys, scripts
from ..persistence.store import TaskStore, now_iso

log = logging.getLogger("wanhook.callbacks")

TIMEOUT = 15.0  # default deadline of one attempt, from connecting to the end of the answer read
LEASE_MS = 60_000  # a sender that died mid-attempt gives the delivery back after this (at least)
MAX_IDLE = 15.0
# Bytes of a receiver's answer body read at most: its status and headers decide, the body does not.
BODY_LIMIT = 4096
# An attempt starts this long before its lease could end under it (on top of the deadline): room for
# the Redis reads before the request and the settle after it.
START_MARGIN = 5.0
# Claimed deliveries that may wait here for their destination, at most (the others go back to Redis).
WAITING_LIMIT = 10_000
STOP_GRACE = 1.0  # how long a stop lets attempts in flight end before cutting them short


async def secret(redis: Redis, configured: str | None) -> str:
    """The configured secret, or the one generated on first start and kept in Redis for every process."""
    if configured:
        return configured
    generated = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    await redis.set(keys.CALLBACK_SECRET, generated, nx=True)
    stored = await redis.get(keys.CALLBACK_SECRET)
    return stored.decode() if isinstance(stored, bytes) else str(stored)


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


async def deliveries(redis: Redis, task_id: str) -> list[dict[str, Any]]:
    """The task's deliveries as the API shows them, oldest first."""
    raw = await redis.hgetall(keys.DELIVERIES + task_id)
    items = [dict(json.loads(value), id=as_text(key)) for key, value in raw.items()]
    return sorted(items, key=lambda item: item.get("created_at", ""))


async def replay(redis: Redis, task_id: str) -> int:
    """Send the task's dead-lettered (or stopped) deliveries again from a fresh schedule."""
    replayed = 0
    settle = redis.register_script(scripts.SETTLE_CALLBACK)
    for delivery in await deliveries(redis, task_id):
        if delivery["status"] in ("dead", "gone"):
            webhook_id = delivery.pop("id")
            delivery.pop("errors", None)
            delivery.update(status="pending", attempts=0, replayed_at=now_iso())
            args = [task_id, webhook_id, json.dumps(delivery), 0]
            await settle(keys=scripts.settle_callback_keys(task_id), args=args)
            replayed += 1
    if replayed:
        await redis.rpush(keys.CALLBACKS_WAKE, "1")
    return replayed


class Notifier:
    """Sends due deliveries, each attempt on its own: a slow receiver delays nobody else.

    Up to ``concurrency`` attempts run at once in this process, and at most ``per_destination`` of
    them to one destination (the callback URL's host and port). A claimed delivery whose
    destination is at its cap waits here, holding no slot, and starts as soon as one frees; one
    that could not start in time to finish within its lease is left for its lease to expire (it is
    due again then, here or in another process). An attempt (connect, request, status, headers and
    at most ``BODY_LIMIT`` bytes of body) ends at ``deadline`` seconds, well within the lease, so a
    live process always settles its attempt before anyone may claim the delivery again.
    """

    def __init__(
        self,
        store: TaskStore,
        secret: str,
        schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
        concurrency: int = 16,
        allow_private: bool = False,
        per_destination: int = 2,
        deadline: float = TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_errors: int = queue.DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        """``transport`` sends the callbacks; unless given, ``egress.PinnedTransport``: public addresses
        only, unless ``allow_private``. An attempt that raises unexpectedly counts as an attempt of the
        schedule, and ``max_errors`` such attempts make the delivery dead whatever is left of it."""
        self.store = store
        self.max_errors = max(1, max_errors)
        self.allow_private = allow_private
        self.redis = store.redis
        self.signer = Webhook(secret)
        self.schedule = schedule
        self.concurrency = max(1, concurrency)
        self.per_destination = max(1, per_destination)
        self.deadline = deadline
        # The lease outlasts the longest attempt several times over, whatever the deadline.
        self.lease_ms = max(LEASE_MS, int(deadline * 4000))
        # httpx's per-phase timeouts stay as a second guard under the overall deadline.
        self.http = egress.client(transport=transport, allow_private=allow_private, timeout=deadline)
        self._claim = self.redis.register_script(scripts.CLAIM_CALLBACKS)
        self._settle = self.redis.register_script(scripts.SETTLE_CALLBACK)
        self._defer = self.redis.register_script(scripts.DEFER_CALLBACKS)
        self._running: dict[str, asyncio.Task[None]] = {}  # webhook id -> its attempt
        self._busy: dict[str, int] = {}  # destination -> attempts in flight
        self._queued: dict[str, deque[str]] = {}  # destination -> claimed webhook ids waiting for a slot
        self._start_by: dict[str, float] = {}  # a waiting webhook id -> last moment (monotonic) it may start
        self._interrupted: list[str] = []  # attempts cut short by a stop, given back for anyone to send
        self._stopping = False
        self._woken: asyncio.Future[Any] | None = None  # one BLPOP on the wake-up list, kept across naps
        self._nudge = asyncio.Event()  # an attempt ended: a slot is free, and a retry may be due soon

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        self._woken = None
        self._stopping = False
        try:
            await worker.run_forever(lambda: self._round(stopping), stop, log=log)
        finally:
            stopping.cancel()
            woken = self._woken
            if woken is not None and not woken.done():
                woken.cancel()  # redis-py drops the connection of a cancelled command
            elif woken is not None and not woken.cancelled():
                woken.exception()  # a Redis error at the very end has nothing left to stop
            await self._stop()

    async def _round(self, stopping: asyncio.Future[Any]) -> None:
        """Start what is due; else nap until a delivery may be due, a wake-up, an attempt's end or the stop."""
        try:
            self._nudge.clear()
            self._expire()
            free = self.concurrency - len(self._running)
            timeout = MAX_IDLE
            if free > 0:
                *due, wait_ms = await self._claim(keys=scripts.CALLBACKS_KEYS, args=[free, self.lease_ms])
                if due:
                    await self._place([as_text(webhook_id) for webhook_id in due])
                    return
                if int(wait_ms) >= 0:
                    timeout = min(int(wait_ms) / 1000, MAX_IDLE)
            woken = self._woken
            if woken is None or woken.done():
                if woken is not None:
                    woken.result()  # a wake-up, a Redis timeout, or its error
                # Redis times a BLPOP out on its own tick only; precise naps are timed here.
                woken = self._woken = asyncio.ensure_future(self.redis.blpop([keys.CALLBACKS_WAKE], timeout=MAX_IDLE))
            nudged = asyncio.ensure_future(self._nudge.wait())
            await asyncio.wait({woken, stopping, nudged}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            nudged.cancel()
        except RedisError:
            # The wake-up read goes with the connection it was on; the next round starts another.
            if self._woken is not None and not self._woken.done():
                self._woken.cancel()
            self._woken = None
            raise

    async def _stop(self) -> None:
        """Let attempts end for a moment, then cut them short; what is left is given back to be sent at once."""
        self._stopping = True  # an attempt ending now starts no other
        if self._running:
            await asyncio.wait(set(self._running.values()), timeout=STOP_GRACE)
        for attempt in list(self._running.values()):
            attempt.cancel()
        if self._running:
            await asyncio.wait(set(self._running.values()))
        left = self._interrupted + list(self._start_by)
        self._queued.clear()
        self._start_by.clear()
        self._interrupted = []
        try:
            await self._give_back(left, 0.0)
        except RedisError:
            pass  # their leases end instead

    async def _give_back(self, webhook_ids: list[str], delay: float) -> None:
        if webhook_ids:
            await self._defer(keys=scripts.CALLBACKS_KEYS, args=[int(delay * 1000), *webhook_ids])

    async def _place(self, claimed: list[str]) -> None:
        """Start claimed deliveries whose destination has room; the others wait here for a slot."""
        fresh = [webhook_id for webhook_id in claimed if webhook_id not in self._running]
        urls = await asyncio.gather(*(self._url(webhook_id) for webhook_id in fresh))
        # Claimed now, leased until now + lease: an attempt starting later than this might outlive it.
        start_by = time.monotonic() + self.lease_ms / 1000 - self.deadline - START_MARGIN
        overflow = []
        for webhook_id, url in zip(fresh, urls, strict=True):
            if url is None:
                continue
            place = destination(url)
            if webhook_id in self._start_by:
                # Claimed again while it still waits here (Redis' clock ran ahead of this one's): the
                # lease is renewed, and it keeps its place in line.
                del self._start_by[webhook_id]
                self._start_by[webhook_id] = start_by
            elif (
                place not in self._queued
                and self._busy.get(place, 0) < self.per_destination
                and len(self._running) < self.concurrency
            ):
                self._start(place, webhook_id)
            elif len(self._start_by) < WAITING_LIMIT:
                self._queued.setdefault(place, deque()).append(webhook_id)
                self._start_by[webhook_id] = start_by  # in claim order: the oldest first
            else:
                overflow.append(webhook_id)
        self._pump()
        # Beyond what may wait here, a delivery goes back to the set, to be claimed again an attempt later.
        await self._give_back(overflow, self.deadline)

    def _expire(self) -> None:
        """Forget waiting deliveries that can no longer start within their lease (it ends; they are due again)."""
        now = time.monotonic()
        expired = 0
        while self._start_by:
            webhook_id = next(iter(self._start_by))
            if self._start_by[webhook_id] >= now:
                break
            del self._start_by[webhook_id]
            expired += 1
        if expired:
            for place, waiting in list(self._queued.items()):
                kept = deque(webhook_id for webhook_id in waiting if webhook_id in self._start_by)
                if kept:
                    self._queued[place] = kept
                else:
                    del self._queued[place]

    async def _url(self, webhook_id: str) -> str | None:
        """The callback URL of the delivery's task; None (and the delivery dropped) when there is nothing to send."""
        task_id = webhook_id.removeprefix("msg_").rsplit("_", 1)[0]
        callback = await self.redis.hget(keys.TASK + task_id, "callback")
        try:
            return str(json.loads(callback or "")["url"])
        except (TypeError, ValueError, KeyError):  # no task, no callback (or not one wanhook wrote)
            await self.redis.zrem(keys.CALLBACKS_DUE, webhook_id)
            return None

    def _pump(self) -> None:
        """Start waiting deliveries while slots are free, taking destinations in turn."""
        while not self._stopping and len(self._running) < self.concurrency:
            started = False
            for place in list(self._queued):
                if len(self._running) >= self.concurrency:
                    break
                waiting = self._queued[place]
                while waiting and self._busy.get(place, 0) < self.per_destination:
                    webhook_id = waiting.popleft()
                    start_by = self._start_by.pop(webhook_id, None)
                    if start_by is None or time.monotonic() > start_by or webhook_id in self._running:
                        continue  # its lease is too close to its end: it is due again soon, for anyone
                    self._start(place, webhook_id)
                    started = True
                    break
                if not waiting:
                    del self._queued[place]
            if not started:
                return

    def _start(self, place: str, webhook_id: str) -> None:
        self._busy[place] = self._busy.get(place, 0) + 1
        self._running[webhook_id] = asyncio.create_task(self._attempt(place, webhook_id))

    async def _attempt(self, place: str, webhook_id: str) -> None:
        try:
            await self.deliver(webhook_id)
        except asyncio.CancelledError:
            self._interrupted.append(webhook_id)
        except RedisError as exc:
            # Still leased: it is due again when the lease ends.
            log.warning("callback %s not settled: Redis unavailable (%s)", webhook_id, type(exc).__name__)
        except Exception as exc:
            # Counted like any failed attempt, so that a delivery that raises every time still ends (dead).
            log.error("callback %s failed unexpectedly", webhook_id, exc_info=exc)
            try:
                await self._errored(webhook_id, exc)
            except Exception as again:
                # Its lease ends and it is due again: the next attempt counts it (or fails the same way).
                log.error("callback %s: its failed attempt could not be recorded (%s)", webhook_id, queue.cause(again))
        finally:
            del self._running[webhook_id]
            self._busy[place] -= 1
            if not self._busy[place]:
                del self._busy[place]
            self._pump()
            self._nudge.set()

    async def _errored(self, webhook_id: str, exc: Exception) -> None:
        """An attempt that raised: recorded as an attempt of the delivery, with its cause."""
        task_id, state = webhook_id.removeprefix("msg_").rsplit("_", 1)
        raw = await self.redis.hget(keys.DELIVERIES + task_id, webhook_id)
        try:
            delivery = json.loads(raw) if raw is not None else None
        except ValueError:
            delivery = None
        if not isinstance(delivery, dict):  # unreadable: written anew, so that the count starts somewhere
            delivery = {"event": f"task.{state}", "status": "pending", "attempts": 0, "created_at": now_iso()}
        if delivery.get("status") != "pending":
            await self.redis.zrem(keys.CALLBACKS_DUE, webhook_id)
            return
        attempt = int(delivery.get("attempts") or 0) + 1
        errors = int(delivery.get("errors") or 0) + 1
        outcome = f"error: {queue.cause(exc)}"
        delivery.update(attempts=attempt, errors=errors, last_outcome=outcome, last_attempt_at=now_iso())
        if attempt >= len(self.schedule) or errors >= self.max_errors:
            delivery["status"], delay = "dead", -1.0
        else:
            delay = self.schedule[attempt]
        await self._record(task_id, webhook_id, delivery, delay)

    async def _record(self, task_id: str, webhook_id: str, delivery: dict[str, Any], delay: float) -> None:
        """Write an attempt's outcome; a dead delivery goes to the callbacks' dead letters in the same step."""
        if delay >= 0:
            delivery["next_attempt_at"] = (
                datetime.fromtimestamp(time.time() + delay, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
            )
        else:
            delivery.pop("next_attempt_at", None)
        args: list[Any] = [task_id, webhook_id, json.dumps(delivery), int(delay * 1000)]
        if delivery["status"] == "dead":
            args += [delivery["attempts"], delivery.get("last_outcome", ""), now_iso()]
            log.error(
                "callback %s for task %s dead after %d attempts: %s",
                webhook_id,
                task_id,
                delivery["attempts"],
                delivery.get("last_outcome", ""),
            )
        await self._settle(keys=scripts.settle_callback_keys(task_id), args=args)
        await self.store.count(f"callbacks_{delivery['status'] if delay < 0 else 'retried'}")

    async def deliver(self, webhook_id: str) -> None:
        """One attempt of one delivery."""
        task_id, state = webhook_id.removeprefix("msg_").rsplit("_", 1)
        raw = await self.redis.hget(keys.DELIVERIES + task_id, webhook_id)
        task = await self.store.raw(task_id)
        if raw is None or task is None or not task.get("callback"):
            await self.redis.zrem(keys.CALLBACKS_DUE, webhook_id)
            return
        delivery = json.loads(raw)
        if delivery["status"] != "pending":
            await self.redis.zrem(keys.CALLBACKS_DUE, webhook_id)
            return
        url = json.loads(task["callback"])["url"]
        body = await self._body(task_id, webhook_id, state, delivery)
        attempt = delivery["attempts"] + 1
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(webhook_id, now, body),
            "user-agent": "wanhook",
        }
        wait: float | None = None
        try:
            status_code, wait = await self._post(url, body.encode(), headers)
            outcome = f"HTTP {status_code}"
        except egress.DestinationRefused as exc:
            outcome, status_code = f"refused: {exc}", None
        except (TimeoutError, httpx.TimeoutException):
            outcome, status_code = "timeout", None
        except httpx.HTTPError as exc:
            outcome, status_code = f"connection error: {type(exc).__name__}", None
        delivery.update(attempts=attempt, last_outcome=outcome, last_attempt_at=now_iso())
        if status_code is not None and 200 <= status_code < 300:
            delivery["status"], delay = "delivered", -1.0
        elif status_code == 410:
            delivery["status"], delay = "gone", -1.0  # the receiver asked never to be called again
        elif attempt >= len(self.schedule):
            delivery["status"], delay = "dead", -1.0
        else:
            delay = max(self.schedule[attempt], wait or 0.0)
        await self._record(task_id, webhook_id, delivery, delay)
        log.info(
            "callback %s for task %s to %s: %s (attempt %d, %s)",
            webhook_id,
            task_id,
            redact_url(url),
            outcome,
            attempt,
            delivery["status"],
        )

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        """The receiver's status and Retry-After, all within the deadline.

        Only the status line and headers count. At most ``BODY_LIMIT`` bytes of the body are read,
        raw (a compressed body is not inflated), so that a short answer leaves the connection
        reusable; a longer one is cut off by closing the connection.
        """
        async with asyncio.timeout(self.deadline):
            async with self.http.stream("POST", url, content=body, headers=headers) as response:
                read = 0
                # httpx types the raw stream as an AsyncIterator; it is an async generator, which aclosing closes.
                raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
                async with contextlib.aclosing(raw) as chunks:
                    async for chunk in chunks:
                        read += len(chunk)
                        if read >= BODY_LIMIT:
                            break
                return response.status_code, retry_after(response)

    async def _body(self, task_id: str, webhook_id: str, state: str, delivery: dict[str, Any]) -> str:
        """The delivery's body, frozen at its first attempt."""
        key = keys.CALLBACK_BODY + webhook_id
        frozen = await self.redis.get(key)
        if frozen is not None:
            return as_text(frozen)
        task = await self.store.get(task_id) or {}
        data = dict(task, status=state)
        data.pop("callbacks", None)
        body = json.dumps(
            {"type": delivery["event"], "timestamp": delivery.get("created_at") or now_iso(), "data": data},
            separators=(",", ":"),
        )
        await self.redis.set(key, body, nx=True, ex=30 * 24 * 3600)
        return as_text(await self.redis.get(key) or body)


def destination(url: str) -> str:
    """Where a callback URL sends requests, as the per-destination cap counts: ``host:port``."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return parts.netloc.lower()
    return f"{(parts.hostname or '').lower()}:{port}"
