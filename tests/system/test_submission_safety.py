"""A create is never sent twice, and wanhook never cancels a DashScope task its user did not cancel.

A create in flight keeps its reservation (renewed) however long the call takes, and marks its task as
in flight until it can no longer answer: nobody sends the task again meanwhile. An answer that comes
after its task moved on is adopted (the task still waits), found already recorded, canceled at
DashScope (its user canceled the task) or recorded as an orphan and left running.

Through real processes against the emulator, and at the level of the scripts against a real Redis.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from wanhook.service.config import parse_limits
from wanhook.service.flows.quota import Admission
from wanhook.service.persistence import keys
from wanhook.service.persistence.store import TaskStore

from ..conftest import Stack
from ..invariants import assert_consistent
from ..support import Process, wait_for

MODEL = "wan2.2-t2v-plus"


def emulator_tasks(stack: Stack) -> list[dict[str, Any]]:
    return httpx.get(stack.emulator.url + "/_emulator/tasks", timeout=30).json()["tasks"]


def counter(client: Any, name: str) -> int:
    return int(client.hget(keys.COUNTERS, name) or 0)


def logged(process: Process, *needles: str) -> bool:
    return any(needle in process.log() for needle in needles)


# Through real processes


@pytest.mark.parametrize(
    "slow", ["create_answer_delay_seconds", "create_land_delay_seconds"], ids=["lands-then-answers-late", "lands-late"]
)
def test_creates_slower_than_the_reservation_are_each_sent_once(
    tmp_path: Path, redis_url: str, processes: list[Process], slow: str
) -> None:
    count, delay = 6, 3.0
    stack = Stack(tmp_path, redis_url, processes)
    # A reservation of 1 s, creates answered after 3 s: each call outlives its reservation three times.
    # The task exists at DashScope from the start of the call, or only at its end (no listing finds it).
    stack.env.update(WANHOOK_RESERVE_SECONDS="1", WANHOOK_LIMITS=f"{MODEL}=5/3")
    stack.start()
    stack.serve()  # a second process: its dispatcher would take any reservation that ran out
    stack.emulator.configure(**{slow: delay}, limits={MODEL: {"rps": 5, "running": 3}})
    started = time.monotonic()
    ids = [stack.create(f"slow create {n}")["id"] for n in range(count)]
    for task_id in ids:
        stack.wait_status(task_id, "ready", timeout=120)
    elapsed = time.monotonic() - started

    stats = stack.emulator.stats()
    prompts = Counter(task["prompt"] for task in emulator_tasks(stack))
    print(
        f"\n{count} tasks, {slow}={delay:g}, reservation 1s, 2 processes: "
        f"{stats['creates']} creates, all ready after {elapsed:.1f}s"
    )
    assert stats["creates"] == count
    assert prompts == Counter({f"slow create {n}": 1 for n in range(count)})  # exactly one per task
    assert stats["cancels"] == 0  # no live task canceled
    assert stats["creates_throttled"] == 0
    assert counter(stack.redis, "submissions_orphaned") == 0
    assert counter(stack.redis, "submissions_adopted") == 0  # nothing lost, nothing to look up
    assert {stack.task(task_id)["dashscope"]["task_id"] for task_id in ids} == {
        task["task_id"] for task in emulator_tasks(stack)
    }
    assert not stack.redis.keys(keys.INFLIGHT + "*")
    assert_consistent(stack.redis)


def test_a_late_answer_for_a_task_its_user_canceled_cancels_at_dashscope(stack: Stack) -> None:
    # The task stays PENDING at DashScope (no running slot there), where a cancel is accepted.
    stack.emulator.configure(create_answer_delay_seconds=3, limits={MODEL: {"rps": 5, "running": 0}})
    task_id = stack.create("canceled while its create is in flight")["id"]
    wait_for(lambda: stack.emulator.stats()["creates"] == 1, 30, what="the create to land")
    canceled = stack.http.post(f"/v1/tasks/{task_id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    landed = wait_for(
        lambda: [task for task in emulator_tasks(stack) if task["status"] == "CANCELED"],
        30,
        what="the DashScope task canceled once its create answered",
    )
    assert len(landed) == 1 and landed[0]["prompt"] == "canceled while its create is in flight"
    assert stack.emulator.stats()["cancels"] == 1
    assert stack.task(task_id)["status"] == "canceled"
    assert counter(stack.redis, "submissions_orphaned") == 0
    assert_consistent(stack.redis)


def test_a_sender_frozen_past_its_deadline_is_not_duplicated_nor_canceled(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_RESERVE_SECONDS="1", WANHOOK_DASHSCOPE_TIMEOUT="3", WANHOOK_LIMITS=f"{MODEL}=5/1")
    stack.start("--no-workers")
    stack.emulator.configure(create_answer_delay_seconds=2)  # lands at once, answers 2 s later
    frozen = stack.worker("worker-a")
    first = stack.create("sent by a sender that froze")
    wait_for(lambda: stack.emulator.stats()["creates"] == 1, 30, what="the create to land")
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)  # a pause longer than every lease and deadline (GC, VM, swap)
    try:
        second = stack.create("queued behind it")  # its wait for the only slot wakes the other process
        stack.worker("worker-b")
        for task_id in (first["id"], second["id"]):
            stack.wait_status(task_id, "ready", timeout=60)
        # The other process sent nothing for the first task: it found its DashScope task by listing.
        assert stack.emulator.stats()["creates"] == 2
        assert counter(stack.redis, "submissions_adopted") == 1
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    # Woken, the frozen sender reads its late answer (or its own timeout) and finds the task recorded.
    wait_for(
        lambda: logged(frozen, "its create answered after its DashScope task", "moved on meanwhile"),
        30,
        what="the frozen sender to settle its late create",
    )
    stats = stack.emulator.stats()
    assert stats["creates"] == 2 and stats["cancels"] == 0
    assert Counter(task["prompt"] for task in emulator_tasks(stack)) == Counter(
        {"sent by a sender that froze": 1, "queued behind it": 1}
    )
    assert stack.task(first["id"])["status"] == "ready"
    assert counter(stack.redis, "submissions_orphaned") == 0
    assert_consistent(stack.redis)


# The scripts, against a real Redis


def scenario(redis_url: str, body: Callable[[aioredis.Redis, TaskStore, Admission], Awaitable[None]]) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await body(client, TaskStore(client), Admission(client, parse_limits(f"{MODEL}=10/10"), 60))
        finally:
            await client.aclose()

    asyncio.run(run())
    sync = redis.Redis.from_url(redis_url)
    try:
        assert_consistent(sync)
    finally:
        sync.close()


async def admitted(store: TaskStore, admission: Admission, prompt: str) -> str:
    task_id = await store.create({"model": MODEL, "prompt": prompt, "owner": "t"})
    assert await admission.admit(MODEL) == (task_id, 0)
    return task_id


async def sent(store: TaskStore, admission: Admission, prompt: str, attempt: str) -> str:
    """An admitted task whose create went out with ``attempt``."""
    task_id = await admitted(store, admission, prompt)
    assert await admission.claim(task_id, attempt) == "ok"
    assert await admission.hold(task_id, attempt, 30_000, f"{time.time():.3f}")
    return task_id


async def record(store: TaskStore, task_id: str, ds_id: str, attempt: str = "", adopt: bool = False) -> str:
    return await store.mark_submitted(
        task_id, ds_id, "PENDING", None, slot_lease_ms=600_000, sweep_after_ms=600_000, adopt=adopt, attempt=attempt
    )


async def lease_runs_out(client: aioredis.Redis, task_id: str) -> None:
    """Its holder stopped renewing: the slot's lease is over."""
    await client.zadd(keys.SLOTS + MODEL, {task_id: 0})


