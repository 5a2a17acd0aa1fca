"""6a. Scale: Redis memory per queued task and per stored (finished) task.

Workload: N tasks created through the API while no worker runs (so they stay queued): Redis' used
memory grows by the queued tasks' cost. Then a ``wanhook worker`` takes them all through their life
against the emulator (submitted, rendered, completion event pushed to the server, video read once,
downloaded, ready) and the growth from the start is the stored tasks' cost: the task hash, its index
entries, its DashScope id, its completion event in the audit stream and the event's dedupe key (kept 7
days), measured once the finished tasks' change streams have expired (WANHOOK_CHANGES_RETENTION_SECONDS,
an hour by default, 3 s here; what a stream adds until then is logged). One task goes through the
same life first, so scripts and fixed structures are in place before the first measurement. The
baseline is the size of the task's own JSON as the API returns it. (6b, the receiver on two uvicorn
workers, runs in the ingest benchmark, on its seeded store.)
"""

from __future__ import annotations

import time

import httpx
import redis

from tests.support import Emulator, RedisServer, Wanhook, wait_for
from wanhook.service import keys

from .common import MODEL, SIZE, Context, Result, env_for, figure, prerender, running, tasks_in, webhook_target

STORED_GOAL_BYTES = 2048
RETENTION_SECONDS = 3


def bench_scale(ctx: Context) -> Result:
    count = 20 if ctx.smoke else 500
    ctx.log(f"scale: Redis memory of {count} tasks, queued and then through their whole life")
    store = RedisServer(ctx.tmp / "redis").start()
    emulator = Emulator(ctx.tmp, "--render-seconds", "0").start()
    with running(store, emulator) as processes:
        env = env_for(
            store,
            ctx.tmp,
            emulator,
            WANHOOK_LIMITS=f"{MODEL}=1000/1000",
            WANHOOK_CHANGES_RETENTION_SECONDS=str(RETENTION_SECONDS),
        )
        server = Wanhook(ctx.tmp, env, "--no-workers").start()
        processes.append(server)
        emulator.configure(enforce_limits=False)
        prerender(emulator, ["scale benchmark"])
        emulator.configure(webhook_targets=webhook_target(server.url))
        client = httpx.Client(base_url=server.url, timeout=30)
        memory = redis.Redis.from_url(store.url)

        def create() -> str:
            return client.post("/v1/tasks", json={"prompt": "scale benchmark", "size": SIZE}).json()["id"]

        def finish_all(expected: int) -> None:
            worker = Wanhook(ctx.tmp, env, name="worker").start()
            try:
                wait_for(
                    lambda: tasks_in(client, "ready") == expected, 60 + expected / 10, 0.5, what="every task ready"
                )
            finally:
                worker.stop()

        create()
        finish_all(1)
        start = used_memory(memory)
        ids = [create() for _ in range(count)]
        queued = (used_memory(memory) - start) / count
        queued_json = len(client.get(f"/v1/tasks/{ids[0]}").content)
        finish_all(count + 1)
        # The newest task's stream, before the retention ends: what each task costs while it is kept.
        stream_bytes = memory.memory_usage(keys.TASK_CHANGES + ids[-1]) or 0
        stored_json = len(client.get(f"/v1/tasks/{ids[0]}").content)
        hash_bytes = memory.memory_usage(keys.TASK + ids[0]) or 0
        wait_for(lambda: not memory.keys(keys.TASK_CHANGES + "*"), 60, 0.5, what="the change streams to expire")
        stored = (used_memory(memory) - start) / count
    ctx.log(
        f"  per queued task: {queued:,.0f} bytes (its JSON: {queued_json} bytes); per stored task: {stored:,.0f} "
        f"bytes (its JSON: {stored_json} bytes), of which its hash {hash_bytes:,} bytes, the rest in shared "
        f"structures (indexes, audit stream, dedupe keys); while a finished task's change stream is kept "
        f"for SSE resumes ({RETENTION_SECONDS} s here, an hour by default) it adds {stream_bytes:,} bytes"
    )
    return {
        "redis_bytes_per_stored_task": figure(
            "Redis memory per stored task (ready, with its event and dedupe key)",
            stored,
            "bytes",
            stored_json,
            "the task's JSON",
            higher_is_better=False,
            goal=f"< {STORED_GOAL_BYTES // 1024} KiB",
            met=stored < STORED_GOAL_BYTES,
        ),
        "redis_bytes_per_queued_task": figure(
            "Redis memory per queued task", queued, "bytes", queued_json, "the task's JSON", higher_is_better=False
        ),
    }


def used_memory(client: redis.Redis) -> int:
    """Redis' used memory, once the append-only file's buffer has been written out (it is flushed every second)."""
    time.sleep(1.2)
    return int(client.info("memory")["used_memory"])
