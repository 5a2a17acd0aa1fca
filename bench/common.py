"""What every benchmark shares: the run's context, figures with their baselines, statistics, settings."""

from __future__ import annotations

import asyncio
import math
import os
import re
import resource
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import Emulator, Process, RedisServer, Wanhook, wait_for

TOKEN = "bench-token"
MODEL = "wan2.2-t2v-plus"
SIZE = "832*480"
Result = dict[str, dict[str, Any]]


@dataclass
class Context:
    """One benchmark's scratch directory, its size, where it reports, and the samples the chart draws."""

    tmp: Path
    smoke: bool
    log: Callable[[str], None]
    samples: dict[str, list[float]] = field(default_factory=dict)


def figure(
    label: str,
    value: float,
    unit: str,
    baseline: float,
    against: str,
    *,
    higher_is_better: bool = True,
    goal: str | None = None,
    met: bool | None = None,
) -> dict[str, Any]:
    """A measurement and its baseline, measured in the same run.

    ``ratio`` is how many times better wanhook does than the baseline (> 1: better), whichever way
    "better" points for the unit; it is None where that is undefined (a zero on the wrong side).
    """
    better, worse = (value, baseline) if higher_is_better else (baseline, value)
    ratio = better / worse if worse else None
    return {
        "value": _round(value),
        "unit": unit,
        "baseline": _round(baseline),
        "ratio": None if ratio is None or math.isinf(ratio) else round(ratio, 3),
        "label": label,
        "against": against,
        "goal": goal,
        "met": met,
    }


def _round(number: float) -> float:
    return round(float(number), 3 if abs(number) < 1000 else 1)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure quoted is a value that occurred)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def env_for(redis: RedisServer, tmp: Path, emulator: Emulator | None = None, **extra: str) -> dict[str, str]:
    """wanhook's settings for a benchmark: its Redis, data under ``tmp``, the emulator as DashScope."""
    return {
        "WANHOOK_REDIS_URL": redis.url,
        "WANHOOK_DATA_DIR": str(tmp / "data"),
        "DASHSCOPE_API_KEY": "sk-bench",
        "DASHSCOPE_HTTP_BASE_URL": emulator.api if emulator else "http://127.0.0.1:9/api/v1",
        "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN,
        "WANHOOK_VIDEO_HOSTS": "127.0.0.1",
        "WANHOOK_LOG_LEVEL": "WARNING",
        # The benchmarks create tasks and read them far faster than a client is allowed to.
        "WANHOOK_RATE_LIMIT": "1000000",
        "WANHOOK_MAX_QUEUED_PER_TOKEN": "1000000",
        **extra,
    }


def webhook_target(server_url: str) -> list[dict[str, str]]:
    """The emulator's EventBridge HTTP target pointing at a wanhook server."""
    return [{"url": server_url + "/v1/events/dashscope", "token": TOKEN, "body": "original"}]


@contextmanager
def running(*processes: Process) -> Iterator[list[Process]]:
    """Stops the processes (and any appended to the list) in reverse order, whatever happens."""
    started = list(processes)
    try:
        yield started
    finally:
        for process in reversed(started):
            if isinstance(process, (Wanhook, Emulator)):
                process.terminate()  # side by side; Redis after them
        for process in reversed(started):
            process.stop()


def metric(client: httpx.Client, name: str) -> int:
    """One value of wanhook's /metrics, e.g. ``wanhook_events_total{outcome="applied"}`` or
    ``wanhook_tasks{status="ready"}``. prometheus-client writes every value as a float (``6.0``, ``4.650491e+06``)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


def tasks_in(client: httpx.Client, status: str) -> int:
    return metric(client, f'wanhook_tasks{{status="{status}"}}')


def iso_seconds(text: str) -> float:
    """wanhook's ISO timestamps (``2026-11-25T01:45:16.969Z``) as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def seed_submitted(redis_url: str, count: int, start: int = 0) -> None:
    """``count`` tasks already at DashScope as ds-<start> .. ds-<start+count-1>, as after their create calls."""
    from redis.asyncio import Redis

    from wanhook.service.persistence.store import TaskStore

    redis = Redis.from_url(redis_url)
    store = TaskStore(redis)

    async def one(n: int) -> None:
        task_id = await store.create({"model": MODEL, "prompt": "bench", "parameters": {"size": SIZE}})
        await store.mark_submitted(
            task_id, f"ds-{n}", "PENDING", None, slot_lease_ms=3_600_000, sweep_after_ms=3_600_000
        )

    for first in range(start, start + count, 100):
        await asyncio.gather(*(one(n) for n in range(first, min(start + count, first + 100))))
    await redis.aclose()


def emulator_tasks(emulator: Emulator) -> list[dict[str, Any]]:
    return httpx.get(emulator.url + "/_emulator/tasks", timeout=10).json()["tasks"]


def prerender(emulator: Emulator, prompts: list[str]) -> None:
    """Render each prompt's video once (the emulator caches it), so renders end on time in the measured run."""
    api = httpx.Client(
        base_url=emulator.api, headers={"Authorization": "Bearer k", "X-DashScope-Async": "enable"}, timeout=30
    )
    for prompt in prompts:
        body = {"model": MODEL, "input": {"prompt": prompt}, "parameters": {"size": SIZE}}
        api.post("/services/aigc/video-generation/video-synthesis", json=body).raise_for_status()
    wait_for(
        lambda: all(t["status"] == "SUCCEEDED" for t in emulator_tasks(emulator)), 300, 0.2, what="the videos rendered"
    )


def push(hook: httpx.Client, task: dict[str, Any]) -> None:
    """The completion event of a wanhook task's DashScope task, POSTed as EventBridge would."""
    event = {
        "specversion": "1.0",
        "id": f"bench-{task['id']}",
        "source": "acs.dashscope",
        "type": "dashscope:System:AsyncTaskFinish",
        "data": {"task_id": task["dashscope"]["task_id"], "task_status": "SUCCEEDED"},
    }
    outcome = hook.post("/v1/events/dashscope", json=event).json()["outcome"]
    assert outcome == "applied", outcome


def cpu_seconds(process: Process) -> float:
    """User + system CPU seconds the process (all its threads) has spent, from /proc/<pid>/stat."""
    assert process.proc is not None
    fields = Path(f"/proc/{process.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (curl's, here)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
