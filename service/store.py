"""TaskStore: the tasks, their state changes and the completion events, in Redis.

Every write that changes a task's state goes through one of the Lua scripts in ``scripts.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from . import constants as keys
from . import scripts
from .events import CompletionEvent
from .types import STATUSES, Outcome

JSON_FIELDS = ("parameters", "metadata", "callback", "video", "error")
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _flatten(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        if value is None:
            continue
        flat += [name, json.dumps(value, separators=(",", ":")) if name in JSON_FIELDS else str(value)]
    return flat


def public_task(raw: dict[str, str]) -> dict[str, Any]:
    """The contract's task shape from the stored hash (internal fields, e.g. the signed URL, stay out)."""

    def load(name: str, default: Any = None) -> Any:
        return json.loads(raw[name]) if raw.get(name) else default

    task = {
        "id": raw["id"],
        "status": raw["status"],
        "model": raw.get("model"),
        "prompt": raw.get("prompt"),
        "negative_prompt": raw.get("negative_prompt"),
        "parameters": load("parameters", {}),
        "metadata": load("metadata", {}),
        "callback": load("callback"),
        "dashscope": {
            "task_id": raw.get("ds_task_id"),
            "status": raw.get("ds_status"),
            "request_id": raw.get("ds_request_id"),
        },
        "video": load("video"),
        "error": load("error"),
        "created_at": raw.get("created_at"),
        "updated_at": raw.get("updated_at"),
    }
    if raw["status"] == "downloading" and raw.get("dl_bytes"):
        task["progress"] = {"bytes": int(raw["dl_bytes"]), "total": int(raw["dl_total"] or 0) or None}
    return task


class TaskStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._create = redis.register_script(scripts.CREATE)
        self._transition = redis.register_script(scripts.TRANSITION)
        self._mark_submitted = redis.register_script(scripts.MARK_SUBMITTED)
        self._ingest = redis.register_script(scripts.INGEST)

    async def create(self, fields: dict[str, Any], idempotency_key: str | None = None) -> str:
        """Store a new queued task and queue its submission; returns its id (the first one's for a repeated key)."""
        task_id = uuid.uuid4().hex
        args = [keys.PREFIX, task_id, idempotency_key or "", IDEMPOTENCY_TTL_SECONDS,
                f"{int(time.time() * 1000):013d}", now_iso(), *_flatten(fields)]
        return _text(await self._create(keys=keys.ROUTE, args=args))

    async def raw(self, task_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(keys.TASK + task_id)
        return {_text(k): _text(v) for k, v in raw.items()} or None

    async def get(self, task_id: str) -> dict[str, Any] | None:
        raw = await self.raw(task_id)
        return public_task(raw) if raw else None

    async def list(self, status: str | None, limit: int, cursor: str | None) -> tuple[list[dict[str, str]], str | None]:
        """Stored tasks, newest first, and the cursor of the next page (None at the end)."""
        index = keys.TASKS_BY_STATUS + status if status else keys.TASKS_ALL
        members = [_text(m) for m in await self.redis.zrevrangebylex(
            index, "(" + cursor if cursor else "+", "-", start=0, num=limit)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.hgetall(keys.TASK + member.split(":", 1)[1])
            rows = await pipe.execute()
        tasks = [{_text(k): _text(v) for k, v in row.items()} for row in rows if row]
        return tasks, members[-1] if len(members) == limit else None

    async def transition(self, task_id: str, to: str, **fields: Any) -> bool:
        """Move a task forward; False when it is already there or past it (or unknown)."""
        assert to in STATUSES
        result = await self._transition(keys=keys.ROUTE, args=[keys.PREFIX, task_id, to, now_iso(), *_flatten(fields)])
        return _text(result) == "ok"

    async def mark_submitted(self, task_id: str, ds_task_id: str, ds_status: str, request_id: str | None, *,
                             slot_lease_ms: int, sweep_after_ms: int, adopt: bool = False) -> str:
        """Record DashScope's task: "ok", "stale" (the task moved on meanwhile, e.g. canceled) or
        "taken" (``adopt`` and another wanhook task already owns that DashScope task)."""
        result = await self._mark_submitted(keys=keys.ROUTE, args=[
            keys.PREFIX, task_id, ds_task_id, ds_status, request_id or "", now_iso(), slot_lease_ms, sweep_after_ms,
            "1" if adopt else "0"])
        return _text(result)

    async def set_fields(self, task_id: str, **fields: Any) -> None:
        """Internal, non-state fields (download validators, progress); never the status."""
        await self.redis.hset(keys.TASK + task_id, mapping=dict(zip(*[iter(_flatten(fields))] * 2, strict=True)))

    async def progress(self, task_id: str, written: int, total: int | None, **fields: Any) -> None:
        """Download progress: on the task, and on its change stream for live followers."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.TASK + task_id, mapping=dict(zip(*[iter(_flatten({"dl_bytes": written, **fields}))] * 2,
                                                          strict=True)))
            pipe.xadd(keys.TASK_CHANGES + task_id, {"status": "downloading", "at": now_iso(), "bytes": written,
                                                     "total": total or ""},
                      maxlen=keys.TASK_CHANGES_MAXLEN, approximate=True)
            await pipe.execute()

    async def ingest(self, event: CompletionEvent, body: bytes) -> tuple[Outcome, str | None]:
        """Record one completion event durably and apply it, atomically. Returns the outcome and task id."""
        outcome, task_id = await self._ingest(keys=keys.ROUTE, args=[
            keys.PREFIX, event.source, event.id, event.task_id, event.task_status, now_iso(),
            event.video_url or "", event.code or "", event.message or "", "1" if event.foreign else "0",
            keys.EVENT_SEEN_TTL_SECONDS, keys.EARLY_EVENT_TTL_SECONDS, keys.EVENT_LOG_MAXLEN, body,
        ])
        return Outcome(_text(outcome)), _text(task_id) or None

    async def count(self, name: str, amount: int = 1) -> None:
        await self.redis.hincrby(keys.COUNTERS, name, amount)

    async def counters(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in (await self.redis.hgetall(keys.COUNTERS)).items()}

    async def status_counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in STATUSES:
                pipe.zcard(keys.TASKS_BY_STATUS + status)
            counts = await pipe.execute()
        return dict(zip(STATUSES, counts, strict=True))

    async def queued_by(self, owner: str) -> int:
        """How many tasks of this submitter wait in the queues, all models together."""
        from .models import MODELS

        async with self.redis.pipeline(transaction=False) as pipe:
            for model in MODELS:
                pipe.llen(keys.QUEUE + model + ":" + owner)
            return sum(await pipe.execute())

    async def latest_change(self, task_id: str) -> tuple[str, dict[str, str]]:
        """The newest state change (stream id and fields); progress entries are skipped."""
        for entry_id, fields in await self.redis.xrevrange(keys.TASK_CHANGES + task_id, count=50):
            change = {_text(k): _text(v) for k, v in fields.items()}
            if "bytes" not in change:
                return _text(entry_id), change
        return "0-0", {}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)
