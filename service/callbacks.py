"""Telling the submitter: signed callbacks, delivered from the outbox with retries.

A delivery is written by the same Lua step as the state change it reports (``scripts.outbox``). The
``Notifier`` sends due deliveries, signed per Standard Webhooks with ``WANHOOK_CALLBACK_SECRET``,
and retries non-2xx answers, timeouts and connection errors on a schedule like Svix's, honouring
``Retry-After``. A 410 stops the delivery. After the last attempt it is dead-lettered: visible in
the task, and replayable. The body is frozen at the first attempt, so every retry carries the same
``webhook-id`` and the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from standardwebhooks.webhooks import Webhook

from . import constants as keys
from . import outbound, scripts
from .jobs import sleep_until_woken
from .redact import redact_url
from .store import TaskStore, now_iso

log = logging.getLogger("wanhook.callbacks")

# Delay before each attempt, in seconds: at once, then as Svix does.
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
TIMEOUT = 15.0
LEASE_MS = 60_000  # a sender that died mid-attempt gives the delivery back after this
MAX_IDLE = 15.0


def parse_schedule(text: str | None) -> tuple[float, ...]:
    if not text:
        return DEFAULT_SCHEDULE
    return tuple(float(part) for part in text.split(","))


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
    items = [dict(json.loads(value), id=_text(key)) for key, value in raw.items()]
    return sorted(items, key=lambda item: item.get("created_at", ""))


async def replay(redis: Redis, task_id: str) -> int:
    """Send the task's dead-lettered (or stopped) deliveries again from a fresh schedule."""
    replayed = 0
    settle = redis.register_script(scripts.SETTLE_CALLBACK)
    for delivery in await deliveries(redis, task_id):
        if delivery["status"] in ("dead", "gone"):
            webhook_id = delivery.pop("id")
            delivery.update(status="pending", attempts=0, replayed_at=now_iso())
            await settle(keys=keys.ROUTE, args=[keys.PREFIX, task_id, webhook_id, json.dumps(delivery), 0])
            replayed += 1
    if replayed:
        await redis.rpush(keys.CALLBACKS_WAKE, "1")
    return replayed


class Notifier:
    def __init__(self, store: TaskStore, secret: str, schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
                 concurrency: int = 8, allow_private: bool = False) -> None:
        self.store = store
        self.allow_private = allow_private
        self.redis = store.redis
        self.signer = Webhook(secret)
        self.schedule = schedule
        self.concurrency = concurrency
        self.http = outbound.client(allow_private=allow_private, timeout=TIMEOUT)
        self._claim = self.redis.register_script(scripts.CLAIM_CALLBACKS)
        self._settle = self.redis.register_script(scripts.SETTLE_CALLBACK)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            try:
                *due, wait_ms = await self._claim(keys=keys.ROUTE, args=[keys.PREFIX, self.concurrency, LEASE_MS])
                if due:
                    await asyncio.gather(*(self.deliver(_text(webhook_id)) for webhook_id in due))
                    continue
                timeout = MAX_IDLE if int(wait_ms) < 0 else min(int(wait_ms) / 1000, MAX_IDLE)
                if not await sleep_until_woken(self.redis, keys.CALLBACKS_WAKE, timeout, stopping):
                    break
            except RedisError as exc:
                log.warning("Redis unavailable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
        stopping.cancel()

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
        headers = {"content-type": "application/json", "webhook-id": webhook_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self.signer.sign(webhook_id, now, body),
                   "user-agent": "wanhook"}
        wait: float | None = None
        try:
            response = await self.http.post(url, content=body.encode(), headers=headers)
            outcome, status_code = f"HTTP {response.status_code}", response.status_code
            wait = retry_after(response)
        except outbound.DestinationRefused as exc:
            outcome, status_code = f"refused: {exc}", None
        except httpx.TimeoutException:
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
            delivery["next_attempt_at"] = datetime.fromtimestamp(time.time() + delay, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        if delay < 0:
            delivery.pop("next_attempt_at", None)
        await self._settle(keys=keys.ROUTE,
                           args=[keys.PREFIX, task_id, webhook_id, json.dumps(delivery), int(delay * 1000)])
        await self.store.count(f"callbacks_{delivery['status'] if delay < 0 else 'retried'}")
        log.info("callback %s for task %s to %s: %s (attempt %d, %s)", webhook_id, task_id, redact_url(url),
                 outcome, attempt, delivery["status"])

    async def _body(self, task_id: str, webhook_id: str, state: str, delivery: dict[str, Any]) -> str:
        """The delivery's body, frozen at its first attempt."""
        key = keys.CALLBACK_BODY + webhook_id
        frozen = await self.redis.get(key)
        if frozen is not None:
            return _text(frozen)
        task = await self.store.get(task_id) or {}
        data = dict(task, status=state)
        data.pop("callbacks", None)
        body = json.dumps({"type": delivery["event"], "timestamp": delivery.get("created_at") or now_iso(),
                           "data": data}, separators=(",", ":"))
        await self.redis.set(key, body, nx=True, ex=30 * 24 * 3600)
        return _text(await self.redis.get(key) or body)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
