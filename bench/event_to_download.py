"""2. Event to download: from a completion push's arrival to the first byte of the video written.

Workload: tasks created through the API and rendered by the emulator, whose own pushes are off; then
one completion event per task is POSTed at a steady rate (below the account's 20 reads/s, since each
download starts with one DashScope read, which wanhook keeps within that quota). The latency runs
from the moment the push is sent to the moment the download worker has written the first bytes (its
first progress entry on the task's change stream). The floor it is compared with: the same read and
first byte done directly against the emulator, with nothing in between.
"""

from __future__ import annotations

import time

import httpx
from redis import Redis

from tests.support import Emulator, RedisServer, Wanhook, wait_for
from wanhook.service.persistence import keys

from .common import (
    SIZE,
    TOKEN,
    Context,
    Result,
    emulator_tasks,
    env_for,
    figure,
    iso_seconds,
    median,
    percentile,
    push,
    running,
    tasks_in,
)

P99_GOAL_MS = 50.0


def bench_event_to_download(ctx: Context) -> Result:
    count, rate = (10, 15.0) if ctx.smoke else (500, 15.0)
    ctx.log(f"event to first byte: {count} tasks, their completion events pushed at {rate:.0f}/s")
    redis = RedisServer(ctx.tmp / "redis").start()
    emulator = Emulator(ctx.tmp, "--render-seconds", "0").start()
    with running(redis, emulator) as processes:
        emulator.configure(drop_events=True, enforce_limits=False)
        # Quotas are another benchmark's subject: here every task is at DashScope before the first push.
        server = Wanhook(
            ctx.tmp,
            env_for(
                redis, ctx.tmp, emulator, WANHOOK_DOWNLOAD_CONCURRENCY="16", WANHOOK_LIMITS="wan2.2-t2v-plus=1000/1000"
            ),
        ).start()
        processes.append(server)
        client = httpx.Client(base_url=server.url, timeout=30)
        ids = [client.post("/v1/tasks", json={"prompt": "benchmark", "size": SIZE}).json()["id"] for _ in range(count)]
        wait_for(lambda: tasks_in(client, "submitted") == count, 120, 0.5, what="all tasks submitted")
        tasks = [client.get(f"/v1/tasks/{i}").json() for i in ids]
        wait_for(
            lambda: all(t["status"] == "SUCCEEDED" for t in emulator_tasks(emulator)), 120, 0.5, what="all renders"
        )
        sent = push_all(server.url, tasks, rate)
        wait_for(lambda: tasks_in(client, "ready") == count, 120, 0.5, what="all videos stored")
        store = Redis.from_url(redis.url, decode_responses=True)
        latencies = [(first_byte_at(store, i) - sent[i]) * 1000 for i in ids]
        reads = emulator.stats()["reads"]
        direct = direct_first_bytes(emulator, [t["dashscope"]["task_id"] for t in tasks[:50]])
    ctx.samples["push to first byte: wanhook"] = latencies
    ctx.samples["push to first byte: direct DashScope read + first byte"] = direct
    p50, p99 = median(latencies), percentile(latencies, 99)
    ctx.log(
        f"  wanhook: median {p50:.1f} ms, p99 {p99:.1f} ms, {reads / count:.2f} DashScope reads per task; "
        f"direct read + first byte: median {median(direct):.1f} ms, p99 {percentile(direct, 99):.1f} ms"
    )
    return {
        "event_to_first_byte_p50_ms": figure(
            f"push to first byte of the video, median ({count} tasks at {rate:.0f}/s)",
            p50,
            "ms",
            median(direct),
            "DashScope read + first byte, direct",
            higher_is_better=False,
        ),
        "event_to_first_byte_p99_ms": figure(
            f"push to first byte of the video, p99 ({count} tasks at {rate:.0f}/s)",
            p99,
            "ms",
            percentile(direct, 99),
            "DashScope read + first byte, direct",
            higher_is_better=False,
            goal=f"< {P99_GOAL_MS:.0f} ms",
            met=p99 < P99_GOAL_MS,
        ),
    }


def push_all(server_url: str, tasks: list[dict], rate: float) -> dict[str, float]:
    """One completion event per task at ``rate`` per second; returns when each was sent (epoch seconds)."""
    sent: dict[str, float] = {}
    hook = httpx.Client(base_url=server_url, timeout=30, headers={"x-eventbridge-signature-token": TOKEN})
    started = time.monotonic()
    for n, task in enumerate(tasks):
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
        sent[task["id"]] = time.time()
        push(hook, task)
    return sent


def direct_first_bytes(emulator: Emulator, ds_ids: list[str]) -> list[float]:
    """The floor: one DashScope read, then the first bytes of the video, straight from the emulator (ms)."""
    times = []
    dashscope = httpx.Client(base_url=emulator.api, headers={"Authorization": "Bearer k"})
    for ds_id in ds_ids:
        begin = time.time()
        url = dashscope.get(f"/tasks/{ds_id}").json()["output"]["video_url"]
        with dashscope.stream("GET", url) as response:
            next(response.iter_raw(65536))
        times.append((time.time() - begin) * 1000)
    return times


def first_byte_at(store: Redis, task_id: str) -> float:
    """When the download of the task first reported bytes written: its first progress entry's time
    (the download reports at once, then at most every PROGRESS_INTERVAL)."""
    for _, entry in store.xrange(keys.TASK_CHANGES + task_id):
        if entry.get("bytes"):
            return iso_seconds(entry["at"])
    return 0.0
