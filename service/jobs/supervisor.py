"""Worker loops under supervision.

Each loop (dispatcher, downloader, failure reader, sweeper, notifier) runs as its own task, the one
loop of ``worker.py`` around its own step. That loop rides out Redis outages by itself; what escapes
it is a bug or data it cannot read, and it would otherwise
end the loop silently while the process looks healthy. Here such a crash is logged with its
traceback, the loop is started again after a delay that doubles from 1 s up to 30 s (and starts over
once a run has lasted longer than that), and ``down()`` names the loops waiting to be restarted, so
``/readyz`` answers 503 meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger("wanhook.supervisor")

Loop = Callable[[asyncio.Event], Awaitable[None]]  # a ``worker.Worker``'s ``run``

FIRST_DELAY = 1.0
MAX_DELAY = 30.0


class Supervisor:
    def __init__(self, first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._down: dict[str, float] = {}  # loop -> since when (epoch seconds)
        self.restarts: dict[str, int] = {}

    def down(self) -> dict[str, float]:
        """The loops that crashed and wait to be restarted, with the time each went down."""
        return dict(self._down)

    async def run(self, loops: Mapping[str, Loop], stop: asyncio.Event) -> None:
        """Every loop until ``stop`` is set, each restarted whenever it crashes."""
        await asyncio.gather(*(self._keep(name, loop, stop) for name, loop in loops.items()))

    async def _keep(self, name: str, loop: Loop, stop: asyncio.Event) -> None:
        delay = self.first_delay
        while not stop.is_set():
            started = time.monotonic()
            error: Exception | None = None
            try:
                await loop(stop)
            except Exception as exc:  # CancelledError is not one: a stop by cancellation goes through
                error = exc
            else:
                if stop.is_set():
                    return
            if time.monotonic() - started > self.max_delay:
                delay = self.first_delay  # it ran well for a while: this crash does not continue a series
            log.error(
                "worker loop %s %s; restarting it in %.0f s",
                name,
                "crashed" if error else "ended without being stopped",
                delay,
                exc_info=error,
            )
            self._down[name] = time.time()
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, self.max_delay)
            self._down.pop(name, None)
            if not stop.is_set():
                self.restarts[name] = self.restarts.get(name, 0) + 1
                log.warning("worker loop %s restarted (restart %d)", name, self.restarts[name])
