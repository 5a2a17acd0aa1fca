"""TaskStore: the tasks, their state changes and the completion events, in Redis.

Every write that changes a task's state goes through one of the Lua scripts (``lua/``, loaded by ``scripts.py``).
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, cast

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from ..config import Durability
from ..core.errors import IdempotencyKeyReused, QueueFull
from ..domain.events import CompletionEvent
from ..domain.models import MODELS
from ..domain.task import STATUSES, Outcome, Status, Task, as_text, encode_video, iso_of_ms
from . import audit, keys, scripts
from .group_commit import GroupCommit
from .replication import Replicated, write_replicated

JSON_FIELDS = ("parameters", "metadata", "callback", "video", "error")
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
INDEX_BATCH = 1000

log = logging.getLogger("wanhook.store")


def request_digest(fields: dict[str, Any]) -> str:
    """What identifies a create request: the checked fields (defaults filled in), as canonical JSON.

    Two bodies that differ only in key order, spacing or a default spelled out ask for the same task.
    """
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


_last_now: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The time in ISO 8601, UTC, to the millisecond ("2026-11-29T14:00:00.123Z"). Formatted once per
    millisecond: events recorded together ask for it many times in one."""
    global _last_now
    ms = time.time_ns() // 1_000_000
    last = _last_now  # read once: a thread may replace it meanwhile
    if ms != last[0]:
        seconds, milli = divmod(ms, 1000)
        last = _last_now = (ms, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z")
    return last[1]


def utf8_prefix(data: bytes, size: int) -> bytes:
    """At most ``size`` bytes of ``data``, not ending inside a UTF-8 character (readers decode it)."""
    if len(data) <= size:
        return data
    cut = size
    while cut > 0 and 0x80 <= data[cut] < 0xC0:  # data[cut] is the first byte left out
        cut -= 1
    return data[:cut]


@dataclasses.dataclass(frozen=True)
class Deleted:
    """What ``TaskStore.delete`` did: "deleted" (and what it removed), "active" (the task has not ended:
    ``detail`` is its status), "gone" (deleted before: ``detail`` is its owner) or "missing"."""

    outcome: str
    detail: str = ""
    video: bool = False  # the task had a stored video (its file is the caller's to remove)
    deliveries: int = 0
    change_stream: bool = False
    index_entries: int = 0


def _flatten(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        if value is None:
            continue
        flat += [name, json.dumps(value, separators=(",", ":")) if name in JSON_FIELDS else str(value)]
    return flat


class TaskStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.durability = Durability()
        self._create = redis.register_script(scripts.CREATE)
        self._transition = redis.register_script(scripts.TRANSITION)
        self._mark_submitted = redis.register_script(scripts.MARK_SUBMITTED)
        # Concurrent events share a round trip (group_commit.py); each is still answered for its own script.
        self._ingest = GroupCommit(
            redis,
            redis.register_script(scripts.INGEST),
            redis.register_script(scripts.INGEST_BATCH),
            scripts.INGEST_ARGC,
        )
        self._index_owners = redis.register_script(scripts.INDEX_OWNERS)
        self._delete = redis.register_script(scripts.DELETE)
        self._index_ended = redis.register_script(scripts.INDEX_ENDED)
        self._drop_video = redis.register_script(scripts.DROP_VIDEO)

    def require(self, durability: Durability) -> None:
        """Answer for the writes a sender is told are safe (a recorded event, a created task, the DashScope
        task id a create returned) only once ``durability`` holds: they raise ``NotReplicated`` otherwise."""
        self.durability = durability
        ingest = self._ingest
        self._ingest = GroupCommit(self.redis, ingest.script, ingest.batch, ingest.argc, durability)
        if durability.off:
            return
        for name in ("_create", "_mark_submitted"):
            script = getattr(self, name)
            original = script.script if isinstance(script, Replicated) else script
            setattr(self, name, Replicated(self.redis, original, durability))

    async def create(
        self,
        fields: dict[str, Any],
        idempotency_key: str | None = None,
        *,
        max_queued: int | None = None,
        digest: str | None = None,
    ) -> str:
        """Store a new queued task and queue its submission; returns its id (the first one's for a repeated key).

        Raises ``IdempotencyKeyReused`` when the key came first with other fields, and ``QueueFull`` when
        the submitter (``fields["owner"]``) already has ``max_queued`` tasks waiting: both are decided in
        the same atomic step as the write.
        """
        return await self._create_or_check(fields, idempotency_key, max_queued, digest, uuid.uuid4().hex) or ""

    async def admissible(
        self, fields: dict[str, Any], idempotency_key: str | None, *, max_queued: int | None, digest: str | None
    ) -> str | None:
        """What ``create`` would decide, writing nothing: the key's earlier task (its id), or ``None`` when a
        new task would be created; ``IdempotencyKeyReused`` and ``QueueFull`` as ``create`` raises them. Asked
        before work a create would waste (uploading its images), which ``create`` then decides again."""
        return await self._create_or_check(fields, idempotency_key, max_queued, digest, "")

    async def _create_or_check(
        self,
        fields: dict[str, Any],
        idempotency_key: str | None,
        max_queued: int | None,
        digest: str | None,
        task_id: str,
    ) -> str | None:
        """``digest``: the request's, when the fields stored differ from those sent (an image uploaded since)."""
        digest = (digest or request_digest(fields)) if idempotency_key else ""
        # One instant for both: created_at is read back from created_ms (task.py), updated_at is written.
        created_ms = int(time.time() * 1000)
        # No metadata is no field (read back as {}): a hash holds only what it has to.
        stored = {name: value for name, value in fields.items() if not (name == "metadata" and not value)}
        args: list[str | int] = [
            task_id,
            idempotency_key or "",
            IDEMPOTENCY_TTL_SECONDS,
            f"{created_ms:013d}",
            iso_of_ms(created_ms),
            digest,
            -1 if max_queued is None else max_queued,
            len(MODELS),
            *MODELS,
            *_flatten(stored),
        ]
        outcome, value = await self._create(keys=keys.ROUTE, args=args)
        outcome = as_text(outcome)
        if outcome == "full":
            raise QueueFull(int(value), max_queued)
        if outcome == "reused":
            raise IdempotencyKeyReused(as_text(value))
        if outcome == "admissible":
            return None
        return as_text(value)

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
            last, count = await self._index_owners(keys=keys.ROUTE, args=[after, batch])
            after, read = as_text(last), read + int(count)
            if not after:
                break
        await self.redis.set(keys.OWNER_INDEX_READY, "1")
        return read

    async def index_ended(self, batch: int = INDEX_BATCH) -> int:
        """Add the tasks that ended before the retention indexes existed to them, once per installation
        (as ``index_owners`` does for the submitters' indexes). Returns how many tasks were read."""
        if await self.redis.exists(keys.RETENTION_INDEX_READY):
            return 0
        after, read = "", 0
        while True:
            last, count = await self._index_ended(keys=keys.ROUTE, args=[after, batch])
            after, read = as_text(last), read + int(count)
            if not after:
                break
        await self.redis.set(keys.RETENTION_INDEX_READY, "1")
        return read

    async def raw(self, task_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(keys.TASK + task_id)
        return {as_text(k): as_text(v) for k, v in raw.items()} or None

    async def task(self, task_id: str) -> Task | None:
        raw = await self.redis.hgetall(keys.TASK + task_id)
        return Task.from_hash(raw) if raw else None

    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The task in the contract's shape (``Task.public``), None when there is none."""
        task = await self.task(task_id)
        return task.public() if task else None

    async def list(
        self, owner: str, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Task], str | None]:
        """The submitter's stored tasks, newest first, and the cursor of the next page (None at the end).

        Read from the submitter's own index: a page costs ``limit`` reads whatever the other submitters hold.
        """
        index = keys.owner_tasks(owner, status)
        members = [
            as_text(m)
            for m in await self.redis.zrevrangebylex(index, "(" + cursor if cursor else "+", "-", start=0, num=limit)
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.hgetall(keys.TASK + member.split(":", 1)[1])
            rows = await pipe.execute()
        tasks = [Task.from_hash(row) for row in rows if row]
        return tasks, members[-1] if len(members) == limit else None

    async def transition(self, task_id: str, to: str, **fields: Any) -> bool:
        """Move a task forward; False when it is already there or past it (or unknown)."""
        assert to in STATUSES
        if isinstance(fields.get("video"), dict):
            fields.update(encode_video(task_id, fields.pop("video")))
        result = await self._transition(keys=keys.ROUTE, args=[task_id, to, now_iso(), *_flatten(fields)])
        return as_text(result) == "ok"

    async def mark_submitted(
        self,
        task_id: str,
        ds_task_id: str,
        ds_status: str,
        request_id: str | None,
        *,
        slot_lease_ms: int,
        sweep_after_ms: int,
        adopt: bool = False,
        attempt: str = "",
    ) -> str:
        """Record DashScope's task: "ok"; for an answer that came after the task moved on, "same" (already
        recorded with it), "canceled" (its user canceled it) or "orphan" (left running, recorded); with
        ``adopt``, "taken" (another wanhook task owns that DashScope task) or "moved" (the task no longer
        waits); "missing". ``attempt`` is the submission attempt whose create answered."""
        result = await self._mark_submitted(
            keys=keys.ROUTE,
            args=[
                task_id,
                ds_task_id,
                ds_status,
                request_id or "",
                now_iso(),
                slot_lease_ms,
                sweep_after_ms,
                "1" if adopt else "0",
                attempt,
            ],
        )
        return as_text(result)

    async def set_fields(self, task_id: str, **fields: Any) -> None:
        """Internal, non-state fields (download validators, progress); never the status."""
        await self.redis.hset(keys.TASK + task_id, mapping=dict(zip(*[iter(_flatten(fields))] * 2, strict=True)))

    async def clear_fields(self, task_id: str, *names: str) -> None:
        """Drop internal, non-state fields of the task (a disk-full error once there is room again)."""
        await self.redis.hdel(keys.TASK + task_id, *names)

    async def add_to_field(self, task_id: str, name: str, amount: int = 1) -> int:
        """Add to a counting field of the task (reads spent on it), atomically; returns the new value."""
        return int(await self.redis.hincrby(keys.TASK + task_id, name, amount))

    async def progress(self, task_id: str, written: int, total: int | None, **fields: Any) -> None:
        """Download progress: on the task, and on its change stream for live followers."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.TASK + task_id,
                mapping=dict(zip(*[iter(_flatten({"dl_bytes": written, **fields}))] * 2, strict=True)),
            )
            pipe.xadd(
                keys.TASK_CHANGES + task_id,
                {"status": Status.DOWNLOADING.value, "at": now_iso(), "bytes": written, "total": total or ""},
                maxlen=keys.TASK_CHANGES_MAXLEN,
                approximate=True,
            )
            await pipe.execute()

    async def ingest(self, event: CompletionEvent, body: bytes) -> tuple[Outcome, str | None]:
        """Record one completion event durably and apply it, atomically. Returns the outcome and task id."""
        # What the event leaves on the task (or its early record) is bounded; a URL too long to be
        # DashScope's is dropped, and the download reads the task for the real one.
        video_url = event.video_url if event.video_url and len(event.video_url) <= keys.EVENT_URL_MAX else ""
        whole = audit.encode_body(body) if len(body) <= keys.EVENT_LOG_BODY_MAX else (audit.RAW, b"")
        outcome, task_id = await self._ingest(
            keys=keys.ROUTE,
            args=[
                event.source,
                event.id,
                event.task_id,
                event.task_status,
                now_iso(),
                video_url,
                (event.code or "")[: keys.EVENT_CODE_MAX],
                (event.message or "")[: keys.EVENT_MESSAGE_MAX],
                "1" if event.foreign else "0",
                keys.EVENT_SEEN_TTL_SECONDS,
                keys.EARLY_EVENT_TTL_SECONDS,
                keys.EVENT_LOG_MAXLEN,
                # A large body is not even sent: the audit entry keeps its digest and first bytes only.
                whole[1],
                utf8_prefix(body, keys.EVENT_LOG_PREFIX),
                hashlib.sha256(body).hexdigest(),
                len(body),
                whole[0],
            ],
        )
        return Outcome(as_text(outcome)), as_text(task_id) or None

    async def delete(self, task_id: str, *, tombstone: bool = True, owe_object: bool = False) -> Deleted:
        """Remove an ended task and everything kept for it in Redis, atomically (scripts.DELETE).

        With ``tombstone``, a trace of it (its owner) stays for ``keys.DELETED_TTL_SECONDS``: a second
        DELETE is answered as done, and a create that lands after the deletion is canceled at DashScope.
        With ``owe_object`` (videos in an object store), the removal of its object is recorded as owed
        (``keys.OBJECTS_TO_REMOVE``) in the same step, for ``removals.py`` to settle.
        """
        ttl = keys.DELETED_TTL_SECONDS if tombstone else 0
        result = await self._delete(keys=keys.ROUTE, args=[task_id, ttl, "1" if owe_object else "0"])
        outcome = as_text(result[0])
        if outcome == "deleted":
            video = as_text(result[1])
            return Deleted(
                "deleted",
                video=bool(video),
                deliveries=int(result[2]),
                change_stream=bool(int(result[3])),
                index_entries=int(result[4]),
            )
        return Deleted(outcome, detail=as_text(result[1]))

    async def drop_video(self, task_id: str, reason: str, detail: str, *, owe_object: bool = False) -> bool:
        """The task's video no longer kept (retention): ``video`` reads null and ``video_removed`` says why.
        Whether it had one (its file is the caller's to remove; ``owe_object`` as in ``delete``)."""
        removed = json.dumps({"reason": reason, "message": detail, "at": now_iso()}, separators=(",", ":"))
        args = [task_id, removed, "1" if owe_object else "0"]
        return bool(as_text(await self._drop_video(keys=scripts.drop_video_keys(task_id), args=args)))

    # Object removals owed (removals.py): videos in an object store whose records are gone.

    async def removals_due(self, limit: int) -> builtins.list[str]:
        """At most ``limit`` task ids whose object's removal is due now (Redis' clock), the longest due first."""
        now_ms = await self.clock_ms()
        return [
            as_text(m)
            for m in await self.redis.zrangebyscore(keys.OBJECTS_TO_REMOVE, "-inf", now_ms, start=0, num=limit)
        ]

    async def owe_removal(self, task_id: str) -> None:
        """Record that the object of ``task_id`` must go (a video stored after its task ended)."""
        await self.redis.zadd(keys.OBJECTS_TO_REMOVE, {task_id: 0}, nx=True)

    async def removal_done(self, task_id: str) -> None:
        await self.redis.zrem(keys.OBJECTS_TO_REMOVE, task_id)

    async def removal_later(self, task_id: str, delay_ms: int) -> None:
        """Try the removal again ``delay_ms`` from now (the entry stays owed; others go first meanwhile)."""
        await self.redis.zadd(keys.OBJECTS_TO_REMOVE, {task_id: await self.clock_ms() + delay_ms}, xx=True)

    async def removals_owed(self) -> int:
        return int(await self.redis.zcard(keys.OBJECTS_TO_REMOVE))

    async def retention_due(self, indexes: Iterable[str], keep_ms: int, limit: int) -> builtins.list[str]:
        """At most ``limit`` ids of the time-ordered ``indexes`` (keys.TASKS_ENDED, keys.VIDEOS_KEPT) older
        than ``keep_ms``, on Redis' clock, oldest first."""
        cutoff = await self.clock_ms() - keep_ms
        due: builtins.list[tuple[float, str]] = []
        for index in indexes:
            found = cast(
                builtins.list[tuple[bytes, float]],
                await self.redis.zrangebyscore(index, "-inf", cutoff, start=0, num=limit, withscores=True),
            )
            due.extend((float(score), as_text(member)) for member, score in found)
        # An id in both (stored by an earlier version) once.
        return builtins.list(dict.fromkeys(member for _, member in sorted(due)))[:limit]

    async def retention_count(self, indexes: Iterable[str], keep_ms: int) -> int:
        """How many ids of ``indexes`` are older than ``keep_ms`` (what a dry run reports)."""
        cutoff = await self.clock_ms() - keep_ms
        return sum([int(await self.redis.zcount(index, "-inf", cutoff)) for index in indexes])

    async def newest_change_id(self, task_id: str) -> str:
        """The id of the newest entry of the task's change stream, progress included ("0-0" when it has none)."""
        newest = await self.redis.xrevrange(keys.TASK_CHANGES + task_id, count=1)
        return as_text(newest[0][0]) if newest else "0-0"

    async def clock_ms(self) -> int:
        """Redis' clock (ms), the one the scripts' leases and deadlines are kept on."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def slots_in_use(self, models: Iterable[str]) -> builtins.list[int]:
        """Per model, the DashScope slots held now; a lease that ran out is no longer a task at DashScope,
        though admission has yet to drop it."""
        now_ms = await self.clock_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for model in models:
                pipe.zcount(keys.SLOTS + model, f"({now_ms}", "+inf")
            return [int(count) for count in await pipe.execute()]

    # The sweeper (sweeper.py): one process at a time reads the tasks whose completion event is overdue.

    async def lead_sweeper(self, holder: str, ttl_ms: int) -> bool:
        """Whether ``holder`` runs the sweeper, for ``ttl_ms`` more: taken when free, renewed when its own."""
        if await self.redis.set(keys.SWEEPER_LEADER, holder, nx=True, px=ttl_ms):
            return True
        if as_text(await self.redis.get(keys.SWEEPER_LEADER)) == holder:
            await self.redis.pexpire(keys.SWEEPER_LEADER, ttl_ms)
            return True
        return False

    async def overdue(self, limit: int) -> builtins.list[str]:
        """At most ``limit`` submitted tasks past the time the sweeper reads them, on Redis' clock."""
        due = await self.redis.zrangebyscore(keys.SWEEP, "-inf", await self.clock_ms(), start=0, num=limit)
        return [as_text(member) for member in due]

    async def downloading(self, start: int, count: int) -> builtins.list[str]:
        """Task ids in ``downloading``, the ``start``-th oldest on, at most ``count``."""
        members = await self.redis.zrange(keys.TASKS_BY_STATUS + Status.DOWNLOADING.value, start, start + count - 1)
        return [as_text(member).partition(":")[2] for member in members]

    async def download_job_tasks(self, limit: int) -> set[str] | None:
        """The tasks the download jobs name (pending or not); None when there are more than ``limit`` jobs."""
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await self.redis.xrange(keys.DOWNLOAD_JOBS, count=limit + 1)
        )
        if len(entries) > limit:
            return None
        return {as_text(fields.get(b"task") or b"") for _, fields in entries}

    async def job_missing(self, task_id: str, bound_ms: int, max_requeues: int) -> str:
        """A downloading task without a download job, looked at (``scripts.JOB_MISSING``)."""
        script = self.redis.register_script(scripts.JOB_MISSING)
        return as_text(await script(keys=keys.ROUTE, args=[task_id, bound_ms, max_requeues, now_iso()]))

    async def unwatch(self, task_id: str) -> None:
        """The sweeper no longer reads the task (it is no longer at DashScope)."""
        await self.redis.zrem(keys.SWEEP, task_id)

    async def watch_again(self, task_id: str, model: str, after_ms: int, slot_lease_ms: int) -> None:
        """A task still rendering: read again ``after_ms`` from now, its slot kept meanwhile; both only
        if still there (XX), in one step."""
        now = await self.clock_ms()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.SWEEP, {task_id: now + after_ms}, xx=True)
            pipe.zadd(keys.SLOTS + model, {task_id: now + slot_lease_ms}, xx=True)
            await pipe.execute()

    async def dead_letter(self, entry: Mapping[FieldT, EncodableT]) -> None:
        """Keep a message a transport gave up on, bounded in number as the audit stream is. The transport then
        acknowledges it: with ``durability``, only once replicas have it (``NotReplicated`` otherwise)."""
        fields = dict(entry)
        if self.durability.off:
            await self.redis.xadd(keys.DEAD_LETTERS, fields, maxlen=keys.EVENT_LOG_MAXLEN, approximate=True)
            return

        xadd = ["XADD", keys.DEAD_LETTERS, "MAXLEN", "~", keys.EVENT_LOG_MAXLEN, "*"]
        await write_replicated(
            self.redis, self.durability, keys.DEAD_LETTERS, [*xadd, *(item for pair in fields.items() for item in pair)]
        )

    async def record_settings(self, changes_ttl_ms: int) -> None:
        """The settings every process applies alike inside the scripts (SETTINGS)."""
        await self.redis.hset(keys.SETTINGS, "changes_ttl_ms", changes_ttl_ms)

    async def count(self, name: str, amount: int = 1) -> None:
        await self.redis.hincrby(keys.COUNTERS, name, amount)

    async def counters(self) -> dict[str, int]:
        return {as_text(k): int(v) for k, v in (await self.redis.hgetall(keys.COUNTERS)).items()}

    async def status_counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in STATUSES:
                pipe.zcard(keys.TASKS_BY_STATUS + status)
            counts = await pipe.execute()
        return dict(zip(STATUSES, counts, strict=True))

    async def latest_change(self, task_id: str) -> tuple[str, dict[str, str]]:
        """The newest state change (stream id and fields); progress entries are skipped."""
        # XREVRANGE answers a list of (id, fields), never None; the client's types cover every command's replies.
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await self.redis.xrevrange(keys.TASK_CHANGES + task_id, count=50)
        )
        for entry_id, fields in entries:
            change = {as_text(k): as_text(v) for k, v in fields.items()}
            if "bytes" not in change:
                return as_text(entry_id), change
        return "0-0", {}
