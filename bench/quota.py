"""5. Quota-bound throughput: many tasks through DashScope's per-model limits, with nothing refused.

Workload: N tasks POSTed at once for wan2.2-t2v-plus, whose limits the emulator enforces as DashScope
does (2 creates a second, 2 tasks running at once; a create over the rate gets 429). Each renders
for RENDER seconds and ends with a pushed completion event, which gives the slot back. The makespan
runs from the first POST to the last task ``ready`` (video stored). The ideal is what the limits
allow: the last create cannot go before ceil(N / rps) - 1 seconds and then renders, or the slots
turn over ceil(N / running) times; the larger bound applies (with RENDER < running / rps, the rate).
The 429s are compared with a client that sends the same N creates in a loop (what calling the SDK's
``async_call`` N times does), in the same run.
"""

from __future__ import annotations

import math
import time

import httpx
from redis import Redis

from tests.support import Emulator, RedisServer, Wanhook, wait_for
from wanhook.service.domain.models import MODELS
from wanhook.service.persistence import keys

from .common import (
    MODEL,
    SIZE,
    Context,
    Result,
    env_for,
    figure,
    iso_seconds,
    prerender,
    running,
    tasks_in,
    webhook_target,
)

MAKESPAN_GOAL = 0.05  # within 5% of the ideal


def bench_quota(ctx: Context) -> Result:
    count, render = (4, 0.1) if ctx.smoke else (200, 0.5)
    rps, slots = MODELS[MODEL].submit_rps, MODELS[MODEL].max_running
    by_rate, by_slots = math.ceil(count / rps) - 1 + render, math.ceil(count / slots) * render
    ideal = max(by_rate, by_slots)
    bound = "the rate" if by_rate >= by_slots else "the running tasks"
    ctx.log(
        f"quota: {count} tasks of {MODEL} ({rps} creates/s, {slots} running), {render} s renders; the ideal "
        f"makespan is {ideal:.1f} s, bound by {bound}"
    )
    redis = RedisServer(ctx.tmp / "redis").start()
    emulator = Emulator(ctx.tmp, "--render-seconds", str(render)).start()
    with running(redis, emulator) as processes:
        # wanhook's own limits for the model are the spec's, the same as the emulator enforces.
        server = Wanhook(ctx.tmp, env_for(redis, ctx.tmp, emulator)).start()
        processes.append(server)
        prerender(emulator, ["quota benchmark"])
        time.sleep(1.1)  # let the emulator's rate window forget the render's create
        emulator.configure(webhook_targets=webhook_target(server.url))
        httpx.post(emulator.url + "/_emulator/reset", timeout=10)
        client = httpx.Client(base_url=server.url, timeout=30)
        started = time.time()
        ids = [
            client.post("/v1/tasks", json={"prompt": "quota benchmark", "size": SIZE}).json()["id"]
            for _ in range(count)
        ]
        wait_for(lambda: tasks_in(client, "ready") == count, 3 * ideal + 60, 0.5, what="every task ready")
        store = Redis.from_url(redis.url, decode_responses=True)
        makespan = max(iso_seconds(store.hget(keys.TASK + i, "updated_at") or "") for i in ids) - started
        stats = emulator.stats()
        emulator.configure(webhook_targets=[])
        naive = naive_throttled(emulator, count)
    throttled, most = stats["creates_throttled"], stats["max_running_seen"].get(MODEL, 0)
    ctx.log(
        f"  makespan {makespan:.1f} s against the ideal {ideal:.1f} s ({makespan / ideal - 1:+.1%}); "
        f"429s: {throttled} (a create loop: {naive} of {count}); at most {most} running at DashScope"
    )
    return {
        "quota_makespan_s": figure(
            f"{count} tasks at {rps}/s and {slots} running: makespan, first POST to last video stored",
            makespan,
            "s",
            ideal,
            f"the ideal the limits allow ({bound})",
            higher_is_better=False,
            goal=f"within {MAKESPAN_GOAL:.0%}",
            met=makespan <= ideal * (1 + MAKESPAN_GOAL),
        ),
        "quota_429s": figure(
            f"429s from DashScope for those {count} tasks",
            throttled,
            "429s",
            naive,
            "the same creates sent in a loop",
            higher_is_better=False,
            goal="0",
            met=throttled == 0,
        ),
    }


def naive_throttled(emulator: Emulator, count: int) -> int:
    """How many of ``count`` creates sent back to back the emulator refuses with 429."""
    httpx.post(emulator.url + "/_emulator/reset", timeout=10)
    api = httpx.Client(
        base_url=emulator.api, headers={"Authorization": "Bearer k", "X-DashScope-Async": "enable"}, timeout=30
    )
    body = {"model": MODEL, "input": {"prompt": "quota benchmark"}, "parameters": {"size": SIZE}}
    return sum(
        api.post("/services/aigc/video-generation/video-synthesis", json=body).status_code == 429 for _ in range(count)
    )
