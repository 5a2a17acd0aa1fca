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
    lines.append("# TYPE wanhook_queue_depth gauge")
    for name, stream in (("submit", keys.SUBMIT_JOBS), ("download", keys.DOWNLOAD_JOBS)):
        lines.append(f'wanhook_queue_depth{{queue="{name}"}} {await store.redis.xlen(stream)}')
    return "\n".join(lines) + "\n"
