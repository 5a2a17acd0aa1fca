"""A create whose answer was lost is found in DashScope's task list whatever zone the list reads its
window in, and never sent a second time.

The documentation gives the list's start_time/end_time as YYYYMMDDhhmmss without a zone; wanhook asks
for the window written in China time and in UTC, pages through each answer, and matches on gmt_create
(epoch milliseconds). The emulator's list reads the window at a configurable offset from UTC.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from wanhook.service.config import parse_limits
from wanhook.service.flows import submission
from wanhook.service.flows.quota import Admission, RateLimiter, ReadLimiter
from wanhook.service.flows.submission import Submitter
from wanhook.service.outbound.dashscope import DashScopeClient
from wanhook.service.persistence import keys
from wanhook.service.persistence.store import TaskStore

from ..conftest import Stack
from ..invariants import assert_consistent
from ..support import Emulator, Process, sync_client

TIMEOUT = 3.0  # WANHOOK_DASHSCOPE_TIMEOUT: the lost create is looked for once it has passed
GARBAGE = {"status": 200, "body": "\x00\x01<<not json", "content_type": "application/json", "land": True}
MODEL = "wan2.2-t2v-plus"


def emulator_tasks(emulator: Emulator) -> list[dict[str, Any]]:
    return httpx.get(emulator.url + "/_emulator/tasks", timeout=30).json()["tasks"]


@pytest.mark.parametrize("zone", [8, 0], ids=["list-reads-utc+8", "list-reads-utc"])
def test_a_lost_create_is_adopted_whatever_zone_the_list_reads(
    tmp_path: Path, redis_url: str, processes: list[Process], zone: int
) -> None:
    stack = Stack(tmp_path, redis_url, processes, "--list-time-zone", str(zone))
    stack.env.update(WANHOOK_DASHSCOPE_TIMEOUT=str(TIMEOUT))
    stack.start()
    assert httpx.get(stack.emulator.url + "/_emulator/config", timeout=10).json()["list_time_zone"] == zone
    stack.emulator.configure(create_errors=[GARBAGE])  # the create lands; its answer is garbage
    task = stack.wait_status(stack.create(f"landed, answer lost, list in UTC{zone:+d}")["id"], "ready", timeout=60)
    stats = stack.emulator.stats()
    assert stats["creates"] == 1
    assert [t["task_id"] for t in emulator_tasks(stack.emulator)] == [task["dashscope"]["task_id"]]  # never two
    assert stack.redis.hget(keys.COUNTERS, "submissions_adopted") == "1"
    # China time is asked first: a list that reads it so finds the task at once; one that reads UTC finds
    # nothing there (the window it reads is eight hours ahead) and finds the task in the second reading.
    assert stats["lists"] == (1 if zone == 8 else 2)
    assert_consistent(stack.redis)


@pytest.mark.parametrize("zone", [8, 0], ids=["list-reads-utc+8", "list-reads-utc"])
def test_the_lookup_pages_through_the_whole_list(
    tmp_path: Path, redis_url: str, processes: list[Process], monkeypatch: pytest.MonkeyPatch, zone: int
) -> None:
    emulator = Emulator(tmp_path, "--render-seconds", "600", "--list-time-zone", str(zone))
    processes.append(emulator.start())
    emulator.configure(enforce_limits=False)
    monkeypatch.setattr(submission, "LIST_PAGE_SIZE", 2)  # five tasks in the window: three pages
    api = httpx.Client(
        base_url=emulator.api,
        headers={"Authorization": "Bearer sk-test-key", "X-DashScope-Async": "enable"},
        timeout=30,
    )

    def create(prompt: str) -> str:
        response = api.post(
            "/services/aigc/video-generation/video-synthesis",
            json={"model": MODEL, "input": {"prompt": prompt}, "parameters": {"size": "832*480"}},
        )
        response.raise_for_status()
        return response.json()["output"]["task_id"]

    attempt_at = time.time()
    landed = create("the create whose answer was lost")
    # Newer tasks of the same model in the same seconds, each another's (recorded orphans here): the list
    # gives them first, newest first, so the landed task is on its last page.
    others = [create(f"another task {n}") for n in range(4)]
    api.close()

    async def body() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = TaskStore(client)
        admission = Admission(client, parse_limits(f"{MODEL}=10/10"), 60)
        dashscope = DashScopeClient("sk-test-key", emulator.api, timeout=TIMEOUT)
        submitter = Submitter(
            store,
            dashscope,
            admission,
            ReadLimiter(RateLimiter(client), 20),
            slot_lease_seconds=600,
            sweep_after_seconds=600,
        )
        try:
            for ds_id in others:
                await client.hset(keys.ORPHANS, ds_id, '{"task": "elsewhere", "status": "submitted", "at": ""}')
            task_id = await store.create(
                {
                    "model": MODEL,
                    "prompt": "the create whose answer was lost",
                    "parameters": {"size": "832*480"},
                    "owner": "t",
                }
            )
            # An earlier attempt sent it, and its deadline has passed: it is looked up before it is sent.
            await client.hset(keys.TASK + task_id, "submit_attempt_at", f"{attempt_at:.3f}")
            assert await admission.admit(MODEL) == (task_id, 0)
            await submitter.submit(task_id)
            raw = await store.raw(task_id)
            assert raw is not None and (raw["status"], raw["ds_task_id"]) == ("submitted", landed)
        finally:
            await dashscope.aclose()
            await client.aclose()

    asyncio.run(body())
    stats = emulator.stats()
    assert stats["creates"] == 5  # the test's own: wanhook sent none
    assert stats["lists"] == (3 if zone == 8 else 1 + 3)  # every page of the reading that holds it
    sync = sync_client(redis_url)
    try:
        assert_consistent(sync)
    finally:
        sync.close()
