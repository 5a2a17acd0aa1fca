"""Quota-aware submission: DashScope's limits kept by every process at once, fair queueing, retries,
cancel, and the sweeper for lost events; all against the emulator with its limits on."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Stack
from ..support import Process, wait_for

MODEL = "wan2.2-t2v-plus"


def stack_with(tmp_path: Path, redis_url: str, processes: list[Process], **env: str) -> Stack:
    stack = Stack(tmp_path, redis_url, processes)
    stack.env.update(env)
    return stack.start()


def emulator_tasks(stack: Stack) -> list[dict[str, Any]]:
    return httpx.get(stack.emulator.url + "/_emulator/tasks", timeout=30).json()["tasks"]


def counter(stack: Stack, name: str) -> int:
    return int(stack.redis.hget("{wanhook}:counters", name) or 0)


@pytest.mark.slow
def test_200_tasks_from_3_processes_keep_the_limits(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    rps, running, render, count = 10, 5, 1.0, 200
    stack = stack_with(
        tmp_path,
        redis_url,
        processes,
        WANHOOK_LIMITS=f"{MODEL}={rps}/{running}",
        WANHOOK_DOWNLOAD_CONCURRENCY="8",
        WANHOOK_RATE_LIMIT="100000",
    )
    stack.emulator.configure(render_seconds=render, limits={MODEL: {"rps": rps, "running": running}})
    servers = [stack.server, stack.serve(), stack.serve()]
    clients = [httpx.Client(base_url=server.url, timeout=30) for server in servers]
    started = time.time()
    ids = [
        clients[n % 3].post("/v1/tasks", json={"prompt": "a lantern on the water", "size": "832*480"}).json()["id"]
        for n in range(count)
    ]
    wait_for(
        lambda: (
            sum(1 for task_id in ids if stack.task(task_id)["status"] == "ready") == count
            if stack.redis.zcard("{wanhook}:tasks:ready") == count
            else None
        ),
        300,
        interval=0.5,
        what="every task ready",
    )
    stored = time.time() - started

    stats = stack.emulator.stats()
    assert stats["creates"] == count and stats["creates_throttled"] == 0
    assert stats["max_running_seen"][MODEL] <= running
    tasks = emulator_tasks(stack)
    # No task ever waited at DashScope for a running slot: the queue lives in wanhook.
    assert max(task["scheduled_time"] - task["submit_time"] for task in tasks) < 0.5
    makespan = max(task["end_time"] for task in tasks) - started
    ideal = max(math.ceil(count / running) * render, count / rps)
    print(
        f"\n200 tasks, 3 processes, limits {rps}/s and {running} at once, render {render}s: makespan {makespan:.2f}s "
        f"against the ideal {ideal:.2f}s ({makespan / ideal:.3f}x); all stored after {stored:.2f}s"
    )
    assert makespan <= ideal * 1.10
    # One DashScope read per task: the one after its event.
    assert stats["reads"] == count


def test_one_submitter_cannot_starve_another(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = stack_with(
        tmp_path, redis_url, processes, WANHOOK_API_TOKENS="token-a,token-b", WANHOOK_LIMITS=f"{MODEL}=5/1"
    )
    # The first task holds the only slot long enough for every other task to be queued behind it, so
    # the order after it is the queue's alone, however slowly the requests arrive.
    stack.emulator.configure(render_seconds=5, limits={MODEL: {"rps": 5, "running": 1}})
    flood = httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer token-a"})
    other = httpx.Client(base_url=stack.url, headers={"Authorization": "Bearer token-b"})
    for n in range(12):
        assert flood.post("/v1/tasks", json={"prompt": f"flood {n}", "size": "832*480"}).status_code == 202
    for n in range(2):
        assert other.post("/v1/tasks", json={"prompt": f"other {n}", "size": "832*480"}).status_code == 202
    stack.emulator.configure(render_seconds=0.2)
    wait_for(lambda: stack.redis.zcard("{wanhook}:tasks:ready") == 14, 120, interval=0.2, what="all ready")
    assert stack.emulator.stats()["creates_throttled"] == 0
    order = [task["prompt"] for task in sorted(emulator_tasks(stack), key=lambda task: task["submit_time"])]
    # Round robin: the second submitter's tasks go out within the first turns, not after the flood.
    # Turns alternate once both wait: the flood's next, then the other's, and so on.
    assert order[:6] == ["flood 0", "flood 1", "other 0", "flood 2", "other 1", "flood 3"], order
    assert [p for p in order if p.startswith("flood")] == [f"flood {n}" for n in range(12)]  # FIFO per submitter
    # Each sees only its own tasks.
    assert {t["prompt"] for t in other.get("/v1/tasks").json()["tasks"]} == {"other 0", "other 1"}
    first_flood = flood.get("/v1/tasks", params={"limit": 1}).json()["tasks"][0]["id"]
    assert other.get(f"/v1/tasks/{first_flood}").status_code == 404
    assert httpx.get(f"{stack.url}/v1/tasks").status_code == 401


def test_slot_of_a_killed_process_comes_back_and_nothing_is_submitted_twice(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    # The killed process's create might still answer until its deadline (timeout + 2 s): only then is
    # its task looked up and sent by another; a short timeout keeps that wait short.
    stack = stack_with(
        tmp_path,
        redis_url,
        processes,
        WANHOOK_LIMITS=f"{MODEL}=5/1",
        WANHOOK_RESERVE_SECONDS="2",
        WANHOOK_DASHSCOPE_TIMEOUT="5",
    )
    stack.server.stop()
    stack.serve(stack.port, "--no-workers")
    stack.emulator.configure(create_answer_delay_seconds=30)  # the create lands; its answer is late
    doomed = stack.worker("worker-a")
    first = stack.create("first")
    second = stack.create("second")
    wait_for(lambda: stack.emulator.stats()["creates"] == 1, 30, what="the create to land")
    doomed.kill()  # holding the only slot, with the answer never received
    stack.emulator.configure(create_answer_delay_seconds=0)
    stack.worker("worker-b")
    for task_id in (first["id"], second["id"]):
        stack.wait_status(task_id, "ready", timeout=60)
    assert stack.emulator.stats()["creates"] == 2  # the first was found by listing, not created again
    assert counter(stack, "slots_recovered") == 1
    assert counter(stack, "submissions_adopted") == 1


def test_cancel_in_each_state(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    # wanhook allows 2 at once while the emulator runs 1: the second waits PENDING at DashScope.
    stack = stack_with(tmp_path, redis_url, processes, WANHOOK_LIMITS=f"{MODEL}=5/2")
    stack.emulator.configure(render_seconds=8, limits={MODEL: {"rps": 5, "running": 1}})
    running = stack.create("running")
    pending = stack.create("pending")
    queued = stack.create("queued")
    stack.wait_status(running["id"], "submitted")
    stack.wait_status(pending["id"], "submitted")

    canceled = stack.http.post(f"/v1/tasks/{queued['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    canceled = stack.http.post(f"/v1/tasks/{pending['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    by_prompt = {task["prompt"]: task for task in emulator_tasks(stack)}
    assert by_prompt["pending"]["status"] == "CANCELED"
    assert "queued" not in by_prompt  # it never left wanhook
    late = stack.http.post(f"/v1/tasks/{running['id']}/cancel")
    assert late.status_code == 409 and late.json()["error"]["code"] == "too_late"

    stack.wait_status(running["id"], "ready", timeout=60)
    assert stack.http.post(f"/v1/tasks/{running['id']}/cancel").status_code == 409
    again = stack.http.post(f"/v1/tasks/{queued['id']}/cancel")  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    assert stack.emulator.stats()["creates"] == 2
    assert stack.redis.zcard("{wanhook}:slots:" + MODEL) == 0


def test_throttling_and_server_errors_back_off_refusals_fail(stack: Stack) -> None:
    stack.emulator.configure(
        create_errors=[
            {"status": 429, "code": "Throttling.RateQuota", "message": "Requests rate limit exceeded"},
            {"status": 500, "code": "InternalError", "message": "An internal error has occured"},
        ]
    )
    task = stack.wait_status(stack.create("patience")["id"], "ready", timeout=60)
    assert task["video"]
    assert stack.emulator.stats()["creates"] == 3
    assert counter(stack, "submissions_retried") == 2

    stack.emulator.configure(
        create_errors=[{"status": 429, "code": "Throttling.AllocationQuota", "message": "Free quota exhausted"}]
    )
    refused = stack.wait_status(stack.create("no quota left")["id"])
    assert refused["status"] == "failed"
    assert refused["error"] == {"code": "Throttling.AllocationQuota", "message": "Free quota exhausted"}
    assert stack.redis.zcard("{wanhook}:slots:" + MODEL) == 0


def test_lost_events_are_recovered_by_the_sweeper(tmp_path: Path, redis_url: str, processes: list[Process]) -> None:
    stack = stack_with(
        tmp_path, redis_url, processes, WANHOOK_SWEEP_AFTER_SECONDS="2", WANHOOK_SWEEP_INTERVAL_SECONDS="0.5"
    )
    stack.emulator.configure(drop_events=True)
    ids = [stack.create(f"lost {n}")["id"] for n in range(4)]
    for task_id in ids:
        stack.wait_status(task_id, "ready", timeout=60)
    stats = stack.emulator.stats()
    assert stats["events_published"] == 0
    assert counter(stack, "sweeper_recovered") == 4
    # The sweeper's one read carried the video URL: no second read for the download.
    assert sorted(stats["reads_by_task"].values()) == [1, 1, 1, 1]


def test_with_events_flowing_the_sweeper_reads_nothing(
    tmp_path: Path, redis_url: str, processes: list[Process]
) -> None:
    stack = stack_with(
        tmp_path, redis_url, processes, WANHOOK_SWEEP_AFTER_SECONDS="3", WANHOOK_SWEEP_INTERVAL_SECONDS="0.2"
    )
    ids = [stack.create(f"steady {n}")["id"] for n in range(4)]
    for task_id in ids:
        stack.wait_status(task_id, "ready")
    deadline_passed = time.monotonic() + 3.5
    wait_for(
        lambda: time.monotonic() > deadline_passed and stack.redis.exists("{wanhook}:sweeper"),
        10,
        what="the sweeper to have run past every deadline",
    )
    assert counter(stack, "dashscope_reads_sweeper") == 0
    assert stack.redis.zcard("{wanhook}:sweep") == 0
    assert sorted(stack.emulator.stats()["reads_by_task"].values()) == [1, 1, 1, 1]


def test_a_rate_token_counts_from_the_answer_not_the_send(redis_url: str) -> None:
    """A request that travelled long still keeps the next one a whole window after DashScope saw it."""
    import asyncio

    import redis.asyncio as aioredis

    from wanhook.service.flows.quota import RATE_WINDOW_MS, RateLimiter

    key = "{wanhook}:rate:test"

    async def scenario() -> tuple[int, int, int]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            limiter = RateLimiter(client)
            wait, member = await limiter.token(key, 1, RATE_WINDOW_MS)
            assert wait == 0 and member
            # Sent 900 ms ago and only answered now: counted from the send, the next could go in ~120 ms.
            sent_at = int(await client.zscore(key, member)) - 900
            await client.zadd(key, {member: sent_at})
            before = await limiter.take(key, 1, RATE_WINDOW_MS)
            await limiter.restamp(key, member)
            after = await limiter.take(key, 1, RATE_WINDOW_MS)
            # One that took longer than a window fell out of it while in flight; its answer puts it back.
            await client.zadd(key, {member: sent_at - 5000})
            await client.zremrangebyscore(key, "-inf", sent_at - 1000)
            await limiter.restamp(key, member)
            again = await limiter.take(key, 1, RATE_WINDOW_MS)
            return before, after, again
        finally:
            await client.aclose()

    before, after, again = asyncio.run(scenario())
    assert 0 < before <= 200
    assert after > RATE_WINDOW_MS - 200
    assert again > RATE_WINDOW_MS - 200
