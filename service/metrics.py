"""Prometheus text exposition: counters kept in Redis (shared by every process), and gauges read now.

A counter named ``family|label=value|...`` in the counters hash is one labelled series of ``family``.
"""

from __future__ import annotations

import time

from . import constants as keys
from .models import MODELS
from .store import TaskStore

DOWNLOAD_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
# Older flat counters that are really one labelled family each.
FAMILIES = {"events_": ("events", "outcome"), "transitions_": ("transitions", "to"),
            "callbacks_": ("callback_attempts", "outcome"), "downloads_": ("downloads", "outcome")}


def _series(name: str) -> tuple[str, dict[str, str]]:
    family, *labels = name.split("|")
    if not labels:
        for prefix, (grouped, label) in FAMILIES.items():
            if family.startswith(prefix):
                return grouped, {label: family.removeprefix(prefix)}
    return family, dict(label.split("=", 1) for label in labels)


def _line(metric: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{name}="{text}"' for name, text in sorted(labels.items()))
    return f"wanhook_{metric}{{{inner}}} {value:g}" if inner else f"wanhook_{metric} {value:g}"


async def observe_download(store: TaskStore, seconds: float) -> None:
    async with store.redis.pipeline(transaction=False) as pipe:
        for bound in (*DOWNLOAD_BUCKETS, "+Inf"):
            if bound == "+Inf" or seconds <= float(bound):
                pipe.hincrby(keys.COUNTERS, f"download_seconds_bucket|le={bound}", 1)
        pipe.hincrbyfloat(keys.COUNTERS, "download_seconds_sum", seconds)
        await pipe.execute()


async def render(store: TaskStore) -> str:
    redis = store.redis
    families: dict[str, list[str]] = {}
    raw = await redis.hgetall(keys.COUNTERS)
    for name, value in sorted((k.decode() if isinstance(k, bytes) else k, float(v)) for k, v in raw.items()):
        family, labels = _series(name)
        if family.startswith("download_seconds"):
            families.setdefault("download_seconds histogram", []).append(_line(family, labels, value))
            if family == "download_seconds_bucket" and labels.get("le") == "+Inf":
                families["download_seconds histogram"].append(_line("download_seconds_count", {}, value))
            continue
        families.setdefault(f"{family}_total counter", []).append(_line(f"{family}_total", labels, value))

    gauges = families.setdefault("tasks gauge", [])
    for status, count in (await store.status_counts()).items():
        gauges.append(_line("tasks", {"status": status}, count))
    now_ms = time.time() * 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(keys.TASKS_BY_STATUS + "queued", 0, 0)
        pipe.xlen(keys.DOWNLOAD_JOBS)
        pipe.xrange(keys.DOWNLOAD_JOBS, count=1)
        pipe.xlen(keys.FAILURE_JOBS)
        pipe.zcard(keys.CALLBACKS_DUE)
        for model in MODELS:
            pipe.zcard(keys.SLOTS + model)
        oldest_queued, downloads, oldest_download, failures, callbacks_due, *slots = await pipe.execute()
    queued_age = (now_ms - int(oldest_queued[0].split(b":")[0])) / 1000 if oldest_queued else 0
    download_age = (now_ms - int(oldest_download[0][0].split(b"-")[0])) / 1000 if oldest_download else 0
    families["queue_depth gauge"] = [_line("queue_depth", {"queue": "download"}, downloads),
                                     _line("queue_depth", {"queue": "failure_reasons"}, failures),
                                   _line("queue_depth", {"queue": "callbacks"}, callbacks_due)]
    families["oldest_queued_seconds gauge"] = [_line("oldest_queued_seconds", {"queue": "submit"}, queued_age),
                                               _line("oldest_queued_seconds", {"queue": "download"}, download_age)]
    families["dashscope_slots_in_use gauge"] = [_line("dashscope_slots_in_use", {"model": model}, used)
                                                for model, used in zip(MODELS, slots, strict=True) if used]
    lines = []
    for header, samples in families.items():
        name, kind = header.rsplit(" ", 1)
        if samples:
            lines += [f"# TYPE wanhook_{name} {kind}", *samples]
    return "\n".join(lines) + "\n"
