"""1. Webhook ingest, and 6b. the receiver on two uvicorn workers.

Workload: completion CloudEvents POSTed to /v1/events/dashscope, each with a fresh event id and for a
distinct task already at DashScope, so every one takes the whole path: token check, durable record
in the audit stream, dedupe, transition to "downloading", download job queued (no worker drains it).
The baseline is bare Starlette reading the body and answering 200 on the same uvicorn, driven by the
same tool in the same run. Two loads: wrk at its highest rate (throughput), and a paced open-loop
generator at a fixed rate (latency). Every wanhook run starts from the same seeded Redis, restored
from a snapshot, so no run sees another's events.

During the wrk runs the CPU each process spends is read from /proc (user + system): per event, wanhook's
serve and its Redis, against the bare app. Serve, Redis and wrk share the machine's cores, so these say
which of them bounds the rate, and what share of the bare app's rate the cores leave room for.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import redis

from tests.support import Process, RedisServer, Wanhook, free_port, wait_for

from .common import (
    Context,
    Result,
    children_cpu_seconds,
    cpu_seconds,
    env_for,
    figure,
    running,
    seed_submitted,
    tasks_in,
)
from .load import Load, at_rate, have_wrk, highest_rate

RATE_GOAL_RATIO = 0.5
P99_GOAL_MS = 20.0


def bench_ingest(ctx: Context) -> Result:
    duration, connections = (1.0, 8) if ctx.smoke else (10.0, 32)
    rate, paced_seconds = (200.0, 1.0) if ctx.smoke else (1000.0, 10.0)
    # More tasks than the fastest run sends events, so none of them finds its task already moved on.
    tasks = 8000 if ctx.smoke else 100_000
    tool = "wrk -t2" if have_wrk() else "the Python generator (wrk is not installed)"
    ctx.log(
        f"ingest: {tasks} tasks seeded; {tool} -c{connections} for {duration:.0f} s; then {rate:.0f} events/s "
        f"paced for {paced_seconds:.0f} s"
    )
    snapshot = seeded_snapshot(ctx.tmp, tasks)

    bare_max, bare_paced = _bare(ctx.tmp, duration, connections, rate, paced_seconds, tasks)
    one = _wanhook(ctx, snapshot, "one", lambda url: highest_rate(url, duration, connections, tasks), tasks)
    paced = _wanhook(ctx, snapshot, "paced", lambda url: at_rate(url, rate, paced_seconds, tasks, "paced"), tasks)
    two = _wanhook(ctx, snapshot, "two", lambda url: highest_rate(url, duration, connections, tasks), tasks, workers=2)
    ctx.samples[f"ingest at {rate:.0f}/s: wanhook"] = paced.latencies_ms
    ctx.samples[f"ingest at {rate:.0f}/s: bare Starlette"] = bare_paced.latencies_ms

    ctx.log(
        f"  bare Starlette: {bare_max.rate:,.0f}/s; at {rate:.0f}/s p50 {bare_paced.p50_ms:.2f} ms, "
        f"p99 {bare_paced.p99_ms:.2f} ms"
    )
    ctx.log(f"  at the highest rate, p99: wanhook {one.p99_ms:.2f} ms, bare Starlette {bare_max.p99_ms:.2f} ms")
    ctx.log(
        f"  wanhook, 1 worker: {one.rate:,.0f}/s ({one.rate / bare_max.rate:.2f} of bare); at {rate:.0f}/s "
        f"(sustained {paced.rate:,.0f}/s) p50 {paced.p50_ms:.2f} ms, p99 {paced.p99_ms:.2f} ms"
    )
    ctx.log(f"  wanhook, 2 workers: {two.rate:,.0f}/s ({two.rate / one.rate:.2f}x one worker)")
    if one.cpu and bare_max.cpu:
        serve_us, redis_us, one_tool_us = (one.cpu[k] / one.answered * 1e6 for k in ("serve", "redis", "tool"))
        bare_us, bare_tool_us = (bare_max.cpu[k] / bare_max.answered * 1e6 for k in ("serve", "tool"))
        cores = os.cpu_count() or 1
        # The rate the cores allow each side: every process's CPU per event, spread over the cores, and no
        # single-threaded process (serve, Redis, the bare app) past one core.
        room = min(cores / (serve_us + redis_us + one_tool_us), 1 / serve_us, 1 / redis_us)
        bare_room = min(cores / (bare_us + bare_tool_us), 1 / bare_us)
        ctx.log(
            f"  CPU per event at the highest rate: serve {serve_us:.0f} us, its Redis {redis_us:.0f} us, "
            f"{one.tool} {one_tool_us:.0f} us; bare Starlette {bare_us:.0f} us, {one.tool} {bare_tool_us:.0f} us. "
            f"On {cores} cores these allow at most {room / bare_room:.2f} of bare's rate"
        )
    return {
        "ingest_events_per_s": figure(
            f"webhook ingest, events/s ({one.tool}, one uvicorn worker)",
            one.rate,
            "events/s",
            bare_max.rate,
            "bare Starlette, same uvicorn and tool",
            goal=f">= {RATE_GOAL_RATIO} x bare",
            met=one.rate >= RATE_GOAL_RATIO * bare_max.rate,
        ),
        "ingest_p99_ms_at_rate": figure(
            f"webhook ingest p99 latency at {rate:,.0f} events/s (paced, open loop)",
            paced.p99_ms,
            "ms",
            bare_paced.p99_ms,
            "bare Starlette at the same rate",
            higher_is_better=False,
            goal=f"< {P99_GOAL_MS:.0f} ms",
            met=paced.p99_ms < P99_GOAL_MS and paced.rate >= 0.95 * rate,
        ),
        "ingest_p99_ms_at_saturation": figure(
            f"webhook ingest p99 latency at the highest rate ({one.tool}, {connections} connections)",
            one.p99_ms,
            "ms",
            bare_max.p99_ms,
            "bare Starlette at its own highest rate, same tool",
            higher_is_better=False,
        ),
        "receiver_two_workers_events_per_s": figure(
            f"webhook ingest, events/s, two uvicorn workers ({two.tool})",
            two.rate,
            "events/s",
            one.rate,
            "one worker, same run",
        ),
    }


def seeded_snapshot(tmp: Path, tasks: int) -> Path:
    """A Redis data directory holding ``tasks`` submitted tasks, compacted, with its server stopped."""
    directory = tmp / "snapshot"
    server = RedisServer(directory).start()
    try:
        # Two processes: seeding is bound by the Python client, and the machine has two cores.
        half = tasks // 2
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_seed, [server.url] * 2, [0, half], [half, tasks - half]))
        client = redis.Redis.from_url(server.url)
        # Redis may have begun a rewrite of its own as the AOF grew: let it end, then compact what is left.
        wait_for(lambda: not _rewriting(client), 120, 0.1, what="Redis' own AOF rewrite")
        client.bgrewriteaof()
        wait_for(lambda: not _rewriting(client), 120, 0.1, what="the AOF rewrite")
        client.close()
    finally:
        server.stop()
    return directory


def _seed(url: str, start: int, count: int) -> None:
    asyncio.run(seed_submitted(url, count, start))


def _rewriting(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])


def tool_cpu_seconds() -> float:
    """The load generator's CPU seconds: wrk's (a child), or this process's when the Python generator runs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return children_cpu_seconds() + usage.ru_utime + usage.ru_stime


