"""The one loop every background worker runs: a step, again and again, until it is told to stop.

The dispatcher, the downloader, the failure reader, the sweeper and the notifier each write only their
step (``run_forever``'s ``step``): what one round of work is, and how it waits for the next. The loop
around it is here:

- **Stop.** ``stop`` is checked before every step, and every pause here ends as soon as it is set; a
  step that waits (a BLPOP, a stream read) watches it too, through ``stopping``.
- **Redis away.** A step that raises ``RedisError`` (refused, timed out, a failover under way) is tried
  again after ``retry_seconds``, for as long as it takes: a worker rides out an outage by itself. The
  outage is logged at once with its cause, then at most once every ``LOG_EVERY_SECONDS`` with the number
  of failures meanwhile (a line a second would bury everything else), and its end is said once.
- **Anything else** is a bug, or data the worker cannot read: it ends the loop, and the ``Supervisor``
  (``supervisor.py``) logs it with its traceback, names the loop down on ``/readyz`` and starts the loop
  again after a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.exceptions import RedisError

RETRY_SECONDS = 1.0
LOG_EVERY_SECONDS = 60.0

Step = Callable[[], Awaitable[object]]


class Worker(Protocol):
    """What the supervisor runs: a loop that returns once ``stop`` is set (``Supervisor.run`` takes ``run``)."""

    async def run(self, stop: asyncio.Event) -> None: ...


class Outage:
    """Redis failing under one worker: said at once with its cause, then at most once per ``every``
    seconds with the failures not logged meanwhile, and its end said once. The limit holds whatever the
    cause: a cause whose text changes from one failure to the next brings no extra line."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        then: str = "retrying",
        every: float = LOG_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.then = then
        self.every = every
        self.clock = clock
        self.failures = 0  # in this outage
        self.unlogged = 0  # failures since the last line
        self.logged_at: float | None = None
        self.began_at = 0.0

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        if not self.failures:
            self.began_at = now
        self.failures += 1
        if self.logged_at is not None and now - self.logged_at < self.every:
            self.unlogged += 1
            return
        more = f"; {self.unlogged} more failures since the last line" if self.unlogged else ""
        # The type first, as the line has always begun (Redis unavailable (ConnectionError)...), then what
        # it said: which server, refused or timed out. The log formatter removes any credentials from it.
        self.log.warning("Redis unavailable (%s); %s%s", cause(exc), self.then, more)
        self.logged_at, self.unlogged = now, 0

    def over(self) -> None:
        """A step went through: an outage, if there was one, is over."""
        if self.failures:
            self.log.info(
                "Redis answers again after %d failures in %.1f s", self.failures, self.clock() - self.began_at
            )
        # The time of the last line stays: Redis flapping must not bring a line per flap.
        self.failures = self.unlogged = 0


def cause(exc: BaseException) -> str:
    """``Type: message`` on one line, bounded."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile; True when it was."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))
    return stop.is_set()


async def run_forever(
    step: Step,
    stop: asyncio.Event,
    *,
    log: logging.Logger,
    retry_seconds: float = RETRY_SECONDS,
    interval: float = 0.0,
    then: str = "retrying",
) -> None:
    """Run ``step`` until ``stop`` is set, ``interval`` seconds apart (0: at once; the step waits itself).

    A ``RedisError`` from the step pauses the loop for ``retry_seconds`` and it goes on, the outage
    logged through ``Outage`` (``then`` ends its line). Any other exception ends the loop: the supervisor
    restarts it.
    """
    outage = Outage(log, then=then)
    while not stop.is_set():
        try:
            await step()
        except RedisError as exc:
            outage.failed(exc)
            await pause(stop, retry_seconds)
            continue
        outage.over()
        if interval > 0:
            await pause(stop, interval)
