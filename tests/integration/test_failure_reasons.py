"""A task DashScope fails shows DashScope's own code and message, wherever its user looks.

The completion event carries only ``task_status: FAILED``; one read of the DashScope task gives the
code and message, and the task turns failed only once they are recorded: the API, the callback, the
event stream, ``wanhook status`` and ``submit --wait`` all show them. A read that fails for good still
ends the task failed, saying that its reason could not be read. Through real processes against the
emulator, and at the level of the scripts against a real Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from wanhook.service.config import parse_limits
from wanhook.service.domain.events import SOURCE, TYPE, CompletionEvent
from wanhook.service.flows.quota import Admission
from wanhook.service.persistence import keys
from wanhook.service.persistence.store import TaskStore

from ..conftest import Stack
from ..invariants import assert_consistent
from ..receiver import CallbackReceiver
from ..support import ROOT, Process, wait_for, wanhook

CODE = "DataInspectionFailed"
MESSAGE = "The output video may contain inappropriate content."
ATTEMPTS = 3  # WANHOOK_DOWNLOAD_ATTEMPTS: the reads a failure reason may take
MODEL = "wan2.2-t2v-plus"


@pytest.fixture
def failing(tmp_path: Path, redis_url: str, processes: list[Process]) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(
        WANHOOK_CALLBACK_ALLOW_PRIVATE="1",
        WANHOOK_CALLBACK_SCHEDULE="0,0.3,0.3",
        WANHOOK_DOWNLOAD_ATTEMPTS=str(ATTEMPTS),
        WANHOOK_DASHSCOPE_TIMEOUT="3",
    )
    stack.start()
    stack.emulator.configure(fail_code=CODE, fail_message=MESSAGE)
    return stack


def reads_of(stack: Stack, task: dict[str, Any]) -> int:
    return int(stack.emulator.stats()["reads_by_task"].get(task["dashscope"]["task_id"], 0))


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("WANHOOK_", "DASHSCOPE_"))}
    return subprocess.run(
        wanhook(*args, "--server", stack.url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**environment, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


def followed(stack: Stack, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The task's event stream, from now until its final state: (event name, task) pairs."""
    seen, name = [], ""
    with httpx.stream("GET", f"{stack.url}/v1/tasks/{task_id}/events", timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                task = json.loads(line[6:])
                seen.append((name, task))
                if task["status"] in ("ready", "failed", "canceled", "expired"):
                    break
    return seen


def test_a_failed_task_shows_dashscope_code_and_message_everywhere(failing: Stack) -> None:
    with CallbackReceiver() as receiver:
        created = failing.create("a scene DashScope will refuse [fail]", callback={"url": receiver.url})
        stream = followed(failing, created["id"])
        task = failing.task(created["id"])
        reason = {"code": CODE, "message": MESSAGE}
        assert task["status"] == "failed" and task["error"] == reason
        assert task["dashscope"]["status"] == "FAILED"
        # The stream's final event names the real reason, and no event before it said otherwise.
        name, final = stream[-1]
        assert name == "task.failed" and final["error"] == reason
        assert [state for _, state in stream if state["status"] == "failed"] == [final]
        # The callback's body was frozen with the reason in it.
        wait_for(lambda: receiver.received, 30, what="the failed callback")
        (payload,) = [json.loads(item.body) for item in receiver.received]
        assert payload["type"] == "task.failed" and payload["data"]["error"] == reason
    # One read of the DashScope task for the reason, and no other.
    assert reads_of(failing, task) == 1
    assert failing.redis.hget(keys.COUNTERS, "failures_recorded") == "1"
    # wanhook status, as a table and as JSON.
    table = cli(failing, "status", created["id"])
    assert table.returncode == 0, table.stderr
    assert CODE in table.stdout and MESSAGE in " ".join(table.stdout.split())
    assert "dashscope status" in table.stdout and "FAILED" in table.stdout
    as_json = cli(failing, "status", created["id"], "--json")
    assert json.loads(as_json.stdout)["error"] == reason
    # submit --wait ends 1, saying why.
    waited = cli(failing, "submit", "another refused scene [fail]", "--size", "832*480", "--wait")
    assert waited.returncode == 1
    assert CODE in waited.stderr and MESSAGE in " ".join(waited.stderr.split())
    assert failing.redis.xlen(keys.FAILURE_JOBS) == 0
    assert failing.redis.xpending(keys.FAILURE_JOBS, keys.FAILURE_GROUP)["pending"] == 0
    assert_consistent(failing.redis)


@pytest.mark.parametrize("fault", ["not-found", "unreachable"])
def test_a_reason_that_cannot_be_read_still_fails_the_task_saying_so(failing: Stack, fault: str) -> None:
    if fault == "not-found":
        faults = [{"status": 404, "code": "NotFound", "message": "task not found"}]
    else:
        faults = [{"status": 500, "code": "InternalError", "message": "An internal error has occured"}] * ATTEMPTS
    failing.emulator.configure(read_errors=faults)
    with CallbackReceiver() as receiver:
        created = failing.create(f"a failure whose reason is {fault} [fail]", callback={"url": receiver.url})
        task = failing.wait_status(created["id"], timeout=60)
        assert task["status"] == "failed" and task["dashscope"]["status"] == "FAILED"
        assert task["error"]["code"] == "TaskFailed"
        message = task["error"]["message"]
        assert message.startswith("DashScope reported the task FAILED; its reason could not be read")
        if fault == "not-found":
            assert "HTTP 404 NotFound" in message
            assert reads_of(failing, task) == 1  # refused: not worth another read
        else:
            assert f"gave up after {ATTEMPTS} attempts" in message and "InternalError" in message
            assert reads_of(failing, task) == ATTEMPTS
        wait_for(lambda: receiver.received, 30, what="the failed callback")
        assert json.loads(receiver.received[0].body)["data"]["error"] == task["error"]
    assert httpx.get(failing.emulator.url + "/_emulator/config", timeout=10).json()["read_errors"] == []
    assert failing.redis.xpending(keys.FAILURE_JOBS, keys.FAILURE_GROUP)["pending"] == 0
    assert_consistent(failing.redis)


def test_a_worker_that_dies_mid_read_leaves_the_reason_to_another(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(WANHOOK_DOWNLOAD_ATTEMPTS=str(ATTEMPTS), WANHOOK_DASHSCOPE_TIMEOUT="30")
    stack.start("--no-workers")
    stack.emulator.configure(fail_code=CODE, fail_message=MESSAGE, read_errors=[{"delay_seconds": 60}])
    doomed = stack.worker("worker-a")
    created = stack.create("read by a worker that dies [fail]")
    ds_id = wait_for(lambda: stack.task(created["id"])["dashscope"]["task_id"], 30, what="the create")
    # Its first read hangs at DashScope; the worker dies holding the job.
    wait_for(lambda: stack.emulator.stats()["reads_by_task"].get(ds_id) == 1, 30, what="the first read")
    assert stack.task(created["id"])["status"] == "submitted"
    doomed.kill()
    stack.worker("worker-b")  # takes the job over after WANHOOK_CLAIM_IDLE_SECONDS
    task = stack.wait_status(created["id"], timeout=60)
    assert task["status"] == "failed" and task["error"] == {"code": CODE, "message": MESSAGE}
    assert stack.emulator.stats()["reads_by_task"][ds_id] == 2  # the lost read, and one more
    assert stack.redis.xpending(keys.FAILURE_JOBS, keys.FAILURE_GROUP)["pending"] == 0
    assert_consistent(stack.redis)


def test_an_event_that_carries_the_reason_needs_no_read(failing: Stack) -> None:
    failing.emulator.configure(drop_events=True)
    created = failing.create("failed, and the event says why [fail]")
    ds_id = failing.wait_status(created["id"], "submitted")["dashscope"]["task_id"]
    api = httpx.Client(base_url=failing.emulator.api, headers={"Authorization": "Bearer k"})
    wait_for(
        lambda: api.get(f"/tasks/{ds_id}").json()["output"]["task_status"] == "FAILED",
        30,
        what="DashScope to fail the task",
    )
    api.close()
    before = failing.emulator.stats()["reads_by_task"].get(ds_id, 0)
    event = {
        "specversion": "1.0",
        "id": "failed-with-reason",
        "source": SOURCE,
        "type": TYPE,
        "data": {
            "task_id": ds_id,
            "task_status": "FAILED",
            "code": "IPInfringementSuspect",
            "message": "Input data is suspected of being involved in IP infringement.",
            "user_api_unique_key": f"apikey:v1:aigc:video-generation:video-synthesis:{MODEL}",
        },
    }
    assert failing.push(event).json()["outcome"] == "applied"
    task = failing.task(created["id"])
    assert task["status"] == "failed"
    assert task["error"] == {
        "code": "IPInfringementSuspect",
        "message": "Input data is suspected of being involved in IP infringement.",
    }
    assert failing.emulator.stats()["reads_by_task"].get(ds_id, 0) == before
    assert_consistent(failing.redis)


# The scripts, against a real Redis


def event(ds_id: str, status: str, event_id: str, code: str | None = None) -> CompletionEvent:
    return CompletionEvent(
        source=SOURCE,
        id=event_id,
        type=TYPE,
        task_id=ds_id,
        task_status=status,
        model=MODEL,
        video_url=None,
        code=code,
        message=None,
    )


def test_a_failed_event_queues_one_read_and_gives_the_slot_back(redis_url: str) -> None:
    async def body() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        store, admission = TaskStore(client), Admission(client, parse_limits(f"{MODEL}=10/10"), 60)
        try:
            task_id = await store.create({"model": MODEL, "prompt": "fails", "owner": "t"})
            assert await admission.admit(MODEL) == (task_id, 0)
            assert (
                await store.mark_submitted(
                    task_id, "ds-1", "PENDING", None, slot_lease_ms=600_000, sweep_after_ms=600_000
                )
                == "ok"
            )
            outcome, _ = await store.ingest(event("ds-1", "FAILED", "e-1"), b"{}")
            assert outcome == "applied"
            raw = await store.raw(task_id)
            assert raw is not None and raw["status"] == "submitted" and raw["ds_status"] == "FAILED"
            assert raw.get("awaiting_reason")
            # DashScope no longer runs it: its slot and the sweeper's watch are given back at once.
            assert await client.zscore(keys.SLOTS + MODEL, task_id) is None
            assert await client.zscore(keys.SWEEP, task_id) is None
            # Another FAILED event (a new id) queues no second read; nothing after FAILED is believed.
            assert (await store.ingest(event("ds-1", "FAILED", "e-2"), b"{}"))[0] == "stale"
            assert (await store.ingest(event("ds-1", "SUCCEEDED", "e-3"), b"{}"))[0] == "stale"
            assert [fields["task"] for _, fields in await client.xrange(keys.FAILURE_JOBS)] == [task_id]
            assert await client.xlen(keys.DOWNLOAD_JOBS) == 0
            # No callback or change yet: the task ends only with its reason.
            assert await client.xlen(keys.TASK_CHANGES + task_id) == 2  # queued, submitted
            # The reason recorded: failed, and what only the wait needed is gone.
            assert await store.transition(task_id, "failed", error={"code": "X", "message": "y"})
            raw = await store.raw(task_id)
            assert raw is not None and "awaiting_reason" not in raw and raw["status"] == "failed"
            # A FAILED event that beat the create's answer is applied with it, the same way.
            early = await store.create({"model": MODEL, "prompt": "fails early", "owner": "t"})
            assert await admission.admit(MODEL) == (early, 0)
            assert (await store.ingest(event("ds-2", "FAILED", "e-4"), b"{}"))[0] == "unknown_task"
            assert (
                await store.mark_submitted(
                    early, "ds-2", "PENDING", None, slot_lease_ms=600_000, sweep_after_ms=600_000
                )
                == "ok"
            )
            raw = await store.raw(early)
            assert raw is not None and raw["status"] == "submitted" and raw.get("awaiting_reason")
            assert await client.zscore(keys.SLOTS + MODEL, early) is None
            assert [fields["task"] for _, fields in await client.xrange(keys.FAILURE_JOBS)] == [task_id, early]
            consistent(redis_url)  # while it waits for its reason
            assert await store.transition(early, "failed", error={"code": "X", "message": "y"})
            await client.delete(keys.FAILURE_JOBS)
        finally:
            await client.aclose()

    asyncio.run(body())
    consistent(redis_url)


def consistent(redis_url: str) -> None:
    sync = redis.Redis.from_url(redis_url)
    try:
        assert_consistent(sync)
    finally:
        sync.close()
