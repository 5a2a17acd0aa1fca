"""What every benchmark shares: the run's context, figures with their baselines, statistics, settings."""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import Emulator, Process, RedisServer

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


def figure(label: str, value: float, unit: str, baseline: float, against: str, *, higher_is_better: bool = True,
           goal: str | None = None, met: bool | None = None) -> dict[str, Any]:
    """A measurement and its baseline, measured in the same run.

    ``ratio`` is how many times better wanhook does than the baseline (> 1: better), whichever way
    "better" points for the unit; it is None where that is undefined (a zero on the wrong side).
    """
    if higher_is_better:
        ratio = value / baseline if baseline else None
    else:
        ratio = baseline / value if value else None
    return {"value": _round(value), "unit": unit, "baseline": _round(baseline),
            "ratio": None if ratio is None or math.isinf(ratio) else round(ratio, 3),
            "label": label, "against": against, "goal": goal, "met": met}


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
    return {"WANHOOK_REDIS_URL": redis.url, "WANHOOK_DATA_DIR": str(tmp / "data"), "DASHSCOPE_API_KEY": "sk-bench",
            "DASHSCOPE_HTTP_BASE_URL": emulator.api if emulator else "http://127.0.0.1:9/api/v1",
            "WANHOOK_EVENTBRIDGE_TOKEN": TOKEN, "WANHOOK_VIDEO_HOSTS": "127.0.0.1", "WANHOOK_LOG_LEVEL": "WARNING",
            **extra}


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
            process.stop()


def metric(client: httpx.Client, name: str) -> int:
    """One value of wanhook's /metrics, e.g. ``wanhook_events_applied_total`` or ``wanhook_tasks{status="ready"}``."""
    match = re.search(rf"^{re.escape(name)} (\d+)$", client.get("/metrics").text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def tasks_in(client: httpx.Client, status: str) -> int:
    return metric(client, f'wanhook_tasks{{status="{status}"}}')


def iso_seconds(text: str) -> float:
    """wanhook's ISO timestamps (``2026-11-25T01:45:16.969Z``) as epoch seconds."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def seed_submitted(redis_url: str, count: int, start: int = 0) -> None:
    """``count`` tasks already at DashScope as ds-<start> .. ds-<start+count-1>, as after their create calls."""
    from redis.asyncio import Redis

    from service.store import TaskStore

    redis = Redis.from_url(redis_url)
    store = TaskStore(redis)

    async def one(n: int) -> None:
        task_id = await store.create({"model": MODEL, "prompt": "bench", "parameters": {"size": SIZE}})
        await store.mark_submitted(task_id, f"ds-{n}", "PENDING", None, slot_lease_ms=3_600_000,
                                   sweep_after_ms=3_600_000)

    for first in range(start, start + count, 100):
        await asyncio.gather(*(one(n) for n in range(first, min(start + count, first + 100))))
    await redis.aclose()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Like tests.support.wait_for, for checks that return a plain bool."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