async def queue(client: aioredis.Redis) -> list[str]:
    return [item.decode() for item in await client.lrange(keys.QUEUE + MODEL + ":t", 0, -1)]


def test_a_task_whose_create_may_still_answer_is_never_handed_out_again(redis_url: str) -> None:
    async def body(client: aioredis.Redis, store: TaskStore, admission: Admission) -> None:
        task_id = await sent(store, admission, "in flight", "a")
        await lease_runs_out(client, task_id)
        # The lease is over, the create's deadline is not: the task keeps its slot until then.
        assert await admission.admit(MODEL) == (None, -1)
        assert await queue(client) == []
        assert await client.zscore(keys.SLOTS + MODEL, task_id) > time.time() * 1000 + 20_000
        # A give-back that cannot tell whether the create went out leaves it there too.
        await admission.requeue(task_id, 0)
        assert await queue(client) == []
        assert await admission.claim(task_id, "b") == "busy"
        assert await counter_of(client, "slots_recovered") == 0
        # Its deadline passes: back at the head of its queue, to be looked up before it is sent.
        await client.pexpire(keys.INFLIGHT + task_id, 1)
        await lease_runs_out(client, task_id)
        await asyncio.sleep(0.01)
        assert await admission.admit(MODEL) == (task_id, 0)
        assert await admission.claim(task_id, "b") == "ok"
        assert await admission.hold(task_id, "b")
        assert not await admission.hold(task_id, "a")  # the frozen sender lost it: it sends nothing
        assert await record(store, task_id, "ds-1", "b") == "ok"
        assert not await client.exists(keys.INFLIGHT + task_id)

    scenario(redis_url, body)


