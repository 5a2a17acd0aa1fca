"""DashScope's per-account quotas, kept in Redis for every wanhook process of the account at once.

Per model: submissions per second and tasks running at once (``Admission``); per account: 20 reads,
lists and cancels per second (``ReadLimiter``). The numbers come from the spec's table and can be
overridden with ``WANHOOK_LIMITS``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..config import Limit
from ..persistence import keys, scripts

log = logging.getLogger("wanhook.quota")

# A request counts in its window from its answer (see RESTAMP), which DashScope's count of it cannot
# follow however long it travelled; the extra 20 ms covers two clocks read to the millisecond.
RATE_WINDOW_MS = 1020


class Admission:
    """Which queued task may go to DashScope now (round robin between submitters, FIFO within one)."""

    def __init__(self, redis: Redis, limits: dict[str, Limit], reserve_seconds: float) -> None:
        self.limits = limits
        self.reserve_ms = int(reserve_seconds * 1000)
        self._admit = redis.register_script(scripts.ADMIT)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._claim = redis.register_script(scripts.CLAIM_SUBMISSION)
        self._hold = redis.register_script(scripts.HOLD_SUBMISSION)
        self._release = redis.register_script(scripts.RELEASE_SUBMISSION)
        self._tokens = RateLimiter(redis)

    async def admit(self, model: str) -> tuple[str | None, int]:
        """A task id holding a fresh slot reservation, or None and how many ms to wait (-1: until woken)."""
        limit = self.limits[model]
        task_id, wait = await self._admit(
            keys=keys.ROUTE, args=[model, limit.rps, limit.running, RATE_WINDOW_MS, self.reserve_ms]
        )
        task_id = task_id.decode() if isinstance(task_id, bytes) else task_id
        return task_id or None, int(wait)

    async def requeue(self, task_id: str, pause_seconds: float, attempt: str = "") -> None:
        """Back to the head of its queue, the model paused; ``attempt`` ends that attempt's create in flight
        (leave it out when the create may have been sent: the task then waits until it can no longer answer)."""
        await self._requeue(keys=keys.ROUTE, args=[task_id, int(pause_seconds * 1000), attempt])

    async def claim(self, task_id: str, attempt: str) -> str:
        """Make ``attempt`` the one that may send the admitted task: "ok", "busy" (an earlier create of it
        may still answer) or "moved" (it no longer waits)."""
        result = await self._claim(keys=keys.ROUTE, args=[task_id, attempt, self.reserve_ms])
        return result.decode() if isinstance(result, bytes) else str(result)

    async def hold(self, task_id: str, attempt: str, deadline_ms: int = 0, sending_at: str = "") -> bool:
        """Renew the attempt's reservation and in-flight marker (for at least ``deadline_ms`` more, the
        create's deadline); with ``sending_at``, its create is about to go. False: the attempt lost the task."""
        return bool(
            await self._hold(keys=keys.ROUTE, args=[task_id, attempt, self.reserve_ms, max(0, deadline_ms), sending_at])
        )

    async def release(self, task_id: str, attempt: str, keep_ms: int = 0) -> None:
        """The attempt ends; its marker lasts ``keep_ms`` more when its create may still answer."""
        await self._release(keys=scripts.release_submission_keys(task_id), args=[attempt, max(0, keep_ms)])

    @asynccontextmanager
    async def sending(self, model: str, task_id: str) -> AsyncIterator[None]:
        """Around an admitted task's create call: its rate token counts from the answer on."""
        try:
            yield
        finally:
            await self._tokens.restamp(keys.SUBMIT_RATE + model, task_id)


class RateLimiter:
    """Sliding windows, one per key, shared through Redis."""

    def __init__(self, redis: Redis) -> None:
        self._take = redis.register_script(scripts.TAKE_TOKEN)
        self._restamp = redis.register_script(scripts.RESTAMP)

    async def take(self, key: str, per_window: int, window_ms: int = 1000) -> int:
        """0 when one more may go now (and it is counted), else the ms until one may."""
        return (await self.token(key, per_window, window_ms))[0]

    async def token(self, key: str, per_window: int, window_ms: int = 1000) -> tuple[int, str]:
        """(0, the request's member in the window) when one more may go now, else (ms to wait, '')."""
        wait, member = await self._take(keys=[key], args=[per_window, window_ms])
        return int(wait), member.decode() if isinstance(member, bytes) else member

    async def take_request(self, caller: str, per_second: int) -> int:
        """A client API request of ``caller`` (its token digest; "" when the API is open): 0 when it may go
        now (and it is counted), else the ms until one may."""
        return await self.take(keys.API_RATE + (caller or "-"), per_second)

    async def restamp(self, key: str, member: str, window_ms: int = RATE_WINDOW_MS) -> None:
        """The request ``member`` stands for has been answered: it counts from now on."""
        try:
            await self._restamp(keys=[key], args=[member, window_ms])
        except RedisError as exc:
            # The token keeps its send time: the next request may go a little early, nothing is lost.
            log.warning("could not move a rate token to its answer (%s)", type(exc).__name__)


class ReadLimiter:
    """DashScope's queries per second (reads, lists, cancels) for the whole account."""

    def __init__(self, limiter: RateLimiter, per_second: int) -> None:
        self.limiter = limiter
        self.per_second = per_second

    @asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Waits for a place in the window, then holds it until one window after the answer."""
        while True:
            wait, member = await self.limiter.token(keys.READ_RATE, self.per_second, RATE_WINDOW_MS)
            if not wait:
                break
            await asyncio.sleep(wait / 1000)
        try:
            yield
        finally:
            await self.limiter.restamp(keys.READ_RATE, member)