def _restored(tmp: Path, snapshot: Path, name: str) -> RedisServer:
    directory = tmp / f"redis-{name}"
    shutil.copytree(snapshot, directory, ignore=shutil.ignore_patterns("*.log"))
    return RedisServer(directory).start()


def _bare(tmp: Path, duration: float, connections: int, rate: float, seconds: float, tasks: int) -> tuple[Load, Load]:
    port = free_port()
    bare = Process("bare", [sys.executable, "-m", "bench.bare_app", str(port)], tmp)
    url = f"http://127.0.0.1:{port}"
    with running(bare.start()):
        wait_for(lambda: httpx.post(url + "/v1/events/dashscope", content=b"{}").is_success, 30, what="the bare app")
        before = cpu_seconds(bare), tool_cpu_seconds()
        highest = highest_rate(url, duration, connections, tasks)
        highest.cpu = {"serve": cpu_seconds(bare) - before[0], "tool": tool_cpu_seconds() - before[1]}
        return highest, at_rate(url, rate, seconds, tasks, "bare")


def _wanhook(
    ctx: Context, snapshot: Path, name: str, drive: Callable[[str], Load], tasks: int, workers: int = 1
) -> Load:
    """One load against wanhook's receiver (no download workers) on a fresh copy of the seeded store."""
    tmp = ctx.tmp
    store = _restored(tmp, snapshot, name)
    env = env_for(store, tmp / name)
    with running(store) as processes:
        if workers == 1:
            server = Wanhook(tmp, env, "--no-workers", name=f"serve-{name}").start()
            processes.append(server)
            url = server.url
        else:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            processes.append(
                Process(
                    f"receiver-{name}", [sys.executable, "-m", "bench.wanhook_app", str(port), str(workers)], tmp, env
                ).start()
            )
            wait_for(lambda: httpx.get(url + "/readyz", timeout=2).is_success, 60, what="the receiver's workers")
            time.sleep(1.0)  # the first worker answers as soon as it is up; give the others time to join
        before = {"redis": cpu_seconds(store), "tool": tool_cpu_seconds()}
        if workers == 1:
            before["serve"] = cpu_seconds(server)
        load = drive(url)
        if workers == 1:
            load.cpu = {
                "redis": cpu_seconds(store) - before["redis"],
                "tool": tool_cpu_seconds() - before["tool"],
                "serve": cpu_seconds(server) - before["serve"],
            }
        # An applied event moves its task to "downloading" (no worker takes it further here).
        applied = tasks_in(httpx.Client(base_url=url), "downloading")
    if load.errors:
        raise AssertionError(f"ingest {name}: {load.errors} of {load.answered} requests failed")
    # Every event is for a distinct task until a wrk thread has used up its half of them (wrk may also
    # have had a few more on their way when it stopped counting): each must have been applied, not
    # answered "stale". Anything far below that is a failure, not a wrap-around.
    if applied < 0.9 * min(load.answered, tasks):
        raise AssertionError(f"ingest {name}: only {applied} of {load.answered} events applied")
    if applied < load.answered:
        ctx.log(
            f"  note: {load.answered - applied} of {load.answered} events found their task done already "
            f"({tasks} tasks seeded)"
        )
    return load
