"""DashScope's per-account quotas, kept in Redis for every wanhook process of the account at once.

Per model: submissions per second and tasks running at once (``Admission``); per account: 20 reads,
lists and cancels per second (``ReadLimiter``). The numbers come from the spec's table and can be
overridden with ``WANHOOK_LIMITS``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from . import constants as keys
from . import scripts
from .config import ConfigError
from .models import MODELS

# DashScope counts a second on its own clock, and a request admitted at the end of one of ours can
# arrive early in its next: a little more than a second keeps every submission inside its quota.
RATE_WINDOW_MS = 1020


@dataclass(frozen=True)
class Limit:
    rps: int
    running: int


def parse_limits(text: str | None) -> dict[str, Limit]:
    """The spec's limits, overridden by ``model=rps/running,...``."""
    limits = {name: Limit(rules.submit_rps, rules.max_running) for name, rules in MODELS.items()}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        model, _, numbers = item.partition("=")
        rps, _, running = numbers.partition("/")
        if model.strip() not in MODELS or not rps.strip().isdigit() or not running.strip().isdigit():
            raise ConfigError(f"WANHOOK_LIMITS: expected model=rps/running with a known model, got {item!r}")
        limits[model.strip()] = Limit(int(rps), int(running))
    return limits


class Admission:
    """Which queued task may go to DashScope now (round robin between submitters, FIFO within one)."""

    def __init__(self, redis: Redis, limits: dict[str, Limit], reserve_seconds: float) -> None:
        self.limits = limits
        self.reserve_ms = int(reserve_seconds * 1000)
        self._admit = redis.register_script(scripts.ADMIT)
        self._requeue = redis.register_script(scripts.REQUEUE)

    async def admit(self, model: str) -> tuple[str | None, int]:
        """A task id holding a fresh slot reservation, or None and how many ms to wait (-1: until woken)."""
        limit = self.limits[model]
        task_id, wait = await self._admit(keys=keys.ROUTE, args=[
            keys.PREFIX, model, limit.rps, limit.running, RATE_WINDOW_MS, self.reserve_ms])
        task_id = task_id.decode() if isinstance(task_id, bytes) else task_id
        return task_id or None, int(wait)

    async def requeue(self, task_id: str, pause_seconds: float) -> None:
        await self._requeue(keys=keys.ROUTE, args=[keys.PREFIX, task_id, int(pause_seconds * 1000)])


class RateLimiter:
    """Sliding windows, one per key, shared through Redis."""

    def __init__(self, redis: Redis) -> None:
        self._take = redis.register_script(scripts.TAKE_TOKEN)

    async def take(self, key: str, per_window: int, window_ms: int = 1000) -> int:
        """0 when one more may go now (and it is counted), else the ms until one may."""
        return int(await self._take(keys=[key], args=[per_window, window_ms]))


class ReadLimiter:
    """DashScope's queries per second (reads, lists, cancels) for the whole account."""

    def __init__(self, limiter: RateLimiter, per_second: int) -> None:
        self.limiter = limiter
        self.per_second = per_second

    async def acquire(self) -> None:
        while wait := await self.limiter.take(keys.READ_RATE, self.per_second, RATE_WINDOW_MS):
            await asyncio.sleep(wait / 1000)
