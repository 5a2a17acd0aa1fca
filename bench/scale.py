"""6a. Scale: Redis memory per queued task and per stored (finished) task.

Workload: N tasks created through the API while no worker runs (so they stay queued): Redis' used
memory grows by the queued tasks' cost. Then a ``wanhook worker`` takes them all through their life
against the emulator (submitted, rendered, completion event pushed to the server, video read once,
downloaded, ready) and the growth from the start is the stored tasks' cost: the task hash, its index
entries, its DashScope id, its completion event in the audit stream and the event's dedupe key (kept 25
hours), measured once the finished tasks' change streams have expired (WANHOOK_CHANGES_RETENTION_SECONDS,
an hour by default, 3 s here; what a stream adds until then is logged). One task goes through the
same life first, so scripts and fixed structures are in place before the first measurement. The
baseline is the size of the task's own JSON as the API returns it. Redis runs with its defaults (no
listpack or stream node setting tuned), and its clients' buffers are not counted (see used_memory).
(6b, the receiver on two uvicorn workers, runs in the ingest benchmark, on its seeded store.)
"""

from __future__ import annotations

import time

import httpx
import redis

from tests.support import Emulator, RedisServer, Wanhook, wait_for
from wanhook.service.persistence import keys

from .common import MODEL, SIZE, Context, Result, env_for, figure, prerender, running, tasks_in, webhook_target

STORED_GOAL_BYTES = 2048
# A queued task's bound: its hash, its change stream of one entry, its queue place and index entries.
QUEUED_GOAL_BYTES = 2048
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
        start, keys_at_start = used_memory(memory), sizes(memory)
        ids = [create() for _ in range(count)]
        queued = (used_memory(memory) - start) / count
        queued_parts = breakdown(keys_at_start, sizes(memory), count)
        queued_json = len(client.get(f"/v1/tasks/{ids[0]}").content)
        finish_all(count + 1)
        # The newest task's stream, before the retention ends: what each task costs while it is kept.
        stream_bytes = memory.memory_usage(keys.TASK_CHANGES + ids[-1]) or 0
        stored_json = len(client.get(f"/v1/tasks/{ids[0]}").content)
        hash_bytes = memory.memory_usage(keys.TASK + ids[0]) or 0
        wait_for(lambda: not memory.keys(keys.TASK_CHANGES + "*"), 60, 0.5, what="the change streams to expire")
        stored = (used_memory(memory) - start) / count
        stored_parts = breakdown(keys_at_start, sizes(memory), count)
    ctx.log(
        f"  per queued task: {queued:,.0f} bytes (its JSON: {queued_json} bytes); per stored task: {stored:,.0f} "
        f"bytes (its JSON: {stored_json} bytes), of which its hash {hash_bytes:,} bytes, the rest in shared "
        f"structures (indexes, audit stream, dedupe keys); while a finished task's change stream is kept "
        f"for SSE resumes ({RETENTION_SECONDS} s here, an hour by default) it adds {stream_bytes:,} bytes"
    )
    ctx.log(f"  queued, by key (MEMORY USAGE per task): {queued_parts}")
    ctx.log(f"  stored, by key (MEMORY USAGE per task): {stored_parts}")
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
            "Redis memory per queued task",
            queued,
            "bytes",
            queued_json,
            "the task's JSON",
            higher_is_better=False,
            goal=f"< {QUEUED_GOAL_BYTES // 1024} KiB",
            met=queued < QUEUED_GOAL_BYTES,
        ),
    }


def used_memory(client: redis.Redis) -> int:
    """Redis' used memory held by data, once the append-only file's buffer has been written out (it is
    flushed every second). The clients' buffers are left out: they follow the connections and what was
    last read through them (one run measured 17 KB, the next 310 KB, over a third of 200 tasks' state),
    not the number of tasks stored."""
    time.sleep(1.2)
    stats = client.memory_stats()
    return int(stats["total.allocated"]) - sum(
        int(stats[name]) for name in ("clients.normal", "clients.slaves", "aof.buffer", "replication.backlog")
    )


# The keys named with a variable part (a task id, an owner, a model), longest first, so that each key
# is counted under the one prefix that names it (keys.py).
_PREFIXES = sorted(
    (value for name, value in vars(keys).items() if name.isupper() and isinstance(value, str) and value.endswith(":")),
    key=len,
    reverse=True,
)


def sizes(client: redis.Redis) -> dict[str, int]:
    """MEMORY USAGE of every key, summed by its name in keys.py (``{wanhook}:task:*``, ``{wanhook}:events``)."""
    total: dict[str, int] = {}
    for raw in client.scan_iter(count=1000):
        name = raw.decode()
        kind = next((prefix + "*" for prefix in _PREFIXES if name.startswith(prefix)), name)
        total[kind] = total.get(kind, 0) + (client.memory_usage(name, samples=0) or 0)
    return total


def breakdown(before: dict[str, int], after: dict[str, int], count: int) -> str:
    """Where the growth went, per task and by kind of key, largest first."""
    growth = {kind: (after.get(kind, 0) - before.get(kind, 0)) / count for kind in set(before) | set(after)}
    return ", ".join(
        f"{kind} {size:,.0f}" for kind, size in sorted(growth.items(), key=lambda item: -item[1]) if size >= 1
    )
