"""Dead letters of wanhook's jobs: listed and replayed (``/v1/dead-letters``, ``wanhook dead-letters``).

Each job kind (``jobs.KINDS``: downloads, failure reads, callback deliveries) keeps its dead letters in a
stream of its own (keys.py), each entry ``kind``, ``task``, ``job`` (the job's entry id, or the callback's
webhook id), ``deliveries``, ``cause`` and ``at``. A dead letter is named ``<kind>:<entry id>``.
Replaying one queues its job again (its task opened again if the dead letter ended it) and removes it.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

from redis.asyncio import Redis

from ..domain.task import as_text
from ..persistence import keys, scripts
from ..persistence.store import now_iso
from .queue import CALLBACK, KINDS

Entries = list[tuple[bytes, dict[bytes, bytes]]]  # a stream range, as XRANGE answers it
LETTER = re.compile(r"(?P<kind>[a-z]+):(?P<entry>[0-9]{1,20}-[0-9]{1,20})")


def parse(letter: str) -> tuple[str, str] | None:
    """``<kind>:<entry id>`` -> (kind, entry id); None when it names no dead letter of a known kind."""
    match = LETTER.fullmatch(letter)
    if not match or match["kind"] not in KINDS:
        return None
    return match["kind"], match["entry"]


def _shown(kind: str, entry_id: Any, fields: dict[Any, Any]) -> dict[str, Any]:
    item = {as_text(key): as_text(value) for key, value in fields.items()}
    return {
        "id": f"{kind}:{as_text(entry_id)}",
        "kind": kind,
        "task_id": item.get("task", ""),
        "job": item.get("job", ""),
        "attempts": int(item.get("deliveries") or 0),
        "cause": item.get("cause", ""),
        "at": item.get("at", ""),
    }


async def listing(redis: Redis, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters first, of one kind or all, at most ``limit``."""
    found: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for name in [kind] if kind else list(KINDS):
        entries = cast(Entries, await redis.xrevrange(KINDS[name].dead, count=limit))
        for entry_id, fields in entries:
            millis, _, seq = as_text(entry_id).partition("-")
            found.append(((int(millis), int(seq)), _shown(name, entry_id, fields)))
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [item for _, item in found[:limit]]


async def replay(redis: Redis, letter: str) -> dict[str, Any]:
    """Queue the dead letter's job again. Returns ``{"result": ...}``: ``replayed`` (with the new ``job``),
    ``missing`` (no such dead letter), ``gone`` (its task is deleted) or ``ended`` (its task has ended
    otherwise since, ``status``)."""
    parsed = parse(letter)
    if parsed is None:
        return {"result": "missing"}
    name, entry = parsed
    kind = KINDS[name]
    if kind is CALLBACK:
        return await _replay_callback(redis, entry)
    script = redis.register_script(scripts.REPLAY_JOB)
    answer = [
        as_text(part)
        for part in await script(
            keys=scripts.job_streams_keys(kind.stream, kind.dead), args=[entry, kind.name, kind.works_on, now_iso()]
        )
    ]
    if answer[0] == "ok":
        return {"result": "replayed", "job": answer[1]}
    if answer[0] == "ended":
        return {"result": "ended", "status": answer[1]}
    return {"result": answer[0]}


async def _replay_callback(redis: Redis, entry: str) -> dict[str, Any]:
    entries = cast(Entries, await redis.xrange(keys.CALLBACK_DEAD, entry, entry))
    if not entries:
        return {"result": "missing"}
    fields = {as_text(key): as_text(value) for key, value in entries[0][1].items()}
    task_id, webhook_id = fields.get("task", ""), fields.get("job", "")
    raw = await redis.hget(keys.DELIVERIES + task_id, webhook_id)
    if raw is None:
        return {"result": "gone"}
    delivery = json.loads(raw)
    if delivery.get("status") in ("dead", "gone"):
        delivery.pop("errors", None)
        delivery.update(status="pending", attempts=0, replayed_at=now_iso())
        settle = redis.register_script(scripts.SETTLE_CALLBACK)
        await settle(keys=scripts.settle_callback_keys(task_id), args=[task_id, webhook_id, json.dumps(delivery), 0])
        await redis.rpush(keys.CALLBACKS_WAKE, "1")
    # A delivery pending again already (replayed through its task) is left on its way.
    await redis.xdel(keys.CALLBACK_DEAD, entry)
    await redis.hincrby(keys.COUNTERS, "jobs_replayed|kind=callback", 1)
    return {"result": "replayed", "job": webhook_id}