def test_a_late_answer_for_a_task_queued_again_is_adopted(redis_url: str) -> None:
    async def body(client: aioredis.Redis, store: TaskStore, admission: Admission) -> None:
        task_id = await sent(store, admission, "answered late", "a")
        await client.pexpire(keys.INFLIGHT + task_id, 1)  # frozen past its deadline
        await lease_runs_out(client, task_id)
        await asyncio.sleep(0.01)
        assert await admission.admit(MODEL) == (task_id, 0)  # admitted again, not yet sent
        assert await record(store, task_id, "ds-late", "a") == "ok"
        raw = await store.raw(task_id)
        assert raw is not None and (raw["status"], raw["ds_task_id"]) == ("submitted", "ds-late")
        assert await admission.claim(task_id, "b") == "moved"  # the second attempt sends nothing
        assert await queue(client) == []

    scenario(redis_url, body)


def test_late_answers_are_recorded_not_canceled_unless_the_user_canceled(redis_url: str) -> None:
    async def body(client: aioredis.Redis, store: TaskStore, admission: Admission) -> None:
        # Found by listing first, then its own answer comes: the same DashScope task, nothing to do.
        found = await sent(store, admission, "found, then answered", "a")
        await client.pexpire(keys.INFLIGHT + found, 1)
        await lease_runs_out(client, found)
        await asyncio.sleep(0.01)
        assert await admission.admit(MODEL) == (found, 0)
        assert await admission.claim(found, "b") == "ok"
        assert await record(store, found, "ds-1", "b", adopt=True) == "ok"
        assert await record(store, found, "ds-1", "a") == "same"
        # Another DashScope task for a task that moved on: left running, recorded, never adopted by another.
        assert await record(store, found, "ds-2", "c") == "orphan"
        orphan = json.loads(await client.hget(keys.ORPHANS, "ds-2"))
        assert orphan["task"] == found and orphan["status"] == "submitted"
        assert await counter_of(client, "submissions_orphaned") == 1
        assert not await client.exists(keys.DASHSCOPE_TASK + "ds-2")
        other = await sent(store, admission, "another", "d")
        assert await record(store, other, "ds-2", "d", adopt=True) == "taken"
        assert await record(store, other, "ds-1", "d", adopt=True) == "taken"
        # Adopting for a task that no longer waits does nothing.
        assert await record(store, found, "ds-3", "b", adopt=True) == "moved"
        assert await record(store, other, "ds-4", "d") == "ok"
        # Canceled by its user while the create was in flight: the caller cancels at DashScope.
        canceled = await sent(store, admission, "canceled by its user", "e")
        assert await store.transition(canceled, "canceled")
        assert await record(store, canceled, "ds-5", "e") == "canceled"
        assert (await client.get(keys.DASHSCOPE_TASK + "ds-5")).decode() == canceled
        # Failed meanwhile (refused on a later attempt): an orphan, not a cancel.
        failed = await sent(store, admission, "failed meanwhile", "f")
        assert await store.transition(failed, "failed", error={"code": "X", "message": "refused"})
        assert await record(store, failed, "ds-6", "f") == "orphan"

    scenario(redis_url, body)


async def counter_of(client: aioredis.Redis, name: str) -> int:
    return int(await client.hget(keys.COUNTERS, name) or 0)
