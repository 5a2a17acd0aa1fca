"""Prometheus text exposition of what Redis counts (shared by every process) and queue depths."""

from __future__ import annotations

from . import constants as keys
from .store import TaskStore


async def render(store: TaskStore) -> str:
    lines = []
    for name, value in sorted((await store.counters()).items()):
        metric = f"wanhook_{name.replace('-', '_')}_total"
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    lines.append("# TYPE wanhook_tasks gauge")
    for status, count in (await store.status_counts()).items():
        lines.append(f'wanhook_tasks{{status="{status}"}} {count}')
    lines += ["# TYPE wanhook_download_queue_depth gauge",
              f"wanhook_download_queue_depth {await store.redis.xlen(keys.DOWNLOAD_JOBS)}"]
    return "\n".join(lines) + "\n"
