"""wanhook's benchmarks: each figure against its baseline, measured in the same run.

    python -m bench.run [--smoke] [--only NAME ...]

Prints a table and writes bench/results.json ({"name": {"value", "unit", "baseline", "ratio"}}).
--smoke runs every benchmark at tiny sizes (the test suite does, so they cannot rot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support import Emulator, Process, RedisServer, Wanhook, free_port, wait_for

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"
Result = dict[str, dict[str, Any]]


def figure(value: float, unit: str, baseline: float, higher_is_better: bool = True) -> dict[str, Any]:
    """A measurement and its baseline; ratio > 1 means wanhook does better than the baseline."""
    ratio = (value / baseline if higher_is_better else baseline / value) if value and baseline else 0.0
    return {"value": round(value, 3), "unit": unit, "baseline": round(baseline, 3), "ratio": round(ratio, 3)}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def env_for(redis: RedisServer, tmp: Path, emulator: Emulator | None = None, **extra: str) -> dict[str, str]:
    return {"WANHOOK_REDIS_URL": redis.url, "WANHOOK_DATA_DIR": str(tmp / "data"), "DASHSCOPE_API_KEY": "sk-bench",
            "DASHSCOPE_HTTP_BASE_URL": emulator.api if emulator else "http://127.0.0.1:9/api/v1",
            "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN, "WANHOOK_VIDEO_HOSTS": "127.0.0.1", "WANHOOK_LOG_LEVEL": "WARNING",
            **extra}


async def seed_submitted(redis_url: str, count: int) -> None:
    """``count`` tasks already at DashScope as ds-0 .. ds-<count-1>, as after their create calls."""
    from redis.asyncio import Redis

    from service.store import TaskStore

    redis = Redis.from_url(redis_url)
    store = TaskStore(redis)

    async def one(n: int) -> None:
        task_id = await store.create({"model": "wan2.2-t2v-plus", "prompt": "bench", "parameters": {"size": "832*480"}})
        await store.mark_submitted(task_id, f"ds-{n}", "PENDING", None, slot_lease_ms=3_600_000,
                                   sweep_after_ms=3_600_000)

    for start in range(0, count, 50):
        await asyncio.gather(*(one(n) for n in range(start, min(count, start + 50))))
    await redis.aclose()


def wrk(url: str, duration: int, connections: int, tasks: int) -> dict[str, float]:
    result = subprocess_run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
                             str(HERE / "ingest.lua"), url], env={"BENCH_TASKS": str(tasks), "BENCH_TOKEN": TOKEN})
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result)
    latency = {p: _ms(m.group(1)) for p, m in ((p, re.search(rf"\s{p}%\s+([\d.]+\w+)", result)) for p in (50, 99)) if m}
    return {"rate": rate, "errors": float(errors.group(1)) if errors else 0.0,
            "p50_ms": latency.get(50, 0.0), "p99_ms": latency.get(99, 0.0)}


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def subprocess_run(args: list[str], env: dict[str, str] | None = None) -> str:
    import os
    import subprocess

    return subprocess.run(args, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True).stdout


def bench_ingest(tmp: Path, smoke: bool, log: Callable[[str], None]) -> Result:
    """Webhook ingest: events/s through POST /v1/events/dashscope (token check, durable record, dedupe,
    transition, download queued) against bare Starlette returning 200, same uvicorn, same wrk."""
    if not shutil.which("wrk"):
        log("ingest: skipped (wrk is not installed: apt-get install wrk)")
        return {}
    duration, connections = (1, 8) if smoke else (10, 32)
    tasks = 2000 if smoke else 60000
    redis = RedisServer(tmp / "redis").start()
    processes: list[Process] = [redis]
    try:
        asyncio.run(seed_submitted(redis.url, tasks))
        bare_port = free_port()
        bare = Process("bare", [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port),
                                "--log-level", "warning", "--no-access-log"], tmp).start()
        processes.append(bare)
        wait_for(lambda: httpx.post(f"http://127.0.0.1:{bare_port}/v1/events/dashscope", content=b"{}").is_success,
                 30, what="the bare app")
        baseline = wrk(f"http://127.0.0.1:{bare_port}", duration, connections, tasks)
        bare.stop()
        server = Wanhook(tmp, env_for(redis, tmp), "--no-workers").start()
        processes.append(server)
        measured = wrk(server.url, duration, connections, tasks)
        counters = httpx.get(server.url + "/metrics").text
        applied = int(re.search(r"wanhook_events_applied_total (\d+)", counters).group(1))  # type: ignore[union-attr]
        assert measured["errors"] == 0, measured
        log(f"ingest: wanhook {measured['rate']:.0f}/s (p50 {measured['p50_ms']:.2f} ms, p99 {measured['p99_ms']:.2f} "
            f"ms, {applied} applied) vs bare Starlette {baseline['rate']:.0f}/s (p99 {baseline['p99_ms']:.2f} ms); "
            f"wrk -t2 -c{connections} -d{duration}s, one uvicorn worker each")
        return {
            "ingest_events_per_s": figure(measured["rate"], "events/s", baseline["rate"]),
            "ingest_p99_ms": figure(measured["p99_ms"], "ms", baseline["p99_ms"], higher_is_better=False),
        }
    finally:
        for process in reversed(processes):
            process.stop()


def bench_event_to_download(tmp: Path, smoke: bool, log: Callable[[str], None]) -> Result:
    """Time from a push's arrival to the first byte of the video written, over many tasks pushed at a
    steady rate; against the time to the first byte of the same video fetched directly (the floor)."""
    # Below the account's 20 reads/s: each download starts with one read, and wanhook keeps that quota.
    count, rate = (10, 15.0) if smoke else (500, 15.0)
    redis = RedisServer(tmp / "redis").start()
    emulator = Emulator(tmp, "--render-seconds", "0").start()
    processes: list[Process] = [redis, emulator]
    try:
        emulator.configure(drop_events=True, enforce_limits=False)
        # Quotas are another benchmark's subject: here every task is at DashScope before the first push.
        server = Wanhook(tmp, env_for(redis, tmp, emulator, WANHOOK_DOWNLOAD_CONCURRENCY="16",
                                      WANHOOK_LIMITS="wan2.2-t2v-plus=1000/1000")).start()
        processes.append(server)
        client = httpx.Client(base_url=server.url, timeout=30)
        ids = [client.post("/v1/tasks", json={"prompt": "benchmark", "size": "832*480"}).json()["id"]
               for _ in range(count)]
        tasks = wait_for(lambda: [t for t in (client.get(f"/v1/tasks/{i}").json() for i in ids)
                                  if t["status"] == "submitted"] if _count(client, "submitted") == count else None,
                         120, interval=0.5, what="all tasks submitted")
        wait_for(lambda: all(t["status"] == "SUCCEEDED" for t in httpx.get(emulator.url + "/_emulator/tasks")
                             .json()["tasks"]), 120, interval=0.5, what="all renders")
        sent: dict[str, float] = {}
        hook = httpx.Client(base_url=server.url, timeout=30, headers={"x-eventbridge-signature-token": TOKEN})
        started = time.monotonic()
        for n, task in enumerate(tasks):
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            event = {"specversion": "1.0", "id": f"e2d-{task['id']}", "source": "acs.dashscope",
                     "type": "dashscope:System:AsyncTaskFinish",
                     "data": {"task_id": task["dashscope"]["task_id"], "task_status": "SUCCEEDED"}}
            sent[task["id"]] = time.time()
            assert hook.post("/v1/events/dashscope", json=event).json()["outcome"] == "applied"
        wait_for(lambda: _count(client, "ready") == count, 120, interval=0.5, what="all videos stored")
        from redis import Redis

        store = Redis.from_url(redis.url, decode_responses=True)
        latencies = [(float(store.hget("{wanhook}:task:" + i, "first_byte_at")) - sent[i]) * 1000 for i in ids]
        reads = httpx.get(emulator.url + "/_emulator/stats").json()["reads"]
        # The floor: one DashScope read plus the first byte of the same video, straight from the emulator.
        direct = []
        dashscope = httpx.Client(base_url=emulator.api, headers={"Authorization": "Bearer k"})
        for task in tasks[: min(50, count)]:
            begin = time.time()
            url = dashscope.get(f"/tasks/{task['dashscope']['task_id']}").json()["output"]["video_url"]
            with dashscope.stream("GET", url) as response:
                next(response.iter_raw(65536))
            direct.append((time.time() - begin) * 1000)
        p50, p99 = statistics.median(latencies), percentile(latencies, 99)
        log(f"event to first byte over {count} tasks pushed at {rate:.0f}/s: median {p50:.1f} ms, p99 {p99:.1f} ms; "
            f"direct read + first byte: median {statistics.median(direct):.1f} ms, p99 {percentile(direct, 99):.1f} "
            f"ms; DashScope reads per task {reads / count:.2f}")
        return {
            "event_to_first_byte_p50_ms": figure(p50, "ms", statistics.median(direct), higher_is_better=False),
            "event_to_first_byte_p99_ms": figure(p99, "ms", percentile(direct, 99), higher_is_better=False),
            "dashscope_reads_per_task": figure(reads / count, "reads", 1.0, higher_is_better=False),
        }
    finally:
        for process in reversed(processes):
            process.stop()


def _count(client: httpx.Client, status: str) -> int:
    metrics = client.get("/metrics").text
    match = re.search(rf'wanhook_tasks{{status="{status}"}} (\d+)', metrics)
    return int(match.group(1)) if match else 0


BENCHMARKS: dict[str, Callable[[Path, bool, Callable[[str], None]], Result]] = {
    "ingest": bench_ingest,
    "event_to_download": bench_event_to_download,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the benchmarks still run")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    results: Result = {}
    for name in args.only or BENCHMARKS:
        with tempfile.TemporaryDirectory(prefix=f"wanhook-bench-{name}-") as tmp:
            results.update(BENCHMARKS[name](Path(tmp), args.smoke, lambda line: print(line, flush=True)))
    print(f"\n| {'figure':<30} | {'value':>12} | {'baseline':>12} | {'ratio':>7} |")
    print(f"|{'-' * 32}|{'-' * 14}|{'-' * 14}|{'-' * 9}|")
    for name, row in results.items():
        print(f"| {name:<30} | {row['value']:>8} {row['unit']:<3} | {row['baseline']:>12} | {row['ratio']:>7} |")
    if not args.smoke:
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
