"""TaskStore: the tasks, their state changes and the completion events, in Redis.

Every write that changes a task's state goes through one of the Lua scripts in ``scripts.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis

from . import keys, scripts
from .ingress.events import CompletionEvent
from .models import MODELS
from .replication import Durability, Replicated
from .types import STATUSES, Outcome

JSON_FIELDS = ("parameters", "metadata", "callback", "video", "error")
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
INDEX_BATCH = 1000

log = logging.getLogger("wanhook.store")


class QueueFull(Exception):
    """The submitter already has as many tasks waiting in the queues as it may."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} tasks queued")
        self.queued = queued


class IdempotencyKeyReused(Exception):
    """The Idempotency-Key was first sent with another request body; it names that request's task."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"the key belongs to task {task_id}")
        self.task_id = task_id


def request_digest(fields: dict[str, Any]) -> str:
    """What identifies a create request: the checked fields (defaults filled in), as canonical JSON.

    Two bodies that differ only in key order, spacing or a default spelled out ask for the same task.
    """
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utf8_prefix(data: bytes, size: int) -> bytes:
    """At most ``size`` bytes of ``data``, not ending inside a UTF-8 character (readers decode it)."""
    if len(data) <= size:
        return data
    cut = size
    while cut > 0 and 0x80 <= data[cut] < 0xC0:  # data[cut] is the first byte left out
        cut -= 1
    return data[:cut]


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
        self._index_owners = redis.register_script(scripts.INDEX_OWNERS)

    def require(self, durability: Durability) -> None:
        """Answer for the writes a sender is told are safe (a recorded event, a created task, the DashScope
        task id a create returned) only once ``durability`` holds: they raise ``NotReplicated`` otherwise."""
        if durability.off:
            return
        for name in ("_create", "_mark_submitted", "_ingest"):
            script = getattr(self, name)
            setattr(self, name, Replicated(self.redis, script.script if isinstance(script, Replicated) else script,
                                           durability))

    async def create(self, fields: dict[str, Any], idempotency_key: str | None = None, *,
                     max_queued: int | None = None) -> str:
        """Store a new queued task and queue its submission; returns its id (the first one's for a repeated key).

        Raises ``IdempotencyKeyReused`` when the key came first with other fields, and ``QueueFull`` when
        the submitter (``fields["owner"]``) already has ``max_queued`` tasks waiting: both are decided in
        the same atomic step as the write.
        """
        task_id = uuid.uuid4().hex
        digest = request_digest(fields) if idempotency_key else ""
        args: list[str | int] = [keys.PREFIX, task_id, idempotency_key or "", IDEMPOTENCY_TTL_SECONDS,
                f"{int(time.time() * 1000):013d}", now_iso(), digest, -1 if max_queued is None else max_queued,
                len(MODELS), *MODELS, *_flatten(fields)]
        outcome, value = await self._create(keys=keys.ROUTE, args=args)
        outcome = _text(outcome)
        if outcome == "full":
            raise QueueFull(int(value))
        if outcome == "reused":
            raise IdempotencyKeyReused(_text(value))
        return _text(value)

    async def index_owners(self, batch: int = INDEX_BATCH) -> int:
        """Add the tasks stored before the submitters' indexes existed to them, once per installation.

        Runs in batches, each one atomic, while the service works: a task that changes meanwhile is put
        right by its change. The flag is set only when the whole index has been read, so a process
        stopped half-way leaves the rest to the next one to start. Returns how many tasks were read.
        """
        if await self.redis.exists(keys.OWNER_INDEX_READY):
            return 0
        after, read = "", 0
        while True:
            last, count = await self._index_owners(keys=keys.ROUTE, args=[keys.PREFIX, after, batch])
            after, read = _text(last), read + int(count)
            if not after:
                break
        await self.redis.set(keys.OWNER_INDEX_READY, "1")
        return read
    async def raw(self, task_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(keys.TASK + task_id)
        return {_text(k): _text(v) for k, v in raw.items()} or None

    async def get(self, task_id: str) -> dict[str, Any] | None:
        raw = await self.raw(task_id)
        return public_task(raw) if raw else None

    async def list(self, owner: str, status: str | None, limit: int,
                   cursor: str | None) -> tuple[list[dict[str, str]], str | None]:
        """The submitter's stored tasks, newest first, and the cursor of the next page (None at the end).

        Read from the submitter's own index: a page costs ``limit`` reads whatever the other submitters hold.
        """
        index = keys.owner_tasks(owner, status)
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
                             slot_lease_ms: int, sweep_after_ms: int, adopt: bool = False, attempt: str = "") -> str:
        """Record DashScope's task: "ok"; for an answer that came after the task moved on, "same" (already
        recorded with it), "canceled" (its user canceled it) or "orphan" (left running, recorded); with
        ``adopt``, "taken" (another wanhook task owns that DashScope task) or "moved" (the task no longer
        waits); "missing". ``attempt`` is the submission attempt whose create answered."""
        result = await self._mark_submitted(keys=keys.ROUTE, args=[
            keys.PREFIX, task_id, ds_task_id, ds_status, request_id or "", now_iso(), slot_lease_ms, sweep_after_ms,
            "1" if adopt else "0", attempt])
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
        # What the event leaves on the task (or its early record) is bounded; a URL too long to be
        # DashScope's is dropped, and the download reads the task for the real one.
        video_url = event.video_url if event.video_url and len(event.video_url) <= keys.EVENT_URL_MAX else ""
        outcome, task_id = await self._ingest(keys=keys.ROUTE, args=[
            keys.PREFIX, event.source, event.id, event.task_id, event.task_status, now_iso(),
            video_url, (event.code or "")[:keys.EVENT_CODE_MAX], (event.message or "")[:keys.EVENT_MESSAGE_MAX],
            "1" if event.foreign else "0",
            keys.EVENT_SEEN_TTL_SECONDS, keys.EARLY_EVENT_TTL_SECONDS, keys.EVENT_LOG_MAXLEN,
            # A large body is not even sent: the audit entry keeps its digest and first bytes only.
            body if len(body) <= keys.EVENT_LOG_BODY_MAX else b"", utf8_prefix(body, keys.EVENT_LOG_PREFIX),
            hashlib.sha256(body).hexdigest(), len(body),
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

    async def latest_change(self, task_id: str) -> tuple[str, dict[str, str]]:
        """The newest state change (stream id and fields); progress entries are skipped."""
        # XREVRANGE answers a list of (id, fields), never None; the client's types cover every command's replies.
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                       await self.redis.xrevrange(keys.TASK_CHANGES + task_id, count=50))
        for entry_id, fields in entries:
            change = {_text(k): _text(v) for k, v in fields.items()}
            if "bytes" not in change:
                return _text(entry_id), change
        return "0-0", {}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)
